"""The activated convolutions: ``torchconv_ext::conv_act_fwd``, ``act(conv(x, w) + b)``, and
``torchconv_ext::conv_transpose_act``, ``act(conv_transpose(x, w) + b)``; and their training
forms ``conv_act_z`` and ``conv_transpose_act_z``, which return ``(act(z), z)``.

On the Triton path the activation runs in the kernels' epilogue (one pass over the output, no
pre-activation tensor); the fallback is ATen's convolution, then torch's activation. ``kind``
and ``alpha`` are the activation's (``_activation``), ``act_weight`` the PReLU weight (``None``
for the other kinds); the arguments after them are those of the convolution underneath
(:class:`Linear`: ``conv_fwd``'s geometry, or ``conv_bwd_input``'s output size, layout and
geometry — a transposed convolution is the input gradient of its adjoint convolution).

Derivatives go through that convolution's own primitives: with ``z`` the pre-activation,
``∂y = act'(z) · ∂z``, and ``z``'s gradients are the convolution's. ReLU, leaky ReLU with a
slope ≥ 0, ReLU6 and sigmoid need no ``z``: their derivative is read off the saved output, so
the fused op serves training as it serves inference — an eager backward in one pass of our
kernel (``triton_kernels.activation_grad``), which writes ``∂z`` in the layout the gradient
GEMMs read (torch's backward op, then their conversion, would take two). The other kinds
(SiLU, GELU, Mish, ELU, hard swish, hard sigmoid, PReLU, leaky ReLU with a negative slope)
need ``z``: where derivatives may be taken (autograd records the call, forward mode, a
``grad`` or ``jvp`` transform) such a call runs the training form instead, whose epilogue
stores ``z`` beside ``act(z)`` — one kernel and one autograd node, where the convolution and
then torch's activation took two of each and read ``z`` once more; recomputing ``z`` in the
backward would cost a whole convolution. Its backward is torch's backward op of the
activation (one pass), then the convolution's gradients; ``z`` is an output of its own, so
that a graph of the backward, which reads ``z``, is differentiated through it again. A direct
call of the registered ``conv_act_fwd`` with gradients still **recomputes** ``z`` in its
backward, differentiably, so derivatives of any order come out right.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

from .. import _activation as act
from .._backend import kernels, use_triton
from .._conv_args import ConvGeometry
from .._fallback import conv as fallback
from .._memory import empty_in_layout, is_channels_last, to_layout
from ._primitive import Primitive
from ._taping import PLAIN_TENSORS
from .conv import (
    conv_bwd_input,
    conv_fwd,
    fold_batch,
    forward_channels_last,
    forward_grads,
    forward_grads_read_channels_last,
    transposed_grads,
    transposed_grads_read_channels_last,
    triton_forward,
    triton_transposed,
    unfold_batch,
)

# (Each primitive's implementation spells its arguments out: the registered op's schema is
# read from its annotations.)


def _impl(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    act_weight: Tensor | None,
    kind: str,
    alpha: float,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> Tensor:
    """``act(conv_fwd(input, weight, bias, ...))`` in ATen's layout."""
    static = (stride, padding, padding_end, dilation, groups, padding_mode)
    return _activated_conv(input, weight, bias, act_weight, kind, alpha, static, False)


