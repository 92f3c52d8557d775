"""Gradients and tangents batched by torch's legacy vmap, on both backends, in float64.

``torch.autograd.grad(..., is_grads_batched=True)`` — what ``torch.autograd.functional``'s
``jacobian`` and ``hessian`` use with ``vectorize=True``, and ``gradcheck`` with
``check_batched_grad`` — runs each backward once on batched gradients: tensors without storage,
unwrapped sample by sample only where the dispatcher loops over them (our registered ops). The
batched result must be the stack of one gradient per row, and so must its own gradients
(``create_graph``). ``gradcheck``'s ``check_batched_forward_grad`` batches forward-mode
tangents the same way.
"""

from __future__ import annotations

import pytest
import torch

import torchconv_ext
from torchconv_ext import functional as TF

#: name -> (operand shapes, call): the first operand is the input.
CALLS = {
    "conv2d": ([(1, 16, 4, 4), (8, 16, 3, 3), (8,)], lambda x, w, b: TF.conv2d(x, w, b, padding=1)),
    "conv2d_groups": ([(1, 8, 5, 5), (8, 2, 3, 3)], lambda x, w: TF.conv2d(x, w, groups=4)),
    "conv2d_relu": (
        [(1, 16, 4, 4), (8, 16, 3, 3), (8,)],
        lambda x, w, b: TF.conv2d(x, w, b, padding=1, activation="relu"),
    ),
    "conv1d_same": ([(2, 4, 7), (4, 4, 3)], lambda x, w: TF.conv1d(x, w, stride=2, padding="same")),
    "conv_transpose2d": (
        [(1, 16, 3, 3), (16, 8, 2, 2)],
        lambda x, w: TF.conv_transpose2d(x, w, stride=2),
    ),
    "conv_transpose2d_summed": (  # (an expanded incoming gradient, which tells no layout)
        [(2, 3, 3, 3), (3, 4, 3, 3)],
        lambda x, w: TF.conv_transpose2d(x, w, stride=2).sum(dim=1),
    ),
    "conv2d_local": ([(1, 2, 4, 4), (2, 2, 3, 2, 3, 3)], lambda x, w: TF.conv2d_local(x, w)),
    "max_pool2d": ([(2, 3, 6, 6)], lambda x: TF.max_pool2d(x, 3, 2, 1)),
    "avg_pool2d": ([(2, 3, 6, 6)], lambda x: TF.avg_pool2d(x, 3, 2, 1, ceil_mode=True)),
    "adaptive_max_pool2d": ([(1, 3, 5, 7)], lambda x: TF.adaptive_max_pool2d(x, (2, 3))),
    "interpolate": ([(1, 3, 3, 4)], lambda x: TF.interpolate(x, scale_factor=2)),
    "maxout": ([(2, 6, 3, 3)], lambda x: TF.maxout(x, 2)),
}


