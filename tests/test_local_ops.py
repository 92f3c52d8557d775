"""Registered locally connected / tiled convolution ops: opcheck, FLOP counting (also on the
meta device) and ``torch.compile(fullgraph=True)`` of a network with maxout."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import torchconv_ext
from torchconv_ext import nn as tnn

OPS = torch.ops.torchconv_ext
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    """Schema, fake tensors (sizes and strides of the real results) and the autograd
    registration; the Triton path is checked against its fakes, the rest is the same code."""
    torch.manual_seed(0)
    checks = {} if backend == "torch" else {"test_utils": ("test_schema", "test_faketensor")}
    x = torch.randn(2, 4, 4, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(2, 1, 2, 2, 2, 2, dtype=torch.float64)  # 2 x 1 tiles, 2 groups
    b = torch.randn(2, 1, 2, dtype=torch.float64)
    geo = ([1, 2], [1, 0], [0, 1], [1, 1], 2, "reflect")
    with torchconv_ext.use_backend(backend):
        y = OPS.local_conv_fwd(x, w, b, *geo)
        gy = torch.randn_like(y)
        torch.library.opcheck(OPS.local_conv_fwd, (x.requires_grad_(), w, b, *geo), **checks)
        torch.library.opcheck(OPS.local_conv_bwd_input, (gy, w, [4, 3], True, *geo), **checks)
        torch.library.opcheck(
            OPS.local_conv_bwd_weight, (gy, x.detach(), [2, 1], [2, 2], *geo), **checks
        )


def test_flops_counted_on_meta_device():
    """2 FLOPs per multiply-add, each output position's kernel over its window; the backward
    counts twice that (both gradients). Lightning's measure_flops runs on the meta device."""
    with torch.device("meta"):
        model = nn.Sequential(tnn.LocallyConnected2d(3, 4, 3, (8, 8), stride=2), tnn.Maxout(2))
        x = torch.randn(2, 3, 8, 8)
    with FlopCounterMode(display=False) as counter:
        y = model(x)
    assert y.device.type == "meta" and y.shape == (2, 2, 3, 3)
    assert counter.get_total_flops() == 2 * (2 * 4 * 3 * 3) * (3 * 3 * 3)
    with FlopCounterMode(display=False) as counter:
        model(x.requires_grad_()).sum().backward()
    assert counter.get_total_flops() == 3 * 2 * (2 * 4 * 3 * 3) * (3 * 3 * 3)


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    model = nn.Sequential(
        tnn.TiledConv2d(3, 4, 3, tiles=2, padding=1, padding_mode="replicate"),
        tnn.Maxout(2),
        tnn.LocallyConnected2d(2, 2, 3, (6, 6), stride=2),
    )
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True)
    y_c = compiled(x)
    (gx_c,) = torch.autograd.grad(y_c.sum(), x)
    y_e = model(x)
    (gx_e,) = torch.autograd.grad(y_e.sum(), x)
    torch.testing.assert_close(y_c, y_e)
    torch.testing.assert_close(gx_c, gx_e)
