"""Direct depthwise convolution kernels (groups == C_in, C_out = C_in × multiplier).

A depthwise convolution has one input channel per group, so an implicit GEMM would waste almost
all of each tensor-core tile. These kernels are direct instead: every program owns a tile of
``BLOCK_P`` flattened (batch, position) indices × ``BLOCK_C`` channels and loops over the taps,
with fp32 accumulation (fp64 for fp64 tensors).

One code path serves 1-, 2- and 3-d convolutions: tensors are viewed as ``(N, C, D, H, W)``
(``as_5d``) and every size and stride is a runtime argument. Padding modes are index arithmetic
in the loads (``map_padded``), never a padded copy.

Tile orientation. The 2-d tile is ``[BLOCK_P, BLOCK_C]`` when channels are the fastest-varying
dim of the main input (channels_last, ``CHANNELS_INNER``) and ``[BLOCK_C, BLOCK_P]`` otherwise,
so the innermost tile axis — the one adjacent threads walk — is the contiguous one in memory in
both layouts. Everything else is written with broadcast index tensors, so the kernels' bodies do not
depend on the orientation.

Output channel ``co`` reads input channel ``co // multiplier``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ._activation import ACTIVATIONS, activate, epilogue_args
from ._common import (
    INTERPRET,
    PAD_MODES,
    acc_dtype,
    acc_torch_dtype,
    as_5d,
    cdiv,
    channels_inner,
    check_device,
    needs_int64,
    pack_geometry,
)
from ._indexing import full_tile, map_padded, tile_indices, unflatten, wide
from ._plan import launch
from ._tuning import Config, Tuner, bucket

# --------------------------------------------------------------------------------------------
# Tile sizes
# --------------------------------------------------------------------------------------------


def _tile_configs() -> list[Config]:
    if INTERPRET:
        # One small config: tests stay fast, and tiny shapes still span several tiles.
        return [Config.of(1, 3, BLOCK_P=32, BLOCK_C=4)]
    # Channels-inner tiles want a wide BLOCK_C (vector loads along C), positions-inner tiles a
    # wide BLOCK_P; the tuner picks per key (layout and geometry included). 4 warps only
    # (8-warp tap loops have miscompiled).
    sizes = ((64, 64), (32, 64), (64, 32), (128, 32), (32, 128), (128, 64), (256, 16))
    return [Config.of(4, 3, BLOCK_P=p, BLOCK_C=c) for p, c in sizes]


# Grad-weight tiles and split targets are fixed (not tuned): they set the reduction order, which
# must depend on the shapes only so results are bitwise repeatable across runs and processes.
if INTERPRET:
    _BW_BLOCK_P, _BW_BLOCK_C, _BW_WARPS = 32, 4, 1
    _BW_TARGET_PROGRAMS, _BW_MIN_BLOCKS_PER_SPLIT = 16, 1
else:
    _BW_BLOCK_P, _BW_BLOCK_C, _BW_WARPS = 64, 64, 4
    _BW_TARGET_PROGRAMS, _BW_MIN_BLOCKS_PER_SPLIT = 1024, 4


# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _input_coord(o, k, size, stride, pad, dil, PAD_MODE: tl.constexpr):
    """Input coordinate read by output ``o`` at tap ``k``, mapped through the padding mode.

    Returns ``(index, in_bounds)``; for zero padding, out-of-range reads must be masked.
    """
    return map_padded(o * stride - pad + k * dil, size, PAD_MODE)


@triton.jit
def _output_coord(i, k, osize, stride, pad, dil):
    """Output coordinate whose tap ``k`` reads input ``i`` (zero padding): ``(o, valid)``.

    ``o = (i + pad - k·dil) / stride`` when that is a non-negative integer below ``osize``.
    """
    t = i + pad - k * dil
    o = t // stride
    return o, (t >= 0) & (o * stride == t) & (o < osize)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _conv_depthwise_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    M, C_OUT, MULT,
    D, H, W, OD, OH, OW, KD, KH, KW,
    STRIDE_D, STRIDE_H, STRIDE_W, PAD_D, PAD_H, PAD_W, DIL_D, DIL_H, DIL_W,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sw_o, sw_d, sw_h, sw_w,
    sb,
    sy_n, sy_c, sy_d, sy_h, sy_w,
    aw_ptr, saw, ACT_ALPHA, ACT_ALPHA_LO,
    PAD_MODE: tl.constexpr, HAS_BIAS: tl.constexpr, CHANNELS_INNER: tl.constexpr,
    USE_INT64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    ACT: tl.constexpr,
):  # fmt: skip
    # Tile: BLOCK_P flattened output positions (over N·OD·OH·OW) × BLOCK_C output channels.
    p_start = wide(tl.program_id(0), USE_INT64) * BLOCK_P
    p, co = tile_indices(
        p_start, tl.program_id(1) * BLOCK_C, BLOCK_P, BLOCK_C, CHANNELS_INNER, USE_INT64
    )
    p_ok = p < M
    c_ok = co < C_OUT
    n, od, oh, ow = unflatten(p, OD, OH, OW)
    x_base = n * sx_n + (co // MULT) * sx_c
    w_base = co * sw_o

    acc = full_tile(0, ACC_DTYPE, BLOCK_P, BLOCK_C, CHANNELS_INNER)
    # Per-dimension index maps are hoisted out of the inner loops.
    for kd in range(KD):
        idx_d, ok_d = _input_coord(od, kd, D, STRIDE_D, PAD_D, DIL_D, PAD_MODE)
        x_d = x_base + idx_d * sx_d
        for kh in range(KH):
            idx_h, ok_h = _input_coord(oh, kh, H, STRIDE_H, PAD_H, DIL_H, PAD_MODE)
            x_dh = x_d + idx_h * sx_h
            ok_dh = p_ok & ok_d & ok_h
            for kw in range(KW):
                idx_w, ok_w = _input_coord(ow, kw, W, STRIDE_W, PAD_W, DIL_W, PAD_MODE)
                xv = tl.load(x_ptr + (x_dh + idx_w * sx_w), mask=(ok_dh & ok_w) & c_ok, other=0.0)
                wv = tl.load(
                    w_ptr + (w_base + kd * sw_d + kh * sw_h + kw * sw_w), mask=c_ok, other=0.0
                )
                acc += xv.to(ACC_DTYPE) * wv.to(ACC_DTYPE)
    if HAS_BIAS:
        acc += tl.load(b_ptr + co * sb, mask=c_ok, other=0.0).to(ACC_DTYPE)
    acc = activate(acc, aw_ptr, co * saw, c_ok, ACT_ALPHA, ACT_ALPHA_LO, ACT)

    y_off = n * sy_n + co * sy_c + od * sy_d + oh * sy_h + ow * sy_w
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=p_ok & c_ok)


@triton.jit
def _conv_depthwise_bwd_input_kernel(
    go_ptr, w_ptr, b_ptr, gi_ptr,
    M, C, MULT,
    D, H, W, OD, OH, OW, KD, KH, KW,
    STRIDE_D, STRIDE_H, STRIDE_W, PAD_D, PAD_H, PAD_W, DIL_D, DIL_H, DIL_W,
    sgo_n, sgo_c, sgo_d, sgo_h, sgo_w,
    sw_o, sw_d, sw_h, sw_w,
    sgi_n, sgi_c, sgi_d, sgi_h, sgi_w,
    sb,
    HAS_BIAS: tl.constexpr, CHANNELS_INNER: tl.constexpr, USE_INT64: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # Gather form (deterministic, no atomics): tile = BLOCK_P flattened input positions (over
    # N·D·H·W) × BLOCK_C input channels; each element sums, over the multiplier and the taps,
    # the grad_out elements whose window covered it. Zero padding only. With HAS_BIAS, plus a
    # transposed convolution's bias per input channel.
    p_start = wide(tl.program_id(0), USE_INT64) * BLOCK_P
    p, ci = tile_indices(
        p_start, tl.program_id(1) * BLOCK_C, BLOCK_P, BLOCK_C, CHANNELS_INNER, USE_INT64
    )
    p_ok = p < M
    c_ok = ci < C
    n, i_d, i_h, i_w = unflatten(p, D, H, W)

    acc = full_tile(0, ACC_DTYPE, BLOCK_P, BLOCK_C, CHANNELS_INNER)
    for j in range(MULT):
        co = ci * MULT + j
        go_base = n * sgo_n + co * sgo_c
        w_base = co * sw_o
        for kd in range(KD):
            o_d, ok_d = _output_coord(i_d, kd, OD, STRIDE_D, PAD_D, DIL_D)
            go_d = go_base + o_d * sgo_d
            for kh in range(KH):
                o_h, ok_h = _output_coord(i_h, kh, OH, STRIDE_H, PAD_H, DIL_H)
                go_dh = go_d + o_h * sgo_h
                ok_dh = p_ok & ok_d & ok_h
                for kw in range(KW):
                    o_w, ok_w = _output_coord(i_w, kw, OW, STRIDE_W, PAD_W, DIL_W)
                    gv = tl.load(
                        go_ptr + (go_dh + o_w * sgo_w), mask=(ok_dh & ok_w) & c_ok, other=0.0
                    )
                    wv = tl.load(
                        w_ptr + (w_base + kd * sw_d + kh * sw_h + kw * sw_w), mask=c_ok, other=0.0
                    )
                    acc += gv.to(ACC_DTYPE) * wv.to(ACC_DTYPE)
    if HAS_BIAS:
        acc += tl.load(b_ptr + ci * sb, mask=c_ok, other=0.0).to(ACC_DTYPE)

    gi_off = n * sgi_n + ci * sgi_c + i_d * sgi_d + i_h * sgi_h + i_w * sgi_w
    tl.store(gi_ptr + gi_off, acc.to(gi_ptr.dtype.element_ty), mask=p_ok & c_ok)


@triton.jit
def _conv_depthwise_bwd_weight_kernel(
    x_ptr, go_ptr, gw_ptr,
    M, C_OUT, MULT, CHUNK,
    D, H, W, OD, OH, OW, KH, KW,
    STRIDE_D, STRIDE_H, STRIDE_W, PAD_D, PAD_H, PAD_W, DIL_D, DIL_H, DIL_W,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sgo_n, sgo_c, sgo_d, sgo_h, sgo_w,
    sgw_split, sgw_o, sgw_d, sgw_h, sgw_w,
    PAD_MODE: tl.constexpr, CHANNELS_INNER: tl.constexpr, USE_INT64: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # Program (channel block, tap, split): reduces grad_out · x over the split's CHUNK of the
    # flattened N·OD·OH·OW axis and writes one partial per channel (no atomics).
    pid_c = tl.program_id(0)
    tap = tl.program_id(1)
    split = wide(tl.program_id(2), USE_INT64)
    c1 = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # channel offsets stay small (< C·mult)
    kw = tap % KW
    kh = (tap // KW) % KH
    kd = tap // (KW * KH)
    m_lo = split * CHUNK

    acc = full_tile(0, ACC_DTYPE, BLOCK_P, BLOCK_C, CHANNELS_INNER)
    for m0 in range(0, CHUNK, BLOCK_P):
        p, co = tile_indices(
            m_lo + m0, pid_c * BLOCK_C, BLOCK_P, BLOCK_C, CHANNELS_INNER, USE_INT64
        )
        p_ok = p < M
        c_ok = co < C_OUT
        n, od, oh, ow = unflatten(p, OD, OH, OW)
        idx_d, ok_d = _input_coord(od, kd, D, STRIDE_D, PAD_D, DIL_D, PAD_MODE)
        idx_h, ok_h = _input_coord(oh, kh, H, STRIDE_H, PAD_H, DIL_H, PAD_MODE)
        idx_w, ok_w = _input_coord(ow, kw, W, STRIDE_W, PAD_W, DIL_W, PAD_MODE)
        go_off = n * sgo_n + co * sgo_c + od * sgo_d + oh * sgo_h + ow * sgo_w
        x_off = n * sx_n + (co // MULT) * sx_c + idx_d * sx_d + idx_h * sx_h + idx_w * sx_w
        gv = tl.load(go_ptr + go_off, mask=p_ok & c_ok, other=0.0)
        xv = tl.load(x_ptr + x_off, mask=(p_ok & ok_d & ok_h & ok_w) & c_ok, other=0.0)
        acc += gv.to(ACC_DTYPE) * xv.to(ACC_DTYPE)

    part = tl.sum(acc, axis=0 if CHANNELS_INNER else 1)  # reduce over the position axis
    gw_off = split * sgw_split + c1 * sgw_o + kd * sgw_d + kh * sgw_h + kw * sgw_w
    tl.store(gw_ptr + gw_off, part.to(gw_ptr.dtype.element_ty), mask=c1 < C_OUT)


_FWD = Tuner("conv_depthwise_fwd", _conv_depthwise_fwd_kernel, _tile_configs())
_BWD_INPUT = Tuner("conv_depthwise_bwd_input", _conv_depthwise_bwd_input_kernel, _tile_configs())

# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _check(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor, params: Sequence[Sequence[int]]):
    """Shapes shared by the three launchers: x (N, C, *S), w (C·mult, 1, *K), y (N, C·mult, *O)."""
    nd = x.dim() - 2
    if not 1 <= nd <= 3 or w.dim() != nd + 2 or y.dim() != nd + 2:
        raise ValueError("depthwise conv: expected (N, C, *S) tensors with 1 to 3 spatial dims")
    c, co = x.shape[1], w.shape[0]
    if c == 0 or w.shape[1] != 1 or co % c != 0 or y.shape[:2] != (x.shape[0], co):
        raise ValueError(
            f"depthwise conv: bad shapes x {tuple(x.shape)}, w {tuple(w.shape)}, "
            f"out {tuple(y.shape)}"
        )
    if any(len(v) != nd for v in params):
        raise ValueError("depthwise conv: stride/padding/dilation need one value per spatial dim")


def depthwise_conv_forward(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    *,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    pad_mode: str,
    activation: str | None = None,
    alpha: float = 0.0,
    act_weight: torch.Tensor | None = None,
) -> None:
    """Depthwise convolution ``out = act(conv(x, w, groups=C) + bias)``, written into ``out``
    (``activation``, ``alpha``, ``act_weight``: the epilogue's, see ``_activation``).

    x: (N, C, *S) with 1–3 spatial dims; w: (C·mult, 1, *K); bias: (C·mult,) or None;
    out: (N, C·mult, *O), preallocated, every element written. Any strides everywhere.
    ``padding`` is the padding before each spatial dim; the padding after is whatever ``O``
    implies, so asymmetric padding works. ``pad_mode``: zeros | reflect | replicate | circular.
    """
    check_device(x, w, bias, out, act_weight)
    _check(x, w, out, (stride, padding, dilation))
    if out.numel() == 0:
        return
    x5, w5, y5 = as_5d(x), as_5d(w), as_5d(out)
    n, c = x5.shape[:2]
    co = w5.shape[0]
    m = n * y5.shape[2] * y5.shape[3] * y5.shape[4]
    has_bias = bias is not None
    b = bias if has_bias else w5  # dummy pointer, never read
    geometry = pack_geometry((stride, 1), (padding, 0), (dilation, 1))
    c_inner, use_int64 = channels_inner(x5), needs_int64(x, w, bias, out)
    key = (x.dtype, (c_inner, y5.stride(1) == 1), pad_mode, tuple(w5.shape[2:]), geometry[:3],
           geometry[6:], co, co // c, bucket(m), use_int64, activation)  # fmt: skip
    _FWD.launch(
        key,
        lambda cfg: (cdiv(m, cfg["BLOCK_P"]), cdiv(co, cfg["BLOCK_C"])),
        (
            x5, w5, b, y5,
            m, co, co // c,
            *x5.shape[2:], *y5.shape[2:], *w5.shape[2:],
            *geometry,
            *x5.stride(),
            w5.stride(0), *w5.stride()[2:],
            bias.stride(0) if has_bias else 0,
            *y5.stride(),
            *epilogue_args(activation, alpha, act_weight, w5),
        ),
        dict(
            PAD_MODE=PAD_MODES[pad_mode], HAS_BIAS=has_bias, CHANNELS_INNER=c_inner,
            USE_INT64=use_int64, ACC_DTYPE=acc_dtype(out.dtype), ACT=ACTIVATIONS[activation],
        ),
    )  # fmt: skip


def depthwise_conv_backward_input(
    grad_out: torch.Tensor,
    w: torch.Tensor,
    grad_in: torch.Tensor,
    *,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    bias: torch.Tensor | None = None,
) -> None:
    """Gradient of a zero-padded depthwise convolution w.r.t. its input, written to ``grad_in``,
    plus ``bias`` (C,) per channel when given (a transposed convolution's).

    grad_out: (N, C·mult, *O); w: (C·mult, 1, *K); grad_in: (N, C, *I), preallocated, every
    element written (zeros, or the bias, where no window reaches). Any strides. Deterministic
    gather: each input element sums the grad_out elements whose windows covered it; no atomics.
    """
    check_device(grad_out, w, grad_in, bias)
    _check(grad_in, w, grad_out, (stride, padding, dilation))
    if grad_in.numel() == 0:
        return
    go5, w5, gi5 = as_5d(grad_out), as_5d(w), as_5d(grad_in)
    n, c = gi5.shape[:2]
    co = w5.shape[0]
    m = n * gi5.shape[2] * gi5.shape[3] * gi5.shape[4]
    geometry = pack_geometry((stride, 1), (padding, 0), (dilation, 1))
    c_inner, use_int64 = channels_inner(go5), needs_int64(grad_out, w, grad_in)
    key = (grad_out.dtype, (c_inner, gi5.stride(1) == 1), tuple(w5.shape[2:]), geometry[:3],
           geometry[6:], c, co // c, bucket(m), use_int64)  # fmt: skip
    _BWD_INPUT.launch(
        key,
        lambda cfg: (cdiv(m, cfg["BLOCK_P"]), cdiv(c, cfg["BLOCK_C"])),
        (
            go5, w5, w5 if bias is None else bias, gi5,
            m, c, co // c,
            *gi5.shape[2:], *go5.shape[2:], *w5.shape[2:],
            *geometry,
            *go5.stride(),
            w5.stride(0), *w5.stride()[2:],
            *gi5.stride(),
            0 if bias is None else bias.stride(0),
        ),
        dict(
            HAS_BIAS=bias is not None, CHANNELS_INNER=c_inner, USE_INT64=use_int64,
            ACC_DTYPE=acc_dtype(grad_in.dtype),
        ),
    )  # fmt: skip


def backward_weight_split(m: int, co: int, taps: int) -> tuple[int, int]:
    """``(split, chunk)`` of the grad-weight reduction over ``m`` = N·output positions.

    Chosen from the shapes only, so the summation order — and the result, bitwise — repeats.
    The split fills the device when ``channel blocks × taps`` alone gives too few programs.
    """
    tiles = cdiv(co, _BW_BLOCK_C) * taps
    blocks = cdiv(m, _BW_BLOCK_P)
    split = max(1, min(cdiv(_BW_TARGET_PROGRAMS, tiles), blocks // _BW_MIN_BLOCKS_PER_SPLIT, 65535))
    chunk = cdiv(blocks, split) * _BW_BLOCK_P
    return cdiv(m, chunk), chunk


def depthwise_conv_backward_weight(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    grad_w: torch.Tensor,
    *,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    pad_mode: str,
) -> None:
    """Gradient of a depthwise convolution w.r.t. its weight, written to ``grad_w``.

    x: (N, C, *S); grad_out: (N, C·mult, *O); grad_w: (C·mult, 1, *K), preallocated, any
    strides. x is read through ``pad_mode`` as in the forward. A reduction over N × output
    positions per (channel, tap); when split for parallelism, fp32 (fp64) partials go to a
    workspace summed with ``torch.sum`` — deterministic, no atomics, split chosen from shapes.
    """
    check_device(x, grad_out, grad_w)
    _check(x, grad_w, grad_out, (stride, padding, dilation))
    if grad_w.numel() == 0:
        return
    x5, go5, gw5 = as_5d(x), as_5d(grad_out), as_5d(grad_w)
    n, c = x5.shape[:2]
    co = gw5.shape[0]
    kd, kh, kw = gw5.shape[2:]
    m = n * go5.shape[2] * go5.shape[3] * go5.shape[4]
    if m == 0:
        grad_w.zero_()
        return
    split, chunk = backward_weight_split(m, co, kd * kh * kw)
    # One split writes straight into grad_w (its strides, one rounding); several write fp32/fp64
    # partials of shape (split, C·mult, KD, KH, KW) that torch sums in a fixed order.
    if split == 1:
        ws, ws_strides = gw5, (0, gw5.stride(0), *gw5.stride()[2:])
    else:
        ws = torch.empty(
            (split, co, kd, kh, kw), device=x.device, dtype=acc_torch_dtype(grad_w.dtype)
        )
        ws_strides = ws.stride()
    launch(_conv_depthwise_bwd_weight_kernel, (cdiv(co, _BW_BLOCK_C), kd * kh * kw, split), (
        x5, go5, ws,
        m, co, co // c, chunk,
        *x5.shape[2:], *go5.shape[2:], kh, kw,
        *pack_geometry((stride, 1), (padding, 0), (dilation, 1)),
        *x5.stride(),
        *go5.stride(),
        *ws_strides,
    ), dict(
        PAD_MODE=PAD_MODES[pad_mode], CHANNELS_INNER=channels_inner(x5),
        USE_INT64=needs_int64(x, grad_out, grad_w, ws), ACC_DTYPE=acc_dtype(grad_w.dtype),
        BLOCK_P=_BW_BLOCK_P, BLOCK_C=_BW_BLOCK_C, num_warps=_BW_WARPS,
    ))  # fmt: skip
    if split > 1:
        gw5[:, 0].copy_(ws.sum(0))