def _impl_z(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    act_weight: Tensor | None,
    kind: str,
    alpha: float,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> tuple[Tensor, Tensor]:
    """``(act(z), z)`` with ``z = conv_fwd(input, weight, bias, ...)``, each in the layout
    torch's convolution, then its activation, give."""
    static = (stride, padding, padding_end, dilation, groups, padding_mode)
    return _activated_conv(input, weight, bias, act_weight, kind, alpha, static, True)


def _activated_conv(input, weight, bias, act_weight, kind, alpha, static, with_z: bool) -> Any:
    """``act(z)``, ``z = conv_fwd(input, weight, bias, *static)``, or with ``with_z`` ``(act(z),
    z)``: on the Triton path stored by the kernels' epilogue, on the fallback ATen's
    convolution, then torch's activation."""
    g = ConvGeometry.from_args(*static)
    layout = forward_channels_last(input, weight, g.padding_mode)
    if not use_triton(input):
        z = to_layout(fallback.conv_forward(input, weight, bias, g), layout)
        return _unfused(z, kind, alpha, act_weight, with_z)
    out = triton_forward(
        input, weight, bias, g, layout, with_z, activation=kind, alpha=alpha,
        act_weight=act_weight,
    )  # fmt: skip
    return (_as_activations_result(out[0]), out[1]) if with_z else _as_activations_result(out)


def _transpose_impl(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    act_weight: Tensor | None,
    kind: str,
    alpha: float,
    output_size: list[int],
    channels_last: bool,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> Tensor:
    """``act(conv_bwd_input(input, weight, bias, output_size, channels_last, ...))``: a
    transposed convolution of ``input``, activated."""
    static = (stride, padding, padding_end, dilation, groups, padding_mode)
    return _activated_transposed(
        input, weight, bias, act_weight, kind, alpha, output_size, channels_last, static, False
    )


def _transpose_impl_z(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    act_weight: Tensor | None,
    kind: str,
    alpha: float,
    output_size: list[int],
    channels_last: bool,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> tuple[Tensor, Tensor]:
    """``(act(z), z)`` with ``z`` the transposed convolution ``conv_bwd_input(input, weight,
    bias, output_size, channels_last, ...)``."""
    static = (stride, padding, padding_end, dilation, groups, padding_mode)
    return _activated_transposed(
        input, weight, bias, act_weight, kind, alpha, output_size, channels_last, static, True
    )


def _activated_transposed(
    input, weight, bias, act_weight, kind, alpha, output_size, channels_last, static,
    with_z: bool,
) -> Any:  # fmt: skip
    """:func:`_activated_conv` of the transposed convolution ``conv_bwd_input``."""
    g = ConvGeometry.from_args(*static)
    if not use_triton(input):
        z = conv_bwd_input.impl(input, weight, bias, output_size, channels_last, *g.as_args())
        return _unfused(z, kind, alpha, act_weight, with_z)
    out = triton_transposed(
        input, weight, bias, output_size, channels_last, g, with_z, activation=kind,
        alpha=alpha, act_weight=act_weight,
    )  # fmt: skip
    return (_as_activations_result(out[0]), out[1]) if with_z else _as_activations_result(out)


def _unfused(z: Tensor, kind: str, alpha: float, act_weight, with_z: bool) -> Any:
    """The fallback's ``act(z)`` (with ``with_z``, ``(act(z), z)``): torch's activation of
    the convolution's result ``z``, which keeps its layout."""
    y = act.apply(z, kind, alpha, act_weight)
    return (y, z) if with_z else y


def _as_activations_result(out: Tensor) -> Tensor:
    """``out`` with the strides torch's activation gives the convolution's result: a channels-
    last result of one channel is contiguous too, and torch's elementwise ops read its size-1
    channel dim as in no order, so theirs has contiguous strides (ATen's layout rule reads the
    difference in the next op). The implementations and the fake both give it."""
    return to_layout(out, False, exact=True) if out.shape[1] == 1 else out


# --------------------------------------------------------------------------------------------
# Derivatives, for either convolution underneath
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Linear:
    """The convolution under an activation: ``z = op(input, weight, bias, *static)``;
    ``grads(input, weight, needs, static, grad_z)``, the gradients of its input, weight and bias
    (``None`` where ``needs`` says no); ``reads_channels_last(grad_z, input, weight, static)``,
    whether those read ``grad_z`` through a channels-last copy."""

    op: Primitive
    grads: Callable[..., tuple]
    reads_channels_last: Callable[..., bool]


_CONV = Linear(
    conv_fwd,
    lambda *args: forward_grads(*args)[:3],
    lambda grad, input, weight, static: forward_grads_read_channels_last(
        grad, input, weight, static
    ),
)
_TRANSPOSED = Linear(
    conv_bwd_input,
    transposed_grads,
    lambda grad, input, weight, static: transposed_grads_read_channels_last(grad, weight, static),
)


def _activation_grad(
    grad: Tensor,
    source: Tensor,
    kind: str,
    alpha: float,
    channels_last: Callable[[], bool],
    of_output: bool,
    act_weight: Tensor | None = None,
) -> Tensor:
    """``grad · act'(z)`` read off ``source``: the activation's output where ``of_output``, else
    ``z`` itself (``act_weight``: PReLU's weight). A backward autograd runs without recording,
    on plain tensors on the Triton path (its tape's), takes one pass of our kernel, which
    writes it channels-last where ``grad`` is or the gradient kernels read it so
    (``channels_last()``) — torch's backward op and their conversion would take two; anywhere
    else (a graph of the backward, transforms, modes, tracing), and for PReLU, torch's backward
    op, which is differentiable."""
    if (
        torch.is_grad_enabled()
        or kind == "prelu"
        or type(grad) not in PLAIN_TENSORS
        or type(source) not in PLAIN_TENSORS
        or torch._C._are_functorch_transforms_active()
        or torch._C._functorch.is_legacy_batchedtensor(grad)
        or not use_triton(grad)
        # (a mode, but for the op guard of a tape that records this backward)
        or (torch._C._len_torch_dispatch_stack() and not kernels().recording())
        or not kernels().activation_grad_launchable(grad, source)
    ):
        if of_output:
            return act.backward_from_output(grad, source, kind, alpha)
        return act.backward(grad, source, kind, alpha, act_weight)
    # (else in the incoming gradient's layout: the kernels that read either take it as it is)
    layout = is_channels_last(grad) or channels_last()
    grad_z = empty_in_layout(grad.shape, grad, layout, poison=True)
    k = kernels()
    launch = k.activation_grad_from_output if of_output else k.activation_grad_from_input
    launch(grad, source, grad_z, activation=kind, alpha=alpha)
    return grad_z


def _with_z(name: str, impl: Callable[..., tuple], linear: Linear) -> Primitive:
    """The primitive ``name``: ``impl``, ``(act(z), z)`` with ``z = linear.op(...)``, and its
    derivatives — what an activated convolution whose derivative needs ``z`` computes while
    its derivatives may be taken (the module doc). ``z`` is an output of its own, so that a
    graph of the backward, which reads ``z``, differentiates through it (its gradient, ``None``
    unless such a graph is differentiated, adds to ``act'(z) · ∂y``)."""

    def fake(input, weight, bias, act_weight, kind, alpha, *static):
        z = linear.op.fake(input, weight, bias, *static)
        return _as_activations_result(torch.empty_like(z)), z

    def setup(ctx, inputs, output):
        input, weight, _bias, act_weight, kind, alpha, *static = inputs
        ctx.kind, ctx.alpha, ctx.static = kind, alpha, static
        ctx.save_for_backward(input, weight, output[1], act_weight)
        # (``z``'s gradient is None, not a tensor of zeros, when nothing reads ``z``)
        ctx.set_materialize_grads(False)

    def backward(ctx, grad, grad_z):
        needs = ctx.needs_input_grad
        input, weight, z, act_weight = ctx.saved_tensors
        grad_act_weight = None
        if grad is not None:
            if needs[3]:  # PReLU's weight: both of its gradients in one pass
                grad, grad_act_weight = act.prelu_backward(grad, z, act_weight)
            else:
                grad = _activation_grad(
                    grad, z, ctx.kind, ctx.alpha,
                    lambda: linear.reads_channels_last(grad, input, weight, ctx.static), False,
                    act_weight,
                )  # fmt: skip
            grad_z = grad if grad_z is None else grad + grad_z
        grads = (None, None, None)
        if grad_z is not None and any(needs[:3]):
            grads = linear.grads(input, weight, needs[:3], ctx.static, grad_z)
        return *grads, grad_act_weight, None, None, *[None] * len(ctx.static)

    def jvp(ctx, *tangents):
        return _tangents(linear, ctx.primals, *tangents[:4])

    def vmap(info, in_dims, *args):
        return _batched(primitive, info, in_dims, args)

    primitive = Primitive(
        name, impl, fake=fake, setup_context=setup, backward=backward, jvp=jvp, vmap=vmap,
        static_attributes=True,
    )  # fmt: skip
    return primitive


def _tangents(linear: Linear, primals: tuple, t_input, t_weight, t_bias, t_act_weight) -> tuple:
    """``(ẏ, ż)`` of ``y = act(z)``, ``z = linear.op(input, weight, bias, *static)`` at
    ``primals`` (``z`` recomputed: forward mode saves nothing)."""
    input, weight, bias, act_weight, kind, alpha, *static = primals
    z = linear.op(input, weight, bias, *static)
    t_z = linear.op.jvp(SimpleNamespace(primals=(input, weight, bias, *static)),
                        t_input, t_weight, t_bias)  # fmt: skip
    if t_z is None:  # (zeros, not act'(z) · 0: that is NaN where act'(z) is not finite)
        t_z, t_y = torch.zeros_like(z), torch.zeros_like(z)
    else:
        t_y = act.backward(t_z, z, kind, alpha, act_weight)
    if t_act_weight is not None:
        t_y = t_y + torch.where(z > 0, z.new_zeros(()), z) * act.per_channel(t_act_weight, z)
    return t_y, t_z


def _batched(primitive: Primitive, info, in_dims: tuple, args: tuple) -> tuple:
    """The batching rule of an activated convolution (its result one tensor, or the training
    form's pair): a batch of inputs folded into N, batched parameters one call per element
    (the rest is never batched)."""
    input, weight, bias, act_weight, kind, alpha, *static = args
    tensors, dims = (input, weight, bias, act_weight), in_dims[:4]
    if all(d is None for d in dims[1:]):
        out = primitive(fold_batch(input, dims[0], 0), weight, bias, act_weight, kind, alpha,
                        *static)  # fmt: skip
        if type(out) is tuple:
            return tuple(unfold_batch(t, 0, info.batch_size) for t in out), (0,) * len(out)
        return unfold_batch(out, 0, info.batch_size), 0
    results = []
    for i in range(info.batch_size):
        sliced = [t if d is None else t.select(d, i) for t, d in zip(tensors, dims)]
        results.append(primitive(*sliced, kind, alpha, *static))
    if type(results[0]) is tuple:
        return tuple(torch.stack(parts) for parts in zip(*results)), (0,) * len(results[0])
    return torch.stack(results), 0


def _activated(
    name: str, impl: Callable[..., Tensor], linear: Linear, with_z: Primitive
) -> Primitive:
    """The primitive ``name``: ``impl``, ``act(linear.op(...))``, and its derivatives; where
    they need ``z``, calls whose derivatives may be taken run ``with_z`` instead
    (:func:`_with_z`: ``z`` saved, not recomputed)."""

    def fake(input, weight, bias, act_weight, kind, alpha, *static):
        return _as_activations_result(linear.op.fake(input, weight, bias, *static))

    def setup(ctx, inputs, output):
        input, weight, bias, act_weight, kind, alpha, *static = inputs
        ctx.kind, ctx.alpha, ctx.static = kind, alpha, static
        if act.from_output(kind, alpha):
            ctx.save_for_backward(input, weight, output)
        else:
            ctx.save_for_backward(input, weight, bias, act_weight)

    def backward(ctx, grad):
        needs = ctx.needs_input_grad
        grad_act_weight = None
        if act.from_output(ctx.kind, ctx.alpha):
            input, weight, output = ctx.saved_tensors
            grad_z = _activation_grad(
                grad, output, ctx.kind, ctx.alpha,
                lambda: linear.reads_channels_last(grad, input, weight, ctx.static), True,
            )  # fmt: skip
        else:
            input, weight, bias, act_weight = ctx.saved_tensors
            z = linear.op(input, weight, bias, *ctx.static)  # recomputed: see the module doc
            if needs[3]:  # PReLU's weight: both of its gradients in one pass
                grad_z, grad_act_weight = act.prelu_backward(grad, z, act_weight)
            else:
                grad_z = act.backward(grad, z, ctx.kind, ctx.alpha, act_weight)
        grads = (None, None, None)
        if any(needs[:3]):
            grads = linear.grads(input, weight, needs[:3], ctx.static, grad_z)
        return *grads, grad_act_weight, None, None, *[None] * len(ctx.static)

    def jvp(ctx, *tangents):
        return _tangents(linear, ctx.primals, *tangents[:4])[0]

    def vmap(info, in_dims, *args):
        return _batched(primitive, info, in_dims, args)

    def decomposed(input, weight, bias, act_weight, kind, alpha, *static):
        if act.from_output(kind, alpha):
            return None
        return with_z(input, weight, bias, act_weight, kind, alpha, *static)[0]

    def bound_decomposition(kind, alpha, *static):
        if act.from_output(kind, alpha):
            return None
        pair = with_z.bind(kind, alpha, *static)  # (called with the operands of one opening)
        recorded = functools.partial(with_z.apply_bound, pair)  # (``pair.recorded``, a C call)

        def call(input, weight, bias, act_weight):
            return recorded(input, weight, bias, act_weight)[0]

        return call

    primitive = Primitive(
        name,
        impl,
        fake=fake,
        setup_context=setup,
        backward=backward,
        jvp=jvp,
        vmap=vmap,
        decomposed=decomposed,
        bound_decomposition=bound_decomposition,
        static_attributes=True,
    )
    return primitive


conv_act_z = _with_z("conv_act_z", _impl_z, _CONV)
conv_transpose_act_z = _with_z("conv_transpose_act_z", _transpose_impl_z, _TRANSPOSED)
conv_act_fwd = _activated("conv_act_fwd", _impl, _CONV, conv_act_z)
conv_transpose_act = _activated("conv_transpose_act", _transpose_impl, _TRANSPOSED,
                                conv_transpose_act_z)  # fmt: skip


@register_flop_formula(torch.ops.torchconv_ext.conv_act_fwd)
def _flop(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    # As torch counts a convolution followed by an activation (activations count 0).
    return conv_flop_count(input_shape, weight_shape, out_shape, transposed=False)


@register_flop_formula(torch.ops.torchconv_ext.conv_transpose_act)
def _transpose_flop(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(input_shape, weight_shape, out_shape, transposed=True)


@register_flop_formula(torch.ops.torchconv_ext.conv_act_z)
def _flop_z(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    # (``out_shape``: the shapes of ``act(z)`` and ``z``)
    return conv_flop_count(input_shape, weight_shape, out_shape[1], transposed=False)


@register_flop_formula(torch.ops.torchconv_ext.conv_transpose_act_z)
def _transpose_flop_z(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(input_shape, weight_shape, out_shape[1], transposed=True)
