"""The maxout convolution: ``torchconv_ext::maxout_conv_fwd``, ``maxout(conv(x, w) + b)``.

A convolution to ``C_out·pieces`` channels whose consecutive channels ``c·pieces + k`` form unit
``c``; the result is each unit's max and its winning piece ``k`` (int64), with maxout's rules
(``_ops.maxout``: ties keep the first piece, a NaN wins). On the Triton path the max is taken
in the GEMM kernels' epilogue — each program runs one GEMM per piece against the weight rows
``c·pieces + k`` and keeps a running max in registers — so the ``C_out·pieces``-channel
convolution is never written to memory. Depthwise convolutions (their own direct kernel, no
epilogue maxout) and the fallback run the convolution, then the maxout.

Derivatives reuse the two primitives this op fuses: the gradient of the wide convolution is
``maxout_bwd(grad, winner)`` (the winners' gradients, zeros elsewhere), and the convolution's
gradients are ``conv_fwd``'s own backward on it — all registered, differentiable primitives, so
derivatives of any order exist. Forward mode gathers the wide convolution's tangent at the
winners. A batch of inputs under ``vmap`` folds into N; batched parameters loop.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

from .._backend import kernels, use_triton
from .._conv_args import ConvGeometry, conv_output_shape
from .._fallback import conv as conv_fallback
from .._fallback import maxout as maxout_fallback
from .._memory import empty_in_layout, to_layout
from ._primitive import Primitive
from .conv import (
    conv_fwd,
    fold_batch,
    forward_channels_last,
    forward_grads,
    gemm_operands,
    kernel_args,
    unfold_batch,
)
from .maxout import gather_winners, maxout_bwd, maxout_fwd


def _narrow_shape(input: Tensor, weight: Tensor, g: ConvGeometry, pieces: int) -> list:
    """The result's shape: the convolution's with ``C_out·pieces / pieces`` channels."""
    shape = conv_output_shape(input, weight, g)
    shape[1] //= pieces
    return shape


def _impl(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    pieces: int,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> tuple[Tensor, Tensor]:
    """``(values, winning pieces)`` of ``maxout(conv_fwd(input, weight, bias, ...))`` over the
    channels, in ATen's layout (channels-last when an operand is)."""
    geometry = (stride, padding, padding_end, dilation, groups, padding_mode)
    g = ConvGeometry.from_args(*geometry)
    layout = forward_channels_last(input, weight, padding_mode)
    if not use_triton(input):
        z = conv_fallback.conv_forward(input, weight, bias, g)
        out, winner = maxout_fallback.maxout_forward(z, pieces, 1)
        return to_layout(out, layout), to_layout(winner, layout)
    k = kernels()
    if pieces == 1:  # the convolution itself; every winner is piece 0
        out = conv_fwd.impl(input, weight, bias, *geometry)
        return out, empty_in_layout(out.shape, out, layout, torch.int64).zero_()
    if not k.prefers_channels_last(input.shape[1], g.groups):
        # Depthwise: the direct kernel has no maxout epilogue; the wide result is written.
        return maxout_fwd.impl(conv_fwd.impl(input, weight, bias, *geometry), pieces, 1)
    shape = _narrow_shape(input, weight, g, pieces)
    # Stored NCHW or channels-last as the convolution's result is (``triton_forward``).
    stored = layout or not k.stores_nchw(shape[2:], g.stride)
    out = empty_in_layout(shape, input, stored, poison=True)
    winner = empty_in_layout(shape, input, stored, torch.int64, poison=True)
    if out.numel():
        input, weight, weight_form = gemm_operands(input, weight, g, fused_maxout=True)
        k.conv_forward(
            input,
            weight,
            bias,
            out,
            pad_mode=g.padding_mode,
            pieces=pieces,
            winner=winner,
            **weight_form,
            **kernel_args(g),
        )
    return to_layout(out, layout, exact=True), to_layout(winner, layout, exact=True)


def _fake(input, weight, bias, pieces, *geometry):
    g = ConvGeometry.from_args(*geometry)
    shape = _narrow_shape(input, weight, g, pieces)
    layout = forward_channels_last(input, weight, g.padding_mode)
    return (
        empty_in_layout(shape, input, layout),
        empty_in_layout(shape, input, layout, torch.int64),
    )


# --------------------------------------------------------------------------------------------
# Derivatives
# --------------------------------------------------------------------------------------------


def _setup(ctx, inputs, output):
    input, weight, _, pieces, *geometry = inputs
    ctx.pieces, ctx.geometry = pieces, geometry
    ctx.winner = output[1]  # for the jvp; integer, so no reference cycle through autograd
    ctx.save_for_backward(input, weight, output[1])


def _backward(ctx, grad, _grad_winner):
    needs = ctx.needs_input_grad
    grads = (None, None, None)
    if any(needs[:3]):
        input, weight, winner = ctx.saved_tensors
        # The wide convolution's gradient, in the layout that convolution's result has.
        padding_mode = ConvGeometry.from_args(*ctx.geometry).padding_mode
        layout = forward_channels_last(input, weight, padding_mode)
        grad_z = maxout_bwd(grad, winner, ctx.pieces, 1, layout)
        grads = forward_grads(input, weight, needs[:3], ctx.geometry, grad_z)[:3]
    return *grads, None, *[None] * len(ctx.geometry)


def _jvp(ctx, t_input, t_weight, t_bias, *_):
    input, weight, bias, pieces, *geometry = ctx.primals
    primals = SimpleNamespace(primals=(input, weight, bias, *geometry))
    t_z = conv_fwd.jvp(primals, t_input, t_weight, t_bias)
    if t_z is None:
        shape = _narrow_shape(input, weight, ConvGeometry.from_args(*geometry), pieces)
        return input.new_zeros(shape), None
    return gather_winners(t_z, ctx.winner, pieces, 1), None


def _vmap(info, in_dims, input, weight, bias, pieces, *geometry):
    d_input, d_weight, d_bias = in_dims[:3]
    if d_weight is None and d_bias is None:  # a batch of inputs: fold it into N
        out, winner = maxout_conv_fwd(
            fold_batch(input, d_input, 0), weight, bias, pieces, *geometry
        )
        size = info.batch_size
        return (unfold_batch(out, 0, size), unfold_batch(winner, 0, size)), (0, 0)
    # Batched parameters: one call per batch element (the geometry is never batched).
    results = []
    for i in range(info.batch_size):
        sliced = [
            t if d is None else t.select(d, i) for t, d in zip((input, weight, bias), in_dims)
        ]
        results.append(maxout_conv_fwd(*sliced, pieces, *geometry))
    out, winner = (torch.stack(parts) for parts in zip(*results))
    return (out, winner), (0, 0)


maxout_conv_fwd = Primitive(
    "maxout_conv_fwd",
    _impl,
    fake=_fake,
    setup_context=_setup,
    backward=_backward,
    jvp=_jvp,
    vmap=_vmap,
)


@register_flop_formula(torch.ops.torchconv_ext.maxout_conv_fwd)
def _flop(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    # As torch counts the convolution to C_out·pieces channels (the max counts 0).
    wide = [out_shape[0][0], weight_shape[0], *out_shape[0][2:]]
    return conv_flop_count(input_shape, weight_shape, wide, transposed=False)


__all__ = ["maxout_conv_fwd"]
