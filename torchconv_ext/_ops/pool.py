"""Pooling primitives: ``torchconv_ext::pool_fwd`` / ``pool_bwd`` (fixed windows),
``adaptive_pool_fwd`` / ``adaptive_pool_bwd`` and ``pyramid_pool_fwd`` / ``pyramid_pool_bwd``.

``mode`` is ``"max"`` or ``"avg"``. Forward ops return ``(output, indices)``; the indices (int64,
flat into each input plane, torch's convention) exist for max pooling only — average pooling
returns an empty tensor in their place. Backward ops take the forward's input (for its shape
and layout) and indices. Each op picks, per call, the Triton kernels or the ATen fallback; the
fake implementations give the sizes, dtypes and memory formats torch's own ops return.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._backend import kernels, use_triton
from .._fallback import pool as fallback
from .._memory import (
    empty_in_layout,
    pool_grad_channels_last,
    pool_output_channels_last,
    to_layout,
)
from .._pool_args import PoolGeometry, pool_output_shape, pyramid_features


def _geometry(
    kernel, stride, padding, padding_end, dilation, ceil_mode, count_include_pad, divisor_override
) -> PoolGeometry:
    return PoolGeometry(
        tuple(kernel),
        tuple(stride),
        tuple(padding),
        tuple(padding_end),
        tuple(dilation),
        ceil_mode,
        count_include_pad,
        divisor_override,
    )


def _kernel_args(g: PoolGeometry) -> dict:
    return dict(
        kernel_size=g.kernel,
        stride=g.stride,
        padding=g.padding,
        padding_end=g.padding_end,
        dilation=g.dilation,
        count_include_pad=g.count_include_pad,
        divisor_override=g.divisor_override,
    )


def _no_indices(like: Tensor) -> Tensor:
    return like.new_empty((0,), dtype=torch.int64)


def _outputs(shape, input: Tensor, mode: str, channels_last: bool, poison: bool):
    """Output and indices (empty for avg) in torch's layout."""
    out = empty_in_layout(shape, input, channels_last, poison=poison)
    if mode != "max":
        return out, _no_indices(input)
    return out, empty_in_layout(shape, input, channels_last, torch.int64, poison=poison)


def _finish(out: Tensor, idx: Tensor | None, input: Tensor, channels_last: bool):
    """Fallback results in torch's layout."""
    out = to_layout(out, channels_last)
    return out, (to_layout(idx, channels_last) if idx is not None else _no_indices(input))


# --------------------------------------------------------------------------------------------
# Fixed windows
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("torchconv_ext::pool_fwd", mutates_args=())
def pool_fwd(
    input: Tensor,
    mode: str,
    kernel: list[int],
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int,
) -> tuple[Tensor, Tensor]:
    """Max / average pooling of a batched N-d input with per-side padding."""
    g = _geometry(
        kernel,
        stride,
        padding,
        padding_end,
        dilation,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )
    cl = pool_output_channels_last(mode, input)
    if not use_triton(input):
        if mode == "max":
            return _finish(*fallback.max_pool(input, g), input, cl)
        return _finish(fallback.avg_pool(input, g), None, input, cl)
    out, idx = _outputs(pool_output_shape(input.shape, g), input, mode, cl, poison=True)
    kernels().pool_forward(input, out, idx if mode == "max" else None, mode=mode, **_kernel_args(g))
    return out, idx


@pool_fwd.register_fake
def _(
    input,
    mode,
    kernel,
    stride,
    padding,
    padding_end,
    dilation,
    ceil_mode,
    count_include_pad,
    divisor_override,
):
    g = _geometry(
        kernel,
        stride,
        padding,
        padding_end,
        dilation,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )
    cl = pool_output_channels_last(mode, input)
    return _outputs(pool_output_shape(input.shape, g), input, mode, cl, poison=False)


@torch.library.custom_op("torchconv_ext::pool_bwd", mutates_args=())
def pool_bwd(
    grad_output: Tensor,
    input: Tensor,
    indices: Tensor,
    mode: str,
    kernel: list[int],
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int,
) -> Tensor:
    """Gradient of ``pool_fwd`` w.r.t. ``input`` (only its shape and layout are read)."""
    g = _geometry(
        kernel,
        stride,
        padding,
        padding_end,
        dilation,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )
    cl = pool_grad_channels_last(mode, input, grad_output.shape[2:])
    if not use_triton(grad_output):
        if mode == "max":
            grad = fallback.max_pool_backward(grad_output, input, indices, g)
        else:
            grad = fallback.avg_pool_backward(grad_output, input, g)
        return to_layout(grad, cl)
    grad = empty_in_layout(input.shape, grad_output, cl, poison=True)
    kernels().pool_backward(
        grad_output, indices if mode == "max" else None, grad, mode=mode, **_kernel_args(g)
    )
    return grad


