"""Narrow convolutions (RGB stems, single-channel inputs) as tap loops over windows.

A convolution with few input channels (fewer than 16, one group) has too few of them to fill a
``tl.dot`` operand per tap, so the implicit GEMM flattens taps × channels into one reduction
axis and gathers every element of a tile on its own (``conv_gemm``'s ``FLAT_K``): compiled for
sm_90, ResNet-50's 7×7 stem issues several times more instructions per step than its tensor
cores need cycles.

Here the input is first copied, in one pass (``_window_pack_kernel``), into a padded
channels-last buffer — the padding applied by the convolution's padding mode, its channels
padded with zeros to ``Cp`` (a power of two: :func:`window_channels`). A window row — the ``KW``
taps of one output position along ``w`` — is then ``KW·Cp`` contiguous elements of the buffer,
so the convolution is a plain tap loop over a view of the buffer whose *channels* are those
windows::

    view[n, kw·Cp + c, d, h, ow] = buffer[n, d, h, ow·stride_w + kw, c]

(windows of neighbouring positions overlap: ``as_strided``), with kernel ``(KD, KH, 1)``, stride
``(stride_d, stride_h, 1)``, no padding, and the weight laid out to match (``kw·Cp + c``, zeros
in the padded channels; packed by the same kernel). Each tap of the loop loads ``KW·Cp``
contiguous elements per row as vectors (``channel_alignment``: 8 or 16 bytes), with no bounds
checks (``in_bounds``): the padding is in the buffer. The weight gradient is the same view's,
rearranged back (padded channels dropped).

Windows need one group and unit dilation along ``w`` (:func:`windows`); other narrow
convolutions keep the flattened loop. An input gradient reads the gradient of the output: when
that has few channels, at stride 1, it is the convolution of the output gradient with the
flipped, transposed weight, and takes the windows as well (:func:`window_conv_backward_input`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ._common import PAD_MODES, as_5d, cdiv, needs_int64, next_power_of_2, spatial3, workspace
from ._indexing import map_padded, wide
from ._plan import launch
from .conv_gemm import FLAT_BELOW, gemm_conv_backward_weight, gemm_conv_forward

__all__ = [
    "window_channels",
    "window_conv_backward_input",
    "window_conv_backward_weight",
    "window_conv_forward",
    "window_weight",
    "windows",
]


def windows(c_in: int, groups: int, dilation: Sequence[int]) -> bool:
    """Whether a convolution with ``c_in`` input channels in ``groups`` reads its input through
    windows of a padded copy (module doc): then it takes the input in any layout, and callers
    need not convert it."""
    return groups == 1 and c_in < FLAT_BELOW and dilation[-1] == 1


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


@triton.jit
def _window_pack_kernel(
    x_ptr, buf_ptr, C, D, H, W, DP, HP, WP, W_USED, PAD_D, PAD_H, PAD_W,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    CP: tl.constexpr, BLOCK_W: tl.constexpr, PAD_MODE: tl.constexpr, USE_INT64: tl.constexpr,
):  # fmt: skip
    """buf[n, d, h, w, c] = x[n, c, d - PAD_D, h - PAD_H, w - PAD_W], coordinates outside ``x``
    mapped by ``PAD_MODE`` (zeros: 0), and 0 for ``c ≥ C`` and in the columns from ``W_USED`` on
    (alignment only): every element of the dense ``(N, DP, HP, WP, CP)`` buffer, written once.

    Grid: buffer rows ``(n, d, h)`` × tiles of ``BLOCK_W`` columns; a tile's stores are one
    contiguous run.
    """
    row = wide(tl.program_id(0), USE_INT64)
    h = row % HP
    d = (row // HP) % DP
    n = row // (HP * DP)
    w = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    c = tl.arange(0, CP)
    i_d, ok_d = map_padded(d - PAD_D, D, PAD_MODE)
    i_h, ok_h = map_padded(h - PAD_H, H, PAD_MODE)
    i_w, ok_w = map_padded(w - PAD_W, W, PAD_MODE)
    # A row outside the input (zero padding) has no column inside it.
    w_end = tl.where(ok_d & ok_h, W_USED, 0)
    ok = (ok_w & (w < w_end))[:, None] & (c < C)[None, :]
    source = n * sx_n + i_d * sx_d + i_h * sx_h + (i_w * sx_w)[:, None] + (c * sx_c)[None, :]
    value = tl.load(x_ptr + source, mask=ok, other=0.0)
    target = row * (WP * CP) + (w * CP)[:, None] + c[None, :]
    tl.store(buf_ptr + target, value, mask=(w < WP)[:, None])


#: Elements one program of the pack kernel writes (at most).
_PACK_BLOCK = 1024


def _pack(
    t5: torch.Tensor,
    extents: Sequence[int],
    padding: Sequence[int],
    cp: int,
    pad_mode: str = "zeros",
    width_used: int | None = None,
) -> torch.Tensor:
    """A new dense ``(N, *extents, Cp)`` copy of ``t5`` (N, C, D, H, W) with channels last:
    ``t5`` at its position plus ``padding``, padded around it by ``pad_mode``, zeros in channels
    ``C…Cp-1`` and in the columns from ``width_used`` on (one pass)."""
    n = t5.shape[0]
    dp, hp, wp = extents
    buffer = workspace(t5.new_empty((n, dp, hp, wp, cp)))
    block_w = min(next_power_of_2(wp), _PACK_BLOCK // cp)
    launch(
        _window_pack_kernel,
        (n * dp * hp, cdiv(wp, block_w)),
        (
            t5, buffer, t5.shape[1], *t5.shape[2:], dp, hp, wp,
            wp if width_used is None else width_used, *padding, *t5.stride(),
        ),
        dict(
            CP=cp, BLOCK_W=block_w, PAD_MODE=PAD_MODES[pad_mode],
            USE_INT64=needs_int64(t5, buffer), num_warps=4,
        ),
    )  # fmt: skip
    return buffer


def _windowed_input(
    x5: torch.Tensor, out_sizes: Sequence[int], cp: int, geometry: tuple, pad_mode: str
) -> torch.Tensor:
    """The view of the module doc over a padded channels-last copy of ``x5``: shape ``(N, KW·Cp,
    Dp, Hp, OW)``, each of its positions' channels one window row."""
    kernel, stride, padding, dilation = geometry
    n = x5.shape[0]
    od, oh, ow = out_sizes
    # The rows (d, h) and columns the windows span; the columns rounded up so that a buffer row
    # is a multiple of 16 elements (rows start 16-element aligned).
    dp = (od - 1) * stride[0] + (kernel[0] - 1) * dilation[0] + 1
    hp = (oh - 1) * stride[1] + (kernel[1] - 1) * dilation[1] + 1
    used = (ow - 1) * stride[2] + kernel[2]
    wp = -(-used * cp // 16) * 16 // cp
    buffer = _pack(x5, (dp, hp, wp), padding, cp, pad_mode, used)
    row = wp * cp
    return buffer.as_strided(
        (n, kernel[2] * cp, dp, hp, ow), (dp * hp * row, 1, hp * row, row, stride[2] * cp)
    )


def _windowed_weight(w5: torch.Tensor, cp: int) -> torch.Tensor:
    """``w5`` (C_out, C_in, KD, KH, KW) as the view's weight: (C_out, KW·Cp, KD, KH, 1), its
    channel ``kw·Cp + c`` the tap ``kw`` of input channel ``c`` (zero for ``c ≥ C_in``)."""
    c_out, _, kd, kh, kw = w5.shape
    packed = _pack(w5, (kd, kh, kw), (0, 0, 0), cp)
    return packed.view(c_out, kd, kh, kw * cp, 1).permute(0, 3, 1, 2, 4)


def window_weight(w: torch.Tensor, *, input_gradient: bool = False) -> torch.Tensor:
    """``w`` (C_out, C_in, *K) laid out as the windows read it (module doc), in a new tensor —
    with ``input_gradient``, the flipped, transposed weight that
    :func:`window_conv_backward_input` convolves with. Pass it as ``windowed_weight`` (through
    ``conv_forward`` or ``conv_backward_input``) and the launch packs no weight: a caller may
    keep it as long as ``w`` does not change."""
    w5 = as_5d(w)
    if input_gradient:
        w5 = w5.flip((2, 3, 4)).transpose(0, 1)
    return _windowed_weight(w5, window_channels(w5.shape[1], w5.shape[4]))


def _weight_for(w5: torch.Tensor, cp: int, windowed: torch.Tensor | None) -> torch.Tensor:
    """The view's weight of ``w5``: ``windowed`` (what :func:`window_weight` made of it) when
    given, else packed now."""
    if windowed is None:
        return _windowed_weight(w5, cp)
    c_out, _, kd, kh, kw = w5.shape
    if tuple(windowed.shape) != (c_out, kw * cp, kd, kh, 1):
        raise ValueError(
            f"windowed_weight: expected window_weight's layout of a {tuple(w5.shape)} weight, "
            f"shape {(c_out, kw * cp, kd, kh, 1)}, but got {tuple(windowed.shape)}"
        )
    return windowed


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
    pad_mode: str,
    allow_tf32: bool,
    windowed_weight: torch.Tensor | None = None,
    **epilogue,
) -> None:
    """``gemm_conv_forward`` (same arguments, ``epilogue`` its activation or maxout ones) of a
    convolution :func:`windows` accepts, through windows; ``x`` and ``w`` in any layout.
    ``windowed_weight``: :func:`window_weight` of ``w``, made earlier (else packed here)."""
    x5, w5, y5 = as_5d(x), as_5d(w), as_5d(out)
    if y5.numel() == 0:
        return
    geometry = _geometry(w5.shape[2:], stride, padding, dilation)
    cp = window_channels(x5.shape[1], w5.shape[4])
    gemm_conv_forward(
        _windowed_input(x5, y5.shape[2:], cp, geometry, pad_mode),
        _weight_for(w5, cp, windowed_weight),
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
    pad_mode: str,
    allow_tf32: bool,
    grad_bias: torch.Tensor | None = None,
) -> None:
    """``gemm_conv_backward_weight`` of a convolution :func:`windows` accepts, through windows:
    the view's weight gradient, its padded channels dropped, rearranged into ``grad_w`` (and the
    bias gradient into ``grad_bias``, as the GEMM sums it)."""
    x5, go5, gw5 = as_5d(x), as_5d(grad_out), as_5d(grad_w)
    c_out, c_in, kd, kh, kw = gw5.shape
    geometry = _geometry(gw5.shape[2:], stride, padding, dilation)
    cp = window_channels(c_in, kw)
    if go5.numel() == 0 or x5.numel() == 0:
        gw5.zero_()
        return
    windowed = workspace(gw5.new_empty((c_out, kd, kh, kw * cp, 1)))
    gemm_conv_backward_weight(
        _windowed_input(x5, go5.shape[2:], cp, geometry, pad_mode),
        go5,
        windowed.permute(0, 3, 1, 2, 4),
        groups=1,
        pad_mode="zeros",
        allow_tf32=allow_tf32,
        grad_bias=grad_bias,
        **_view_geometry(geometry),
    )
    gw5.copy_(windowed.view(c_out, kd, kh, kw, cp)[..., :c_in].permute(0, 4, 1, 2, 3))


