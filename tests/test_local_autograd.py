"""Locally connected / tiled convolution derivatives to any order, both backends.

The three primitives (``local_conv_fwd``, ``local_conv_bwd_input``, ``local_conv_bwd_weight``)
are each other's derivatives, so gradcheck and gradgradcheck of each raw op cover every order;
a gradient penalty through the functional op is compared with the float64 definition.
"""

from __future__ import annotations

import pytest
import torch

import torchconv_ext
from tests.references.local import local_inputs, reference_local
from torchconv_ext import functional as TF

OPS = torch.ops.torchconv_ext

# 1-d, 2 tiles over 4 output positions, stride 2, padding (1, 2), 2 groups:
# x (1, 4, 7), w (2, 2, 2, 3), y (1, 2, 4).
_GEOMETRY = ([2], [1], [2], [1], 2)


def _leaf(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


def _raw_calls(padding_mode: str, bias: bool):
    torch.manual_seed(0)
    geometry = (*_GEOMETRY, padding_mode)
    x, w, gy = _leaf(1, 4, 7), _leaf(2, 2, 2, 3), _leaf(1, 2, 4)
    b = _leaf(2, 2) if bias else None
    return {
        "fwd": (OPS.local_conv_fwd, (x, w, b, *geometry)),
        "bwd_input": (OPS.local_conv_bwd_input, (gy, w, [7], False, *geometry)),
        "bwd_weight": (OPS.local_conv_bwd_weight, (gy, x, [2], [3], *geometry)),
    }


# The derivative formulas are backend-independent code, checked per primitive on the fallback;
# on the Triton kernels, the gradient penalty below runs all three primitives at second order.
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("op", ["fwd", "bwd_input", "bwd_weight"])
def test_raw_ops_gradcheck_and_gradgradcheck(op, padding_mode):
    fn, args = _raw_calls(padding_mode, bias=True)[op]
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    rest = args[len(tensors) :]

    def call(*t):
        return fn(*t, *rest)

    # fast_mode checks random projections of the Jacobians: a few calls, not one per element.
    with torchconv_ext.use_backend("torch"):
        assert torch.autograd.gradcheck(call, tensors, fast_mode=True)
        assert torch.autograd.gradgradcheck(call, tensors, fast_mode=True)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_gradient_penalty_matches_definition(backend):
    """``|d loss / d x|²`` differentiated w.r.t. the weight and bias of a tiled convolution."""
    x, w, b = local_inputs(2, 1, 2, 2, (4, 4), (2, 2), (2, 2), 1, seed=3)
    results = []
    for conv in (
        lambda x, w, b: TF.conv2d_tiled(x, w, b, 1, 1, padding_mode="replicate"),
        lambda x, w, b: reference_local(x, w, b, 1, 1, 1, 1, "replicate"),
    ):
        with torchconv_ext.use_backend(backend):
            loss = conv(x, w, b).sin().sum()
            (grad_x,) = torch.autograd.grad(loss, x, create_graph=True)
            results.append(torch.autograd.grad(grad_x.square().sum(), [w, b]))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=1e-8)