def _operands(shapes: list, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_batched_gradients_are_the_stacked_gradients_of_each_row(name, backend):
    shapes, call = CALLS[name]
    operands = _operands(shapes)
    with torchconv_ext.use_backend(backend):
        out = call(*operands)
        rows = torch.randn(2, *out.shape, generator=torch.Generator().manual_seed(1),
                           dtype=out.dtype)  # fmt: skip
        batched = torch.autograd.grad(out, operands, rows, is_grads_batched=True,
                                      create_graph=True)  # fmt: skip
        looped = [
            torch.autograd.grad(out, operands, row, retain_graph=True, create_graph=True)
            for row in rows
        ]
        stacked = [torch.stack(grads) for grads in zip(*looped)]
        for got, expected in zip(batched, stacked):
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
        # The batched gradients' own gradients (what hessian(vectorize=True) takes), where
        # they depend on the operands (an upsampling's or a maxout's input gradient does not)
        assert [g.requires_grad for g in batched] == [g.requires_grad for g in stacked]
        if not any(g.requires_grad for g in batched):
            return
        weights = [torch.randn(g.shape, dtype=g.dtype) for g in batched]
        of_batched = torch.autograd.grad(
            sum((g * v).sum() for g, v in zip(batched, weights)), operands, retain_graph=True,
            allow_unused=True,
        )  # fmt: skip
        of_stacked = torch.autograd.grad(
            sum((g * v).sum() for g, v in zip(stacked, weights)), operands, allow_unused=True
        )
    for got, expected in zip(of_batched, of_stacked):
        if expected is None:  # (a pooling's gradient is linear in its incoming gradient)
            assert got is None or not got.any()
        else:
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_vectorized_jacobian_and_hessian_agree_with_torch(backend):
    x, w = _operands([(1, 2, 4, 4), (1, 2, 2, 2)])

    def ours(x, w):
        return TF.max_pool2d(TF.conv2d(x, w, padding=1).tanh(), 2).sum(dim=(2, 3))

    def theirs(x, w):
        return torch.nn.functional.max_pool2d(
            torch.nn.functional.conv2d(x, w, padding=1).tanh(), 2
        ).sum(dim=(2, 3))

    with torchconv_ext.use_backend(backend):
        jacobian = torch.autograd.functional.jacobian(ours, (x, w), vectorize=True)
        hessian = torch.autograd.functional.hessian(lambda w: ours(x, w).sum(), w, vectorize=True)
    for got, expected in zip(jacobian, torch.autograd.functional.jacobian(theirs, (x, w))):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    expected = torch.autograd.functional.hessian(lambda w: theirs(x, w).sum(), w)
    torch.testing.assert_close(hessian, expected, rtol=1e-10, atol=1e-12)


#: name -> (operand shapes, call), tiny: gradcheck differentiates every element numerically.
TINY = {
    "conv2d": ([(1, 1, 3, 3), (1, 1, 2, 2), (1,)], lambda x, w, b: TF.conv2d(x, w, b)),
    "conv2d_silu": (
        [(1, 1, 3, 3), (1, 1, 2, 2)],
        lambda x, w: TF.conv2d(x, w, padding=1, activation="silu"),
    ),
    "conv_transpose2d": ([(1, 1, 2, 2), (1, 1, 2, 2)], lambda x, w: TF.conv_transpose2d(x, w)),
    "conv1d_local": ([(1, 1, 3), (2, 1, 1, 2)], lambda x, w: TF.conv1d_local(x, w)),
    # (padding="same": ours on the fallback too; torch's own max pooling fails this gradcheck)
    "max_pool2d": ([(1, 1, 4, 4)], lambda x: TF.max_pool2d(x, 2, 1, padding="same")),
    "avg_pool1d": ([(1, 2, 5)], lambda x: TF.avg_pool1d(x, 3, 2, 1)),
    "interpolate": ([(1, 1, 2, 3)], lambda x: TF.interpolate(x, size=(3, 5))),
    "maxout": ([(1, 4, 2, 2)], lambda x: TF.maxout(x, 2)),
}


#: The calls whose gradcheck also takes second derivatives batched and forward over reverse
#: (the convolutions' cost tens of seconds under the interpreter; their batched gradients'
#: own gradients are compared above).
BATCHED_SECOND_ORDER = {"avg_pool1d", "conv1d_local", "interpolate", "maxout"}


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("name", sorted(TINY))
def test_gradcheck_with_every_check(name, backend):
    shapes, call = TINY[name]
    with torchconv_ext.use_backend(backend):
        assert torch.autograd.gradcheck(
            call, tuple(_operands(shapes)), check_batched_grad=True, check_forward_ad=True,
            check_batched_forward_grad=True, check_undefined_grad=True,
        )  # fmt: skip
        if name in BATCHED_SECOND_ORDER:
            assert torch.autograd.gradgradcheck(
                call, tuple(_operands(shapes)), check_batched_grad=True, check_fwd_over_rev=True,
            )  # fmt: skip
