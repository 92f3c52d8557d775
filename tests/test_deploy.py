"""A model with our layers, recorded for another runtime: ``torch.jit.trace`` (a graph of
torch's own ops that passes the tracer's check, saves, loads and differentiates),
``torch.onnx.export`` with either exporter (run in ONNX Runtime), TensorBoard's graph (a trace),
and ``torch.jit.script``'s refusal with a message that says what records the model instead. On
both backends: recorded, every op computes with torch's ops (``_backend.exporting``).
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

import torchconv_ext
from tests.references.layers import SideBySide
from tests.references.upsample import random_geometries, reference
from torchconv_ext import functional as TF
from torchconv_ext import nn as tnn
from torchconv_ext._fallback.upsample import _gathered

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]

#: Torch before 2.13 cannot export its own adaptive max pooling with the torch.export-based ONNX
#: exporter (no ONNX function for it): neither can we there (nor max pyramid pooling, made of it).
_ONNX_HAS_ADAPTIVE_MAX = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 13)


class _AvgPool1dDivided(nn.Module):
    """1-d average pooling by a divisor of ours (torch's has none), over the flattened plane."""

    def forward(self, x):
        return TF.avg_pool1d(x.flatten(2), 3, 2, padding=1, divisor_override=2)


class _RoundedUpsample(nn.Module):
    """Nearest upsampling with sizes rounded (beyond torch: torch's sizes are floors)."""

    def forward(self, x):
        return TF.interpolate(x, scale_factor=1.5, output_size_rounding="round")


def _model(onnx: str | None = None) -> nn.Module:
    """Torch's layers converted, beside layers only we have (tiny, for the interpreter), for
    inputs of 6×8; for the ONNX exporter ``onnx`` (``"torch.export"``, ``"torchscript"``), what
    it holds of torch's own layers: adaptive pooling (pyramid pooling's levels too) only to
    sizes that divide the input's; through the TorchScript-based exporter, only of inputs whose
    sizes it knows, and no 'nearest-exact'."""
    skip_max = onnx == "torch.export" and not _ONNX_HAS_ADAPTIVE_MAX
    ours = [
        tnn.Conv2d(3, 4, 3, stride=2, padding="same", activation="relu"),
        tnn.Conv2d(3, 2, 3, stride=2, padding=((0, 1), (2, 0)), padding_mode="replicate"),
        # (circular 'same': padded by constant sizes, which ONNX's circular padding needs)
        tnn.Conv2d(
            3,
            2,
            (3, 2),
            padding="same",
            dilation=(1, 2),
            padding_mode="circular",
            activation="silu",
        ),
        tnn.ConvTranspose2d(3, 2, 3, stride=2, padding="same"),
        tnn.ConvTranspose2d(3, 2, 4, stride=2, padding=((1, 2), (2, 0)), output_padding=1),
        tnn.MaxoutConv2d(3, 2, 3, pieces=2, padding=1),
        tnn.Maxout(3),
        tnn.LocallyConnected2d(3, 2, 3, input_size=(6, 8)),
        tnn.TiledConv2d(3, 2, 3, tiles=2),
        # (7 × 9 positions: rows of tiles rounded up, a division ONNX must not truncate)
        tnn.TiledConv2d(3, 2, 2, tiles=(2, 3), padding=1),
        tnn.AvgPool2d(3, (2, 3), padding="same"),
        _AvgPool1dDivided(),
        tnn.MaxPool2d(3, 2, padding=((0, 1), (1, 0))),
        tnn.SpatialPyramidPool((1, 2), "avg" if skip_max else "max"),
        tnn.GlobalAvgPool(),
        _RoundedUpsample(),
    ]
    return SideBySide([*_torch_layers(onnx), *ours]).eval()


def _torch_layers(onnx: str | None = None) -> list[nn.Module]:
    """Torch's layers of :func:`_model`, converted."""
    theirs = [
        nn.Conv2d(3, 2, 3, padding="same", padding_mode="circular"),
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
            nn.Conv2d(4, 4, 3, padding=1, groups=4),
            nn.Upsample(
                scale_factor=2, mode="nearest" if onnx == "torchscript" else "nearest-exact"
            ),
            nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2),
            nn.AvgPool2d(3, 2, padding=1, count_include_pad=False),
        ),
        # (ONNX's exporters drop torch's divisor_override: recorded, ours composes it)
        nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, divisor_override=5),
        nn.AvgPool2d((2, 3), (1, 2), padding=1, count_include_pad=False, divisor_override=7),
        *(
            []
            if onnx == "torch.export" and not _ONNX_HAS_ADAPTIVE_MAX
            else [nn.AdaptiveMaxPool2d((3, 4))]
        ),
        nn.AdaptiveAvgPool2d(1),
    ]
    return list(torchconv_ext.convert_model(nn.ModuleList(theirs)))


def _foreign_nodes(graph: torch.Graph) -> set[str]:
    """The kinds of node in ``graph`` that are not torch's ops (a PythonOp, an op of ours)."""
    return {n.kind() for n in graph.nodes() if not n.kind().startswith(("aten::", "prim::"))}


