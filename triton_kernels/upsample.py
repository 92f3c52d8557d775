"""Nearest-neighbour upsampling kernels: forward copy and gather backward, 1-d to 3-d.

Every tensor is viewed as ``(N, C, D, H, W)`` (``as_5d``) and read through its strides, so one
kernel serves the three ranks and any input layout. A program owns a 2-d tile of ``BLOCK_R`` rows
× ``BLOCK_I`` inner positions of the tensor it writes, in the memory order of the output in the
forward, and in the backward of the larger of grad_out and grad_in (upsampling: grad_out, read
``k_d·k_h·k_w`` elements per element written; the two orders differ where torch returns a 3-d
channels-last input's gradient contiguous):

* NCDHW-like order: rows are flattened ``(n, c, d, h)``, the inner axis is ``w``;
* channels fastest (``CHANNELS_INNER``, ``_common.channels_inner``, e.g. channels-last): rows
  are flattened ``(n, d, h, w)``, the inner axis is ``c``.

Coordinates are decomposed once per row and once per column (never per element), and adjacent
lanes touch adjacent addresses of the dense tensor whose order the tile follows, so its
accesses coalesce and vectorise.
``CHANNELS_INNER`` needs channels to vary fastest, not a unit channel stride: every access goes
through the strides, so the tile order is only a matter of speed, never of results.

Source index (the caller passes the float32 ``scale`` per dim, ATen's ``compute_scales_value``):
``nearest`` reads ``min(floor(o * scale), in - 1)``, ``nearest-exact`` reads
``min(floor((o + 0.5) * scale), in - 1)``, in float32 arithmetic exactly as ATen's CUDA kernels
compute it (exact for spatial sizes below 2**24, where float32 holds every coordinate).

Backward is a gather, not a scatter: each input element sums the contiguous range of output
positions that copied it, ``[first(i), first(i + 1))`` per dim, where ``first(i)`` is the first
output coordinate whose source index is ``>= i`` (an estimate ``ceil(i / scale)`` corrected
against the forward rule itself, so the ranges are exactly the forward's preimages). No atomics:
the summation order is fixed, so results are bitwise repeatable.

Integer-scale fast path: when every dim's output is ``k`` times its input with ``k`` a power of
two (1, 2, 4, 8, 16) and the float32 scale exactly ``1/k``, the source index is ``o >> log2(k)``
in both modes. The forward then walks the *input*: each tile is read
once and written as ``k_d × k_h × k_w`` blocks — along ``w`` by interleaving the tile with
itself (full-width, vectorised stores), along the other dims by repeated stores. The backward
sums each block in the generic kernel's order; along ``w`` (factor 2 or 4, NCHW-like tiles) it
loads the block's output row segment whole (contiguous, vectorised loads instead of strided
ones) and splits it in registers. Both take the tile's inner size and the row dims' strides
in units of the largest power of two (up to 16 bytes) dividing them (``_in_units``), so rows
whose length is no multiple of 16 elements are still read and written as aligned vectors.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ._common import (
    INTERPRET,
    acc_dtype,
    as_5d,
    cdiv,
    channels_inner,
    check_device,
    needs_int64,
    next_power_of_2,
)
from ._indexing import tile_indices, unflatten, wide
from ._plan import launch

# Tile shapes follow from the problem's shape (no autotuning): a memory-bound copy gains little
# from tuning, and no call pays for a tuning sweep. (The backward's summation order does not
# depend on the tile: each element sums its own range, in order.)
if INTERPRET:
    _FWD_TILE, _BWD_TILE, _MAX_INNER, _WARPS = 128, 128, 16, 1
else:
    _FWD_TILE, _BWD_TILE, _MAX_INNER, _WARPS = 2048, 1024, 256, 4

#: Integer factors served by the fast path (interleaving doubles a tile's width per step).
FAST_FACTORS: tuple[int, ...] = (1, 2, 4, 8, 16)

# --------------------------------------------------------------------------------------------
# Device functions
# --------------------------------------------------------------------------------------------


@triton.jit
def _program_tile(BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr, USE_INT64: tl.constexpr):
    """Row indices ``[BLOCK_R, 1]`` and inner indices ``[1, BLOCK_I]`` of this program's tile."""
    r_start = wide(tl.program_id(0), USE_INT64) * BLOCK_R
    k_start = wide(tl.program_id(1), USE_INT64) * BLOCK_I
    return tile_indices(r_start, k_start, BLOCK_R, BLOCK_I, True, USE_INT64)


