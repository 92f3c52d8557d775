"""Bound primitives (``Primitive.bind``): what a functional op's opening remembers and calls.
``prim.bind(*static)(*leading)`` computes exactly ``prim(*leading, *static)`` — forward,
backward, double backward, on both backends, replayed from tapes on repeated calls — and takes
the primitive's own path whenever something traces or transforms the call."""

from __future__ import annotations

import pytest
import torch
import torch.func as tf
from torch.utils.flop_counter import FlopCounterMode

import torchconv_ext
from torchconv_ext import functional as TF
from torchconv_ext._ops._primitive import Bound
from torchconv_ext._ops.conv import conv_fwd
from torchconv_ext._ops.pool import pool_fwd

BACKENDS = [pytest.param("triton", marks=pytest.mark.interpret), "torch"]

#: ``(primitive, leading operand shapes, static arguments)``: a biased convolution (stride 2,
#: padding 1) and a max pooling (3×3 windows, stride 2, padding 1).
CASES = {
    "conv": (conv_fwd, ((2, 3, 5, 5), (4, 3, 3, 3), (4,)),
             ([2, 2], [1, 1], [1, 1], [1, 1], 1, "zeros")),
    "max_pool": (pool_fwd, ((2, 3, 5, 5),),
                 ("max", [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], False, True, 0)),
}  # fmt: skip


def _operands(shapes, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


def _first(result):
    return result[0] if isinstance(result, tuple) else result


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_a_bound_primitive_computes_what_the_primitive_computes(backend, case):
    prim, shapes, static = CASES[case]
    bound = prim.bind(*static)
    with torchconv_ext.use_backend(backend):
        for seed in range(4):  # the third call on replays the tapes
            leading = _operands(shapes, seed)
            got, want = _first(bound(*leading)), _first(prim(*leading, *static))
            torch.testing.assert_close(got, want, rtol=0, atol=0)
            assert got.stride() == want.stride()
            assert type(got.grad_fn).__name__ == "BoundFunctionBackward"
            gy = torch.randn_like(got).requires_grad_()
            grads = torch.autograd.grad(got, leading, gy, create_graph=True)
            wants = torch.autograd.grad(want, leading, gy, create_graph=True)
            for a, b in zip(grads, wants, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
            # double backward through the bound call's backward (a graph of primitives)
            second = torch.autograd.grad(sum(g.square().sum() for g in grads), gy)
            second_want = torch.autograd.grad(sum(g.square().sum() for g in wants), gy)
            torch.testing.assert_close(second, second_want, rtol=1e-12, atol=1e-12)
        without_grad = [t.detach() for t in _operands(shapes, 9)]
        torch.testing.assert_close(
            _first(bound(*without_grad)), _first(prim(*without_grad, *static)), rtol=0, atol=0
        )


def test_a_bound_call_that_is_traced_or_transformed_takes_the_primitives_path():
    """A dispatch mode sees the registered op; functorch transforms and forward mode get the
    primitive's own rules (batching, jvp), as a plain primitive call does."""
    prim, shapes, static = CASES["conv"]
    bound = prim.bind(*static)
    leading = [t.detach() for t in _operands(shapes, 0)]
    with FlopCounterMode(display=False) as counter:
        bound(*leading)
    assert counter.get_total_flops() > 0
    batched = torch.randn(3, *shapes[0], dtype=torch.float64)
    got = tf.vmap(lambda x: bound(x, *leading[1:]))(batched)
    want = torch.stack([prim(x, *leading[1:], *static) for x in batched])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    tangent = torch.randn_like(leading[0])
    _, got_t = tf.jvp(lambda x: bound(x, *leading[1:]), (leading[0],), (tangent,))
    _, want_t = tf.jvp(lambda x: prim(x, *leading[1:], *static), (leading[0],), (tangent,))
    torch.testing.assert_close(got_t, want_t, rtol=1e-12, atol=1e-12)


def test_an_opening_binds_its_primitive_when_it_is_remembered():
    """A plain call's opening binds the primitive and remembers it (every later call of that
    signature calls it); under autocast, where nothing is remembered, the call is plain (a
    bound primitive made per call would key a new tape every time)."""
    x = torch.randn(1, 2, 6, 6, dtype=torch.float32, requires_grad=True)
    with torchconv_ext.use_backend("torch"):
        first = TF.max_pool2d(x, 3, padding="same")  # (not torch's own arguments: ours)
        second = TF.max_pool2d(x, 3, padding="same")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under_autocast = TF.max_pool2d(x, 3, padding="same")
    assert type(first.grad_fn).__name__ == "BoundFunctionBackward"
    assert type(second.grad_fn).__name__ == "BoundFunctionBackward"
    assert type(under_autocast.grad_fn).__name__ == "EagerFunctionBackward"
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(under_autocast, first, rtol=0, atol=0)
    assert repr(pool_fwd.bind("max")) == "Primitive(torchconv_ext::pool_fwd).bind('max',)"
    assert isinstance(pool_fwd.bind("max"), Bound)