@pool_bwd.register_fake
def _(grad_output, input, indices, mode, *args):
    return empty_in_layout(
        input.shape, grad_output, pool_grad_channels_last(mode, input, grad_output.shape[2:])
    )


# --------------------------------------------------------------------------------------------
# Adaptive windows
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("torchconv_ext::adaptive_pool_fwd", mutates_args=())
def adaptive_pool_fwd(input: Tensor, mode: str, output_size: list[int]) -> tuple[Tensor, Tensor]:
    """Adaptive max / average pooling of a batched N-d input to ``output_size``."""
    cl = pool_output_channels_last("adaptive_" + mode, input)
    if not use_triton(input):
        return _finish(*fallback.adaptive_pool(input, mode, output_size), input, cl)
    out, idx = _outputs([*input.shape[:2], *output_size], input, mode, cl, poison=True)
    kernels().adaptive_pool_forward(input, out, idx if mode == "max" else None, mode=mode)
    return out, idx


@adaptive_pool_fwd.register_fake
def _(input, mode, output_size):
    cl = pool_output_channels_last("adaptive_" + mode, input)
    return _outputs([*input.shape[:2], *output_size], input, mode, cl, poison=False)


@torch.library.custom_op("torchconv_ext::adaptive_pool_bwd", mutates_args=())
def adaptive_pool_bwd(grad_output: Tensor, input: Tensor, indices: Tensor, mode: str) -> Tensor:
    """Gradient of ``adaptive_pool_fwd`` w.r.t. ``input`` (only its shape and layout are read)."""
    cl = pool_grad_channels_last("adaptive_" + mode, input, grad_output.shape[2:])
    if not use_triton(grad_output):
        if mode == "max":
            grad = fallback.adaptive_max_pool_backward(grad_output, input, indices)
        else:
            grad = fallback.adaptive_avg_pool_backward(grad_output, input)
        return to_layout(grad, cl)
    grad = empty_in_layout(input.shape, grad_output, cl, poison=True)
    kernels().adaptive_pool_backward(
        grad_output, indices if mode == "max" else None, grad, mode=mode
    )
    return grad


@adaptive_pool_bwd.register_fake
def _(grad_output, input, indices, mode):
    cl = pool_grad_channels_last("adaptive_" + mode, input, grad_output.shape[2:])
    return empty_in_layout(input.shape, grad_output, cl)


# --------------------------------------------------------------------------------------------
# Spatial pyramid pooling
# --------------------------------------------------------------------------------------------


def _pyramid_shape(input: Tensor, levels: list[int]) -> list[int]:
    return [input.shape[0], pyramid_features(input.shape[1], levels, input.dim() - 2)]


@torch.library.custom_op("torchconv_ext::pyramid_pool_fwd", mutates_args=())
def pyramid_pool_fwd(input: Tensor, mode: str, levels: list[int]) -> tuple[Tensor, Tensor]:
    """Spatial pyramid pooling: ``(N, C·Σ l**nd)``, levels flattened and concatenated in order."""
    if not use_triton(input):
        out, idx = fallback.pyramid_pool(input, mode, levels)
        return out.contiguous(), (idx.contiguous() if idx is not None else _no_indices(input))
    out, idx = _outputs(_pyramid_shape(input, levels), input, mode, False, poison=True)
    kernels().pyramid_pool_forward(
        input, out, idx if mode == "max" else None, mode=mode, levels=levels
    )
    return out, idx


@pyramid_pool_fwd.register_fake
def _(input, mode, levels):
    return _outputs(_pyramid_shape(input, levels), input, mode, False, poison=False)


@torch.library.custom_op("torchconv_ext::pyramid_pool_bwd", mutates_args=())
def pyramid_pool_bwd(
    grad_output: Tensor, input: Tensor, indices: Tensor, mode: str, levels: list[int]
) -> Tensor:
    """Gradient of ``pyramid_pool_fwd`` w.r.t. ``input`` (every level, one kernel launch)."""
    cl = pool_output_channels_last("adaptive_" + mode, input)
    if not use_triton(grad_output):
        grad = fallback.pyramid_pool_backward(grad_output, input, indices, mode, levels)
        return to_layout(grad, cl)
    grad = empty_in_layout(input.shape, grad_output, cl, poison=True)
    kernels().pyramid_pool_backward(
        grad_output, indices if mode == "max" else None, grad, mode=mode, levels=levels
    )
    return grad


@pyramid_pool_bwd.register_fake
def _(grad_output, input, indices, mode, levels):
    return empty_in_layout(
        input.shape, grad_output, pool_output_channels_last("adaptive_" + mode, input)
    )
