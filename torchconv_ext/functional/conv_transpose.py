"""``conv_transpose1d`` / ``2d`` / ``3d``: torch's signatures, plus ``padding='same'``,
``padding='valid'`` and ``(before, after)`` padding pairs, which torch does not accept for
transposed convolution, and a fused ``activation``."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .. import _activation
from .._args import IntOrTuple, Padding, has_pairs
from .._conv_args import conv_transpose_geometry
from .._fallback import conv as fallback
from .._ops.conv import conv_bwd_input, results_channels_last
from .._ops.conv_act import conv_transpose_act
from ._common import (
    KERNEL_DTYPES,
    Openings,
    conv_dtype,
    empty_batch,
    open_call,
    overridable,
    runs_kernels,
)
from .conv import ACTIVATION_DOC, plain_activation

#: The openings of plain transposed convolution calls (``_conv_transpose``).
_OPENINGS = Openings()


def _conv_transpose(
    name: str,
    spatial_dims: int,
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: IntOrTuple,
    padding: str | Padding,
    output_padding: IntOrTuple,
    groups: int,
    dilation: IntOrTuple,
    activation: str | None = None,
    activation_args: Mapping[str, object] | None = None,
) -> Tensor:
    """A transposed convolution, then ``activation`` (fused into the kernels' epilogue on the
    Triton path: ``conv_transpose_act``; torch's activation after torch's convolution
    elsewhere)."""
    fused = activation is not None or activation_args is not None
    plain = plain_activation(activation, activation_args) if fused else ()
    key = None
    if plain is not None:
        key = _OPENINGS.key(
            name, input, weight, bias, stride, padding, output_padding, groups, dilation, *plain
        )
    opened = _OPENINGS.get(key)
    if opened is not None:  # this call's opening, as decided before (the layout is not in it)
        batched, calls, nchw_shapes = opened  # one call per result layout
        x = input if batched else input.unsqueeze(0)
        if (
            nchw_shapes
            and x.is_contiguous()
            and weight.is_contiguous()
            and not torch._C._are_functorch_transforms_active()
        ):
            layout = False  # (ATen's rule, decided by these two flags for such shapes)
        else:
            layout = results_channels_last(x, weight)
        out = calls[layout](x, weight, bias)
        return out if batched else out.squeeze(0)
    act = _activation.parse_activation(activation, activation_args) if fused else None
    if act is not None and isinstance(weight, Tensor) and weight.dim() > 1:
        _activation.check_channels(act, weight.shape[1] * groups)
    cast, dtype = conv_dtype(input)
    kernels = runs_kernels("conv", input, dtype)  # (first: it refuses what would go wrong)
    # (an empty batch too: nothing to compute, and ATen's results and gradients then have
    # layouts of their own)
    kernels = kernels and not empty_batch(input, spatial_dims)
    if not kernels and not (isinstance(padding, str) or has_pairs(padding)):
        out = fallback.torch_conv_transpose(
            spatial_dims, input, weight, bias, stride, padding, output_padding, groups, dilation
        )
        return out if act is None else _activated(out, act, spatial_dims)
    act_weight = act.weight if act is not None else None
    batched, input, weight, bias, act_weight = open_call(
        name, spatial_dims, input, weight, bias, act_weight, cast=cast
    )
    g, out_size = conv_transpose_geometry(
        name, input, weight, bias, stride, padding, output_padding, groups, dilation
    )
    if dtype in KERNEL_DTYPES["conv"]:
        # A transposed convolution is the input gradient of its adjoint convolution (geometry g).
        # One call per result layout, by layout (a dict: Dynamo before torch 2.13 cannot
        # index a list with a bool).
        op, args = (
            (conv_bwd_input, ()) if act is None else (conv_transpose_act, (act.kind, act.alpha))
        )
        calls = {
            layout: _OPENINGS.bind(key, op, *args, list(out_size), layout, *g.as_args())
            for layout in (False, True)
        }
        # Contiguous operands of such shapes have strides in NCHW order (``_memory``'s layout
        # rule), so their layout needs no more than their contiguity.
        nchw_shapes = all(t.shape[1] > 1 and t.shape[-1] > 1 for t in (input, weight))
        if act is None:
            _OPENINGS.remember(key, (batched, calls, nchw_shapes))
            out = calls[results_channels_last(input, weight)](input, weight, bias)
        else:  # (no key for a PReLU: its weight is not static, and it is an operand)
            keyed = {k: _no_weight(c) for k, c in calls.items()}
            _OPENINGS.remember(key, (batched, keyed, nchw_shapes))
            if act_weight is not None and act_weight.dtype != input.dtype:
                act_weight = act_weight.to(input.dtype)
            out = calls[results_channels_last(input, weight)](input, weight, bias, act_weight)
    else:  # other dtypes (complex, integers): as torch computes them
        out = fallback.conv_transpose_by_torch(input, weight, bias, g)
        if act is not None:
            out = _activation.apply(out, act.kind, act.alpha, act_weight)
    return out if batched else out.squeeze(0)


def _no_weight(call):
    """A bound activated call that takes no PReLU weight (only kinds without one are keyed)."""
    return lambda input, weight, bias: call(input, weight, bias, None)


def _activated(out: Tensor, act: _activation.Activation, spatial_dims: int) -> Tensor:
    """``act`` applied to torch's result, batched or not (channels are dim 1 of a batch)."""
    batched = out.dim() == spatial_dims + 2
    y = _activation.apply(out if batched else out.unsqueeze(0), act.kind, act.alpha, act.weight)
    return y if batched else y.squeeze(0)