def _assert_all_close(got, want, **tolerance) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.as_tensor(g), w.detach(), **tolerance)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_trace_holds_torchs_ops_saves_loads_and_differentiates(backend):
    torch.manual_seed(0)
    model = _model().double()
    x, other = (torch.randn(2, 3, 6, 8, dtype=torch.float64) for _ in range(2))
    with torchconv_ext.use_backend(backend):
        traced = torch.jit.trace(model, x)  # (its check traces again and compares the graphs)
        assert not _foreign_nodes(traced.inlined_graph)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    # A trace holds torch's ops whichever backend it was made on: the model's own results come
    # from the fallback (the interpreter's would cost a minute and test nothing more here).
    with torchconv_ext.use_backend("torch"):
        want = model(other)
        for recorded in (traced, loaded):
            _assert_all_close(recorded(other), want)
        grads = []
        for run in (model, traced):
            leaf = other.clone().requires_grad_()
            outputs = run(leaf)
            total = sum((y * (i + 1)).sum() for i, y in enumerate(outputs))
            grads.append(torch.autograd.grad(total, leaf)[0])
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_trace_of_converted_layers_warns_no_more_than_torchs(backend):
    """Torch's layers trace without a TracerWarning (their sizes are read in C++): so do ours,
    whose Python would otherwise read a trace's sizes, which are tensors there."""
    model = SideBySide(_torch_layers()).eval()
    with torchconv_ext.use_backend(backend), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.jit.trace(model, torch.randn(2, 3, 6, 8))
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_trace_of_dilated_max_pooling(backend):
    """(Our check for windows that miss the input read a trace's sizes, which are tensors.)"""
    x = torch.randn(2, 3, 8, 7)
    pool = tnn.MaxPool2d(3, 2, padding=1, dilation=2, ceil_mode=True)
    with torchconv_ext.use_backend(backend):
        traced = torch.jit.trace(pool, x)
        assert not _foreign_nodes(traced.inlined_graph)
        torch.testing.assert_close(traced(x), pool(x))


def test_a_trace_copies_what_the_size_one_stride_fix_would_restride():
    """A trace replays on other tensors: where our call would view an operand with its
    layout's own strides (CPU ATen misreads a size-1 dim's odd stride), the trace copies it —
    right for the example (a grouped float64 weight gradient, wrong in ATen without it) and
    for any later input (a view with the example's strides would misread those)."""
    conv = tnn.Conv2d(16, 4, 3, groups=2, bias=False).double()
    conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)

    def odd(t):  # channels-last, the size-1 batch strided as unsqueeze gives
        return t.contiguous(memory_format=torch.channels_last)[0].unsqueeze(0)

    def weight_grad(run, x):
        conv.weight.grad = None
        run(x).square().sum().backward()
        return conv.weight.grad

    x = torch.randn(1, 16, 5, 6, dtype=torch.float64)
    with torchconv_ext.use_backend("torch"):
        traced = torch.jit.trace(conv, odd(x))
        for example in (odd(x), x, x.contiguous(memory_format=torch.channels_last)):
            torch.testing.assert_close(weight_grad(traced, example), weight_grad(conv, x))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dynamo", [True, False], ids=["torch.export", "torchscript"])
def test_onnx_export_runs_in_onnx_runtime(dynamo, backend, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = _model("torch.export" if dynamo else "torchscript")
    x = torch.randn(2, 3, 6, 8)
    path = tmp_path / "model.onnx"
    with torchconv_ext.use_backend(backend):
        if dynamo:
            torch.onnx.export(model, (x,), dynamo=True).save(path)
        else:
            torch.onnx.export(model, (x,), path, dynamo=False)
        want = model(x)
    session = onnxruntime.InferenceSession(path)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    _assert_all_close(got, want, rtol=1e-5, atol=1e-5)


def test_rounded_sizes_export_as_a_gather_at_the_kernels_indices():
    """Recorded, nearest upsampling of sizes torch does not compute is a gather (ONNX's
    exporters turn ATen's op into a Resize that takes the size from the scale factors): at the
    indices of ATen's CUDA rule, which the Triton kernels follow."""
    for n, o, s, exact in random_geometries(60, seed=3):
        x = torch.randn(1, 2, n, dtype=torch.float64)
        torch.testing.assert_close(_gathered(x, [o], [s], exact), reference(x, [o], [s], exact))
    x = torch.randn(1, 1, 3, 5)
    assert _gathered(x, [6, 10], [2.0, 2.0], False).shape == (1, 1, 6, 10)


def test_tensorboard_draws_the_graph(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(tmp_path) as writer:
        writer.add_graph(_model(), torch.randn(1, 3, 6, 8))
    assert any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "module",
    [
        torchconv_ext.convert_model(nn.Conv2d(2, 2, 3)),
        tnn.MaxPool2d(2),
        tnn.Upsample(scale_factor=2),
        tnn.Maxout(2),
        tnn.MaxoutConv2d(2, 2, 3, pieces=2),
        tnn.TiledConv2d(2, 2, 3, tiles=2),
        tnn.GlobalMaxPool(),
        tnn.SpatialPyramidPool((1, 2)),
    ],
    ids=lambda m: type(m).__name__,
)
def test_scripting_refuses_and_says_what_records_the_model(module):
    with pytest.raises(RuntimeError, match=r"cannot be compiled by torch\.jit\.script.*jit\.trace"):
        torch.jit.script(nn.Sequential(nn.Identity(), module))
