"""``torch.fx.symbolic_trace`` on our modules and functional ops, both backends.

Every public op handles ``__torch_function__``, so fx records one ``call_function`` to it (never
our argument checks) and the traced graph computes what the model computes; tensor subclasses
see our ops the same way. Reference: torch's own layers on the same float64 inputs.
"""

from __future__ import annotations

import operator
from typing import ClassVar

import pytest
import torch
from torch import nn

import torchconv_ext
from torchconv_ext import functional as TF
from torchconv_ext import nn as tnn

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]

# Every kind of layer convert_model converts, with tiny inputs (the interpreter runs them).
LAYERS = [
    (nn.Conv1d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 2, 5)),
    (nn.Conv2d(2, 3, 3, padding="same", padding_mode="circular"), (2, 2, 4, 5)),
    (nn.Conv2d(2, 2, 3, groups=2, stride=2, padding=1, padding_mode="replicate"), (2, 2, 5, 4)),
    (nn.Conv3d(2, 2, 2), (1, 2, 3, 3, 3)),
    (nn.ConvTranspose1d(2, 3, 3, stride=2), (2, 2, 4)),
    (nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1), (2, 2, 3, 4)),
    (nn.ConvTranspose3d(2, 2, 2, stride=2), (1, 2, 2, 2, 2)),
    (nn.MaxPool1d(2, 1, 1), (2, 2, 5)),
    (nn.MaxPool2d(3, 2, 1, ceil_mode=True, return_indices=True), (2, 2, 5, 4)),
    (nn.MaxPool3d(2), (1, 2, 4, 4, 4)),
    (nn.AvgPool1d(3, 2, 1), (2, 2, 5)),
    (nn.AvgPool2d(2, count_include_pad=False, padding=1, divisor_override=3), (2, 2, 5, 4)),
    (nn.AvgPool3d(2, 1), (1, 2, 3, 3, 3)),
    (nn.AdaptiveMaxPool1d(3), (2, 2, 5)),
    (nn.AdaptiveMaxPool2d((2, 3), return_indices=True), (2, 2, 5, 4)),
    (nn.AdaptiveAvgPool2d((None, 2)), (2, 2, 5, 4)),
    (nn.AdaptiveAvgPool3d(2), (1, 2, 3, 3, 3)),
    (nn.Upsample(scale_factor=2), (2, 2, 3, 4)),
    (nn.Upsample(size=(3, 4, 5), mode="nearest-exact"), (1, 2, 2, 2, 2)),
    (nn.UpsamplingNearest2d(size=(5, 7)), (2, 2, 3, 4)),
]
LAYER_IDS = [f"{type(m).__name__}-{i}" for i, (m, _) in enumerate(LAYERS)]

_OURS = {getattr(TF, name) for name in TF.__all__} | {tnn.conv_transpose.output_padding_for}
_PLAIN = {operator.getitem, operator.add}  # what the test models themselves compute


def _calls(gm: torch.fx.GraphModule) -> list:
    return [n.target for n in gm.graph.nodes if n.op in ("call_function", "call_method")]


def _assert_close(got, want, dtype=torch.float64):
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(LAYERS)), ids=LAYER_IDS)
def test_converted_layer_traces_to_our_op(case, backend):
    """The trace of a converted layer calls our functional op (a transposed convolution also
    our output-size rule) and nothing else, and runs like torch's layer."""
    layer, shape = LAYERS[case]
    layer = layer.double()
    ours = torchconv_ext.convert_model(layer)
    gm = torch.fx.symbolic_trace(ours)
    targets = _calls(gm)
    assert targets[-1] in _OURS and set(targets) <= _OURS, gm.code
    x = torch.randn(shape, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        got = gm(x)
    _assert_close(got, layer(x))


class _Decoder(nn.Module):
    """A model calling our functional API and a transposed convolution to a traced size, the
    case torch's own layers only trace as leaves."""

    def __init__(self):
        super().__init__()
        self.down = tnn.Conv2d(2, 3, 3, stride=2, padding="same", padding_mode="reflect")
        self.up = tnn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)
        self.pyramid = tnn.SpatialPyramidPool((1, 2), "avg")

    def forward(self, x):
        y = TF.max_pool2d(self.down(x), 2, 1, "same")
        y, idx = TF.adaptive_max_pool2d(y, (2, 2), return_indices=True)
        y = TF.interpolate(y, scale_factor=1.5, mode="nearest-exact")
        up = self.up(y, output_size=x.size())
        return up + x, self.pyramid(x) + TF.global_avg_pool(x).repeat(1, 5), idx


def _decoder_reference(model: _Decoder, x: torch.Tensor):
    """The same computation with torch's own ops (TF-style 'same' spelled out with F.pad)."""
    F = torch.nn.functional
    y = F.conv2d(F.pad(x, [0, 1, 0, 1], mode="reflect"), model.down.weight, model.down.bias, 2)
    y = F.max_pool2d(F.pad(y, [0, 1, 0, 1], value=float("-inf")), 2, 1)
    y, idx = F.adaptive_max_pool2d(y, (2, 2), return_indices=True)
    y = F.interpolate(y, scale_factor=1.5, mode="nearest-exact")
    up = F.conv_transpose2d(y, model.up.weight, model.up.bias, 2, 1, output_padding=1)
    pyramid = torch.cat([F.adaptive_avg_pool2d(x, s).flatten(1) for s in (1, 2)], 1)
    return up + x, pyramid + x.mean((2, 3)).repeat(1, 5), idx


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_calling_the_functional_api(backend):
    model = _Decoder().double()
    gm = torch.fx.symbolic_trace(model)
    ours = [t for t in _calls(gm) if t not in _PLAIN and t != "size" and t != "repeat"]
    assert ours and all(t in _OURS for t in ours), gm.code
    assert TF.max_pool2d in ours and TF.global_avg_pool in ours
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        got = gm(x)
    _assert_close(got, _decoder_reference(model, x))


class _Logged(torch.Tensor):
    """A tensor subclass recording the functions called on it."""

    seen: ClassVar[list] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(func)
        return super().__torch_function__(func, types, args, kwargs or {})


def test_tensor_subclasses_see_our_ops():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    _Logged.seen = []
    y = TF.conv2d(x.as_subclass(_Logged), w, padding=1, padding_mode="reflect")
    z = TF.avg_pool2d(y, 2, padding="same")
    assert _Logged.seen[0] is TF.conv2d and TF.avg_pool2d in _Logged.seen
    assert type(z) is _Logged
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, [1] * 4, mode="reflect"), w)
    torch.testing.assert_close(y.as_subclass(torch.Tensor), expected)