@overridable
def conv_transpose1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | Padding = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
    *,
    activation: str | None = None,
    activation_args: Mapping[str, object] | None = None,
) -> Tensor:
    """1-D transposed convolution over ``(N, C_in, L)`` or ``(C_in, L)``; see
    :func:`conv_transpose2d`."""
    return _conv_transpose(
        "conv_transpose1d", 1, input, weight, bias, stride, padding, output_padding, groups,
        dilation, activation, activation_args,
    )  # fmt: skip


@overridable
def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | Padding = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
    *,
    activation: str | None = None,
    activation_args: Mapping[str, object] | None = None,
) -> Tensor:
    """2-D transposed convolution, as :func:`torch.nn.functional.conv_transpose2d`.

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
        weight: ``(C_in, C_out/groups, kH, kW)``.
        bias: ``(C_out,)`` or ``None``.
        stride, dilation: an int or one int per spatial dim, all positive.
        padding: an int / tuple (``dilation·(k−1) − padding`` zero-padding of the input, i.e.
            cropped from each side of the full output), or — beyond torch — per spatial dim a
            ``(before, after)`` pair (cropped from the start and from the end: ``padding=((1,
            2), (1, 2))`` crops one row and column at the top left, two at the bottom right),
            ``'valid'`` (crop nothing: output ``(in−1)·stride + dilation·(k−1) + 1``) or
            ``'same'`` (output ``in·stride``; the crop split evenly, the odd pixel at the end;
            when the stride exceeds the kernel span the output is extended at the end instead).
        output_padding: extra size added to the end of the output (numeric padding only);
            each entry smaller than the stride or the dilation.
        groups: the number of blocked connections; ``groups == C_in`` is depthwise.

    Returns:
        ``(N, C_out, H_out, W_out)`` (or unbatched), channels-last when an operand is.
    """
    return _conv_transpose(
        "conv_transpose2d", 2, input, weight, bias, stride, padding, output_padding, groups,
        dilation, activation, activation_args,
    )  # fmt: skip


@overridable
def conv_transpose3d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | Padding = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
    *,
    activation: str | None = None,
    activation_args: Mapping[str, object] | None = None,
) -> Tensor:
    """3-D transposed convolution over ``(N, C_in, D, H, W)`` or ``(C_in, D, H, W)``; see
    :func:`conv_transpose2d`."""
    return _conv_transpose(
        "conv_transpose3d", 3, input, weight, bias, stride, padding, output_padding, groups,
        dilation, activation, activation_args,
    )  # fmt: skip


__all__ = ["conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]


conv_transpose2d.__doc__ += ACTIVATION_DOC