@triton.jit
def _tile_coords(r, k, C, S0, S1, S2, CHANNELS_INNER: tl.constexpr):
    """``(n, c, i0, i1, i2)`` of a tile over a ``(N, C, S0, S1, S2)`` tensor (see module doc).

    Each coordinate broadcasts to the tile: row-derived ones are ``[BLOCK_R, 1]``, the inner one
    ``[1, BLOCK_I]``.
    """
    if CHANNELS_INNER:
        n, i0, i1, i2 = unflatten(r, S0, S1, S2)
        c = k
    else:
        n, c, i0, i1 = unflatten(r, C, S0, S1)
        i2 = k
    return n, c, i0, i1, i2


@triton.jit
def _in_elements(s_n, s_c, s_d, s_h, s_w, UNIT: tl.constexpr, CHANNELS_INNER: tl.constexpr):
    """A tensor's strides as the integer fast path passes them — its row dims' (all but the
    inner one) in units of ``UNIT`` elements (``_in_units``) — back in elements."""
    if CHANNELS_INNER:
        return s_n * UNIT, s_c, s_d * UNIT, s_h * UNIT, s_w * UNIT
    else:
        return s_n * UNIT, s_c * UNIT, s_d * UNIT, s_h * UNIT, s_w


@triton.jit
def _src_unclamped(o, scale, EXACT: tl.constexpr):
    """``floor(o * scale)`` (``floor((o + 0.5) * scale)`` if EXACT) in float32, for ``o >= 0``."""
    f = o.to(tl.float32)
    if EXACT:
        f = f + 0.5
    # The product is non-negative, so truncation is the floor.
    return (f * scale).to(o.dtype)


@triton.jit
def _src_index(o, in_size, scale, EXACT: tl.constexpr):
    """Input coordinate that output coordinate ``o`` copies."""
    return tl.minimum(_src_unclamped(o, scale, EXACT), in_size - 1)


@triton.jit
def _first_dst(i, in_size, out_size, scale, EXACT: tl.constexpr):
    """First output coordinate whose source index is ``>= i`` (``out_size`` if none).

    The float32 estimate ``ceil(i / scale)`` is within one of the answer; two correction steps
    each way against the forward rule make it exact (the forward index is monotonic).
    """
    f = i.to(tl.float32) / scale
    if EXACT:
        f = f - 0.5
    # (``out_size * 1.0``: sizes equal to 1 arrive as constexpr ints.)
    f = tl.minimum(tl.maximum(tl.ceil(f), 0.0), out_size * 1.0)
    d = f.to(i.dtype)
    for _ in tl.static_range(2):
        prev = d - 1
        d = tl.where((d > 0) & (_src_unclamped(prev, scale, EXACT) >= i), prev, d)
    for _ in tl.static_range(2):
        d = tl.where((d < out_size) & (_src_unclamped(d, scale, EXACT) < i), d + 1, d)
    return tl.where(i >= in_size, out_size, d)


