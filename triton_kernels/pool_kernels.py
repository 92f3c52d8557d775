"""Pooling kernels (device code); the launchers are in :mod:`triton_kernels.pool`.

``_pool_fwd_kernel``: the windowed max / average reduction for fixed, adaptive and pyramid
windows; ``_pool_rows_fwd_kernel``: the same reduction for fixed windows that tile rows of
contiguous input (``kernel_size == stride`` of 2 or 4 along ``w``, no padding or dilation there),
read as whole row segments; ``_pool_rows_taps_fwd_kernel``: other windows at stride 1 or 2 along
``w`` (ResNet's 3×3/2), each tap's view built from aligned row vectors (:mod:`._rows`) — or,
for rows that start off the vectors' boundaries, from vectors read from the boundary before
them, shifted by the row's lead;
``_pool_bwd_input_kernel``: the gather-form gradient w.r.t. the input,
``_pool_rows_bwd_input_kernel`` its row-segment form for the windows that tile rows and
``_pool_rows_taps_bwd_input_kernel`` for the other windows of the row-taps forward (grad_out
rows that start off the vectors' boundaries read as the forward reads its input's);
``_global_pool_fwd_kernel``: the single-pass reduction of whole planes, and
``_global_pool_bwd_kernel`` its gradient, written in the input gradient's memory order. See
:mod:`triton_kernels.pool` for the design.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._common import AVG, FIXED, MAX, PYRAMID
from ._indexing import full_tile, quotient, tile_indices, unflatten, unflatten_fast, wide
from ._rows import (
    adjoint_view,
    aligned_down,
    band_split,
    lead_phases,
    row_offset,
    row_tile,
    source_phases,
    tap_view,
)

# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _window(
    o, size, osize, k, stride, pad, pad_end, WINDOW: tl.constexpr, INCLUDE_PAD: tl.constexpr
):
    """Output ``o``'s window along one dim: ``(first tap, taps, averaging count)``.

    Fixed windows start at ``o·stride - pad`` (taps may fall in the padding); the count is the
    window clipped to the padded input (``INCLUDE_PAD``) or to the input, as ATen's divisor.
    Adaptive windows are ``[floor(o·size/osize), ceil((o+1)·size/osize))``.
    """
    if WINDOW == FIXED:
        start = o * stride - pad
        end = start + k
        if INCLUDE_PAD:
            count = tl.minimum(end, size + pad_end) - start
        else:
            count = tl.minimum(end, size) - tl.maximum(start, 0)
        taps = count * 0 + k
    else:
        start = (o * size) // osize
        taps = ((o + 1) * size + osize - 1) // osize - start
        count = taps
    return start, taps, count


@triton.jit
def _adaptive_bound(a, b):
    """Longest adaptive window (or covering range) for ``a`` elements split into ``b`` parts:
    ``ceil(a/b)``, plus one where windows straddle element boundaries (neither size divides the
    other)."""
    q = (a + b - 1) // b
    return tl.where((a % b == 0) | (b % a == 0), q, q + 1)


@triton.jit
def _tap_bound(size, osize, k, WINDOW: tl.constexpr):
    """Loop bound covering every window's taps along one dim."""
    return k if WINDOW == FIXED else _adaptive_bound(size, osize)


@triton.jit
def _tap_ok(i, size, t, taps, WINDOW: tl.constexpr):
    """Whether tap ``t`` (at input ``i``) is read: fixed windows skip the padding, adaptive
    windows (always inside the input) stop after ``taps``."""
    return (i >= 0) & (i < size) if WINDOW == FIXED else t < taps


