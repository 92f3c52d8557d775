"""Pooling kernels (device code); the launchers are in :mod:`triton_kernels.pool`.

``pool_fwd_kernel``: the windowed max / average reduction for fixed, adaptive and pyramid
windows; ``pool_bwd_kernel``: its gather-form gradient; ``global_pool_kernel``: the single-pass
reduction of whole planes. See :mod:`triton_kernels.pool` for the design.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._indexing import full_tile, tile_indices, unflatten, wide

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
    if WINDOW == 0:
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
    return k if WINDOW == 0 else _adaptive_bound(size, osize)


@triton.jit
def _tap_ok(i, size, t, taps, WINDOW: tl.constexpr):
    """Whether tap ``t`` (at input ``i``) is read: fixed windows skip the padding, adaptive
    windows (always inside the input) stop after ``taps``."""
    return (i >= 0) & (i < size) if WINDOW == 0 else t < taps


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
    if WINDOW == 0:
        lo = (tl.maximum(i + pad - (k - 1) * dil, 0) + stride - 1) // stride
        hi = tl.minimum((i + pad) // stride, osize - 1)
        cnt = hi - lo + 1
    else:
        lo = (i * osize) // size
        cnt = ((i + 1) * osize + size - 1) // size - lo
    return lo, cnt


@triton.jit
def _covering_bound(size, osize, k, stride, dil, WINDOW: tl.constexpr):
    return (k - 1) * dil // stride + 1 if WINDOW == 0 else _adaptive_bound(osize, size)


@triton.jit
def _level_offset(lv_ptr, lvl, ND: tl.constexpr):
    """Number of bins of the pyramid levels before level ``lvl`` (``Σ l**ND``)."""
    off = lvl * 0
    for j in range(lvl):
        lj = tl.load(lv_ptr + j)
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
def pool_fwd_kernel(
    x_ptr, out_ptr, idx_ptr, lv_ptr,
    N, C,
    D, H, W, OD, OH, OW,
    KD, KH, KW, SD, SH, SW, PD, PH, PW, QD, QH, QW, DD, DH, DW,
    DIVISOR,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    so_n, so_c, so_d, so_h, so_w,
    si_n, si_c, si_d, si_h, si_w,
    MODE: tl.constexpr, WINDOW: tl.constexpr, ND: tl.constexpr, INCLUDE_PAD: tl.constexpr,
    C_INNER: tl.constexpr, USE_INT64: tl.constexpr, ACC: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # Output geometry of this program: the arguments, or pyramid level program_id(2), which
    # pools to (l, ..., l) and writes its (C, l, ..., l) block after the previous levels'
    # blocks of each row (strides: so_n per row, so_w per feature; si_* likewise).
    if WINDOW == 2:
        lvl = tl.program_id(2)
        level = tl.load(lv_ptr + lvl)
        o_w = level
        o_h = level if ND >= 2 else level * 0 + 1
        o_d = level if ND == 3 else level * 0 + 1
        before = _level_offset(lv_ptr, lvl, ND) * C
        bins = o_d * o_h * o_w
        before = wide(before, USE_INT64)
        o_base = before * so_w
        i_base = before * si_w
        so_c_, so_d_, so_h_, so_w_ = bins * so_w, o_h * o_w * so_w, o_w * so_w, so_w
        si_c_, si_d_, si_h_, si_w_ = bins * si_w, o_h * o_w * si_w, o_w * si_w, si_w
        if wide(tl.program_id(0), USE_INT64) * BLOCK_P >= N * bins:
            return  # the grid is sized for the largest level
    else:
        o_d, o_h, o_w = OD, OH, OW
        o_base = 0
        i_base = 0
        so_c_, so_d_, so_h_, so_w_ = so_c, so_d, so_h, so_w
        si_c_, si_d_, si_h_, si_w_ = si_c, si_d, si_h, si_w

    p, c = tile_indices(
        wide(tl.program_id(0), USE_INT64) * BLOCK_P,
        tl.program_id(1) * BLOCK_C,
        BLOCK_P,
        BLOCK_C,
        C_INNER,
        USE_INT64,
    )
    ok_pc = (p < N * o_d * o_h * o_w) & (c < C)
    n, od, oh, ow = unflatten(p, o_d, o_h, o_w)
    start_d, taps_d, cnt_d = _window(od, D, o_d, KD, SD, PD, QD, WINDOW, INCLUDE_PAD)
    start_h, taps_h, cnt_h = _window(oh, H, o_h, KH, SH, PH, QH, WINDOW, INCLUDE_PAD)
    start_w, taps_w, cnt_w = _window(ow, W, o_w, KW, SW, PW, QW, WINDOW, INCLUDE_PAD)
    x_base = n * sx_n + c * sx_c

    if MODE == 0:
        best = full_tile(float("-inf"), ACC, BLOCK_P, BLOCK_C, C_INNER)
        first = (
            _first_in_range(start_d, DD) * H + _first_in_range(start_h, DH)
        ) * W + _first_in_range(start_w, DW)
        arg = full_tile(0, tl.int64, BLOCK_P, BLOCK_C, C_INNER) + first.to(tl.int64)
    else:
        acc = full_tile(0.0, ACC, BLOCK_P, BLOCK_C, C_INNER)

    # Row-major window scan (ATen's order); per-dim index maps are hoisted out of inner loops.
    for td in range(_tap_bound(D, o_d, KD, WINDOW)):
        i_d = start_d + td * DD
        ok_d = ok_pc & _tap_ok(i_d, D, td, taps_d, WINDOW)
        x_d = x_base + i_d * sx_d
        for th in range(_tap_bound(H, o_h, KH, WINDOW)):
            i_h = start_h + th * DH
            ok_h = ok_d & _tap_ok(i_h, H, th, taps_h, WINDOW)
            x_h = x_d + i_h * sx_h
            for tw in range(_tap_bound(W, o_w, KW, WINDOW)):
                i_w = start_w + tw * DW
                ok = ok_h & _tap_ok(i_w, W, tw, taps_w, WINDOW)
                if MODE == 0:
                    v = tl.load(x_ptr + (x_h + i_w * sx_w), mask=ok, other=float("-inf")).to(ACC)
                    win = ok & ((v > best) | (v != v))
                    best = tl.where(win, v, best)
                    arg = tl.where(win, ((i_d * H + i_h) * W + i_w).to(tl.int64), arg)
                else:
                    acc += tl.load(x_ptr + (x_h + i_w * sx_w), mask=ok, other=0.0).to(ACC)

    o_off = o_base + n * so_n + c * so_c_ + od * so_d_ + oh * so_h_ + ow * so_w_
    if MODE == 0:
        tl.store(out_ptr + o_off, best.to(out_ptr.dtype.element_ty), mask=ok_pc)
        i_off = i_base + n * si_n + c * si_c_ + od * si_d_ + oh * si_h_ + ow * si_w_
        tl.store(idx_ptr + i_off, arg, mask=ok_pc)
    else:
        div = cnt_d * cnt_h * cnt_w
        if WINDOW == 0:
            div = tl.where(DIVISOR != 0, DIVISOR, div)
        # An empty window (impossible for valid arguments) gives 0, as in ATen.
        res = tl.where(div != 0, acc / tl.where(div != 0, div, 1).to(ACC), 0.0)
        tl.store(out_ptr + o_off, res.to(out_ptr.dtype.element_ty), mask=ok_pc)


@triton.jit
def pool_bwd_kernel(
    go_ptr, idx_ptr, gi_ptr, lv_ptr,
    N, C, NUM_LEVELS,
    D, H, W, OD, OH, OW,
    KD, KH, KW, SD, SH, SW, PD, PH, PW, QD, QH, QW, DD, DH, DW,
    DIVISOR,
    sg_n, sg_c, sg_d, sg_h, sg_w,
    si_n, si_c, si_d, si_h, si_w,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    MODE: tl.constexpr, WINDOW: tl.constexpr, ND: tl.constexpr, INCLUDE_PAD: tl.constexpr,
    C_INNER: tl.constexpr, USE_INT64: tl.constexpr, ACC: tl.constexpr,
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
        C_INNER,
        USE_INT64,
    )
    ok_pc = (p < N * D * H * W) & (c < C)
    n, i_d, i_h, i_w = unflatten(p, D, H, W)
    here = ((i_d * H + i_h) * W + i_w).to(tl.int64)
    acc = full_tile(0.0, ACC, BLOCK_P, BLOCK_C, C_INNER)

    for lvl in range(NUM_LEVELS):
        if WINDOW == 2:
            level = tl.load(lv_ptr + lvl)
            o_w = level
            o_h = level if ND >= 2 else level * 0 + 1
            o_d = level if ND == 3 else level * 0 + 1
            before = _level_offset(lv_ptr, lvl, ND) * C
            bins = o_d * o_h * o_w
            before = wide(before, USE_INT64)
            g_base = before * sg_w
            i_base = before * si_w
            sg_c_, sg_d_, sg_h_, sg_w_ = bins * sg_w, o_h * o_w * sg_w, o_w * sg_w, sg_w
            si_c_, si_d_, si_h_, si_w_ = bins * si_w, o_h * o_w * si_w, o_w * si_w, si_w
        else:
            o_d, o_h, o_w = OD, OH, OW
            g_base = 0
            i_base = 0
            sg_c_, sg_d_, sg_h_, sg_w_ = sg_c, sg_d, sg_h, sg_w
            si_c_, si_d_, si_h_, si_w_ = si_c, si_d, si_h, si_w

        lo_d, n_d = _covering(i_d, D, o_d, KD, SD, PD, DD, WINDOW)
        lo_h, n_h = _covering(i_h, H, o_h, KH, SH, PH, DH, WINDOW)
        lo_w, n_w = _covering(i_w, W, o_w, KW, SW, PW, DW, WINDOW)
        g_nc = g_base + n * sg_n + c * sg_c_
        i_nc = i_base + n * si_n + c * si_c_
        for td in range(_covering_bound(D, o_d, KD, SD, DD, WINDOW)):
            od = lo_d + td
            ok_d = ok_pc & (td < n_d)
            if WINDOW == 0:
                ok_d = ok_d & ((i_d + PD - od * SD) % DD == 0)
            if MODE == 1:
                _, _, cnt_d = _window(od, D, o_d, KD, SD, PD, QD, WINDOW, INCLUDE_PAD)
            for th in range(_covering_bound(H, o_h, KH, SH, DH, WINDOW)):
                oh = lo_h + th
                ok_h = ok_d & (th < n_h)
                if WINDOW == 0:
                    ok_h = ok_h & ((i_h + PH - oh * SH) % DH == 0)
                if MODE == 1:
                    _, _, cnt_h = _window(oh, H, o_h, KH, SH, PH, QH, WINDOW, INCLUDE_PAD)
                for tw in range(_covering_bound(W, o_w, KW, SW, DW, WINDOW)):
                    ow = lo_w + tw
                    ok = ok_h & (tw < n_w)
                    if WINDOW == 0:
                        ok = ok & ((i_w + PW - ow * SW) % DW == 0)
                    g_ptrs = go_ptr + (g_nc + od * sg_d_ + oh * sg_h_ + ow * sg_w_)
                    if MODE == 0:
                        j = tl.load(
                            idx_ptr + (i_nc + od * si_d_ + oh * si_h_ + ow * si_w_),
                            mask=ok,
                            other=-1,
                        )
                        acc += tl.load(g_ptrs, mask=ok & (j == here), other=0.0).to(ACC)
                    else:
                        g = tl.load(g_ptrs, mask=ok, other=0.0).to(ACC)
                        _, _, cnt_w = _window(ow, W, o_w, KW, SW, PW, QW, WINDOW, INCLUDE_PAD)
                        div = cnt_d * cnt_h * cnt_w
                        if WINDOW == 0:
                            div = tl.where(DIVISOR != 0, DIVISOR, div)
                        acc += tl.where(
                            ok & (div != 0), g / tl.where(div != 0, div, 1).to(ACC), 0.0
                        )

    x_off = n * sx_n + c * sx_c + i_d * sx_d + i_h * sx_h + i_w * sx_w
    tl.store(gi_ptr + x_off, acc.to(gi_ptr.dtype.element_ty), mask=ok_pc)


@triton.jit
def global_pool_kernel(
    x_ptr, out_ptr, idx_ptr,
    C, R, H, W,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    so_n, so_c, si_n, si_c,
    MODE: tl.constexpr, C_INNER: tl.constexpr, USE_INT64: tl.constexpr, ACC: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # Program = (image, channel block); tile = BLOCK_R window positions × BLOCK_C channels,
    # positions innermost unless channels are contiguous. Each lane scans its positions in
    # order (r, r + BLOCK_R, ...); the lanes are then combined with ATen's sequential rule.
    n_cb = tl.cdiv(C, BLOCK_C)
    pid = tl.program_id(0)
    n = pid // n_cb
    c_start = (pid % n_cb) * BLOCK_C
    r0, c = tile_indices(c_start * 0, c_start, BLOCK_R, BLOCK_C, C_INNER, USE_INT64)
    c_ok = c < C
    n = wide(n, USE_INT64)
    x_nc = n * sx_n + c * sx_c

    if MODE == 0:
        best = full_tile(float("-inf"), ACC, BLOCK_R, BLOCK_C, C_INNER)
        arg = full_tile(0, tl.int64, BLOCK_R, BLOCK_C, C_INNER) + r0.to(tl.int64)
    else:
        acc = full_tile(0.0, ACC, BLOCK_R, BLOCK_C, C_INNER)
    for start in range(0, R, BLOCK_R):
        r = r0 + start
        ok = (r < R) & c_ok
        i_w = r % W
        i_h = (r // W) % H
        i_d = r // (W * H)
        ptrs = x_ptr + (x_nc + i_d * sx_d + i_h * sx_h + i_w * sx_w)
        if MODE == 0:
            v = tl.load(ptrs, mask=ok, other=float("-inf")).to(ACC)
            win = ok & ((v > best) | (v != v))
            best = tl.where(win, v, best)
            arg = tl.where(win, r.to(tl.int64), arg)
        else:
            acc += tl.load(ptrs, mask=ok, other=0.0).to(ACC)

    AX: tl.constexpr = 0 if C_INNER else 1
    c1 = wide(c_start + tl.arange(0, BLOCK_C), USE_INT64)
    if MODE == 0:
        # Sequential semantics across lanes: the last NaN if any, else the first maximum.
        nan = best != best
        nan_arg = tl.max(tl.where(nan, arg, -1), axis=AX)
        clean = tl.where(nan, float("-inf"), best)
        top = tl.max(clean, axis=AX)
        top_b = top[None, :] if C_INNER else top[:, None]
        first = tl.min(tl.where(clean == top_b, arg, 2**62), axis=AX)
        has_nan = nan_arg >= 0
        val = tl.where(has_nan, float("nan"), top)
        tl.store(out_ptr + (n * so_n + c1 * so_c), val.to(out_ptr.dtype.element_ty), mask=c1 < C)
        tl.store(idx_ptr + (n * si_n + c1 * si_c), tl.where(has_nan, nan_arg, first), mask=c1 < C)
    else:
        mean = tl.sum(acc, axis=AX) / R
        tl.store(out_ptr + (n * so_n + c1 * so_c), mean.to(out_ptr.dtype.element_ty), mask=c1 < C)