@triton.jit
def _dst_range(i, in_size, out_size, scale, EXACT: tl.constexpr):
    """``[lo, hi)``: the output coordinates that copied input coordinate ``i``."""
    return (
        _first_dst(i, in_size, out_size, scale, EXACT),
        _first_dst(i + 1, in_size, out_size, scale, EXACT),
    )


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _upsample_fwd_kernel(
    x_ptr, y_ptr,
    R, INNER, C, D, H, W, OD, OH, OW,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sy_n, sy_c, sy_d, sy_h, sy_w,
    SCALE_D, SCALE_H, SCALE_W,
    CHANNELS_INNER: tl.constexpr, EXACT: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr,
):  # fmt: skip
    # Tile over the output; every output element copies one input element.
    r, k = _program_tile(BLOCK_R, BLOCK_I, USE_INT64)
    mask = (r < R) & (k < INNER)
    n, c, od, oh, ow = _tile_coords(r, k, C, OD, OH, OW, CHANNELS_INNER)
    i_d = _src_index(od, D, SCALE_D, EXACT)
    i_h = _src_index(oh, H, SCALE_H, EXACT)
    i_w = _src_index(ow, W, SCALE_W, EXACT)
    x_off = n * sx_n + c * sx_c + i_d * sx_d + i_h * sx_h + i_w * sx_w
    y_off = n * sy_n + c * sy_c + od * sy_d + oh * sy_h + ow * sy_w
    tl.store(y_ptr + y_off, tl.load(x_ptr + x_off, mask=mask), mask=mask)


@triton.jit
def _upsample_int_fwd_kernel(
    x_ptr, y_ptr,
    R, INNER, C, D, H, W,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sy_n, sy_c, sy_d, sy_h, sy_w,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    CHANNELS_INNER: tl.constexpr, USE_INT64: tl.constexpr,
    UNIT_X: tl.constexpr, UNIT_Y: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr,
):  # fmt: skip
    # Tile over the *input*: each element is read once and written as a KD×KH×KW block (the
    # integer factors per dim). INNER and the row strides arrive in units (``_in_units``).
    INNER = INNER * UNIT_X
    sx_n, sx_c, sx_d, sx_h, sx_w = _in_elements(
        sx_n, sx_c, sx_d, sx_h, sx_w, UNIT_X, CHANNELS_INNER
    )
    sy_n, sy_c, sy_d, sy_h, sy_w = _in_elements(
        sy_n, sy_c, sy_d, sy_h, sy_w, UNIT_Y, CHANNELS_INNER
    )
    r, k = _program_tile(BLOCK_R, BLOCK_I, USE_INT64)
    row_ok = r < R
    mask = row_ok & (k < INNER)
    n, c, i_d, i_h, i_w = _tile_coords(r, k, C, D, H, W, CHANNELS_INNER)
    x = tl.load(x_ptr + (n * sx_n + c * sx_c + i_d * sx_d + i_h * sx_h + i_w * sx_w), mask=mask)
    if CHANNELS_INNER:
        # Inner axis = channels: each output pixel of the block is one store across the tile's
        # channels.
        base = n * sy_n + c * sy_c
        for jd in tl.static_range(KD):
            for jh in tl.static_range(KH):
                for jw in tl.static_range(KW):
                    off = base + (i_d * KD + jd) * sy_d + (i_h * KH + jh) * sy_h
                    tl.store(y_ptr + (off + (i_w * KW + jw) * sy_w), x, mask=mask)
    else:
        # Inner axis = w: repeat each element KW times along the row by interleaving the tile
        # with itself (KW is a power of two), so every output row segment is one full-width
        # contiguous store.
        if KW >= 2:
            x = tl.interleave(x, x)
        if KW >= 4:
            x = tl.interleave(x, x)
        if KW >= 8:
            x = tl.interleave(x, x)
        if KW >= 16:
            x = tl.interleave(x, x)
        ow = wide(
            tl.program_id(1) * (BLOCK_I * KW) + tl.arange(0, BLOCK_I * KW)[None, :], USE_INT64
        )
        out_mask = row_ok & (ow < INNER * KW)
        base = n * sy_n + c * sy_c + ow * sy_w
        for jd in tl.static_range(KD):
            for jh in tl.static_range(KH):
                off = base + (i_d * KD + jd) * sy_d + (i_h * KH + jh) * sy_h
                tl.store(y_ptr + off, x, mask=out_mask)