@triton.jit
def _first_in_range(start, dil):
    """First tap of a window at or after 0 (ATen's initial argmax position)."""
    return tl.where(start < 0, start + ((dil - 1 - start) // dil) * dil, start)


@triton.jit
def _covering(i, size, osize, k, stride, pad, dil, WINDOW: tl.constexpr):
    """Outputs whose window covers input ``i`` along one dim: ``(first, count)``.

    Fixed windows: ``o`` in ``[ceil((i + pad - (k-1)·dil)/stride), floor((i + pad)/stride)]``,
    clipped to ``[0, osize)`` (dilation also needs ``(i + pad - o·stride) % dil == 0``).
    Adaptive windows: ``[floor(i·osize/size), ceil((i+1)·osize/size))`` — the adaptive window
    of ``i`` with the roles of input and output swapped.
    """
    if WINDOW == FIXED:
        lo = (tl.maximum(i + pad - (k - 1) * dil, 0) + stride - 1) // stride
        hi = tl.minimum((i + pad) // stride, osize - 1)
        cnt = hi - lo + 1
    else:
        lo = (i * osize) // size
        cnt = ((i + 1) * osize + size - 1) // size - lo
    return lo, cnt


@triton.jit
def _covering_bound(size, osize, k, stride, dil, WINDOW: tl.constexpr):
    return (k - 1) * dil // stride + 1 if WINDOW == FIXED else _adaptive_bound(osize, size)


@triton.jit
def _covering_output(lo, t, count, i, size, osize, k, stride, pad, pad_end, dil,
                     INCLUDE_PAD: tl.constexpr):  # fmt: skip
    """The ``t``-th fixed window covering input ``i`` along one dim, of the ``count`` from
    ``lo`` (:func:`_covering`): ``(output, whether it covers i, its averaging count)``."""
    o = lo + t
    ok = (t < count) & ((i + pad - o * stride) % dil == 0)
    _start, _taps, cnt = _window(o, size, osize, k, stride, pad, pad_end, FIXED, INCLUDE_PAD)
    return o, ok, cnt


@triton.jit
def _max_tap(best, arg, v, ok, pos):
    """Fold tap value ``v`` (flat input position ``pos``) into a running max: it wins when read
    (``ok``) and greater than the best so far or NaN — ATen's rule (first maximum, last NaN)."""
    win = ok & ((v > best) | (v != v))
    return tl.where(win, v, best), tl.where(win, pos.to(tl.int64), arg)


@triton.jit
def _average(acc, cnt_d, cnt_h, cnt_w, DIVISOR, WINDOW: tl.constexpr):
    """A window's sum divided by ATen's divisor (``divisor_override`` for fixed windows, else
    the counted taps); an empty window (impossible for valid arguments) gives 0, as in ATen."""
    div = cnt_d * cnt_h * cnt_w
    if WINDOW == FIXED:
        div = tl.where(DIVISOR != 0, DIVISOR, div)
    return tl.where(div != 0, acc / tl.where(div != 0, div, 1).to(acc.dtype), 0.0)


@triton.jit
def _level_offset(levels_ptr, lvl, ND: tl.constexpr):
    """Number of bins of the pyramid levels before level ``lvl`` (``Σ l**ND``)."""
    off = lvl * 0
    for j in range(lvl):
        lj = tl.load(levels_ptr + j)
        b = lj
        if ND >= 2:
            b = b * lj
        if ND == 3:
            b = b * lj
        off += b
    return off


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _pool_fwd_kernel(
    x_ptr, y_ptr, idx_ptr, levels_ptr,
    N, C,
    D, H, W, OD, OH, OW,
    KD, KH, KW, STRIDE_D, STRIDE_H, STRIDE_W, PAD_D, PAD_H, PAD_W,
    PAD_END_D, PAD_END_H, PAD_END_W, DIL_D, DIL_H, DIL_W,
    DIVISOR,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sy_n, sy_c, sy_d, sy_h, sy_w,
    sidx_n, sidx_c, sidx_d, sidx_h, sidx_w,
    MODE: tl.constexpr, WINDOW: tl.constexpr, ND: tl.constexpr, INCLUDE_PAD: tl.constexpr,
    CHANNELS_INNER: tl.constexpr, USE_INT64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # Output geometry of this program: the arguments, or pyramid level program_id(2), which
    # pools to (l, ..., l) and writes its (C, l, ..., l) block after the previous levels'
    # blocks of each row (strides: sy_n per row, sy_w per feature; sidx_* likewise).
    if WINDOW == PYRAMID:
        lvl = tl.program_id(2)
        level = tl.load(levels_ptr + lvl)
        o_w = level
        o_h = level if ND >= 2 else level * 0 + 1
        o_d = level if ND == 3 else level * 0 + 1
        before = _level_offset(levels_ptr, lvl, ND) * C
        bins = o_d * o_h * o_w
        before = wide(before, USE_INT64)
        y_base = before * sy_w
        idx_base = before * sidx_w
        sy_c_, sy_d_, sy_h_, sy_w_ = bins * sy_w, o_h * o_w * sy_w, o_w * sy_w, sy_w
        sidx_c_, sidx_d_, sidx_h_, sidx_w_ = bins * sidx_w, o_h * o_w * sidx_w, o_w * sidx_w, sidx_w
        if wide(tl.program_id(0), USE_INT64) * BLOCK_P >= wide(N, USE_INT64) * bins:
            return  # the grid is sized for the largest level
    else:
        o_d, o_h, o_w = OD, OH, OW
        y_base = 0
        idx_base = 0
        sy_c_, sy_d_, sy_h_, sy_w_ = sy_c, sy_d, sy_h, sy_w
        sidx_c_, sidx_d_, sidx_h_, sidx_w_ = sidx_c, sidx_d, sidx_h, sidx_w

    p, c = tile_indices(
        wide(tl.program_id(0), USE_INT64) * BLOCK_P,
        tl.program_id(1) * BLOCK_C,
        BLOCK_P,
        BLOCK_C,
        CHANNELS_INNER,
        USE_INT64,
    )
    ok_pc = (p < wide(N, USE_INT64) * o_d * o_h * o_w) & (c < C)  # (int32 would wrap)
    n, od, oh, ow = unflatten(p, o_d, o_h, o_w)
    start_d, taps_d, cnt_d = _window(
        od, D, o_d, KD, STRIDE_D, PAD_D, PAD_END_D, WINDOW, INCLUDE_PAD
    )
    start_h, taps_h, cnt_h = _window(
        oh, H, o_h, KH, STRIDE_H, PAD_H, PAD_END_H, WINDOW, INCLUDE_PAD
    )
    start_w, taps_w, cnt_w = _window(
        ow, W, o_w, KW, STRIDE_W, PAD_W, PAD_END_W, WINDOW, INCLUDE_PAD
    )
    x_base = n * sx_n + c * sx_c

    if MODE == MAX:
        best = full_tile(float("-inf"), ACC_DTYPE, BLOCK_P, BLOCK_C, CHANNELS_INNER)
        first = (
            _first_in_range(start_d, DIL_D) * H + _first_in_range(start_h, DIL_H)
        ) * W + _first_in_range(start_w, DIL_W)
        arg = full_tile(0, tl.int64, BLOCK_P, BLOCK_C, CHANNELS_INNER) + first.to(tl.int64)
    else:
        acc = full_tile(0.0, ACC_DTYPE, BLOCK_P, BLOCK_C, CHANNELS_INNER)

    # Row-major window scan (ATen's order); per-dim index maps are hoisted out of inner loops.
    for td in range(_tap_bound(D, o_d, KD, WINDOW)):
        i_d = start_d + td * DIL_D
        ok_d = ok_pc & _tap_ok(i_d, D, td, taps_d, WINDOW)
        x_d = x_base + i_d * sx_d
        for th in range(_tap_bound(H, o_h, KH, WINDOW)):
            i_h = start_h + th * DIL_H
            ok_h = ok_d & _tap_ok(i_h, H, th, taps_h, WINDOW)
            x_h = x_d + i_h * sx_h
            for tw in range(_tap_bound(W, o_w, KW, WINDOW)):
                i_w = start_w + tw * DIL_W
                ok = ok_h & _tap_ok(i_w, W, tw, taps_w, WINDOW)
                if MODE == MAX:
                    v = tl.load(x_ptr + (x_h + i_w * sx_w), mask=ok, other=float("-inf")).to(
                        ACC_DTYPE
                    )
                    best, arg = _max_tap(best, arg, v, ok, (i_d * H + i_h) * W + i_w)
                else:
                    acc += tl.load(x_ptr + (x_h + i_w * sx_w), mask=ok, other=0.0).to(ACC_DTYPE)

    y_off = y_base + n * sy_n + c * sy_c_ + od * sy_d_ + oh * sy_h_ + ow * sy_w_
    if MODE == MAX:
        tl.store(y_ptr + y_off, best.to(y_ptr.dtype.element_ty), mask=ok_pc)
        idx_off = idx_base + n * sidx_n + c * sidx_c_ + od * sidx_d_ + oh * sidx_h_ + ow * sidx_w_
        tl.store(idx_ptr + idx_off, arg, mask=ok_pc)
    else:
        res = _average(acc, cnt_d, cnt_h, cnt_w, DIVISOR, WINDOW)
        tl.store(y_ptr + y_off, res.to(y_ptr.dtype.element_ty), mask=ok_pc)


@triton.jit
def _row_tile(col_blocks, Q_COLS, BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr,
              USE_INT64: tl.constexpr, WHOLE_ROWS: tl.constexpr):  # fmt: skip
    """This program's rows ``[BLOCK_R, 1]``, output columns ``[1, BLOCK_O]`` and column block:
    ``program_id(0)`` enumerates row blocks × ``col_blocks`` column blocks (one grid axis, so
    no 65535 limit binds), split by multiply-shift (``Q_COLS``: ``fast_divisor(col_blocks)``),
    or, with ``WHOLE_ROWS`` (one column block), row blocks only (``_rows.band_split``)."""
    band, col_block = band_split(Q_COLS, col_blocks, WHOLE_ROWS)
    r, ow = tile_indices(
        wide(band, USE_INT64) * BLOCK_R, col_block * BLOCK_O, BLOCK_R, BLOCK_O, True, USE_INT64
    )
    return r, ow, col_block


@triton.jit
def _fold_row(acc, arg, v, ok, row_pos, ow, W, KW: tl.constexpr, MODE: tl.constexpr):
    """Fold one input row segment ``v`` ``[R, O·KW]`` (output ``ow``'s KW taps side by side)
    into the outputs' running max (``acc``, ``arg``) or sum (``acc``), taps in order.

    ``tl.split`` takes the taps apart in registers, so the segment is loaded whole (contiguous,
    vectorised) instead of with one strided load per tap; tap ``tw`` reads column
    ``ow·KW + tw`` at flat position ``row_pos + ow·KW + tw``.
    """
    if KW == 2:
        t0, t1 = tl.split(tl.reshape(v, [v.shape[0], v.shape[1] // 2, 2]))
        taps = (t0, t1)
    else:  # 4: split by the low bit of the tap, then by the high bit
        low0, low1 = tl.split(tl.reshape(v, [v.shape[0], v.shape[1] // 4, 2, 2]))
        t0, t2 = tl.split(low0)
        t1, t3 = tl.split(low1)
        taps = (t0, t1, t2, t3)
    for tw in tl.static_range(KW):
        i_w = ow * KW + tw
        if MODE == MAX:
            acc, arg = _max_tap(acc, arg, taps[tw], ok & (i_w < W), row_pos + i_w)
        else:
            acc += taps[tw]  # taps outside the input were loaded as 0
    return acc, arg


@triton.jit(do_not_specialize=["Q_COLS", "Q_C", "Q_D", "Q_H"])
def _pool_rows_fwd_kernel(
    x_ptr, y_ptr, idx_ptr,
    R, C, D, H, W_UNITS, OD, OH, OW_UNITS,
    Q_COLS, Q_C, Q_D, Q_H,
    KD, KH, STRIDE_D, STRIDE_H, PAD_D, PAD_H, PAD_END_D, PAD_END_H, PAD_END_W, DIL_D, DIL_H,
    DIVISOR,
    sx_n_units, sx_c_units, sx_d_units, sx_h_units,
    sy_n_units, sy_c_units, sy_d_units, sy_h_units, sy_w,
    sidx_n_units, sidx_c_units, sidx_d_units, sidx_h_units, sidx_w,
    KW: tl.constexpr, MODE: tl.constexpr, INCLUDE_PAD: tl.constexpr,
    USE_INT64: tl.constexpr, ACC_DTYPE: tl.constexpr, ALIGN: tl.constexpr,
    ALIGN_OUT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr,
    WHOLE_ROWS: tl.constexpr,
):  # fmt: skip
    # Fixed windows with KW == STRIDE_W (2 or 4), no padding or dilation along w, unit w stride:
    # the windows of BLOCK_O adjacent outputs tile one contiguous input row segment of
    # BLOCK_O·KW elements. Program = BLOCK_R output rows (flattened n, c, od, oh) × BLOCK_O
    # output columns; per (td, th) tap it loads each row's segment whole. Taps are scanned in
    # ATen's row-major order, so results equal _pool_fwd_kernel's bit for bit.
    # W and the input's strides arrive in units of ALIGN elements (a power of two dividing them
    # all): scaled back here, they show the compiler aligned row segments, so the loads
    # vectorise even where W is not a multiple of 16 (which is all Triton detects by itself).
    # Likewise OW and the output's and indices' row strides, in units of ALIGN_OUT: the stores.
    W = W_UNITS * ALIGN
    OW = OW_UNITS * ALIGN_OUT
    sx_n = sx_n_units * ALIGN
    sx_c = sx_c_units * ALIGN
    sx_d = sx_d_units * ALIGN
    sx_h = sx_h_units * ALIGN
    r, ow, col_block = _row_tile(
        tl.cdiv(OW, BLOCK_O), Q_COLS, BLOCK_R, BLOCK_O, USE_INT64, WHOLE_ROWS
    )
    j = col_block * (BLOCK_O * KW) + tl.arange(0, BLOCK_O * KW)[None, :]
    row_ok = r < R
    n, c, od, oh = unflatten_fast(r, C, OD, OH, Q_C, Q_D, Q_H, USE_INT64)
    start_d, _, cnt_d = _window(od, D, OD, KD, STRIDE_D, PAD_D, PAD_END_D, FIXED, INCLUDE_PAD)
    start_h, _, cnt_h = _window(oh, H, OH, KH, STRIDE_H, PAD_H, PAD_END_H, FIXED, INCLUDE_PAD)
    start_w, _, cnt_w = _window(ow, W, OW, KW, KW, 0, PAD_END_W, FIXED, INCLUDE_PAD)
    x_base = n * sx_n + c * sx_c
    if MODE == MAX:
        acc = tl.full([BLOCK_R, BLOCK_O], float("-inf"), ACC_DTYPE)
        first = (
            _first_in_range(start_d, DIL_D) * H + _first_in_range(start_h, DIL_H)
        ) * W + start_w
        arg = tl.zeros([BLOCK_R, BLOCK_O], tl.int64) + first.to(tl.int64)
        fill = float("-inf")
    else:
        acc = tl.zeros([BLOCK_R, BLOCK_O], ACC_DTYPE)
        arg = acc  # unused
        fill = 0.0
    for td in range(KD):
        i_d = start_d + td * DIL_D
        ok_d = row_ok & (i_d >= 0) & (i_d < D)
        for th in range(KH):
            i_h = start_h + th * DIL_H
            ok = ok_d & (i_h >= 0) & (i_h < H)
            v = tl.load(
                x_ptr + (x_base + i_d * sx_d + i_h * sx_h + j), mask=ok & (j < W), other=fill
            ).to(ACC_DTYPE)
            acc, arg = _fold_row(acc, arg, v, ok, (i_d * H + i_h) * W, ow, W, KW, MODE)

    out_ok = row_ok & (ow < OW)
    y_off = (
        row_offset(n, c, od, oh, sy_n_units, sy_c_units, sy_d_units, sy_h_units, ALIGN_OUT)
        + ow * sy_w
    )
    if MODE == MAX:
        tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=out_ok)
        idx_off = (
            row_offset(
                n, c, od, oh, sidx_n_units, sidx_c_units, sidx_d_units, sidx_h_units, ALIGN_OUT
            )
            + ow * sidx_w
        )
        tl.store(idx_ptr + idx_off, arg, mask=out_ok)
    else:
        res = _average(acc, cnt_d, cnt_h, cnt_w, DIVISOR, FIXED)
        tl.store(y_ptr + y_off, res.to(y_ptr.dtype.element_ty), mask=out_ok)


@triton.jit
def _pool_bwd_input_kernel(
    go_ptr, idx_ptr, gi_ptr, levels_ptr,
    N, C, NUM_LEVELS,
    D, H, W, OD, OH, OW,
    KD, KH, KW, STRIDE_D, STRIDE_H, STRIDE_W, PAD_D, PAD_H, PAD_W,
    PAD_END_D, PAD_END_H, PAD_END_W, DIL_D, DIL_H, DIL_W,
    DIVISOR,
    sgo_n, sgo_c, sgo_d, sgo_h, sgo_w,
    sidx_n, sidx_c, sidx_d, sidx_h, sidx_w,
    sgi_n, sgi_c, sgi_d, sgi_h, sgi_w,
    MODE: tl.constexpr, WINDOW: tl.constexpr, ND: tl.constexpr, INCLUDE_PAD: tl.constexpr,
    CHANNELS_INNER: tl.constexpr, USE_INT64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # Gather: tile = BLOCK_P flattened input positions (over N·D·H·W) × BLOCK_C channels; each
    # element sums grad_out over the outputs covering it (max: whose index is this element),
    # level after level for pyramid pooling, in output order.
    p, c = tile_indices(
        wide(tl.program_id(0), USE_INT64) * BLOCK_P,
        tl.program_id(1) * BLOCK_C,
        BLOCK_P,
        BLOCK_C,
        CHANNELS_INNER,
        USE_INT64,
    )
    ok_pc = (p < wide(N, USE_INT64) * D * H * W) & (c < C)
    n, i_d, i_h, i_w = unflatten(p, D, H, W)
    here = ((i_d * H + i_h) * W + i_w).to(tl.int64)
    acc = full_tile(0.0, ACC_DTYPE, BLOCK_P, BLOCK_C, CHANNELS_INNER)

    for lvl in range(NUM_LEVELS):
        if WINDOW == PYRAMID:
            level = tl.load(levels_ptr + lvl)
            o_w = level
            o_h = level if ND >= 2 else level * 0 + 1
            o_d = level if ND == 3 else level * 0 + 1
            before = _level_offset(levels_ptr, lvl, ND) * C
            bins = o_d * o_h * o_w
            before = wide(before, USE_INT64)
            go_base = before * sgo_w
            idx_base = before * sidx_w
            sgo_c_, sgo_d_, sgo_h_, sgo_w_ = bins * sgo_w, o_h * o_w * sgo_w, o_w * sgo_w, sgo_w
            sidx_c_, sidx_d_, sidx_h_, sidx_w_ = (
                bins * sidx_w,
                o_h * o_w * sidx_w,
                o_w * sidx_w,
                sidx_w,
            )
        else:
            o_d, o_h, o_w = OD, OH, OW
            go_base = 0
            idx_base = 0
            sgo_c_, sgo_d_, sgo_h_, sgo_w_ = sgo_c, sgo_d, sgo_h, sgo_w
            sidx_c_, sidx_d_, sidx_h_, sidx_w_ = sidx_c, sidx_d, sidx_h, sidx_w

        lo_d, n_d = _covering(i_d, D, o_d, KD, STRIDE_D, PAD_D, DIL_D, WINDOW)
        lo_h, n_h = _covering(i_h, H, o_h, KH, STRIDE_H, PAD_H, DIL_H, WINDOW)
        lo_w, n_w = _covering(i_w, W, o_w, KW, STRIDE_W, PAD_W, DIL_W, WINDOW)
        go_nc = go_base + n * sgo_n + c * sgo_c_
        idx_nc = idx_base + n * sidx_n + c * sidx_c_
        for td in range(_covering_bound(D, o_d, KD, STRIDE_D, DIL_D, WINDOW)):
            od = lo_d + td
            ok_d = ok_pc & (td < n_d)
            if WINDOW == FIXED:
                ok_d = ok_d & ((i_d + PAD_D - od * STRIDE_D) % DIL_D == 0)
            if MODE == AVG:
                _, _, cnt_d = _window(
                    od, D, o_d, KD, STRIDE_D, PAD_D, PAD_END_D, WINDOW, INCLUDE_PAD
                )
            for th in range(_covering_bound(H, o_h, KH, STRIDE_H, DIL_H, WINDOW)):
                oh = lo_h + th
                ok_h = ok_d & (th < n_h)
                if WINDOW == FIXED:
                    ok_h = ok_h & ((i_h + PAD_H - oh * STRIDE_H) % DIL_H == 0)
                if MODE == AVG:
                    _, _, cnt_h = _window(
                        oh, H, o_h, KH, STRIDE_H, PAD_H, PAD_END_H, WINDOW, INCLUDE_PAD
                    )
                for tw in range(_covering_bound(W, o_w, KW, STRIDE_W, DIL_W, WINDOW)):
                    ow = lo_w + tw
                    ok = ok_h & (tw < n_w)
                    if WINDOW == FIXED:
                        ok = ok & ((i_w + PAD_W - ow * STRIDE_W) % DIL_W == 0)
                    go_ptrs = go_ptr + (go_nc + od * sgo_d_ + oh * sgo_h_ + ow * sgo_w_)
                    if MODE == MAX:
                        j = tl.load(
                            idx_ptr + (idx_nc + od * sidx_d_ + oh * sidx_h_ + ow * sidx_w_),
                            mask=ok,
                            other=-1,
                        )
                        if CHANNELS_INNER and WINDOW != PYRAMID:
                            # Channels-last grad_out: loaded as whole vectors under the window's
                            # mask (an index mask differs per channel), then picked by index.
                            grad = tl.load(go_ptrs, mask=ok, other=0.0).to(ACC_DTYPE)
                            acc += tl.where(j == here, grad, 0.0)
                        else:  # (an element-wise gather: loads only where the index points)
                            grad = tl.load(go_ptrs, mask=ok & (j == here), other=0.0)
                            acc += grad.to(ACC_DTYPE)
                    else:
                        grad = tl.load(go_ptrs, mask=ok, other=0.0).to(ACC_DTYPE)
                        _, _, cnt_w = _window(
                            ow, W, o_w, KW, STRIDE_W, PAD_W, PAD_END_W, WINDOW, INCLUDE_PAD
                        )
                        acc += tl.where(
                            ok, _average(grad, cnt_d, cnt_h, cnt_w, DIVISOR, WINDOW), 0.0
                        )

    gi_off = n * sgi_n + c * sgi_c + i_d * sgi_d + i_h * sgi_h + i_w * sgi_w
    tl.store(gi_ptr + gi_off, acc.to(gi_ptr.dtype.element_ty), mask=ok_pc)


@triton.jit(do_not_specialize=["Q_COLS", "Q_C", "Q_D", "Q_H"])
def _pool_rows_taps_fwd_kernel(
    x_ptr, y_ptr, idx_ptr,
    R, C, D, H, W_UNITS, OD, OH, OW_UNITS, TOTAL,
    Q_COLS, Q_C, Q_D, Q_H,
    KD, KH, STRIDE_D, STRIDE_H, PAD_D, PAD_H, PAD_END_D, PAD_END_H, PAD_END_W, DIL_D, DIL_H,
    DIVISOR,
    sx_n_units, sx_c_units, sx_d_units, sx_h_units,
    sy_n_units, sy_c_units, sy_d_units, sy_h_units, sy_w,
    sidx_n_units, sidx_c_units, sidx_d_units, sidx_h_units, sidx_w,
    KW: tl.constexpr, STRIDE_W: tl.constexpr, PAD_W: tl.constexpr, MODE: tl.constexpr,
    INCLUDE_PAD: tl.constexpr, USE_INT64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    V: tl.constexpr, LEAD_ROWS: tl.constexpr, LEAD_CLASSES: tl.constexpr, V_OUT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr,
    WHOLE_ROWS: tl.constexpr,
):  # fmt: skip
    # Fixed windows at stride 1 or 2 along w, unit dilation there, unit w stride: program =
    # BLOCK_R output rows × BLOCK_O output columns as [BLOCK_R, BLOCK_O // V, V]; per (td, th)
    # input row, three aligned vectors per group and every tap's view built from them (_rows).
    # Taps outside the input are never read into the result (max: masked out of the
    # comparison; average: 0). Taps in ATen's order, so results equal _pool_fwd_kernel's bit
    # for bit. OW and the output's and indices' strides arrive in units of V_OUT.
    #
    # Rows aligned to V (not LEAD_ROWS): rows are the flattened (n, c, od, oh); W and the
    # input strides arrive in units of V. Other rows of a contiguous input (AlexNet's 55 and
    # 27 columns): each is read from the SPAN-element boundary (16 bytes) before its start,
    # and a tap's view shifted by the row's lead, the elements it starts past that boundary. The lead must be
    # the same for the whole program (the shift is built in registers: a constexpr): so a
    # program's rows are those of one (od, oh) in BLOCK_R planes (n, c) that lie a multiple
    # of LEAD_CLASSES planes apart, where planes that far apart start equally far past a
    # boundary; each of the SPAN leads has its own copy of the taps.
    # R is then the number of planes and the strides arrive in elements.
    G: tl.constexpr = BLOCK_O // V
    ALIGNED: tl.constexpr = not LEAD_ROWS
    SPAN: tl.constexpr = STRIDE_W * V  # (source columns under a vector of outputs)
    UNIT: tl.constexpr = SPAN if ALIGNED else 1
    W = W_UNITS * UNIT
    OW = OW_UNITS * V_OUT
    r, first, ow, lead_class, n, c, od, oh = row_tile(
        OW, C, OD, OH, Q_COLS, Q_C, Q_D, Q_H, LEAD_ROWS, LEAD_CLASSES, BLOCK_R, BLOCK_O, V,
        USE_INT64, WHOLE_ROWS,
    )  # fmt: skip
    row_ok = r < R
    start_d, _taps_d, cnt_d = _window(od, D, OD, KD, STRIDE_D, PAD_D, PAD_END_D, FIXED, INCLUDE_PAD)
    start_h, _taps_h, cnt_h = _window(oh, H, OH, KH, STRIDE_H, PAD_H, PAD_END_H, FIXED, INCLUDE_PAD)
    start_w, _taps_w, cnt_w = _window(ow, W, OW, KW, STRIDE_W, PAD_W, PAD_END_W, FIXED, INCLUDE_PAD)
    x_c = n * (sx_n_units * UNIT) + c * (sx_c_units * UNIT)
    if MODE == MAX:
        acc = tl.full([BLOCK_R, G, V], float("-inf"), ACC_DTYPE)
        first_tap = (
            _first_in_range(start_d, DIL_D) * H + _first_in_range(start_h, DIL_H)
        ) * W + _first_in_range(start_w, 1)
        arg = tl.zeros([BLOCK_R, G, V], tl.int64) + first_tap.to(tl.int64)
    else:
        acc = tl.zeros([BLOCK_R, G, V], ACC_DTYPE)
        arg = acc  # unused
    for td in range(KD):
        i_d = start_d + td * DIL_D
        ok_d = row_ok & (i_d >= 0) & (i_d < D)
        for th in range(KH):
            i_h = start_h + th * DIL_H
            ok = ok_d & (i_h >= 0) & (i_h < H)
            row = x_c + (i_d * (sx_d_units * UNIT) + i_h * (sx_h_units * UNIT))
            pos = (i_d * H + i_h) * W
            if ALIGNED:
                be, oe, ae, bo, oo, ao = source_phases(x_ptr + row, first, ok, W, G, V, STRIDE_W)
                acc, arg = _fold_taps(
                    acc, arg, be, oe, ae, bo, oo, ao, ok, start_w, W, pos,
                    0, KW, STRIDE_W, PAD_W, MODE, V, ACC_DTYPE,
                )  # fmt: skip
            else:
                base = aligned_down(row, SPAN)
                # (the row's lead: that of its plane class's first plane, the same for all;
                # planes D·H·W apart, as a unit dim's stride may be anything)
                lead = (lead_class * (D * H * W) + i_d * (sx_d_units * UNIT)
                        + i_h * (sx_h_units * UNIT)) % SPAN  # fmt: skip
                # (a max masks every tap outside the row; an average adds the row's zeros)
                be, oe, ae, bo, oo, ao = lead_phases(
                    x_ptr + base, first, ok, -base, TOTAL - base, lead, lead + W, G, V, STRIDE_W,
                    MODE != MAX,
                )  # fmt: skip
                for LEAD in tl.static_range(SPAN):
                    if lead == LEAD:
                        acc, arg = _fold_taps(
                            acc, arg, be, oe, ae, bo, oo, ao, ok, start_w, W, pos,
                            LEAD, KW, STRIDE_W, PAD_W, MODE, V, ACC_DTYPE,
                        )  # fmt: skip

    out_ok = row_ok & (ow < OW)
    y_off = (
        row_offset(n, c, od, oh, sy_n_units, sy_c_units, sy_d_units, sy_h_units, V_OUT) + ow * sy_w
    )
    if MODE == MAX:
        tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=out_ok)
        idx_off = (
            row_offset(n, c, od, oh, sidx_n_units, sidx_c_units, sidx_d_units, sidx_h_units, V_OUT)
            + ow * sidx_w
        )
        tl.store(idx_ptr + idx_off, arg, mask=out_ok)
    else:
        res = _average(acc, cnt_d, cnt_h, cnt_w, DIVISOR, FIXED)
        tl.store(y_ptr + y_off, res.to(y_ptr.dtype.element_ty), mask=out_ok)


@triton.jit
def _fold_taps(acc, arg, be, oe, ae, bo, oo, ao, ok, start_w, W, pos, LEAD: tl.constexpr,
               KW: tl.constexpr, STRIDE_W: tl.constexpr, PAD_W: tl.constexpr,
               MODE: tl.constexpr, V: tl.constexpr, ACC_DTYPE: tl.constexpr):  # fmt: skip
    """Fold one input row's ``KW`` taps into the windows' running max (with its flat argmax)
    or sum: tap ``tw`` of output column ``ow`` is source column ``STRIDE_W·ow + tw - PAD_W``,
    read ``LEAD`` columns on where the row starts past its vectors' boundary (an average's row
    is zero outside it; a max masks the taps outside it)."""
    for tw in tl.static_range(KW):
        v = tap_view(be, oe, ae, bo, oo, ao, tw - PAD_W + LEAD, V, STRIDE_W).to(ACC_DTYPE)
        if MODE == MAX:
            i_w = start_w + tw
            acc, arg = _max_tap(acc, arg, v, ok & (i_w >= 0) & (i_w < W), pos + i_w)
        else:
            acc += v
    return acc, arg


@triton.jit
def _spread_row(g, j, pos, ok, KW: tl.constexpr, MODE: tl.constexpr):
    """What outputs ``[R, O]`` hand back to their windows' input row segment ``[R, O·KW]`` (tap
    ``tw`` of output ``o`` at column ``o·KW + tw``): max — ``g`` where the output's index ``j``
    is that input (flat position ``pos + tw``), else 0; average — ``g`` (already divided)
    everywhere. Outputs not read (``ok`` false) hand back 0."""
    g = tl.where(ok, g, 0.0)
    if MODE == MAX:
        t0 = tl.where(j == pos, g, 0.0)
        t1 = tl.where(j == pos + 1, g, 0.0)
        if KW == 2:
            row = tl.interleave(t0, t1)
        else:  # 4: taps 0 and 2, 1 and 3 interleave first (column o·4 + 2a + b)
            t2 = tl.where(j == pos + 2, g, 0.0)
            t3 = tl.where(j == pos + 3, g, 0.0)
            row = tl.interleave(tl.interleave(t0, t2), tl.interleave(t1, t3))
    else:
        row = tl.interleave(g, g)
        if KW == 4:
            row = tl.interleave(row, row)
    return row


@triton.jit(do_not_specialize=["Q_COLS", "Q_C", "Q_D", "Q_H"])
def _pool_rows_bwd_input_kernel(
    go_ptr, idx_ptr, gi_ptr,
    R, C, D, H, W_UNITS, OD, OH, OW_UNITS,
    Q_COLS, Q_C, Q_D, Q_H,
    KD, KH, STRIDE_D, STRIDE_H, PAD_D, PAD_H, PAD_END_D, PAD_END_H, PAD_END_W, DIL_D, DIL_H,
    DIVISOR,
    sgo_n_units, sgo_c_units, sgo_d_units, sgo_h_units,
    sidx_n_units, sidx_c_units, sidx_d_units, sidx_h_units,
    sgi_n_units, sgi_c_units, sgi_d_units, sgi_h_units,
    KW: tl.constexpr, MODE: tl.constexpr, INCLUDE_PAD: tl.constexpr,
    USE_INT64: tl.constexpr, ACC_DTYPE: tl.constexpr, ALIGN_GO: tl.constexpr,
    ALIGN_GI: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr,
    WHOLE_ROWS: tl.constexpr,
):  # fmt: skip
    # The gradient of _pool_rows_fwd_kernel's windows (KW == STRIDE_W, unit w strides): program
    # = BLOCK_R input rows (flattened n, c, d, h) × the BLOCK_O·KW input columns under BLOCK_O
    # output columns. Each input column has exactly one covering output column, so per covering
    # (od, oh) the grad_out (and index) row segment is loaded whole, spread over its windows in
    # registers and added — in _pool_bwd_input_kernel's order (same bits).
    # Sizes and strides arrive in units, as in the forward: grad_in's (W, sgi_*) of ALIGN_GI
    # elements, grad_out's and the indices' (OW, sgo_*, sidx_*) of ALIGN_GO — each tensor's
    # own, so that the stores of grad_in rows twice as long as grad_out's are twice as wide.
    W = W_UNITS * ALIGN_GI
    OW = OW_UNITS * ALIGN_GO
    # Column blocks cover every input column, under an output or not.
    r, ow, col_block = _row_tile(
        tl.cdiv(W, BLOCK_O * KW), Q_COLS, BLOCK_R, BLOCK_O, USE_INT64, WHOLE_ROWS
    )
    i_w = col_block * (BLOCK_O * KW) + tl.arange(0, BLOCK_O * KW)[None, :]
    row_ok = r < R
    n, c, i_d, i_h = unflatten_fast(r, C, D, H, Q_C, Q_D, Q_H, USE_INT64)
    lo_d, n_d = _covering(i_d, D, OD, KD, STRIDE_D, PAD_D, DIL_D, FIXED)
    lo_h, n_h = _covering(i_h, H, OH, KH, STRIDE_H, PAD_H, DIL_H, FIXED)
    _start_w, _taps_w, cnt_w = _window(ow, W, OW, KW, KW, 0, PAD_END_W, FIXED, INCLUDE_PAD)
    go_nc = n * (sgo_n_units * ALIGN_GO) + c * (sgo_c_units * ALIGN_GO) + ow
    idx_nc = n * (sidx_n_units * ALIGN_GO) + c * (sidx_c_units * ALIGN_GO) + ow
    pos = (i_d * H + i_h) * W + ow * KW
    acc = tl.zeros([BLOCK_R, BLOCK_O * KW], ACC_DTYPE)
    for td in range(_covering_bound(D, OD, KD, STRIDE_D, DIL_D, FIXED)):
        od, ok_d, cnt_d = _covering_output(
            lo_d, td, n_d, i_d, D, OD, KD, STRIDE_D, PAD_D, PAD_END_D, DIL_D, INCLUDE_PAD
        )
        ok_d = row_ok & ok_d
        for th in range(_covering_bound(H, OH, KH, STRIDE_H, DIL_H, FIXED)):
            oh, ok_h, cnt_h = _covering_output(
                lo_h, th, n_h, i_h, H, OH, KH, STRIDE_H, PAD_H, PAD_END_H, DIL_H, INCLUDE_PAD
            )
            ok = ok_d & ok_h
            ok = ok & (ow < OW)
            g_off = go_nc + od * (sgo_d_units * ALIGN_GO) + oh * (sgo_h_units * ALIGN_GO)
            g = tl.load(go_ptr + g_off, mask=ok, other=0.0).to(ACC_DTYPE)
            if MODE == MAX:
                j_off = idx_nc + od * (sidx_d_units * ALIGN_GO) + oh * (sidx_h_units * ALIGN_GO)
                j = tl.load(idx_ptr + j_off, mask=ok, other=-1)
            else:
                j = pos  # unused
                g = _average(g, cnt_d, cnt_h, cnt_w, DIVISOR, FIXED)
            acc += _spread_row(g, j, pos, ok, KW, MODE)

    gi_off = (
        row_offset(n, c, i_d, i_h, sgi_n_units, sgi_c_units, sgi_d_units, sgi_h_units, ALIGN_GI)
        + i_w
    )
    tl.store(gi_ptr + gi_off, acc.to(gi_ptr.dtype.element_ty), mask=row_ok & (i_w < W))


@triton.jit
def _spread_taps(acc, gb, g_own, ga, jb, j_own, ja, ok, i_w, pos, W, OW, cnt_d, cnt_h, DIVISOR,
                 PAD_END_W, LEAD: tl.constexpr, KW: tl.constexpr, STRIDE_W: tl.constexpr,
                 PAD_W: tl.constexpr, MODE: tl.constexpr, INCLUDE_PAD: tl.constexpr,
                 VS: tl.constexpr, ACC_DTYPE: tl.constexpr):  # fmt: skip
    """Add what one grad_out row (and its index row) hands back to input columns ``i_w``: tap
    ``tw`` hands input ``i`` the output ``(i + PAD_W - tw) / STRIDE_W``, read ``LEAD`` columns
    on where the row starts past its vectors' boundary; taps in decreasing ``tw`` (increasing
    ``ow``, the generic kernel's order). Every tap outside the row is masked."""
    # (the shift as the loop's constexpr: under the interpreter an assigned one is a tensor)
    for SHIFT in tl.static_range(PAD_W - KW + 1, PAD_W + 1):  # tap PAD_W - SHIFT
        g = adjoint_view(gb, g_own, ga, SHIFT + STRIDE_W * LEAD, VS, STRIDE_W).to(ACC_DTYPE)
        o_w = (i_w + SHIFT) // STRIDE_W
        tap_ok = ok & ((i_w + SHIFT) % STRIDE_W == 0) & (o_w >= 0) & (o_w < OW)
        if MODE == MAX:
            j = adjoint_view(jb, j_own, ja, SHIFT + STRIDE_W * LEAD, VS, STRIDE_W)
            acc += tl.where(tap_ok & (j == pos), g, 0.0)
        else:
            _start_w, _taps_w, cnt_w = _window(
                o_w, W, OW, KW, STRIDE_W, PAD_W, PAD_END_W, FIXED, INCLUDE_PAD
            )
            acc += tl.where(tap_ok, _average(g, cnt_d, cnt_h, cnt_w, DIVISOR, FIXED), 0.0)
    return acc


@triton.jit(do_not_specialize=["Q_COLS", "Q_C", "Q_D", "Q_H"])
def _pool_rows_taps_bwd_input_kernel(
    go_ptr, idx_ptr, gi_ptr,
    R, C, D, H, W_UNITS, OD, OH, OW_UNITS, TOTAL,
    Q_COLS, Q_C, Q_D, Q_H,
    KD, KH, STRIDE_D, STRIDE_H, PAD_D, PAD_H, PAD_END_D, PAD_END_H, PAD_END_W, DIL_D, DIL_H,
    DIVISOR,
    sgo_n_units, sgo_c_units, sgo_d_units, sgo_h_units,
    sidx_n_units, sidx_c_units, sidx_d_units, sidx_h_units,
    sgi_n_units, sgi_c_units, sgi_d_units, sgi_h_units,
    KW: tl.constexpr, STRIDE_W: tl.constexpr, PAD_W: tl.constexpr, MODE: tl.constexpr,
    INCLUDE_PAD: tl.constexpr, USE_INT64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    V: tl.constexpr, LEAD_ROWS: tl.constexpr, LEAD_CLASSES: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr,
    WHOLE_ROWS: tl.constexpr,
):  # fmt: skip
    # The gradient of _pool_rows_taps_fwd_kernel's windows (stride 1 or 2 along w, unit
    # dilation there, unit w strides): program = BLOCK_R input rows × BLOCK_O input columns as
    # [BLOCK_R, BLOCK_O // V, V]. Per covering (od, oh), the grad_out (and index) row under the
    # tile is read as vectors of VS = V / STRIDE_W outputs (_rows), and tap tw hands input
    # column i the output o = (i + PAD_W - tw) / STRIDE_W: at stride 1 a shifted view, at
    # stride 2 a shifted view of half the width interleaved with zeros (the other parity's
    # inputs are no tap tw of any window). Outputs in increasing (od, oh, ow), as
    # _pool_bwd_input_kernel sums them.
    #
    # Aligned rows (not LEAD_ROWS): rows are the flattened (n, c, d, h); input sizes and
    # strides arrive in units of V, grad_out's and the indices' width and strides in units of
    # VS. Contiguous grad_out rows that no vector divides (AlexNet's 27 columns; the indices
    # share their offsets): each is read from the VS-element boundary (16 bytes) before its
    # start and the taps' views shifted by its lead, as in the forward; a program's rows are
    # those of one input row (d, h) in BLOCK_R planes LEAD_CLASSES apart, whose grad_out rows
    # share their leads; R is the number of planes, sizes and strides arrive in elements, and
    # the input rows are stored from their own start (any alignment).
    VS: tl.constexpr = V // STRIDE_W
    G: tl.constexpr = BLOCK_O // V
    ALIGNED: tl.constexpr = not LEAD_ROWS
    UNIT: tl.constexpr = V if ALIGNED else 1
    UNIT_S: tl.constexpr = VS if ALIGNED else 1
    W = W_UNITS * UNIT
    OW = OW_UNITS * UNIT_S
    r, first, i_w, lead_class, n, c, i_d, i_h = row_tile(
        W, C, D, H, Q_COLS, Q_C, Q_D, Q_H, LEAD_ROWS, LEAD_CLASSES, BLOCK_R, BLOCK_O, V,
        USE_INT64, WHOLE_ROWS,
    )  # fmt: skip
    row_ok = r < R
    lo_d, n_d = _covering(i_d, D, OD, KD, STRIDE_D, PAD_D, DIL_D, FIXED)
    lo_h, n_h = _covering(i_h, H, OH, KH, STRIDE_H, PAD_H, DIL_H, FIXED)
    go_nc = n * (sgo_n_units * UNIT_S) + c * (sgo_c_units * UNIT_S)
    idx_nc = n * (sidx_n_units * UNIT_S) + c * (sidx_c_units * UNIT_S)
    pos = ((i_d * H + i_h) * W + i_w).to(tl.int64)
    # The tile's first own output column (the compiler cannot see through the division).
    first_o = tl.multiple_of(first // STRIDE_W, BLOCK_O // STRIDE_W)
    acc = tl.zeros([BLOCK_R, G, V], ACC_DTYPE)
    for td in range(_covering_bound(D, OD, KD, STRIDE_D, DIL_D, FIXED)):
        od, ok_d, cnt_d = _covering_output(
            lo_d, td, n_d, i_d, D, OD, KD, STRIDE_D, PAD_D, PAD_END_D, DIL_D, INCLUDE_PAD
        )
        ok_d = row_ok & ok_d
        for th in range(_covering_bound(H, OH, KH, STRIDE_H, DIL_H, FIXED)):
            oh, ok_h, cnt_h = _covering_output(
                lo_h, th, n_h, i_h, H, OH, KH, STRIDE_H, PAD_H, PAD_END_H, DIL_H, INCLUDE_PAD
            )
            ok = ok_d & ok_h
            go_row = go_nc + (od * (sgo_d_units * UNIT_S) + oh * (sgo_h_units * UNIT_S))
            if ALIGNED:
                gb, g_own, ga, _, _, _ = source_phases(go_ptr + go_row, first_o, ok, OW, G, VS, 1)
                jb, j_own, ja = gb, g_own, ga  # (average: unused)
                if MODE == MAX:
                    idx_row = idx_nc + (od * (sidx_d_units * UNIT_S) + oh * (sidx_h_units * UNIT_S))
                    jb, j_own, ja, _, _, _ = source_phases(
                        idx_ptr + idx_row, first_o, ok, OW, G, VS, 1
                    )
                acc = _spread_taps(
                    acc, gb, g_own, ga, jb, j_own, ja, ok, i_w, pos, W, OW, cnt_d, cnt_h,
                    DIVISOR, PAD_END_W, 0, KW, STRIDE_W, PAD_W, MODE, INCLUDE_PAD, VS, ACC_DTYPE,
                )  # fmt: skip
            else:
                base = aligned_down(go_row, VS)
                # (the row's lead: that of its plane class's first plane, the same for all)
                lead = (lead_class * (OD * OH * OW) + od * sgo_d_units + oh * sgo_h_units) % VS
                gb, g_own, ga, _, _, _ = lead_phases(
                    go_ptr + base, first_o, ok, -base, TOTAL - base, lead, lead + OW, G, VS, 1,
                    False,
                )  # fmt: skip
                jb, j_own, ja = gb, g_own, ga  # (average: unused)
                if MODE == MAX:
                    jb, j_own, ja, _, _, _ = lead_phases(
                        idx_ptr + base, first_o, ok, -base, TOTAL - base, lead, lead + OW, G,
                        VS, 1, False,
                    )  # fmt: skip
                for LEAD in tl.static_range(VS):
                    if lead == LEAD:
                        acc = _spread_taps(
                            acc, gb, g_own, ga, jb, j_own, ja, ok, i_w, pos, W, OW, cnt_d,
                            cnt_h, DIVISOR, PAD_END_W, LEAD, KW, STRIDE_W, PAD_W, MODE,
                            INCLUDE_PAD, VS, ACC_DTYPE,
                        )  # fmt: skip

    gi_off = (
        row_offset(n, c, i_d, i_h, sgi_n_units, sgi_c_units, sgi_d_units, sgi_h_units, UNIT) + i_w
    )
    tl.store(gi_ptr + gi_off, acc.to(gi_ptr.dtype.element_ty), mask=row_ok & (i_w < W))


@triton.jit
def _global_pool_fwd_kernel(
    x_ptr, y_ptr, idx_ptr,
    C, R, H, W, TOTAL,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sy_n, sy_c, sidx_n, sidx_c,
    MODE: tl.constexpr, CHANNELS_INNER: tl.constexpr, FLAT: tl.constexpr,
    ALIGN_DOWN: tl.constexpr, USE_INT64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # Program = (image, channel block); tile = BLOCK_R window positions × BLOCK_C channels,
    # positions innermost unless channels are contiguous. Each lane scans its positions in
    # order (r, r + BLOCK_R, ...); the lanes are then combined with ATen's sequential rule.
    # FLAT: the spatial dims collapse into one stride (sx_w), so a position's offset is r·sx_w
    # and loads along positions stay visibly contiguous (vectorised where planes are aligned).
    # ALIGN_DOWN (a dense input of TOTAL elements, planes of R not a multiple of 16, as
    # ResNet's 7×7): each plane is read from the 16-element boundary at or before its start,
    # so that every load is a whole aligned vector; the LEAD elements before the plane (the
    # previous plane's tail) and those past its end are loaded but left out.
    n_cb = tl.cdiv(C, BLOCK_C)
    pid = tl.program_id(0)
    n = pid // n_cb
    c_start = (pid % n_cb) * BLOCK_C
    r0, c = tile_indices(c_start * 0, c_start, BLOCK_R, BLOCK_C, CHANNELS_INNER, USE_INT64)
    c_ok = c < C
    n = wide(n, USE_INT64)
    x_nc = n * sx_n + c * sx_c
    if ALIGN_DOWN:  # (a product by 16 shows the compiler the alignment)
        aligned = (x_nc // 16) * 16
        lead = x_nc - aligned
        x_nc = aligned
        LEAD_MAX: tl.constexpr = 15
    else:
        LEAD_MAX: tl.constexpr = 0

    if MODE == MAX:
        best = full_tile(float("-inf"), ACC_DTYPE, BLOCK_R, BLOCK_C, CHANNELS_INNER)
        # (a plane of -inf, where no lane wins, points at lane 0's first position: 0)
        arg = full_tile(0, tl.int64, BLOCK_R, BLOCK_C, CHANNELS_INNER) + r0.to(tl.int64)
    else:
        acc = full_tile(0.0, ACC_DTYPE, BLOCK_R, BLOCK_C, CHANNELS_INNER)
    for start in range(0, R + LEAD_MAX, BLOCK_R):
        if ALIGN_DOWN:  # loads under a mask constant over each vector, then the plane's part
            q = r0 + start
            r = q - lead
            ok = (r >= 0) & (r < R) & c_ok
            ptrs = x_ptr + (x_nc + q)
            load_ok = c_ok & (x_nc + q < TOTAL)
        else:
            r = r0 + start
            ok = (r < R) & c_ok
            load_ok = ok
            if FLAT:
                ptrs = x_ptr + (x_nc + r * sx_w)
            else:
                i_w = r % W
                i_h = (r // W) % H
                i_d = r // (W * H)
                ptrs = x_ptr + (x_nc + i_d * sx_d + i_h * sx_h + i_w * sx_w)
        if MODE == MAX:
            v = tl.load(ptrs, mask=load_ok, other=float("-inf")).to(ACC_DTYPE)
            win = ok & ((v > best) | (v != v))
            best = tl.where(win, v, best)
            arg = tl.where(win, r.to(tl.int64), arg)
        else:
            v = tl.load(ptrs, mask=load_ok, other=0.0).to(ACC_DTYPE)
            if ALIGN_DOWN:
                v = tl.where(ok, v, 0.0)
            acc += v

    AX: tl.constexpr = 0 if CHANNELS_INNER else 1
    c1 = wide(c_start + tl.arange(0, BLOCK_C), USE_INT64)
    if MODE == MAX:
        # Sequential semantics across lanes: the last NaN if any, else the first maximum.
        nan = best != best
        nan_arg = tl.max(tl.where(nan, arg, -1), axis=AX)
        clean = tl.where(nan, float("-inf"), best)
        top = tl.max(clean, axis=AX)
        top_b = top[None, :] if CHANNELS_INNER else top[:, None]
        first = tl.min(tl.where(clean == top_b, arg, 2**62), axis=AX)
        has_nan = nan_arg >= 0
        val = tl.where(has_nan, float("nan"), top)
        tl.store(y_ptr + (n * sy_n + c1 * sy_c), val.to(y_ptr.dtype.element_ty), mask=c1 < C)
        tl.store(
            idx_ptr + (n * sidx_n + c1 * sidx_c), tl.where(has_nan, nan_arg, first), mask=c1 < C
        )
    else:
        mean = tl.sum(acc, axis=AX) / R
        tl.store(y_ptr + (n * sy_n + c1 * sy_c), mean.to(y_ptr.dtype.element_ty), mask=c1 < C)


@triton.jit(do_not_specialize=["Q_C", "Q_R"])
def _global_pool_bwd_kernel(
    go_ptr, idx_ptr, gi_ptr,
    TOTAL, C, R, Q_C, Q_R,
    sgo_n, sgo_c, sidx_n, sidx_c,
    MODE: tl.constexpr, CHANNELS_INNER: tl.constexpr, USE_INT64: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # The input gradient is dense, as (N, C, R) or, channels inner, as (N, R, C): a program
    # writes BLOCK consecutive elements of its memory (vector stores whatever R is), each the
    # plane's gradient — divided by R (avg, as ATen's mean: a division, not a product by 1/R),
    # or where the plane's argmax is this position (max). Q_C, Q_R: C and R as fast divisors.
    i = wide(tl.program_id(0), USE_INT64) * BLOCK + tl.arange(0, BLOCK)
    ok = i < TOTAL
    if CHANNELS_INNER:  # i = (n·R + r)·C + c
        inner, outer, q_inner, q_outer = C, R, Q_C, Q_R
    else:  # i = (n·C + c)·R + r
        inner, outer, q_inner, q_outer = R, C, Q_R, Q_C
    if USE_INT64:
        t = i // inner
        n = t // outer
    else:
        t = quotient(i, q_inner)
        n = quotient(t, q_outer)
    if CHANNELS_INNER:
        c, r = i - t * inner, t - n * outer
    else:
        c, r = t - n * outer, i - t * inner
    g = tl.load(go_ptr + (n * sgo_n + c * sgo_c), mask=ok, other=0.0).to(ACC_DTYPE)
    if MODE == MAX:
        arg = tl.load(idx_ptr + (n * sidx_n + c * sidx_c), mask=ok, other=-1)
        v = tl.where(arg == r, g, 0.0)
    else:
        v = g / R
    tl.store(gi_ptr + i, v.to(gi_ptr.dtype.element_ty), mask=ok)
