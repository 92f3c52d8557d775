"""Bound primitives (``Primitive.bind``): what a functional op's opening remembers and calls.
``prim.bind(*static)(*leading)`` computes exactly ``prim(*leading, *static)`` — forward,
backward, double backward, on both backends, replayed from tapes on repeated calls — and takes
the primitive's own path whenever something traces or transforms the call."""

from __future__ import annotations

import marshal

import pytest
import torch
import torch.func as tf
from torch.utils.flop_counter import FlopCounterMode

import torchconv_ext
from tests.references.nodes import entry
from torchconv_ext import functional as TF
from torchconv_ext._ops._primitive import PRIMITIVES, Bound
from torchconv_ext._ops._taping import Attributes
from torchconv_ext._ops.conv import conv_bwd_input, conv_fwd
from torchconv_ext._ops.conv_act import (
    conv_act_fwd,
    conv_act_z,
    conv_transpose_act,
    conv_transpose_act_z,
)
from torchconv_ext._ops.local import local_conv_fwd
from torchconv_ext._ops.pool import adaptive_pool_fwd, pool_fwd, pyramid_pool_fwd
from torchconv_ext._ops.upsample import upsample_nearest_fwd

BACKENDS = [pytest.param("triton", marks=pytest.mark.interpret), "torch"]

_GEOMETRY = ([2, 2], [1, 1], [1, 1], [1, 1], 1, "zeros")  # stride 2, padding 1
#: ``(primitive, leading operand shapes, static arguments)``: a biased convolution, the same
#: with a fused ReLU, a biased transposed convolution (the input gradient of the first), the
#: same with a fused sigmoid, the training forms of a convolution with SiLU and of a
#: transposed one with hard sigmoid (``act(z)`` and ``z``), a max pooling (3×3 windows,
#: stride 2, padding 1), an adaptive average pooling to 2×2 and a spatial pyramid pooling
#: (levels 1 and 2), a locally connected convolution (3×3 kernels, one per output position)
#: and a nearest upsampling by 2.
CASES = {
    "conv": (conv_fwd, ((2, 3, 5, 5), (4, 3, 3, 3), (4,)), _GEOMETRY),
    "conv_relu": (conv_act_fwd, ((2, 3, 5, 5), (4, 3, 3, 3), (4,), None),
                  ("relu", 0.0, *_GEOMETRY)),
    "conv_transpose": (conv_bwd_input, ((2, 4, 3, 3), (4, 3, 3, 3), (3,)),
                       ([5, 5], False, *_GEOMETRY)),
    "conv_transpose_sigmoid": (conv_transpose_act, ((2, 4, 3, 3), (4, 3, 3, 3), (3,), None),
                               ("sigmoid", 0.0, [5, 5], False, *_GEOMETRY)),
    "conv_silu_z": (conv_act_z, ((2, 3, 5, 5), (4, 3, 3, 3), (4,), None),
                    ("silu", 0.0, *_GEOMETRY)),
    "conv_transpose_hardsigmoid_z": (conv_transpose_act_z,
                                     ((2, 4, 3, 3), (4, 3, 3, 3), (3,), None),
                                     ("hardsigmoid", 0.0, [5, 5], False, *_GEOMETRY)),
    "max_pool": (pool_fwd, ((2, 3, 5, 5),),
                 ("max", [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], False, True, 0)),
    "adaptive_pool": (adaptive_pool_fwd, ((2, 3, 5, 5),), ("avg", [2, 2])),
    "pyramid_pool": (pyramid_pool_fwd, ((2, 3, 5, 5),), ("max", [1, 2])),
    "local_conv": (local_conv_fwd, ((2, 3, 5, 5), (3, 3, 4, 3, 3, 3), (3, 3, 4)),
                   ((1, 1), (0, 0), (0, 0), (1, 1), 1, "zeros")),
    "upsample": (upsample_nearest_fwd, ((2, 3, 5, 5),), ((10, 10), (2.0, 2.0), False)),
}  # fmt: skip