@triton.jit
def _upsample_bwd_input_kernel(
    go_ptr, gi_ptr,
    R, INNER, C, D, H, W, OD, OH, OW,
    sgo_n, sgo_c, sgo_d, sgo_h, sgo_w,
    sgi_n, sgi_c, sgi_d, sgi_h, sgi_w,
    SCALE_D, SCALE_H, SCALE_W,
    KD, KH, KW,
    CHANNELS_INNER: tl.constexpr, EXACT: tl.constexpr,
    USE_INT64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr,
):  # fmt: skip
    # Tile over grad_input. KD/KH/KW: the largest number of outputs one input feeds per dim.
    r, k = _program_tile(BLOCK_R, BLOCK_I, USE_INT64)
    mask = (r < R) & (k < INNER)
    n, c, i_d, i_h, i_w = _tile_coords(r, k, C, D, H, W, CHANNELS_INNER)
    d_lo, d_hi = _dst_range(i_d, D, OD, SCALE_D, EXACT)
    h_lo, h_hi = _dst_range(i_h, H, OH, SCALE_H, EXACT)
    w_lo, w_hi = _dst_range(i_w, W, OW, SCALE_W, EXACT)
    base = n * sgo_n + c * sgo_c

    acc = tl.zeros([BLOCK_R, BLOCK_I], ACC_DTYPE)
    # Fixed order (d, then h, then w ascending): bitwise repeatable, no atomics.
    for kd in range(KD):
        od = d_lo + kd
        ok_d = mask & (od < d_hi)
        for kh in range(KH):
            oh = h_lo + kh
            ok_dh = ok_d & (oh < h_hi)
            off_dh = base + od * sgo_d + oh * sgo_h
            for kw in range(KW):
                ow = w_lo + kw
                ok = ok_dh & (ow < w_hi)
                acc += tl.load(go_ptr + (off_dh + ow * sgo_w), mask=ok, other=0.0).to(ACC_DTYPE)

    gi_off = n * sgi_n + c * sgi_c + i_d * sgi_d + i_h * sgi_h + i_w * sgi_w
    tl.store(gi_ptr + gi_off, acc.to(gi_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _add_in_order(acc, v, KW: tl.constexpr):
    """``acc + v[..., 0] + v[..., 1] + …`` for ``v`` shaped ``[R, I·KW]`` whose inner axis
    interleaves the KW (2 or 4) outputs of each input column: ``tl.split`` takes them apart
    without a strided load, and the additions keep the generic kernel's order (bitwise equal)."""
    if KW == 2:
        even, odd = tl.split(tl.reshape(v, [v.shape[0], v.shape[1] // 2, 2]))
        acc += even
        acc += odd
    else:  # 4: split by the low bit of the output column, then by the high bit
        low0, low1 = tl.split(tl.reshape(v, [v.shape[0], v.shape[1] // 4, 2, 2]))
        w0, w2 = tl.split(low0)
        w1, w3 = tl.split(low1)
        acc += w0
        acc += w1
        acc += w2
        acc += w3
    return acc


@triton.jit
def _upsample_int_bwd_kernel(
    go_ptr, gi_ptr,
    R, INNER, C, D, H, W,
    sgo_n, sgo_c, sgo_d, sgo_h, sgo_w,
    sgi_n, sgi_c, sgi_d, sgi_h, sgi_w,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    CHANNELS_INNER: tl.constexpr, USE_INT64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    UNIT_GO: tl.constexpr, UNIT_GI: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr,
):  # fmt: skip
    # Integer factors: each grad_input element sums its KD×KH×KW block of grad_out in (d, h, w)
    # order, as the generic kernel does. Along w (NCHW-like tiles, KW 2 or 4) the block's row
    # segment is loaded whole (contiguous, vectorised) and taken apart in registers. INNER and
    # the row strides arrive in units (``_in_units``).
    INNER = INNER * UNIT_GI
    sgo_n, sgo_c, sgo_d, sgo_h, sgo_w = _in_elements(
        sgo_n, sgo_c, sgo_d, sgo_h, sgo_w, UNIT_GO, CHANNELS_INNER
    )
    sgi_n, sgi_c, sgi_d, sgi_h, sgi_w = _in_elements(
        sgi_n, sgi_c, sgi_d, sgi_h, sgi_w, UNIT_GI, CHANNELS_INNER
    )
    r, k = _program_tile(BLOCK_R, BLOCK_I, USE_INT64)
    row_ok = r < R
    mask = row_ok & (k < INNER)
    n, c, i_d, i_h, i_w = _tile_coords(r, k, C, D, H, W, CHANNELS_INNER)
    acc = tl.zeros([BLOCK_R, BLOCK_I], ACC_DTYPE)
    if (not CHANNELS_INNER) and (KW == 2 or KW == 4):
        ow = wide(
            tl.program_id(1) * (BLOCK_I * KW) + tl.arange(0, BLOCK_I * KW)[None, :], USE_INT64
        )
        row_mask = row_ok & (ow < INNER * KW)
        base = n * sgo_n + c * sgo_c + ow * sgo_w
        for jd in tl.static_range(KD):
            for jh in tl.static_range(KH):
                off = base + (i_d * KD + jd) * sgo_d + (i_h * KH + jh) * sgo_h
                v = tl.load(go_ptr + off, mask=row_mask, other=0.0).to(ACC_DTYPE)
                acc = _add_in_order(acc, v, KW)
    else:
        base = n * sgo_n + c * sgo_c
        for jd in tl.static_range(KD):
            for jh in tl.static_range(KH):
                off_dh = base + (i_d * KD + jd) * sgo_d + (i_h * KH + jh) * sgo_h
                for jw in tl.static_range(KW):
                    off = off_dh + (i_w * KW + jw) * sgo_w
                    acc += tl.load(go_ptr + off, mask=mask, other=0.0).to(ACC_DTYPE)
    gi_off = n * sgi_n + c * sgi_c + i_d * sgi_d + i_h * sgi_h + i_w * sgi_w
    tl.store(gi_ptr + gi_off, acc.to(gi_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _rows_inner(shape5: Sequence[int], ch_inner: bool) -> tuple[int, int]:
    """(rows, inner size) of a ``(N, C, S0, S1, S2)`` tensor walked in the tile order."""
    n, c, s0, s1, s2 = shape5
    return (n * s0 * s1 * s2, c) if ch_inner else (n * c * s0 * s1, s2)


def _blocks(rows: int, inner: int, tile: int, max_inner: int | None = None) -> tuple[int, int]:
    block_i = min(next_power_of_2(inner), max_inner or _MAX_INNER)
    block_r = max(1, min(next_power_of_2(rows), tile // block_i))
    return block_r, block_i


def _in_units(t5: torch.Tensor, ch_inner: bool, inner: int) -> tuple[int, list[int]]:
    """``(unit, strides)`` for the integer fast path: the largest power of two, at most 16
    bytes of ``t5``'s elements, dividing ``inner`` (the tile's inner size, in ``t5``'s
    elements) and the strides of ``t5``'s row dims (all but the inner one: ``w``, or ``c``
    with ``ch_inner``), and ``t5``'s strides with the row dims' divided by it (a unit dim's,
    whose index is always 0, as 0). The kernels multiply them back by the constexpr unit,
    which shows the compiler rows aligned to vectors: Triton itself marks integer arguments
    divisible by 16 only, so rows of 34 or 68 elements would be stored element by element."""
    inner_dim = 1 if ch_inner else 4
    rows = [s if n > 1 else 0 for d, (s, n) in enumerate(zip(t5.stride(), t5.shape))]
    unit = math.gcd(inner, *(s for d, s in enumerate(rows) if d != inner_dim),
                    16 // t5.element_size())  # fmt: skip
    strides = [t5.stride(d) if d == inner_dim else s // unit for d, s in enumerate(rows)]
    return unit, strides


def fast_factors(
    input_size: Sequence[int], output_size: Sequence[int], scales: Sequence[float]
) -> tuple[int, ...] | None:
    """Per-dim integer factors when the integer fast path gives exactly the general rule.

    ``out == k·in`` with ``k`` a power of two and the float32 scale exactly ``1/k``: then
    ``floor(o / k)`` and ``floor((o + 0.5) / k)`` are both ``o >> log2(k)``.
    """
    factors = []
    for i, o, s in zip(input_size, output_size, scales):
        k = o // i
        if k not in FAST_FACTORS or o != k * i or s != 1.0 / k:
            return None
        factors.append(k)
    return tuple(factors)


@functools.lru_cache(maxsize=4096)
def max_fan_in(in_size: int, out_size: int, scale: float, exact: bool) -> int:
    """The most output positions that copy one input position along a dim (float32 rule)."""
    o = torch.arange(out_size, dtype=torch.int64).to(torch.float32)
    if exact:
        o = o + 0.5
    src = torch.floor(o * scale).to(torch.int64).clamp_(max=in_size - 1)
    return int(torch.bincount(src, minlength=in_size).max())


def _check(small: torch.Tensor, big: torch.Tensor, scales: Sequence[float]) -> None:
    if small.dim() not in (3, 4, 5) or big.dim() != small.dim():
        raise ValueError("nearest upsampling launchers take (N, C, *spatial) tensors of one rank")
    if small.shape[:2] != big.shape[:2] or len(scales) != small.dim() - 2:
        raise ValueError(
            f"nearest upsampling: shapes {list(small.shape)} / {list(big.shape)} and "
            f"{len(scales)} scales do not match"
        )
    if small.dtype != big.dtype:
        raise ValueError(f"nearest upsampling: dtypes {small.dtype} and {big.dtype} differ")


def upsample_nearest_forward(
    x: torch.Tensor, out: torch.Tensor, scales: Sequence[float], *, exact: bool
) -> None:
    """Write nearest upsampling of ``x`` into ``out``.

    x: ``(N, C, *S)`` with 1–3 spatial dims, any strides; out: ``(N, C, *O)``, preallocated, any
    strides (dense NCDHW or channels-last is fastest), every element written. ``scales``: the
    float32 output→input factor per spatial dim (ATen's ``compute_scales_value<float>``).
    """
    check_device(x, out)
    _check(x, out, scales)
    if out.numel() == 0:
        return
    x5, y5 = as_5d(x), as_5d(out)
    in3, out3 = x5.shape[2:], y5.shape[2:]
    scale3 = (1.0,) * (3 - len(scales)) + tuple(float(s) for s in scales)
    ch_inner = channels_inner(y5)
    use_int64 = needs_int64(x, out)
    factors = fast_factors(in3, out3, scale3)
    if factors is not None:
        # Walk the input, in the output's memory order.
        rows, inner = _rows_inner(x5.shape, ch_inner)
        kd, kh, kw = factors
        # Along w the stored tile is kw times wider than the loaded one.
        widen = 1 if ch_inner else kw
        block_r, block_i = _blocks(rows, inner, _FWD_TILE // widen, max(1, _MAX_INNER // widen))
        grid = (cdiv(rows, block_r), cdiv(inner, block_i))
        unit_x, x_strides = _in_units(x5, ch_inner, inner)
        unit_y, y_strides = _in_units(y5, ch_inner, inner * widen)
        launch(_upsample_int_fwd_kernel, grid, (
            x5, y5, rows, inner // unit_x, x5.shape[1], *in3,
            *x_strides, *y_strides,
        ), dict(
            KD=kd, KH=kh, KW=kw,
            CHANNELS_INNER=ch_inner, USE_INT64=use_int64, UNIT_X=unit_x, UNIT_Y=unit_y,
            BLOCK_R=block_r, BLOCK_I=block_i, num_warps=_WARPS,
        ))  # fmt: skip
        return
    rows, inner = _rows_inner(y5.shape, ch_inner)
    block_r, block_i = _blocks(rows, inner, _FWD_TILE)
    grid = (cdiv(rows, block_r), cdiv(inner, block_i))
    launch(_upsample_fwd_kernel, grid, (
        x5, y5, rows, inner, x5.shape[1], *in3, *out3,
        *x5.stride(), *y5.stride(), *scale3,
    ), dict(
        CHANNELS_INNER=ch_inner, EXACT=exact, USE_INT64=use_int64,
        BLOCK_R=block_r, BLOCK_I=block_i, num_warps=_WARPS,
    ))  # fmt: skip


def upsample_nearest_backward(
    grad_out: torch.Tensor, grad_in: torch.Tensor, scales: Sequence[float], *, exact: bool
) -> None:
    """Gradient of :func:`upsample_nearest_forward` with respect to its input, into ``grad_in``.

    grad_out: ``(N, C, *O)``, any strides; grad_in: ``(N, C, *S)``, preallocated, any strides,
    every element written (zero where no output copied it). Deterministic: a gather in a fixed
    order, accumulated in float32 (float64 for float64 tensors).
    """
    check_device(grad_out, grad_in)
    _check(grad_in, grad_out, scales)
    if grad_in.numel() == 0:
        return
    go5, gi5 = as_5d(grad_out), as_5d(grad_in)
    in3, out3 = gi5.shape[2:], go5.shape[2:]
    scale3 = (1.0,) * (3 - len(scales)) + tuple(float(s) for s in scales)
    factors = fast_factors(in3, out3, scale3)
    ch_inner = channels_inner(go5 if go5.numel() >= gi5.numel() else gi5)
    use_int64 = needs_int64(grad_out, grad_in)
    if factors is not None:
        rows, inner = _rows_inner(gi5.shape, ch_inner)
        kd, kh, kw = factors
        # Along w each loaded row segment is kw times wider than the tile, which still holds
        # _BWD_TILE elements of grad_in: 8 a thread, stored as 16-byte vectors in bf16.
        widen = kw if not ch_inner and kw in (2, 4) else 1
        block_r, block_i = _blocks(rows, inner, _BWD_TILE, max(1, _MAX_INNER // widen))
        grid = (cdiv(rows, block_r), cdiv(inner, block_i))
        unit_go, go_strides = _in_units(go5, ch_inner, inner * (1 if ch_inner else kw))
        unit_gi, gi_strides = _in_units(gi5, ch_inner, inner)
        launch(_upsample_int_bwd_kernel, grid, (
            go5, gi5, rows, inner // unit_gi, gi5.shape[1], *in3,
            *go_strides, *gi_strides,
        ), dict(
            KD=kd, KH=kh, KW=kw,
            CHANNELS_INNER=ch_inner, USE_INT64=use_int64, ACC_DTYPE=acc_dtype(grad_in.dtype),
            UNIT_GO=unit_go, UNIT_GI=unit_gi,
            BLOCK_R=block_r, BLOCK_I=block_i, num_warps=_WARPS,
        ))  # fmt: skip
        return
    fan_in = tuple(max_fan_in(i, o, s, exact) for i, o, s in zip(in3, out3, scale3))
    rows, inner = _rows_inner(gi5.shape, ch_inner)
    block_r, block_i = _blocks(rows, inner, _BWD_TILE)
    grid = (cdiv(rows, block_r), cdiv(inner, block_i))
    launch(_upsample_bwd_input_kernel, grid, (
        go5, gi5, rows, inner, gi5.shape[1], *in3, *out3,
        *go5.stride(), *gi5.stride(), *scale3, *fan_in,
    ), dict(
        CHANNELS_INNER=ch_inner, EXACT=exact, USE_INT64=use_int64,
        ACC_DTYPE=acc_dtype(grad_in.dtype),
        BLOCK_R=block_r, BLOCK_I=block_i, num_warps=_WARPS,
    ))  # fmt: skip


__all__ = [
    "FAST_FACTORS",
    "fast_factors",
    "max_fan_in",
    "upsample_nearest_backward",
    "upsample_nearest_forward",
]
