"""``conv1d`` / ``conv2d`` / ``conv3d``: torch's signatures, plus ``padding_mode`` and
TensorFlow-style ``padding='same'`` with any stride."""

from __future__ import annotations

import torch
from torch import Tensor

from .._args import IntOrTuple
from .._conv_args import conv_geometry
from .._ops.conv import conv_fwd
from ._common import calls_torch_op, open_call

TORCH_CONV = {
    1: torch.nn.functional.conv1d,
    2: torch.nn.functional.conv2d,
    3: torch.nn.functional.conv3d,
}


def _unit(stride: IntOrTuple) -> bool:
    return all(s == 1 for s in ((stride,) if isinstance(stride, int) else stride))


def _conv(
    name: str,
    spatial_dims: int,
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: IntOrTuple,
    padding: str | IntOrTuple,
    dilation: IntOrTuple,
    groups: int,
    padding_mode: str,
) -> Tensor:
    torch_accepts = padding_mode == "zeros" and (padding != "same" or _unit(stride))
    if torch_accepts and calls_torch_op(input):
        return TORCH_CONV[spatial_dims](input, weight, bias, stride, padding, dilation, groups)
    batched, input, weight, bias = open_call(name, spatial_dims, input, weight, bias, autocast=True)
    g = conv_geometry(name, input, weight, bias, stride, padding, dilation, groups, padding_mode)
    out = conv_fwd(input, weight, bias, *g.as_args())
    return out if batched else out.squeeze(0)


def conv1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
) -> Tensor:
    """1-D convolution over ``(N, C_in, L)`` or ``(C_in, L)``; see :func:`conv2d`."""
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
) -> Tensor:
    """2-D convolution, as :func:`torch.nn.functional.conv2d`, with two extensions.

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
        weight: ``(C_out, C_in/groups, kH, kW)``.
        bias: ``(C_out,)`` or ``None``.
        stride, dilation: an int or one int per spatial dim, all positive.
        padding: an int / tuple (zero-or-mode padding on both sides), ``'valid'`` (none) or
            ``'same'``. Unlike torch, ``'same'`` also works with stride > 1, following
            TensorFlow: output ``ceil(in/stride)``, the odd padding pixel at the end.
        groups: the number of blocked connections; ``groups == C_in`` is depthwise.
        padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'`` (as in
            ``nn.Conv2d``); on the Triton backend it is index arithmetic, not a padded copy.

    Returns:
        ``(N, C_out, H_out, W_out)`` (or unbatched), channels-last when an operand is.
    """
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv3d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
) -> Tensor:
    """3-D convolution over ``(N, C_in, D, H, W)`` or ``(C_in, D, H, W)``; see :func:`conv2d`."""
    return _conv("conv3d", 3, input, weight, bias, stride, padding, dilation, groups, padding_mode)


__all__ = ["conv1d", "conv2d", "conv3d"]