def window_conv_backward_input(
    grad_out: torch.Tensor,
    w: torch.Tensor,
    grad_in: torch.Tensor,
    *,
    padding: Sequence[int],
    dilation: Sequence[int],
    allow_tf32: bool,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    alpha: float = 0.0,
    act_weight: torch.Tensor | None = None,
    pre_activation: torch.Tensor | None = None,
    windowed_weight: torch.Tensor | None = None,
) -> None:
    """``gemm_conv_backward_input`` of a stride-1 convolution whose output has few channels
    (:func:`windows` of them, with one group), through windows: ``grad_in`` is the convolution
    of ``grad_out`` with the weight flipped and transposed (``windowed_weight``:
    ``window_weight(w, input_gradient=True)`` made earlier, else made here), padded by
    ``dilation·(kernel - 1) - padding`` before each dim (the size of ``grad_in`` sets the rest),
    plus ``bias``, then ``activation`` (``alpha``, ``act_weight``, ``pre_activation``: the
    forward's epilogue, whose output channels are those of ``grad_in``)."""
    w5 = as_5d(w)
    kernel, padding, dilation = w5.shape[2:], spatial3(padding, 0), spatial3(dilation, 1)
    if windowed_weight is None:
        windowed_weight = window_weight(w5, input_gradient=True)
    window_conv_forward(
        grad_out,
        w5.transpose(0, 1),  # (its shape: the flipped weight is windowed_weight's)
        bias,
        grad_in,
        stride=(1, 1, 1),
        padding=[d * (k - 1) - p for k, d, p in zip(kernel, dilation, padding, strict=True)],
        dilation=dilation,
        pad_mode="zeros",
        allow_tf32=allow_tf32,
        windowed_weight=windowed_weight,
        activation=activation,
        alpha=alpha,
        act_weight=act_weight,
        pre_activation=pre_activation,
    )