def _operands(shapes, seed: int) -> list[torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    return [
        None if s is None else torch.randn(s, generator=g, dtype=torch.float64).requires_grad_()
        for s in shapes
    ]


def _tensors(operands: list) -> list[torch.Tensor]:
    return [t for t in operands if t is not None]


def _first(result):
    return result[0] if isinstance(result, tuple) else result


def _check_derivatives(got: torch.Tensor, want: torch.Tensor, operands: list) -> None:
    """``got``'s gradients with respect to ``operands`` equal ``want``'s, and so do their own
    gradients (double backward through the backward: a graph of primitives)."""
    gy = torch.randn_like(got).requires_grad_()
    grads = torch.autograd.grad(got, operands, gy, create_graph=True)
    wants = torch.autograd.grad(want, operands, gy, create_graph=True)
    for a, b in zip(grads, wants, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    second = torch.autograd.grad(sum(g.square().sum() for g in grads), gy)
    second_want = torch.autograd.grad(sum(g.square().sum() for g in wants), gy)
    torch.testing.assert_close(second, second_want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_a_bound_primitive_computes_what_the_primitive_computes(backend, case):
    prim, shapes, static = CASES[case]
    bound = prim.bind(*static)
    with torchconv_ext.use_backend(backend):
        for seed in range(3):  # the third call replays the tapes
            leading = _operands(shapes, seed)
            got, want = _first(bound(*leading)), _first(prim(*leading, *static))
            torch.testing.assert_close(got, want, rtol=0, atol=0)
            assert got.stride() == want.stride()
            assert entry(got.grad_fn) == "bound"
            _check_derivatives(got, want, _tensors(leading))
        without_grad = [t if t is None else t.detach() for t in _operands(shapes, 9)]
        torch.testing.assert_close(
            _first(bound(*without_grad)), _first(prim(*without_grad, *static)), rtol=0, atol=0
        )


#: Activated convolutions that run decomposed while autograd records (the activation's
#: derivative needs the pre-activation): their training form, which stores ``z`` too.
DECOMPOSED = {
    "conv_silu": (conv_act_fwd, ((2, 3, 5, 5), (4, 3, 3, 3), (4,), None),
                  ("silu", 0.0, *_GEOMETRY)),
    "conv_transpose_gelu": (conv_transpose_act, ((2, 4, 3, 3), (4, 3, 3, 3), (3,), None),
                            ("gelu", 0.0, [5, 5], False, *_GEOMETRY)),
}  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(DECOMPOSED))
def test_a_bound_decomposition_computes_what_the_primitive_decomposes(backend, case):
    """Recorded by autograd, a bound activated convolution runs its decomposition on its bound
    training form (made once per bound object): the same result, gradients and second
    derivatives as the primitive's own decomposition, on repeated calls (replayed tapes)."""
    prim, shapes, static = DECOMPOSED[case]
    bound = prim.bind(*static)
    with torchconv_ext.use_backend(backend):
        for seed in range(3):
            leading = _operands(shapes, seed)
            got, want = bound(*leading), prim(*leading, *static)
            torch.testing.assert_close(got, want, rtol=0, atol=0)
            assert got.stride() == want.stride()
            assert entry(got.grad_fn) == "bound"
            assert entry(want.grad_fn) == "eager"
            assert type(got.grad_fn).__name__.endswith("ActZBackward")
            if seed == 0:
                decomposition = bound.decomposition
                assert callable(decomposition)
            assert bound.decomposition is decomposition
            _check_derivatives(got, want, _tensors(leading))
    # An activation read off the output has no decomposition: the fused primitive runs.
    relu = CASES["conv_relu"][0].bind(*CASES["conv_relu"][2])
    relu(*_operands(CASES["conv_relu"][1], 0))
    assert relu.decomposition is None


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
    assert entry(first.grad_fn) == entry(second.grad_fn) == "bound"
    assert entry(under_autocast.grad_fn) == "eager"
    # (both named after their op, as torch's nodes are)
    assert type(first.grad_fn).__name__ == type(under_autocast.grad_fn).__name__ == "PoolBackward"
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(under_autocast, first, rtol=0, atol=0)
    assert repr(pool_fwd.bind("max")) == "Primitive(torchconv_ext::pool_fwd).bind('max',)"
    assert isinstance(pool_fwd.bind("max"), Bound)


@pytest.mark.interpret
@pytest.mark.parametrize("case", list(CASES))
def test_a_bound_calls_backward_makes_its_attributes_a_key_once(case):
    """A primitive with static attributes: the first backward of a bound call outside a graph
    makes the ctx's attributes a tape key and keeps it on the Bound; every later backward reuses
    that key (the same object) and is replayed from one tape, with the primitive's gradients."""
    prim, shapes, static = CASES[case]
    assert prim.static_attributes
    bound = prim.bind(*static)
    with torchconv_ext.use_backend("triton"):
        for seed in range(4):  # the third backward on replays the tape
            leading = _operands(shapes, seed)
            got, want = _first(bound(*leading)), _first(prim(*leading, *static))
            gy = torch.randn_like(got)
            grads = torch.autograd.grad(got, _tensors(leading), gy)
            wants = torch.autograd.grad(want, _tensors(leading), gy)
            for a, b in zip(grads, wants, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
            if seed == 0:
                key = bound.attributes
                assert type(key) is Attributes
            assert bound.attributes is key


def _attributes(output: torch.Tensor) -> dict:
    """What the primitive's ``setup_context`` put on the ctx of ``output``, tensors aside."""
    ctx = output.grad_fn
    return {
        name: v
        for name, v in vars(ctx).items()
        if not isinstance(v, torch.Tensor) and name not in ("prim", "bound", "needs_input_grad")
    }


def _laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t`` (4-d) contiguous, channels-last, or a strided view of a wider tensor."""
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t.contiguous()


@pytest.mark.parametrize("case", list(CASES))
def test_static_attributes_depend_on_no_layout_or_value(case):
    """``static_attributes`` holds for the primitives that declare it: operands of the sizes,
    dtypes and devices a bound object fixes, with the same non-tensor arguments, give the same
    ctx attributes (values and types) whatever their layouts and values, on both backends."""
    prim, shapes, static = CASES[case]
    seen = []
    for backend in ("torch", "triton"):
        for seed, layout in enumerate(("contiguous", "channels_last", "strided")):
            operands = []
            for t in _operands(shapes, seed):
                if t is not None:
                    t = t.detach()
                    t = (_laid_out(t, layout) if t.dim() == 4 else t).requires_grad_()
                operands.append(t)
            with torchconv_ext.use_backend(backend):
                attributes = _attributes(_first(prim(*operands, *static)))
            seen.append(marshal.dumps(attributes, 2))  # (tells 1, 1.0 and True apart)
    assert len(set(seen)) == 1, seen


def test_every_primitive_declaring_static_attributes_is_checked():
    """Each primitive that declares ``static_attributes`` is a case of the check above."""
    declared = {name for name, prim in PRIMITIVES.items() if prim.static_attributes}
    assert declared == {prim.name for prim, _, _ in CASES.values()}
