"""``Maxout`` and ``MaxoutConv{1,2,3}d`` (for now the composition convolution → maxout)."""

from __future__ import annotations

import pytest
import torch

import torchconv_ext
from tests.references.conv import reference_conv
from tests.references.maxout import reference_maxout
from torchconv_ext import nn as tnn


def test_maxout_module():
    m = tnn.Maxout(3)
    x = torch.randn(2, 9, 4)
    torch.testing.assert_close(m(x), reference_maxout(x, 3, 1)[0])
    assert tnn.Maxout(2, dim=0)(torch.randn(4, 5)).shape == (2, 5)
    assert repr(m) == "Maxout(pieces=3, dim=1)" and not list(m.parameters())


# The convolution kernels are tested on their own: the interpreter runs one rank here.
@pytest.mark.parametrize(
    "nd,backend",
    [
        (1, "torch"),
        (2, "torch"),
        (3, "torch"),
        pytest.param(2, "triton", marks=pytest.mark.interpret),
    ],
)
def test_maxout_conv_is_conv_then_maxout(nd, backend):
    torch.manual_seed(nd)
    cls = {1: tnn.MaxoutConv1d, 2: tnn.MaxoutConv2d, 3: tnn.MaxoutConv3d}[nd]
    m = cls(4, 2, 2, pieces=3, padding=1, groups=2, padding_mode="reflect", dtype=torch.float64)
    assert m.conv.weight.shape == (6, 2, *[2] * nd)
    assert list(m.state_dict()) == ["conv.weight", "conv.bias"]
    x = torch.randn(2, 4, *[3] * nd, dtype=torch.float64, requires_grad=True)
    with torchconv_ext.use_backend(backend):
        y = m(x)
        (gx,) = torch.autograd.grad(y.sum(), x)
        assert m(x[0]).shape == y.shape[1:]  # unbatched: the channel dim counted from the end
    conv = reference_conv(x, m.conv.weight, m.conv.bias, 1, 1, 1, 2, "reflect")
    ref = reference_maxout(conv, 3, 1)[0]
    (gref,) = torch.autograd.grad(ref.sum(), x)
    assert y.shape == (2, 2, *[4] * nd)
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(gx, gref, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize(
    "make,error",
    [
        (lambda: tnn.Maxout(0), ValueError),
        (lambda: tnn.Maxout(1.5), TypeError),
        (lambda: tnn.MaxoutConv2d(4, 3, 3, pieces=2, groups=2), ValueError),
        (lambda: tnn.MaxoutConv2d(4, 2, 3, pieces=0), ValueError),
    ],
)
def test_bad_constructor_arguments(make, error):
    with pytest.raises(error):
        make()
