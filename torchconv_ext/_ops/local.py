"""Locally connected and tiled convolution primitives: ``torchconv_ext::local_conv_fwd``,
``local_conv_bwd_input``, ``local_conv_bwd_weight``.

One family serves both layers: the weight ``(*tiles, C_out, C_in/groups, *kernel)`` holds one
kernel per tile, and output position ``o`` uses the kernel of tile ``o mod tiles`` per dim.
Tiles equal to the output size make a locally connected (unshared) convolution; fewer tiles a
tiled convolution (Goodfellow et al., ch. 9); one tile an ordinary convolution. The bias, when
given, is ``(*tiles, C_out)``. The kernels share nothing across positions but the tile's
weights: no per-position copy of the weight exists, and the weight gradient of a tile sums its
positions inside the kernel.

Like a convolution, the op is bilinear in ``(x, w)``, and its three primitives are each other's
derivatives, so gradients of every order stay on them (``g`` is the incoming gradient)::

    primitive                      in its first operand             in its second operand
    local_conv_fwd(x, w)           local_conv_bwd_input(g, w)       local_conv_bwd_weight(g, x)
    local_conv_bwd_input(gy, w)    local_conv_fwd(g, w)             local_conv_bwd_weight(gy, g)
    local_conv_bwd_weight(gy, x)   local_conv_fwd(x, g)             local_conv_bwd_input(gy, g)

All three take a convolution's geometry (``ConvGeometry.as_args()``) as trailing arguments;
padding modes work as for convolution (the adjoint of ``pad`` folds the gradient back).
``local_conv_bwd_input`` takes the input's spatial size and layout, ``local_conv_bwd_weight``
the tile counts and kernel size. Layouts: the output and the input gradient are channels-last
when the input is; the weight gradient is contiguous.

The kernels reduce over (taps, input channels), channels fastest, so they load 16-byte vectors
where channels are innermost: on the Triton path every activation goes channels-last (one copy
where it is not, one per derivative: ``_layout.converting_once``) and the weight goes with its
input channels innermost (repacked once per version for a parameter: ``_layout.packed_weight``).
Their results are stored channels-last too, and converted once where torch's layout is NCHW: a
tile's rows are positions a tile apart (a locally connected layer's: batch elements), which an
NCHW store would write one element at a time, at a pointer register per element; and the weight
gradient with its input channels innermost, then made contiguous.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch._C._functorch import is_batchedtensor
from torch.utils.flop_counter import register_flop_formula

from .._args import ceil_div
from .._backend import kernels, use_triton
from .._conv_args import ConvGeometry
from .._fallback import local as fallback
from .._local_args import local_output_size
from .._memory import empty_in_layout, empty_with_fastest, is_channels_last, to_layout
from .._padding import fold_padding_grad
from ._layout import channels_last_activation, packed_weight
from ._primitive import Primitive, affine_forward_jvp, sum_tangents


def input_channels_last(input: Tensor) -> bool:
    """Whether results follow a channels-last layout of ``input``. Inside ``vmap`` a batched
    tensor cannot tell its layout, so there it counts as contiguous."""
    if torch._C._are_functorch_transforms_active() and is_batchedtensor(input):
        return False
    return is_channels_last(input)


def _kernel_args(g: ConvGeometry, padding: tuple[int, ...] | None = None) -> dict:
    return dict(
        stride=g.stride,
        padding=g.padding if padding is None else padding,
        dilation=g.dilation,
        groups=g.groups,
        # fp32 uses TF32 exactly when torch lets convolutions use it.
        allow_tf32=torch.backends.cudnn.allow_tf32,
    )


def _kernel_weight(weight: Tensor) -> Tensor:
    """The weight as the kernels read it fastest: input channels innermost."""
    return kernels().replayed_whole(packed_weight, weight, "local_channels_inner")


def _output_shape(input: Tensor, weight: Tensor, g: ConvGeometry) -> list[int]:
    nd = input.dim() - 2
    out = local_output_size(input, weight.shape[nd + 2 :], g)
    return [input.shape[0], weight.shape[nd], *out]


def _input_shape(grad_output: Tensor, weight: Tensor, input_size, groups: int) -> list:
    nd = grad_output.dim() - 2
    return [grad_output.shape[0], weight.shape[nd + 1] * groups, *input_size]


def _weight_shape(grad_output: Tensor, input: Tensor, tiles, kernel_size, groups: int) -> list:
    return [*tiles, grad_output.shape[1], input.shape[1] // groups, *kernel_size]


def tile_sum(t: Tensor, tiles) -> Tensor:
    """``(N, C, *out)`` summed over the batch and over each tile's positions: ``(*tiles, C)``,
    the gradient of a per-tile bias (the rows of tiles are completed with zeros)."""
    nd = len(tiles)
    rows = [ceil_div(o, tile) * tile for o, tile in zip(t.shape[2:], tiles)]  # whole rows
    pads = [p for o, r in zip(reversed(t.shape[2:]), reversed(rows)) for p in (0, r - o)]
    t = F.pad(t, pads) if any(pads) else t
    for i, tile in enumerate(tiles):
        t = t.unflatten(2 + 2 * i, (-1, tile))
    # contiguous, as a bias is (autograd hands a gradient on with the strides it has)
    return t.sum([0, *range(2, 2 + 2 * nd, 2)]).movedim(0, -1).contiguous()


# --------------------------------------------------------------------------------------------
# Implementations and fakes
# --------------------------------------------------------------------------------------------


def _fwd_impl(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> Tensor:
    """Batched N-d tiled convolution (locally connected when the tiles are the output size)."""
    g = ConvGeometry.from_args(stride, padding, padding_end, dilation, groups, padding_mode)
    layout = input_channels_last(input)
    shape = _output_shape(input, weight, g)
    if not (input.is_floating_point() and use_triton(input, "conv")):  # (integers: ATen's)
        return to_layout(fallback.local_forward(input, weight, bias, shape[2:], g), layout)
    out = empty_in_layout(shape, input, True, poison=True)  # (stored channels-last: docstring)
    if out.numel():
        kernels().local_conv_forward(
            channels_last_activation(input), _kernel_weight(weight), bias, out,
            pad_mode=g.padding_mode, **_kernel_args(g),
        )  # fmt: skip
    return to_layout(out, layout, exact=True)


def _fwd_fake(input, weight, bias, *geometry):
    shape = _output_shape(input, weight, ConvGeometry.from_args(*geometry))
    return empty_in_layout(shape, input, input_channels_last(input))


def _bwd_input_impl(
    grad_output: Tensor,
    weight: Tensor,
    input_size: list[int],
    channels_last: bool,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> Tensor:
    """The input gradient of ``local_conv_fwd`` for an input of spatial size ``input_size``."""
    g = ConvGeometry.from_args(stride, padding, padding_end, dilation, groups, padding_mode)
    shape = _input_shape(grad_output, weight, input_size, groups)
    if not use_triton(grad_output, "conv"):
        grad = fallback.local_backward_input(grad_output, weight, shape, g)
        return to_layout(grad, channels_last, exact=True)  # (a crop of a padded one, if empty)
    grad_output, weight = channels_last_activation(grad_output), _kernel_weight(weight)
    if g.padding_mode == "zeros":
        grad = empty_in_layout(shape, grad_output, True, poison=True)
        if grad.numel():
            kernels().local_conv_backward_input(grad_output, weight, grad, **_kernel_args(g))
        return to_layout(grad, channels_last, exact=True)
    # The kernel sees zero padding only: the gradient of the padded input, folded onto its
    # sources.
    padded = shape[:2] + [s + b + e for s, b, e in zip(input_size, g.padding, g.padding_end)]
    grad = empty_in_layout(padded, grad_output, True, poison=True)
    if grad.numel():
        zero = (0,) * len(g.stride)
        kernels().local_conv_backward_input(grad_output, weight, grad, **_kernel_args(g, zero))
    grad = fold_padding_grad(grad, g.padding, g.padding_end, g.padding_mode)
    return to_layout(grad, channels_last, exact=True)


def _bwd_input_fake(grad_output, weight, input_size, channels_last, *geometry):
    groups = ConvGeometry.from_args(*geometry).groups
    shape = _input_shape(grad_output, weight, input_size, groups)
    return empty_in_layout(shape, grad_output, channels_last)


def _bwd_weight_impl(
    grad_output: Tensor,
    input: Tensor,
    tiles: list[int],
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> Tensor:
    """The weight gradient of ``local_conv_fwd`` for ``tiles`` kernels of size ``kernel_size``."""
    g = ConvGeometry.from_args(stride, padding, padding_end, dilation, groups, padding_mode)
    if not use_triton(grad_output, "conv"):
        return fallback.local_backward_weight(grad_output, input, tiles, kernel_size, g)
    shape = _weight_shape(grad_output, input, tiles, kernel_size, groups)
    if grad_output.numel() == 0 or input.numel() == 0:
        return empty_in_layout(shape, input, False).zero_()
    # Stored with its input channels innermost, as the kernel's columns run (16-byte stores;
    # contiguous, a column tile would write one element at a time), then made contiguous (with
    # contiguous strides on size-1 dims too: one input channel per group).
    grad = empty_with_fastest(shape, input, len(shape) // 2, poison=True)
    kernels().local_conv_backward_weight(
        channels_last_activation(input), channels_last_activation(grad_output), grad,
        pad_mode=g.padding_mode, **_kernel_args(g),
    )  # fmt: skip
    return to_layout(grad, False, exact=True)


def _bwd_weight_fake(grad_output, input, tiles, kernel_size, *geometry):
    groups = ConvGeometry.from_args(*geometry).groups
    return input.new_empty(_weight_shape(grad_output, input, tiles, kernel_size, groups))


# --------------------------------------------------------------------------------------------
# Reverse mode (the table in the module docstring)
# --------------------------------------------------------------------------------------------


def _sizes(input: Tensor, weight: Tensor) -> tuple[list[int], list[int], list[int]]:
    """Input spatial size, tile counts and kernel size."""
    nd = input.dim() - 2
    return list(input.shape[2:]), list(weight.shape[:nd]), list(weight.shape[nd + 2 :])


def _fwd_setup(ctx, inputs, output):
    input, weight, _, *geometry = inputs
    ctx.save_for_backward(input, weight)
    ctx.geometry = geometry


def _fwd_backward(ctx, grad):
    input, weight = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    size, tiles, kernel = _sizes(input, weight)
    grad_input = grad_weight = grad_bias = None
    if need_input:
        layout = input_channels_last(input)
        grad_input = local_conv_bwd_input(grad, weight, size, layout, *ctx.geometry)
    if need_weight:
        grad_weight = local_conv_bwd_weight(grad, input, tiles, kernel, *ctx.geometry)
    if need_bias:
        grad_bias = tile_sum(grad, tiles)
    return grad_input, grad_weight, grad_bias, *[None] * len(ctx.geometry)


def _bwd_input_setup(ctx, inputs, output):
    grad_output, weight, _, _, *geometry = inputs
    ctx.save_for_backward(grad_output, weight)
    ctx.geometry = geometry


def _bwd_input_backward(ctx, grad):
    grad_output, weight = ctx.saved_tensors
    need_grad_output, need_weight = ctx.needs_input_grad[:2]
    grad_grad_output = grad_weight = None
    if need_grad_output:
        grad_grad_output = local_conv_fwd(grad, weight, None, *ctx.geometry)
    if need_weight:
        _, tiles, kernel = _sizes(grad, weight)
        grad_weight = local_conv_bwd_weight(grad_output, grad, tiles, kernel, *ctx.geometry)
    return grad_grad_output, grad_weight, None, None, *[None] * len(ctx.geometry)


def _bwd_weight_setup(ctx, inputs, output):
    grad_output, input, _, _, *geometry = inputs
    ctx.save_for_backward(grad_output, input)
    ctx.geometry = geometry


def _bwd_weight_backward(ctx, grad):
    grad_output, input = ctx.saved_tensors
    need_grad_output, need_input = ctx.needs_input_grad[:2]
    grad_grad_output = grad_input = None
    if need_grad_output:
        grad_grad_output = local_conv_fwd(input, grad, None, *ctx.geometry)
    if need_input:
        size, layout = list(input.shape[2:]), input_channels_last(input)
        grad_input = local_conv_bwd_input(grad_output, grad, size, layout, *ctx.geometry)
    return grad_grad_output, grad_input, None, None, *[None] * len(ctx.geometry)


# --------------------------------------------------------------------------------------------
# Forward mode: a bilinear op's tangent is op(tangent_a, b) + op(a, tangent_b)
# --------------------------------------------------------------------------------------------


def _fwd_jvp(ctx, t_input, t_weight, t_bias, *_):
    input, weight, _, *geometry = ctx.primals
    return affine_forward_jvp(local_conv_fwd, input, weight, geometry, t_input, t_weight, t_bias)


def _bwd_input_jvp(ctx, t_grad_output, t_weight, *_):
    grad_output, weight, size, layout, *geometry = ctx.primals
    parts = []
    if t_grad_output is not None:
        parts.append(local_conv_bwd_input(t_grad_output, weight, size, layout, *geometry))
    if t_weight is not None:
        parts.append(local_conv_bwd_input(grad_output, t_weight, size, layout, *geometry))
    return sum_tangents(parts)


def _bwd_weight_jvp(ctx, t_grad_output, t_input, *_):
    grad_output, input, tiles, kernel, *geometry = ctx.primals
    parts = []
    if t_grad_output is not None:
        parts.append(local_conv_bwd_weight(t_grad_output, input, tiles, kernel, *geometry))
    if t_input is not None:
        parts.append(local_conv_bwd_weight(grad_output, t_input, tiles, kernel, *geometry))
    return sum_tangents(parts)


# --------------------------------------------------------------------------------------------
# Batching rules: a batch of data folds into N; a batch that reaches the weight folds into the
# groups (one group per batch element and group, batch outermost in the channel dims).
# --------------------------------------------------------------------------------------------


def _batch_first(t: Tensor | None, bdim: int | None, size: int) -> Tensor | None:
    """``t`` with the vmapped dim first, expanded to ``size`` when ``t`` has none."""
    if t is None:
        return None
    return t.expand(size, *t.shape) if bdim is None else t.movedim(bdim, 0)


def _merge(t: Tensor | None, dim: int) -> Tensor | None:
    """Merge the leading vmapped dim of ``t`` into its logical dim ``dim``, outermost."""
    return None if t is None else t.movedim(0, dim).flatten(dim, dim + 1)


def _grouped(geometry: tuple, size: int) -> tuple:
    g = ConvGeometry.from_args(*geometry)
    return g.with_groups(g.groups * size).as_args()


def _fwd_vmap(info, in_dims, input, weight, bias, *geometry):
    d_input, d_weight, d_bias = in_dims[:3]
    size, nd = info.batch_size, input.dim() - 2 - (d_input is not None)
    if d_weight is None and d_bias is None:
        out = local_conv_fwd(_merge(_batch_first(input, d_input, size), 0), weight, bias, *geometry)
        return out.unflatten(0, (size, -1)), 0
    input = _merge(_batch_first(input, d_input, size), 1)
    weight = _merge(_batch_first(weight, d_weight, size), nd)
    bias = _merge(_batch_first(bias, d_bias, size), nd)
    out = local_conv_fwd(input, weight, bias, *_grouped(geometry, size))
    return out.unflatten(1, (size, -1)), 1


def _bwd_input_vmap(info, in_dims, grad_output, weight, input_size, layout, *geometry):
    size, nd = info.batch_size, len(input_size)
    d_grad_output, d_weight = in_dims[:2]
    if d_weight is None:
        go = _merge(_batch_first(grad_output, d_grad_output, size), 0)
        grad = local_conv_bwd_input(go, weight, input_size, layout, *geometry)
        return grad.unflatten(0, (size, -1)), 0
    grad = local_conv_bwd_input(
        _merge(_batch_first(grad_output, d_grad_output, size), 1),
        _merge(_batch_first(weight, d_weight, size), nd),
        input_size,
        layout,
        *_grouped(geometry, size),
    )
    return grad.unflatten(1, (size, -1)), 1


def _bwd_weight_vmap(info, in_dims, grad_output, input, tiles, kernel_size, *geometry):
    size, nd = info.batch_size, len(tiles)
    grad = local_conv_bwd_weight(
        _merge(_batch_first(grad_output, in_dims[0], size), 1),
        _merge(_batch_first(input, in_dims[1], size), 1),
        tiles,
        kernel_size,
        *_grouped(geometry, size),
    )
    return grad.unflatten(nd, (size, -1)), nd


# --------------------------------------------------------------------------------------------
# The primitives
# --------------------------------------------------------------------------------------------

local_conv_fwd = Primitive(
    "local_conv_fwd",
    _fwd_impl,
    fake=_fwd_fake,
    setup_context=_fwd_setup,
    backward=_fwd_backward,
    jvp=_fwd_jvp,
    vmap=_fwd_vmap,
    static_attributes=True,
)
local_conv_bwd_input = Primitive(
    "local_conv_bwd_input",
    _bwd_input_impl,
    fake=_bwd_input_fake,
    setup_context=_bwd_input_setup,
    backward=_bwd_input_backward,
    jvp=_bwd_input_jvp,
    vmap=_bwd_input_vmap,
)
local_conv_bwd_weight = Primitive(
    "local_conv_bwd_weight",
    _bwd_weight_impl,
    fake=_bwd_weight_fake,
    setup_context=_bwd_weight_setup,
    backward=_bwd_weight_backward,
    jvp=_bwd_weight_jvp,
    vmap=_bwd_weight_vmap,
)


# --------------------------------------------------------------------------------------------
# FLOPs: 2 per multiply-add, every output position's kernel over its window
# --------------------------------------------------------------------------------------------


def _flops(data_shape, kernel_shape) -> int:
    """``data_shape`` (N, C_out, *out) against a kernel ``(*lead, C_out, C_in/groups, *k)``."""
    nd = len(data_shape) - 2
    return 2 * math.prod(data_shape) * math.prod(kernel_shape[nd + 1 :])


@register_flop_formula(torch.ops.torchconv_ext.local_conv_fwd)
def _fwd_flop(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return _flops(out_shape, weight_shape)


@register_flop_formula(torch.ops.torchconv_ext.local_conv_bwd_input)
def _bwd_input_flop(grad_output_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return _flops(grad_output_shape, weight_shape)


@register_flop_formula(torch.ops.torchconv_ext.local_conv_bwd_weight)
def _bwd_weight_flop(grad_output_shape, input_shape, *args, out_shape=None, **kwargs) -> int:
    return _flops(grad_output_shape, out_shape)
