"""Registered transposed convolution ops: opcheck, FLOP counting and ``torch.compile`` of a
decoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchconv_ext


def _sample_op_args():
    """A grouped, dilated case: input (1, 2, 4, 4), weight (2, 2, 3, 2) for 2 groups, bias (4)."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(1, 2, 4, 4), (2, 2, 3, 2), (4,)]
    return [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in shapes]


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_opcheck(backend):
    ops = torch.ops.torchconv_ext
    x, w, b = _sample_op_args()
    geo = ([2, 2], [1, 1], [1, 0], [2, 1], 2, "zeros")
    with torchconv_ext.use_backend(backend):
        # The transposed convolution and its gradients are the convolution primitives.
        y = ops.conv_bwd_input(x, w, b, [9, 7], False, *geo)
        assert y.shape == (1, 4, 9, 7)
        gy = torch.randn_like(y)
        torch.library.opcheck(ops.conv_bwd_input, (x, w, b, [9, 7], False, *geo))
        torch.library.opcheck(ops.conv_fwd, (gy, w.detach(), None, *geo))
        torch.library.opcheck(ops.conv_bwd_weight, (x.detach(), gy, [3, 2], False, *geo))


def test_flops_and_compile_of_a_decoder():
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    decoder = nn.Sequential(
        nn.ConvTranspose2d(8, 4, 2, stride=2),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1),
    )
    ours = torchconv_ext.convert_model(decoder)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    counts = []
    for m in (decoder, ours):
        with FlopCounterMode(display=False) as counter:
            m(x).sum().backward()
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0
    compiled = torch.compile(ours, fullgraph=True)
    y = compiled(x)
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    y_e = ours(x)
    (gx_e,) = torch.autograd.grad(y_e.square().sum(), x)
    torch.testing.assert_close(y, y_e)
    torch.testing.assert_close(gx, gx_e)
