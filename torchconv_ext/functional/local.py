"""Locally connected (unshared) and tiled convolution: ``conv{1,2,3}d_local`` and
``conv{1,2,3}d_tiled`` (beyond torch).

Both take a convolution's arguments — stride, padding (ints, ``(before, after)`` pairs,
``'valid'``, TensorFlow-style ``'same'``), dilation, groups and ``padding_mode`` — with a weight
that holds several kernels:

* locally connected: weight ``(*out_positions, C_out, C_in/groups, *kernel)``, one kernel per
  output position, bias ``(*out_positions, C_out)``;
* tiled: weight ``(*tiles, C_out, C_in/groups, *kernel)``, output position ``o`` uses kernel
  ``o mod tiles`` per dim, bias ``(*tiles, C_out)``. One tile is an ordinary convolution, tiles
  equal to the output size a locally connected one.
"""

from __future__ import annotations

from torch import Tensor

from .._args import IntOrTuple, Padding
from .._local_args import local_geometry
from .._ops.local import local_conv_fwd
from ._common import Openings, conv_dtype, open_call

#: The openings of plain calls (``_local``).
_OPENINGS = Openings()


def _local(
    name: str,
    spatial_dims: int,
    tiled: bool,
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: IntOrTuple,
    padding: str | Padding,
    dilation: IntOrTuple,
    groups: int,
    padding_mode: str,
) -> Tensor:
    key = _OPENINGS.key(name, input, weight, bias, stride, padding, dilation, groups, padding_mode)
    opened = _OPENINGS.get(key)
    if opened is not None:  # this call's opening, as decided before
        batched, call = opened
        out = call(input if batched else input.unsqueeze(0), weight, bias)
        return out if batched else out.squeeze(0)
    cast, _ = conv_dtype(input)  # autocast casts the operands as it casts a convolution's
    batched, input, weight, bias = open_call(name, spatial_dims, input, weight, bias, cast=cast)
    g = local_geometry(
        name, input, weight, bias, stride, padding, dilation, groups, padding_mode, tiled=tiled
    )
    call = _OPENINGS.bind(key, local_conv_fwd, *g.as_args())
    _OPENINGS.remember(key, (batched, call))
    out = call(input, weight, bias)
    return out if batched else out.squeeze(0)


def conv1d_local(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
) -> Tensor:
    """Locally connected 1-D convolution; see :func:`conv2d_local`."""
    return _local(
        "conv1d_local", 1, False, input, weight, bias, stride, padding, dilation, groups,
        padding_mode,
    )  # fmt: skip


def conv2d_local(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
) -> Tensor:
    """Locally connected (unshared) 2-D convolution: a convolution whose every output position
    has its own kernel.

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
        weight: ``(H_out, W_out, C_out, C_in/groups, kH, kW)``, the kernel of each output
            position (the output size must be the one these arguments give).
        bias: ``(H_out, W_out, C_out)`` or ``None``.
        stride, padding, dilation, groups, padding_mode: as for
            :func:`torchconv_ext.functional.conv2d` (``'same'`` works with any stride).

    Returns:
        ``(N, C_out, H_out, W_out)`` (or unbatched), channels-last when the input is.
    """
    return _local(
        "conv2d_local", 2, False, input, weight, bias, stride, padding, dilation, groups,
        padding_mode,
    )  # fmt: skip


def conv3d_local(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
) -> Tensor:
    """Locally connected 3-D convolution; see :func:`conv2d_local`."""
    return _local(
        "conv3d_local", 3, False, input, weight, bias, stride, padding, dilation, groups,
        padding_mode,
    )  # fmt: skip


def conv1d_tiled(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
) -> Tensor:
    """Tiled 1-D convolution; see :func:`conv2d_tiled`."""
    return _local(
        "conv1d_tiled", 1, True, input, weight, bias, stride, padding, dilation, groups,
        padding_mode,
    )  # fmt: skip


def conv2d_tiled(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
) -> Tensor:
    """Tiled 2-D convolution (Goodfellow et al., *Deep Learning*, ch. 9): ``tH × tW`` kernels
    used in rotation, output position ``(i, j)`` taking kernel ``(i mod tH, j mod tW)``.

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
        weight: ``(tH, tW, C_out, C_in/groups, kH, kW)``. ``tH = tW = 1`` is an ordinary
            convolution; tiles equal to the output size a locally connected one; a tile no
            output position reaches is unused (its gradient is zero).
        bias: ``(tH, tW, C_out)`` or ``None``, rotating with the kernels.
        stride, padding, dilation, groups, padding_mode: as for
            :func:`torchconv_ext.functional.conv2d`.

    Returns:
        ``(N, C_out, H_out, W_out)`` (or unbatched), channels-last when the input is.
    """
    return _local(
        "conv2d_tiled", 2, True, input, weight, bias, stride, padding, dilation, groups,
        padding_mode,
    )  # fmt: skip


def conv3d_tiled(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
) -> Tensor:
    """Tiled 3-D convolution; see :func:`conv2d_tiled`."""
    return _local(
        "conv3d_tiled", 3, True, input, weight, bias, stride, padding, dilation, groups,
        padding_mode,
    )  # fmt: skip


__all__ = [
    "conv1d_local",
    "conv1d_tiled",
    "conv2d_local",
    "conv2d_tiled",
    "conv3d_local",
    "conv3d_tiled",
]
