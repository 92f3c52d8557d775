"""Convolution launchers: choose the direct depthwise kernels or the implicit GEMM."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .conv_depthwise import (
    depthwise_conv_backward_input,
    depthwise_conv_backward_weight,
    depthwise_conv_forward,
)
from .conv_gemm import gemm_conv_backward_input, gemm_conv_backward_weight, gemm_conv_forward


def _is_depthwise(c_in: int, groups: int) -> bool:
    # One input channel per group: a GEMM would waste almost all of each tensor-core tile.
    return groups > 1 and groups == c_in


def conv_forward(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    *,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    pad_mode: str,
    allow_tf32: bool,
) -> None:
    """``out = conv(x, w) + bias``; ``padding`` is the padding before each spatial dim."""
    if _is_depthwise(x.shape[1], groups):
        depthwise_conv_forward(
            x, w, bias, out, stride=stride, padding=padding, dilation=dilation, pad_mode=pad_mode
        )
    else:
        gemm_conv_forward(
            x,
            w,
            bias,
            out,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            pad_mode=pad_mode,
            allow_tf32=allow_tf32,
        )


def conv_backward_input(
    grad_out: torch.Tensor,
    w: torch.Tensor,
    grad_in: torch.Tensor,
    *,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    allow_tf32: bool,
) -> None:
    """Gradient of a zero-padded convolution with respect to its input, written to ``grad_in``."""
    if _is_depthwise(grad_in.shape[1], groups):
        depthwise_conv_backward_input(
            grad_out, w, grad_in, stride=stride, padding=padding, dilation=dilation
        )
    else:
        gemm_conv_backward_input(
            grad_out,
            w,
            grad_in,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            allow_tf32=allow_tf32,
        )


def conv_backward_weight(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    grad_w: torch.Tensor,
    *,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    pad_mode: str,
    allow_tf32: bool,
) -> None:
    """Gradient of a convolution with respect to its weight, written to ``grad_w``."""
    if _is_depthwise(x.shape[1], groups):
        depthwise_conv_backward_weight(
            x,
            grad_out,
            grad_w,
            stride=stride,
            padding=padding,
            dilation=dilation,
            pad_mode=pad_mode,
        )
    else:
        gemm_conv_backward_weight(
            x,
            grad_out,
            grad_w,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            pad_mode=pad_mode,
            allow_tf32=allow_tf32,
        )
