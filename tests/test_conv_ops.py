"""Registered convolution ops: opcheck, FLOP counting (also on the meta device) and
``torch.compile(fullgraph=True)``."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import torchconv_ext
from tests.references.conv import SmallCNN
from torchconv_ext import nn as tnn


def _sample_op_args(padding_mode="zeros", layout=torch.contiguous_format):
    x = (
        torch.randn(2, 4, 6, 5, dtype=torch.float64)
        .contiguous(memory_format=layout)
        .requires_grad_()
    )
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    geo = ([2, 1], [1, 0], [2, 1], [1, 2], 2, padding_mode)
    return x, w, b, geo


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_opcheck(backend, padding_mode):
    ops = torch.ops.torchconv_ext
    layouts = [torch.contiguous_format, torch.channels_last]
    if backend == "triton":  # the interpreter is slow: one layout per padding mode
        layouts = layouts[:1] if padding_mode == "zeros" else layouts[1:]
    for layout in layouts:
        x, w, b, geo = _sample_op_args(padding_mode, layout)
        with torchconv_ext.use_backend(backend):
            y = ops.conv_fwd(x, w, b, *geo)
            gy = torch.randn_like(y)
            torch.library.opcheck(ops.conv_fwd, (x, w, b, *geo))
            cl = layout == torch.channels_last
            torch.library.opcheck(ops.conv_bwd_input, (gy, w.detach(), None, [6, 5], cl, *geo))
            torch.library.opcheck(ops.conv_bwd_weight, (gy, x.detach(), [3, 2], cl, *geo))
            torch.library.opcheck(ops.conv_bwd_weight_bias, (gy, x.detach(), [3, 2], cl, *geo))


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_flop_counter_counts_like_aten(backend):
    torch.manual_seed(0)
    model = SmallCNN()
    x = torch.randn(1, 3, 4, 4)
    counts = []
    for m in (model, torchconv_ext.convert_model(model)):
        with FlopCounterMode(display=False) as counter, torchconv_ext.use_backend(backend):
            m(x).sum().backward()
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    model = torchconv_ext.convert_model(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, padding_mode="replicate"),
            nn.ReLU(),
            nn.Conv2d(4, 2, 3, stride=2),
        )
    )
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True)
    y_c = compiled(x)
    (gx_c,) = torch.autograd.grad(y_c.sum(), x)
    y_e = model(x)
    (gx_e,) = torch.autograd.grad(y_e.sum(), x)
    torch.testing.assert_close(y_c, y_e)
    torch.testing.assert_close(gx_c, gx_e)


def test_flops_counted_on_meta_device():
    """Lightning's measure_flops builds the model on the meta device: our ops must run there."""
    with torch.device("meta"):
        ours = tnn.Conv2d(3, 4, 3, stride=2, padding="same", padding_mode="reflect")
        ref = nn.Conv2d(3, 4, 3, stride=1, padding="same")
        x = torch.randn(2, 3, 8, 8)
    with FlopCounterMode(display=False) as counter:
        y = ours(x)
    assert y.device.type == "meta" and y.shape == (2, 4, 4, 4)
    with FlopCounterMode(display=False) as reference:
        ref(x)
    assert counter.get_total_flops() == reference.get_total_flops() // 4  # a quarter of the outputs
