"""Narrow convolutions (RGB stems, single-channel inputs) as tap loops over windows.

A convolution with few input channels (fewer than 16, one group) has too few of them to fill a
``tl.dot`` operand per tap, so the implicit GEMM flattens taps × channels into one reduction
axis and gathers every element of a tile on its own (``conv_gemm``'s ``FLAT_K``): compiled for
sm_90, ResNet-50's 7×7 stem issues several times more instructions per step than its tensor
cores need cycles.

Here the input is first copied, in one pass, into a zero-padded channels-last buffer with its
channels padded to ``Cp`` (a power of two: :func:`window_channels`). A window row — the ``KW``
taps of one output position along ``w`` — is then ``KW·Cp`` contiguous elements of the buffer,
so the convolution is a plain tap loop over a view of the buffer whose *channels* are those
windows::

    view[n, kw·Cp + c, d, h, ow] = buffer[n, d, h, ow·stride_w + kw, c]

(windows of neighbouring positions overlap: ``as_strided``), with kernel ``(KD, KH, 1)``, stride
``(stride_d, stride_h, 1)``, no padding, and the weight laid out to match (``kw·Cp + c``, zeros
in the padded channels). Each tap of the loop loads ``KW·Cp`` contiguous elements per row as
vectors (``channel_alignment``: 8 or 16 bytes), with no bounds checks: the padding is in the
buffer. The weight gradient is the same view's, rearranged back (padded channels dropped).

Windows need zero padding, one group and unit dilation along ``w`` (:func:`windows`); other
narrow convolutions keep the flattened loop. The input gradient keeps it too (it is the
gradient of the output, with ``C_out`` channels, that the stem's input-gradient GEMM reads).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._common import as_5d, spatial3
from .conv_gemm import FLAT_BELOW, gemm_conv_backward_weight, gemm_conv_forward

__all__ = ["window_conv_backward_weight", "window_conv_forward", "window_channels", "windows"]


def windows(
    c_in: int, groups: int, kernel_size: Sequence[int], dilation: Sequence[int], pad_mode: str
) -> bool:
    """Whether a convolution with ``c_in`` input channels in ``groups`` reads its input through
    windows of a padded copy (module doc): then it takes the input in any layout, and callers
    need not convert it."""
    return groups == 1 and c_in < FLAT_BELOW and pad_mode == "zeros" and dilation[-1] == 1


def window_channels(c_in: int, kernel_w: int) -> int:
    """``Cp``: the channels of the padded buffer — a power of two, at least ``c_in``, large
    enough that a window (``kernel_w·Cp`` channels of the view) fills a 16-wide ``tl.dot``
    operand: 4 for RGB 7×7 (28 channels) and 11×11 stems (44), 8 for RGB 3×3 (24)."""
    return 1 << max(c_in - 1, math.ceil(16 / kernel_w) - 1, 0).bit_length()


def _geometry(
    kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int], dilation
) -> tuple[tuple[int, int, int], ...]:
    return (
        spatial3(kernel_size, 1),
        spatial3(stride, 1),
        spatial3(padding, 0),
        spatial3(dilation, 1),
    )


def _windowed_input(
    x5: torch.Tensor, out_sizes: Sequence[int], cp: int, geometry: tuple
) -> torch.Tensor:
    """The view of the module doc over a new zero-padded channels-last copy of ``x5``: shape
    ``(N, KW·Cp, Dp, Hp, OW)``, each of its positions' channels one window row."""
    kernel, stride, padding, dilation = geometry
    n, c = x5.shape[:2]
    od, oh, ow = out_sizes
    # The rows (d, h) the windows span, and the columns: enough for the last window, rounded up
    # so that a buffer row is a multiple of 16 elements (rows start 16-element aligned).
    extents = (
        (od - 1) * stride[0] + (kernel[0] - 1) * dilation[0] + 1,
        (oh - 1) * stride[1] + (kernel[1] - 1) * dilation[1] + 1,
        -(-((ow - 1) * stride[2] + kernel[2]) * cp // 16) * 16 // cp,
    )
    buffer = x5.new_zeros((n, *extents, cp))
    # Input position i is buffer position i + padding; positions no window reaches are left out.
    source = [
        slice(max(-p, 0), min(size, e - p)) for size, e, p in zip(x5.shape[2:], extents, padding)
    ]
    if all(s.start < s.stop for s in source):
        target = [slice(s.start + p, s.stop + p) for s, p in zip(source, padding)]
        buffer[(slice(None), *target, slice(0, c))].copy_(
            x5[(slice(None), slice(None), *source)].permute(0, 2, 3, 4, 1)
        )
    dp, hp, wp = extents
    row = wp * cp
    return buffer.as_strided(
        (n, kernel[2] * cp, dp, hp, ow), (dp * hp * row, 1, hp * row, row, stride[2] * cp)
    )


def _windowed_weight(w5: torch.Tensor, cp: int) -> torch.Tensor:
    """``w5`` (C_out, C_in, KD, KH, KW) as the view's weight: (C_out, KW·Cp, KD, KH, 1), its
    channel ``kw·Cp + c`` the tap ``kw`` of input channel ``c`` (zero for ``c ≥ C_in``)."""
    c_out, c_in, kd, kh, kw = w5.shape
    packed = w5.new_zeros((c_out, kd, kh, kw, cp))
    packed[..., :c_in].copy_(w5.permute(0, 2, 3, 4, 1))
    return packed.view(c_out, kd, kh, kw * cp, 1).permute(0, 3, 1, 2, 4)


def _view_geometry(geometry: tuple) -> dict[str, tuple[int, int, int]]:
    """The tap loop's geometry over the view: windows along ``w``, no padding."""
    _, stride, _, dilation = geometry
    return dict(
        stride=(stride[0], stride[1], 1), padding=(0, 0, 0), dilation=(dilation[0], dilation[1], 1)
    )


def window_conv_forward(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    *,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    allow_tf32: bool,
    **epilogue,
) -> None:
    """``gemm_conv_forward`` (same arguments, ``epilogue`` its activation or maxout ones) of a
    convolution :func:`windows` accepts, through windows; ``x`` and ``w`` in any layout."""
    x5, w5, y5 = as_5d(x), as_5d(w), as_5d(out)
    if y5.numel() == 0:
        return
    geometry = _geometry(w5.shape[2:], stride, padding, dilation)
    cp = window_channels(x5.shape[1], w5.shape[4])
    gemm_conv_forward(
        _windowed_input(x5, y5.shape[2:], cp, geometry),
        _windowed_weight(w5, cp),
        bias,
        out,  # (as given: a maxout's winner has its shape)
        groups=1,
        pad_mode="zeros",
        allow_tf32=allow_tf32,
        **_view_geometry(geometry),
        **epilogue,
    )


def window_conv_backward_weight(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    grad_w: torch.Tensor,
    *,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    allow_tf32: bool,
) -> None:
    """``gemm_conv_backward_weight`` of a convolution :func:`windows` accepts, through windows:
    the view's weight gradient, its padded channels dropped, rearranged into ``grad_w``."""
    x5, go5, gw5 = as_5d(x), as_5d(grad_out), as_5d(grad_w)
    c_out, c_in, kd, kh, kw = gw5.shape
    geometry = _geometry(gw5.shape[2:], stride, padding, dilation)
    cp = window_channels(c_in, kw)
    if go5.numel() == 0 or x5.numel() == 0:
        gw5.zero_()
        return
    windowed = gw5.new_empty((c_out, kd, kh, kw * cp, 1))
    gemm_conv_backward_weight(
        _windowed_input(x5, go5.shape[2:], cp, geometry),
        go5,
        windowed.permute(0, 3, 1, 2, 4),
        groups=1,
        pad_mode="zeros",
        allow_tf32=allow_tf32,
        **_view_geometry(geometry),
    )
    gw5.copy_(windowed.view(c_out, kd, kh, kw, cp)[..., :c_in].permute(0, 4, 1, 2, 3))
