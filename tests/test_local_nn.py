"""``LocallyConnected{1,2,3}d`` and ``TiledConv{1,2,3}d``: shapes, parameters, initialisation,
and the functional op they run."""

from __future__ import annotations

import math

import pytest
import torch

from torchconv_ext import functional as TF
from torchconv_ext import nn as tnn
from torchconv_ext import use_backend


@pytest.mark.parametrize(
    "cls,args,weight,out",
    [
        (tnn.LocallyConnected1d, (2, 4, 3, 9), (7, 4, 2, 3), (1, 4, 7)),
        (tnn.LocallyConnected2d, (2, 4, 3, (6, 5)), (4, 3, 4, 2, 3, 3), (1, 4, 4, 3)),
        (tnn.LocallyConnected3d, (2, 4, 2, 3), (2, 2, 2, 4, 2, 2, 2, 2), (1, 4, 2, 2, 2)),
        (tnn.TiledConv1d, (2, 4, 3, 2), (2, 4, 2, 3), (1, 4, 7)),
        (tnn.TiledConv2d, (2, 4, 3, (2, 3)), (2, 3, 4, 2, 3, 3), (1, 4, 4, 3)),
        (tnn.TiledConv3d, (2, 4, 2, 1), (1, 1, 1, 4, 2, 2, 2, 2), (1, 4, 2, 2, 2)),
    ],
)
def test_shapes_and_parameters(cls, args, weight, out):
    m = cls(*args)
    nd = len(out) - 2
    x = torch.randn(1, 2, *([9] if nd == 1 else [6, 5] if nd == 2 else [3, 3, 3]))
    assert m.weight.shape == weight and m.bias.shape == (*weight[:nd], 4)
    assert list(m.state_dict()) == ["weight", "bias"]
    assert m(x).shape == out
    assert m(x[0]).shape == out[1:]  # unbatched


def test_forward_is_the_functional_op():
    torch.manual_seed(0)
    m = tnn.LocallyConnected2d(4, 6, (3, 2), (7, 6), stride=2, padding="same", dilation=(1, 2),
                               groups=2, padding_mode="reflect")  # fmt: skip
    assert m.output_size == (4, 3) and m.input_size == (7, 6)
    x = torch.randn(2, 4, 7, 6)
    expected = TF.conv2d_local(x, m.weight, m.bias, 2, "same", (1, 2), 2, padding_mode="reflect")
    torch.testing.assert_close(m(x), expected)
    t = tnn.TiledConv1d(2, 2, 3, tiles=3, bias=False, padding=1, padding_mode="circular")
    assert t.bias is None
    x = torch.randn(2, 2, 8)
    torch.testing.assert_close(
        t(x), TF.conv1d_tiled(x, t.weight, None, 1, 1, padding_mode="circular")
    )


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_padding_pairs_pad_each_side(backend, mode):
    """``padding=((top, bottom), (left, right))`` as for ``nn.Conv2d``: the layer on an input
    ``F.pad`` padded by those amounts, values and gradients in float64; the output size (and
    the locally connected layer's kernels) follow the padding."""
    torch.manual_seed(0)
    pairs, pads = ((0, 2), (1, 0)), (1, 0, 0, 2)  # (F.pad's order: last dim first)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    local = tnn.LocallyConnected2d(3, 2, 3, (5, 6), padding=pairs, padding_mode=mode).double()
    tiled = tnn.TiledConv2d(3, 2, 3, tiles=2, stride=(1, 2), padding=pairs, padding_mode=mode)
    tiled = tiled.double()
    assert local.output_size == (5, 5) and "padding=((0, 2), (1, 0))" in repr(local)
    for layer, op, args in ((local, TF.conv2d_local, (1,)), (tiled, TF.conv2d_tiled, ((1, 2),))):
        padded = lambda x: torch.nn.functional.pad(
            x, pads, mode="constant" if mode == "zeros" else mode
        )
        with use_backend(backend):
            out, grads = _grads(layer, layer, x)
        expected, expected_grads = _grads(
            lambda x: op(padded(x), layer.weight, layer.bias, *args), layer, x
        )
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(grads, expected_grads)


def _grads(call, layer, x):
    x = x.clone().requires_grad_()
    layer.zero_grad()
    out = call(x)
    out.backward(torch.randn_like(out, generator=torch.Generator().manual_seed(1)))
    return out, [x.grad, layer.weight.grad, layer.bias.grad]


def test_torch_style_initialisation():
    """Uniform in ±1/sqrt(fan_in), fan_in = C_in/groups · prod(kernel), as nn.Conv2d."""
    torch.manual_seed(0)
    m = tnn.TiledConv2d(8, 16, 3, tiles=(4, 4), groups=2)
    bound = 1 / math.sqrt(8 // 2 * 9)
    for p in (m.weight, m.bias):
        assert p.abs().max() <= bound and p.abs().max() > 0.95 * bound
        assert abs(p.mean().item()) < 0.05 * bound
    ref = torch.nn.Conv2d(8, 16, 3, groups=2)
    assert ref.weight.abs().max() <= bound  # the same bound


def test_input_of_another_size_is_refused():
    m = tnn.LocallyConnected2d(2, 3, 3, (6, 6))
    with pytest.raises(RuntimeError, match="input of spatial size"):
        m(torch.randn(1, 2, 7, 6))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: tnn.LocallyConnected2d(3, 4, 3, (6, 6), groups=2), "divisible by groups"),
        (lambda: tnn.LocallyConnected2d(2, 4, 3, (2, 6)), "too small"),
        (lambda: tnn.LocallyConnected2d(2, 4, 3, (0, 6)), "input_size"),
        (lambda: tnn.TiledConv2d(2, 4, 3, tiles=0), "tiles"),
        (lambda: tnn.TiledConv2d(2, 4, 3, tiles=2, padding="full"), "padding"),
        (lambda: tnn.TiledConv2d(2, 4, 3, tiles=2, padding=((0, -1), 1)), "at least 0"),
        (lambda: tnn.TiledConv2d(2, 4, 3, tiles=2, padding=((0, 1, 1), 1)), "before, after"),
        (lambda: tnn.LocallyConnected1d(2, 4, 3, 1, padding=((0, 1),)), "too small"),
        (lambda: tnn.TiledConv2d(2, 4, 3, tiles=2, padding_mode="mirror"), "padding_mode"),
        (lambda: tnn.TiledConv2d(2, 4, 3, tiles=2, stride=0), "stride"),
    ],
)
def test_bad_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_repr_and_device_dtype():
    m = tnn.TiledConv2d(2, 4, 3, tiles=2, dtype=torch.float64, padding_mode="reflect", padding=1)
    assert m.weight.dtype == torch.float64
    assert "tiles=(2, 2)" in repr(m) and "padding_mode='reflect'" in repr(m)
    assert "input_size=(5,)" in repr(tnn.LocallyConnected1d(1, 1, 2, 5))
