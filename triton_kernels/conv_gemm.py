"""Implicit-GEMM convolution on tensor cores (``tl.dot``): forward, grad-input, grad-weight.

One code path serves 1-d, 2-d and 3-d convolutions: every tensor is viewed as ``(N, C, D, H, W)``
(``as_5d``; unit leading spatial dims for 1-d/2-d) and read through its strides, so
channels_last and other non-contiguous layouts need no copy. Nothing is materialised: no im2col
matrix, no padded input, no zero-inserted gradient.

The three GEMMs (per group; groups are a grid axis):

* forward      rows = N·output positions, cols = C_out/groups, reduction = (taps, C_in/groups);
* grad-input   per stride phase: rows = N·input positions of that phase, cols = C_in/groups,
               reduction = (taps reaching that phase, C_out/groups);
* grad-weight  rows = C_out/groups, cols = (taps, C_in/groups), reduction = N·output positions,
               split-K into a workspace when the grid alone cannot fill the GPU.

Groups of a few channels are computed several at a time as one group: the weight gradient
(ResNeXt's 4 and 8 channels) keeps each group's diagonal block of the dense gradient
(``merged_groups``), the forward and the input gradient (4 channels) read the merged groups'
block-diagonal weight (``merged_sums``, ``merged_weight``) and sum a tile again group by group
where a non-finite value of one group made NaN in another's columns (``_unmerged``).

A (taps, channels) axis keeps channels fastest, so channels_last loads are contiguous. When the
channel count is below 16 (narrow groups; dilation along ``w``), taps and channels are
flattened into one axis so the ``tl.dot`` operand still has ≥ 16 useful columns (``FLAT_K``);
the forward is then compiled for that axis' shape (``FLAT_C``, ``FLAT_KH``, ``FLAT_KW``), since
the per-column tap arithmetic, not the tensor cores, bounds those loops. Stems (one group)
take the tap loop instead, over windows of a padded copy of their input
(``conv_window``: there, a padded input is the price of contiguous windows).

A tile side that spans the channels of a group (the columns of every GEMM: output channels,
input channels, input channels per tap) takes 16- and 32-wide tiles when it has at most 32
(``_gemm_common.narrow``: 3D U-Net's 32-channel levels, ResNeXt's and RegNet's groups): a
64-wide tile would leave half or more of its tensor-core work and registers idle.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._activation import (
    ACTIVATIONS,
    activate,
    epilogue_args,
    pre_activation_target,
    stored_pre_activation,
)
from ._common import (
    INTERPRET,
    PAD_MODES,
    PAD_ZEROS,
    acc_dtype,
    as_5d,
    cdiv,
    check_device,
    dot_precision,
    fast_divisor,
    needs_int64,
    pack_geometry,
    phase_steps,
    spatial3,
)
from ._gemm_common import (
    FLAT_TABLE,
    GROUP_M,
    MAXOUT_FLAT_TABLE,
    MAXOUT_TAP_TABLE,
    NARROW_FLAT_TABLE,
    NARROW_TAP_TABLE,
    NARROW_WEIGHT_TABLE,
    NOMINAL_TILE,
    SUM_COLUMNS,
    SUM_STAGES,
    TAP_TABLE,
    WEIGHT_BLOCK_K,
    aligned,
    aligned_rows,
    bias_target,
    channel_alignment,
    channel_sums,
    choose_split,
    configs,
    first_column,
    flat_alignment,
    flat_grid,
    narrow,
    shared_estimate,
    split_workspace,
    unproven,
)
from ._indexing import (
    grouped_tile,
    in_range,
    map_padded,
    phase_dim,
    split_phase,
    unflatten,
    unflatten_fast,
    wide,
)
from ._tuning import Config, Tuner, bucket
from .maxout import maxout_epilogue, running_max

__all__ = ["gemm_conv_backward_input", "gemm_conv_backward_weight", "gemm_conv_forward"]

# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _k_step(step, C, c_blocks, n_taps, TH, TW, BLOCK: tl.constexpr, FLAT: tl.constexpr):
    """One BLOCK-wide step along a (taps, channels) axis, channels fastest.

    Returns ``(tap_d, tap_h, tap_w, channel, valid)`` for taps laid out on a ``(·, TH, TW)`` grid.
    Tap mode: each step is one tap (scalars) × a block of channels, so addressing stays cheap.
    FLAT mode: the block runs across taps × channels, so a channel count < 16 still fills a
    ≥ 16-wide ``tl.dot`` operand; the taps are then vectors as well.
    """
    if FLAT:
        k = step * BLOCK + tl.arange(0, BLOCK)
        tap = k // C
        c = k - tap * C
        ok = k < n_taps * C
    else:
        tap = step // c_blocks
        c = (step - tap * c_blocks) * BLOCK + tl.arange(0, BLOCK)
        ok = c < C
    tw = tap % TW
    t = tap // TW
    return t // TH, t % TH, tw, c, ok


@triton.jit
def _next_tap(c_block, tw, th, td, c_blocks, TW, TH):
    """The tap loop's position one step on: the next channel block, and after the last one the
    next tap (w fastest, then h, then d) — counters instead of ``_k_step``'s divisions, which
    the compiler cannot hoist out of the loop."""
    c_block += 1
    wrap = c_block == c_blocks
    c_block = tl.where(wrap, 0, c_block)
    tw += wrap.to(tl.int32)
    wrap = tw == TW
    tw = tl.where(wrap, 0, tw)
    th += wrap.to(tl.int32)
    wrap = th == TH
    th = tl.where(wrap, 0, th)
    td += wrap.to(tl.int32)
    return c_block, tw, th, td


@triton.jit
def _channel_block(c_block, only, C, BLOCK: tl.constexpr, ONLY: tl.constexpr):
    """The tap loop's channels at one step, and which are real: block ``c_block`` of ``C``;
    with ``ONLY`` > 0, the ``ONLY`` channels of group ``only`` alone (a merged tile summed
    again group by group: ``_unmerged``)."""
    if ONLY:
        c = only * ONLY + tl.arange(0, BLOCK)
        ok = (tl.arange(0, BLOCK) < ONLY) & (c < C)
    else:
        c = c_block * BLOCK + tl.arange(0, BLOCK)
        ok = c < C
    return c, ok


@triton.jit
def _gather5(
    ptr, n, c, zd, zh, zw, od, oh, ow, mask,
    s_n, s_c, s_d, s_h, s_w, D, H, W,
    PAD_MODE: tl.constexpr, USE_INT64: tl.constexpr,
):  # fmt: skip
    """Load ``t[n, c, zd + od, zh + oh, zw + ow]`` of a 5-d tensor, coordinates padding-mapped.

    The pieces broadcast to the tile: per-row pieces are ``(R, 1)``, per-column pieces ``(C,)``
    or scalars. Coordinates outside ``[0, size)`` read 0 (zeros) or their mapped source.
    """
    i_d, i_h, i_w = zd + od, zh + oh, zw + ow
    if PAD_MODE == PAD_ZEROS:  # one comparison per bound
        ok = in_range(i_d, D) & in_range(i_h, H) & in_range(i_w, W)
    else:  # (every mapped coordinate lies inside)
        i_d, ok = map_padded(i_d, D, PAD_MODE)
        i_h, _ = map_padded(i_h, H, PAD_MODE)
        i_w, _ = map_padded(i_w, W, PAD_MODE)
    offs = n * s_n + wide(c, USE_INT64) * s_c + i_d * s_d + i_h * s_h + i_w * s_w
    return tl.load(ptr + offs, mask=mask & ok, other=0.0)


@triton.jit
def _gather_columns(
    ptr, row, c, zd, zh, zw, od, oh, ow, mask,
    s_c, s_d, s_h, s_w, D, H, W, USE_INT64: tl.constexpr,
):  # fmt: skip
    """``_gather5`` under zero padding for per-column coordinates (``c``, ``od``, ``oh``,
    ``ow``: ``(C,)``) and ``row = n·s_n + zd·s_d + zh·s_h + zw·s_w`` (``(R, 1)``): the offset
    of an element is ``row`` plus its column's part — one add, where ``_gather5`` multiplies
    every coordinate by its stride."""
    col = wide(c, USE_INT64) * s_c + wide(od, USE_INT64) * s_d + oh * s_h + ow * s_w
    i_d = zd + od[None, :]
    i_h = zh + oh[None, :]
    i_w = zw + ow[None, :]
    ok = in_range(i_d, D) & in_range(i_h, H) & in_range(i_w, W)
    return tl.load(ptr + (row + col[None, :]), mask=mask & ok, other=0.0)


@triton.jit
def _flat_row(rows, P, s_n):
    """The offset of flat row ``rows`` (over ``N·P`` positions) in a result whose positions
    have unit stride (NCHW): ``(rows // P)·s_n + rows % P``. Written so, Triton sees runs of
    contiguous positions in one image as long as the largest power of two dividing ``P`` (see
    ``_gemm_common.aligned_rows``), and stores them as vectors; the per-dimension form (``unflatten``'s
    coordinates times their strides) is one address per element, at the register file's
    limit."""
    return (rows // P) * s_n + rows % P


@triton.jit
def _fwd_sum(
    x_ptr, w_ptr, w_col, co_ok, n_r, group, zd, zh, zw, row_mask, only,
    C_IN, D, H, W, KD, KH, KW, DIL_D, DIL_H, DIL_W,
    sx_n, sx_c, sx_d, sx_h, sx_w, sw_i, sw_d, sw_h, sw_w,
    PAD_MODE: tl.constexpr, FLAT_K: tl.constexpr,
    USE_INT64: tl.constexpr, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    FLAT_C: tl.constexpr, FLAT_KH: tl.constexpr, FLAT_KW: tl.constexpr,
    IN_BOUNDS: tl.constexpr, ONLY_IN: tl.constexpr,
):  # fmt: skip
    """The forward's (taps, channels) reduction for one row tile against the weight columns
    ``w_col``. ``ONLY_IN`` > 0 (tap loop): over the input channels ``[only·ONLY_IN,
    (only + 1)·ONLY_IN)`` alone, one step per tap, unpipelined (:func:`_unmerged`: a loop
    rarely taken, kept from holding registers and shared memory of its own)."""
    tl.static_assert(not (ONLY_IN and FLAT_K))
    n_taps = KD * KH * KW
    c_blocks = 1 if ONLY_IN else tl.cdiv(C_IN, BLOCK_K)
    n_steps = tl.cdiv(n_taps * C_IN, BLOCK_K) if FLAT_K else n_taps * c_blocks
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    # Flat, zero padding: taps vary along the columns, so each element's offset is a row part
    # (computed once) plus a column part, not five coordinates times their strides. Every tap
    # in bounds: a tap's offset is the row part plus one scalar.
    x_row = n_r * sx_n + zd * sx_d + zh * sx_h + zw * sx_w
    c_at, w_at, h_at, d_at = 0, 0, 0, 0  # the tap loop's position (_next_tap)
    for step in tl.range(0, n_steps, num_stages=1 if ONLY_IN else None):
        if FLAT_K:  # the flat axis' shape is constant: splitting k is multiply-shift arithmetic
            td, th, tw, ci, k_ok = _k_step(step, FLAT_C, 1, n_taps, FLAT_KH, FLAT_KW, BLOCK_K, True)
        else:
            td, th, tw = d_at, h_at, w_at
            ci, k_ok = _channel_block(c_at, only, C_IN, BLOCK_K, ONLY_IN)
            c_at, w_at, h_at, d_at = _next_tap(c_at, w_at, h_at, d_at, c_blocks, KW, KH)
        mask = row_mask & k_ok[None, :]
        if IN_BOUNDS and not FLAT_K:
            tap = td * DIL_D * sx_d + th * DIL_H * sx_h + tw * DIL_W * sx_w
            a = tl.load(
                x_ptr + (x_row + tap) + (wide(group * C_IN + ci, USE_INT64) * sx_c)[None, :],
                mask=mask,
                other=0.0,
            )
        elif FLAT_K and PAD_MODE == PAD_ZEROS:
            a = _gather_columns(
                x_ptr, x_row, group * C_IN + ci, zd, zh, zw, td * DIL_D, th * DIL_H, tw * DIL_W,
                mask, sx_c, sx_d, sx_h, sx_w, D, H, W, USE_INT64,
            )  # fmt: skip
        else:
            a = _gather5(
                x_ptr, n_r, group * C_IN + ci, zd, zh, zw, td * DIL_D, th * DIL_H, tw * DIL_W,
                mask, sx_n, sx_c, sx_d, sx_h, sx_w, D, H, W, PAD_MODE, USE_INT64,
            )  # fmt: skip
        w_row = wide(ci, USE_INT64) * sw_i + td * sw_d + th * sw_h + tw * sw_w
        b = tl.load(
            w_ptr + w_row[:, None] + w_col[None, :],
            mask=k_ok[:, None] & co_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
    return acc


#: The reduction chunk of a merged tile summed again one group (of fewer than 16 channels) at a
#: time: the narrowest a ``tl.dot`` takes, so that the rarely taken loop holds few registers.
ONE_GROUP_K: tl.constexpr = tl.constexpr(16)


@triton.jit
def _unmerged(acc, own):
    """Whether a merged tile's sums must be redone one group at a time, and the range of its
    columns' groups (``own``: each column's group within the merged one).

    Merged (``merged_sums``), each group's inputs meet the other groups' columns through the
    zeros of a block-diagonal weight, and a non-finite input times zero is NaN: a NaN in the
    tile may belong to no group of its column. Finite inputs give every column its own group's
    sum (the other products are zeros), and a non-finite sum of a group's own is the same
    whatever the order. Kernels sum such a tile again over each group's channels alone, storing
    each group's columns as they come (one accumulator live, not two), in an unpipelined loop
    16 channels wide (``ONE_GROUP_K``), which holds few registers even untaken: 94 for the
    sm_90 code of a 64 × 64 tile, 64 without it (``merged-sums-sm_90.md``)."""
    return tl.max((acc != acc).to(tl.int32)) > 0, tl.min(own), tl.max(own)


@triton.jit
def _fwd_tile(
    x_ptr, w_ptr, b_ptr, wco, co_ok, n_r, group, zd, zh, zw, row_mask, only,
    C_IN, D, H, W, KD, KH, KW, DIL_D, DIL_H, DIL_W,
    sx_n, sx_c, sx_d, sx_h, sx_w, sw_o, sw_i, sw_d, sw_h, sw_w, sb,
    HAS_BIAS: tl.constexpr, PAD_MODE: tl.constexpr, FLAT_K: tl.constexpr,
    USE_INT64: tl.constexpr, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    FLAT_C: tl.constexpr, FLAT_KH: tl.constexpr, FLAT_KW: tl.constexpr,
    IN_BOUNDS: tl.constexpr, ONLY_IN: tl.constexpr,
):  # fmt: skip
    """The forward's accumulator for one row tile against the weight rows ``wco`` (one per
    column): the (taps, channels) reduction (``ONLY_IN``, ``only``: as :func:`_fwd_sum`'s),
    plus ``bias[wco]`` when ``HAS_BIAS``."""
    acc = _fwd_sum(
        x_ptr, w_ptr, wco * sw_o, co_ok, n_r, group, zd, zh, zw, row_mask, only,
        C_IN, D, H, W, KD, KH, KW, DIL_D, DIL_H, DIL_W,
        sx_n, sx_c, sx_d, sx_h, sx_w, sw_i, sw_d, sw_h, sw_w,
        PAD_MODE, FLAT_K, USE_INT64, PRECISION, ACC_DTYPE, BLOCK_M, BLOCK_N, BLOCK_K,
        FLAT_C, FLAT_KH, FLAT_KW, IN_BOUNDS, ONLY_IN,
    )  # fmt: skip
    if HAS_BIAS:
        bias = tl.load(b_ptr + wco * sb, mask=co_ok, other=0.0)
        acc += bias.to(ACC_DTYPE)[None, :]
    return acc


@triton.jit
def _fwd_store(acc, y_ptr, z_ptr, y_row, sy_c, co_off, co_ok, mask, aw_ptr, saw, ACT_ALPHA,
               ACT_ALPHA_LO, ACT: tl.constexpr):  # fmt: skip
    """The epilogue of the forward and of the input gradient (:func:`_bwd_input_store`):
    ``act(acc)`` stored to ``y`` (rows at ``y_row``, columns the channels ``co_off``, which also
    index the PReLU weight) where ``mask``, and ``acc`` itself to ``z`` (``y``'s strides) unless
    ``z_ptr`` is None."""
    y_offs = y_row[:, None] + (co_off * sy_c)[None, :]
    if z_ptr is not None:
        acc = stored_pre_activation(acc, z_ptr + y_offs, mask)
    acc = activate(
        acc, aw_ptr, (co_off * saw)[None, :], co_ok[None, :], ACT_ALPHA, ACT_ALPHA_LO, ACT
    )
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _conv_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, z_ptr,
    M, P, C_IN, C_OUT,
    D, H, W, OD, OH, OW, KD, KH, KW,
    STRIDE_D, STRIDE_H, STRIDE_W, PAD_D, PAD_H, PAD_W, DIL_D, DIL_H, DIL_W,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sw_o, sw_i, sw_d, sw_h, sw_w,
    sy_n, sy_c, sy_d, sy_h, sy_w,
    sb,
    aw_ptr, saw, ACT_ALPHA, ACT_ALPHA_LO,
    win_ptr,
    HAS_BIAS: tl.constexpr, PAD_MODE: tl.constexpr, FLAT_K: tl.constexpr,
    USE_INT64: tl.constexpr, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    ACT: tl.constexpr, PIECES: tl.constexpr, FLAT_Y: tl.constexpr,
    FLAT_C: tl.constexpr, FLAT_KH: tl.constexpr, FLAT_KW: tl.constexpr, C_ALIGN: tl.constexpr,
    IN_BOUNDS: tl.constexpr, OWN_IN: tl.constexpr, OWN_OUT: tl.constexpr,
    OUT_ALIGN: tl.constexpr,
):  # fmt: skip
    """y[n, group·C_OUT + co, o] = act(bias[co] +
    Σ_{tap, ci} x[n, group·C_IN + ci, o·stride - padding + tap·dilation] · w[co, ci, tap]).

    Grid: groups × row tiles (over M = N·P output positions) × C_OUT tiles, flat
    (``grouped_tile``). C_IN/C_OUT are per group. ``FLAT_Y`` > 0: ``y``'s positions have unit
    stride (an NCHW result), stored as ``n·sy_n + p`` (``_flat_row``), and ``FLAT_Y`` (a power
    of two) divides ``M``, ``P``, ``sy_n`` and ``sy_c``: the width of the vector stores.
    ``FLAT_K``: ``FLAT_C``, ``FLAT_KH`` and ``FLAT_KW`` are C_IN, KH and KW as constants.
    ``C_ALIGN`` divides C_IN and the position strides of ``x`` and ``w``: the width of their
    channel runs (``channel_alignment``); ``OUT_ALIGN`` divides C_OUT and the position
    strides of a channels-inner ``y``: the width of the stored channel runs (8 channels a group
    in ResNeXt's second stage). ``IN_BOUNDS``: every tap of every output position
    lies inside ``x`` (no padding: ``in_bounds``), so no load checks its coordinates.
    ``OWN_IN``, ``OWN_OUT`` > 0: each group of the launch is several groups of the convolution
    (``merged_groups``) of that many channels each, ``w`` their block-diagonal weight
    (``merged_weight``): a NaN in a tile has it summed again one group at a time
    (``_unmerged``).

    Maxout (``PIECES`` > 1; ``ACT`` is then none): column ``co`` is a maxout unit, the max over
    ``k < PIECES`` of the convolution with weight row (and bias) ``co·PIECES + k`` — one GEMM
    per piece, a running max in registers — and ``win[n, group·C_OUT + co, o]`` (int64, ``y``'s
    strides) gets the winning ``k``: pieces compare in ``y``'s dtype (as a maxout of the stored
    convolution does), ties keep the first piece, a NaN wins (the first NaN).
    """
    M, P, sy_n, sy_c = aligned_rows(M, P, sy_n, sy_c, FLAT_Y)
    C_IN = aligned(C_IN, C_ALIGN)
    sx_n, sx_d, sx_h = aligned(sx_n, C_ALIGN), aligned(sx_d, C_ALIGN), aligned(sx_h, C_ALIGN)
    sx_w, sw_o, sw_d = aligned(sx_w, C_ALIGN), aligned(sw_o, C_ALIGN), aligned(sw_d, C_ALIGN)
    sw_h, sw_w = aligned(sw_h, C_ALIGN), aligned(sw_w, C_ALIGN)
    C_OUT, sy_n = aligned(C_OUT, OUT_ALIGN), aligned(sy_n, OUT_ALIGN)
    sy_d, sy_h = aligned(sy_d, OUT_ALIGN), aligned(sy_h, OUT_ALIGN)
    sy_w = aligned(sy_w, OUT_ALIGN)
    group, tile_m, tile_n = grouped_tile(
        tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(C_OUT, BLOCK_N), GROUP_M
    )
    rows = wide(tile_m, USE_INT64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    n, od, oh, ow = unflatten(rows, OD, OH, OW)
    co = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    co_ok = co < C_OUT
    co_off = wide(group * C_OUT + co, USE_INT64)

    # Input coordinates of tap 0 per output row; a tap adds tap·dilation.
    n_r = n[:, None]
    zd = (od * STRIDE_D - PAD_D)[:, None]
    zh = (oh * STRIDE_H - PAD_H)[:, None]
    zw = (ow * STRIDE_W - PAD_W)[:, None]
    row_mask = row_ok[:, None]

    y_row = _flat_row(rows, P, sy_n) if FLAT_Y else n * sy_n + od * sy_d + oh * sy_h + ow * sy_w
    mask = row_mask & co_ok[None, :]
    if PIECES == 1:
        acc = _fwd_tile(
            x_ptr, w_ptr, b_ptr, co_off, co_ok, n_r, group, zd, zh, zw, row_mask, 0,
            C_IN, D, H, W, KD, KH, KW, DIL_D, DIL_H, DIL_W,
            sx_n, sx_c, sx_d, sx_h, sx_w, sw_o, sw_i, sw_d, sw_h, sw_w, sb,
            HAS_BIAS, PAD_MODE, FLAT_K, USE_INT64, PRECISION, ACC_DTYPE,
            BLOCK_M, BLOCK_N, BLOCK_K, FLAT_C, FLAT_KH, FLAT_KW, IN_BOUNDS, 0,
        )  # fmt: skip
        if OWN_IN == 0:
            _fwd_store(acc, y_ptr, z_ptr, y_row, sy_c, co_off, co_ok, mask, aw_ptr, saw, ACT_ALPHA,
                       ACT_ALPHA_LO, ACT)  # fmt: skip
        else:
            own = (co_off // OWN_OUT - group * (C_IN // OWN_IN)).to(tl.int32)
            redo, first, last = _unmerged(acc, tl.where(co_ok, own, 0))
            if redo:  # (each group's columns stored as they are summed: one accumulator)
                for j in range(first, last + 1):
                    acc = _fwd_tile(
                        x_ptr, w_ptr, b_ptr, co_off, co_ok, n_r, group, zd, zh, zw, row_mask, j,
                        C_IN, D, H, W, KD, KH, KW, DIL_D, DIL_H, DIL_W,
                        sx_n, sx_c, sx_d, sx_h, sx_w, sw_o, sw_i, sw_d, sw_h, sw_w, sb,
                        HAS_BIAS, PAD_MODE, FLAT_K, USE_INT64, PRECISION, ACC_DTYPE,
                        BLOCK_M, BLOCK_N, ONE_GROUP_K, FLAT_C, FLAT_KH, FLAT_KW, IN_BOUNDS,
                        OWN_IN,
                    )  # fmt: skip
                    _fwd_store(acc, y_ptr, z_ptr, y_row, sy_c, co_off, co_ok,
                               mask & (own == j)[None, :], aw_ptr, saw, ACT_ALPHA, ACT_ALPHA_LO,
                               ACT)  # fmt: skip
            else:
                _fwd_store(acc, y_ptr, z_ptr, y_row, sy_c, co_off, co_ok, mask, aw_ptr, saw,
                           ACT_ALPHA, ACT_ALPHA_LO, ACT)  # fmt: skip
    else:
        acc = tl.full((BLOCK_M, BLOCK_N), float("-inf"), ACC_DTYPE)
        won = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for k in range(0, PIECES):
            z = _fwd_tile(
                x_ptr, w_ptr, b_ptr, co_off * PIECES + k, co_ok, n_r, group, zd, zh, zw,
                row_mask, 0, C_IN, D, H, W, KD, KH, KW, DIL_D, DIL_H, DIL_W,
                sx_n, sx_c, sx_d, sx_h, sx_w, sw_o, sw_i, sw_d, sw_h, sw_w, sb,
                HAS_BIAS, PAD_MODE, FLAT_K, USE_INT64, PRECISION, ACC_DTYPE,
                BLOCK_M, BLOCK_N, BLOCK_K, FLAT_C, FLAT_KH, FLAT_KW, IN_BOUNDS, 0,
            )  # fmt: skip
            # Compared as stored (rounded to the output's dtype), as a maxout of the stored
            # convolution compares: ties there keep the first piece here too.
            z = z.to(y_ptr.dtype.element_ty).to(ACC_DTYPE)
            acc, won = running_max(acc, won, z, k)
        _fwd_store(acc, y_ptr, z_ptr, y_row, sy_c, co_off, co_ok, mask, aw_ptr, saw, ACT_ALPHA,
                   ACT_ALPHA_LO, ACT)  # fmt: skip
        tl.store(win_ptr + y_row[:, None] + (co_off * sy_c)[None, :], won.to(tl.int64), mask=mask)


@triton.jit
def _bwd_input_sum(
    go_ptr, w_ptr, w_col, ci_ok, n_r, group, zd, zh, zw, row_mask, C_OUT, OD, OH, OW,
    nt_d, nt_h, nt_w, k0_d, k0_h, k0_w, TSTEP_D, TSTEP_H, TSTEP_W, OSTEP_D, OSTEP_H, OSTEP_W,
    sgo_n, sgo_c, sgo_d, sgo_h, sgo_w, sw_o, sw_d, sw_h, sw_w, only,
    FLAT_K: tl.constexpr, USE_INT64: tl.constexpr, PRECISION: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, FLAT_C: tl.constexpr, FLAT_KH: tl.constexpr, FLAT_KW: tl.constexpr,
    ONLY_OUT: tl.constexpr,
):  # fmt: skip
    """grad-input's (taps reaching the phase, output channels) reduction for one row tile
    against the weight columns ``w_col``. ``ONLY_OUT`` > 0 (tap loop): over the output channels
    ``[only·ONLY_OUT, (only + 1)·ONLY_OUT)`` alone, as :func:`_fwd_sum`'s ``ONLY_IN``."""
    tl.static_assert(not (ONLY_OUT and FLAT_K))
    n_taps = nt_d * nt_h * nt_w
    c_blocks = 1 if ONLY_OUT else tl.cdiv(C_OUT, BLOCK_K)
    n_steps = tl.cdiv(n_taps * C_OUT, BLOCK_K) if FLAT_K else n_taps * c_blocks
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    c_at, w_at, h_at, d_at = 0, 0, 0, 0  # the tap loop's position (_next_tap)
    for step in tl.range(0, n_steps, num_stages=1 if ONLY_OUT else None):
        if FLAT_K and FLAT_KW:  # the flat index split by constants: multiply-shift arithmetic
            td, th, tw, co, k_ok = _k_step(step, FLAT_C, 1, n_taps, FLAT_KH, FLAT_KW, BLOCK_K, True)
        elif FLAT_K:
            td, th, tw, co, k_ok = _k_step(step, FLAT_C, 1, n_taps, nt_h, nt_w, BLOCK_K, True)
        else:
            td, th, tw = d_at, h_at, w_at
            co, k_ok = _channel_block(c_at, only, C_OUT, BLOCK_K, ONLY_OUT)
            c_at, w_at, h_at, d_at = _next_tap(c_at, w_at, h_at, d_at, c_blocks, nt_w, nt_h)
        co_group = group * C_OUT + co
        a = _gather5(
            go_ptr, n_r, co_group, zd, zh, zw, -td * OSTEP_D, -th * OSTEP_H, -tw * OSTEP_W,
            row_mask & k_ok[None, :],
            sgo_n, sgo_c, sgo_d, sgo_h, sgo_w, OD, OH, OW, PAD_ZEROS, USE_INT64,
        )  # fmt: skip
        w_row = (
            wide(co_group, USE_INT64) * sw_o
            + (k0_d + td * TSTEP_D) * sw_d
            + (k0_h + th * TSTEP_H) * sw_h
            + (k0_w + tw * TSTEP_W) * sw_w
        )
        b = tl.load(
            w_ptr + w_row[:, None] + w_col[None, :],
            mask=k_ok[:, None] & ci_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
    return acc


@triton.jit
def _conv_bwd_input_kernel(
    go_ptr, w_ptr, b_ptr, gi_ptr, z_ptr,
    N, M_MAX, P, C_IN, C_OUT,
    D, H, W, OD, OH, OW, KD, KH, KW,
    STRIDE_D, STRIDE_H, STRIDE_W, PAD_D, PAD_H, PAD_W, DIL_D, DIL_H, DIL_W,
    TSTEP_D, TSTEP_H, TSTEP_W, OSTEP_D, OSTEP_H, OSTEP_W,
    sgo_n, sgo_c, sgo_d, sgo_h, sgo_w,
    sw_o, sw_i, sw_d, sw_h, sw_w,
    sgi_n, sgi_c, sgi_d, sgi_h, sgi_w,
    sb,
    aw_ptr, saw, ACT_ALPHA, ACT_ALPHA_LO,
    HAS_BIAS: tl.constexpr, FLAT_K: tl.constexpr, USE_INT64: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, ACT: tl.constexpr, FLAT_Y: tl.constexpr, GO_ALIGN: tl.constexpr,
    W_ALIGN: tl.constexpr, FLAT_C: tl.constexpr, FLAT_KH: tl.constexpr, FLAT_KW: tl.constexpr,
    OWN_IN: tl.constexpr, OWN_OUT: tl.constexpr, PAIR_W: tl.constexpr,
):  # fmt: skip
    """gi[n, group·C_IN + ci, i] = act(bias[group·C_IN + ci] + Σ_{tap, co}
    go[n, group·C_OUT + co, o] · w[group·C_OUT + co, ci, tap]) over the (tap, o) with
    ``o·stride - padding + tap·dilation = i``: the input gradient of a zero-padded convolution,
    or with the bias (``HAS_BIAS``) and the activation (``ACT``, the forward's epilogue:
    ``_activation``) a transposed convolution's output; one stride phase per program.

    Input positions ``i ≡ phase (mod stride)`` (per dim) are reached by the taps
    ``k0 + t·TSTEP`` only, at output ``o = j + q0 - t·OSTEP``: a dense GEMM with rows = N·(phase
    positions), cols = C_IN, reduction = (those taps, C_OUT). Phases with no tap write
    ``act(bias)`` (``act(0)`` without a bias: zeros without an activation either).
    Grid: groups · phases × row tiles (of the largest phase, ``M_MAX`` rows) × C_IN tiles, flat.
    ``FLAT_Y`` > 0 (stride 1: one phase, its rows the flat input positions, ``P`` per image):
    ``grad_in``'s positions have unit stride, stored as ``n·sgi_n + p`` (``_flat_row``), and
    ``FLAT_Y`` divides ``M_MAX``, ``P``, ``sgi_n`` and ``sgi_c`` (as in the forward).
    ``GO_ALIGN`` divides C_OUT and the position strides of ``grad_out``, ``W_ALIGN`` C_IN and the
    other strides of ``w``: the widths of their channel runs (``channel_alignment``).
    ``FLAT_K``: ``FLAT_C`` is C_OUT as a constant, and at stride 1 (one phase, every tap)
    ``FLAT_KH`` and ``FLAT_KW`` are KH and KW (else 0: each phase's tap counts, at run time).
    ``OWN_IN``, ``OWN_OUT`` > 0: merged groups, as in the forward.
    ``PAIR_W`` > 0 (stride 2 along w, W even, no merged groups): a program computes both w
    phases of its rows and stores them interleaved, as whole rows of ``grad_in`` — runs of
    ``PAIR_W`` positions dividing W, stored as vectors into NCHW (:func:`_paired_bwd_input`);
    the grid has half the phases.
    """
    tl.static_assert(not (PAIR_W and (OWN_IN or FLAT_Y)))
    C_OUT, sgo_n, sgo_d = (
        aligned(C_OUT, GO_ALIGN),
        aligned(sgo_n, GO_ALIGN),
        aligned(sgo_d, GO_ALIGN),
    )
    sgo_h, sgo_w = aligned(sgo_h, GO_ALIGN), aligned(sgo_w, GO_ALIGN)
    C_IN, sw_o, sw_d = aligned(C_IN, W_ALIGN), aligned(sw_o, W_ALIGN), aligned(sw_d, W_ALIGN)
    sw_h, sw_w = aligned(sw_h, W_ALIGN), aligned(sw_w, W_ALIGN)
    if PAIR_W:
        _paired_bwd_input(
            go_ptr, w_ptr, b_ptr, gi_ptr, z_ptr, N, M_MAX, C_IN, C_OUT, D, H, W, OD, OH, OW,
            KD, KH, KW, STRIDE_D, STRIDE_H, PAD_D, PAD_H, PAD_W, DIL_D, DIL_H, DIL_W,
            TSTEP_D, TSTEP_H, TSTEP_W, OSTEP_D, OSTEP_H, OSTEP_W,
            sgo_n, sgo_c, sgo_d, sgo_h, sgo_w, sw_o, sw_i, sw_d, sw_h, sw_w,
            sgi_n, sgi_c, sgi_d, sgi_h, sgi_w, sb, aw_ptr, saw, ACT_ALPHA, ACT_ALPHA_LO,
            HAS_BIAS, FLAT_K, USE_INT64, PRECISION, ACC_DTYPE, BLOCK_M, BLOCK_N, BLOCK_K,
            GROUP_M, ACT, FLAT_C, FLAT_KH, FLAT_KW, PAIR_W,
        )  # fmt: skip
    else:  # (no early return: Triton would compile on past it)
        M_MAX, P, sgi_n, sgi_c = aligned_rows(M_MAX, P, sgi_n, sgi_c, FLAT_Y)
        n_phases = STRIDE_D * STRIDE_H * STRIDE_W
        batch, tile_m, tile_n = grouped_tile(
            tl.program_id(0), tl.cdiv(M_MAX, BLOCK_M), tl.cdiv(C_IN, BLOCK_N), GROUP_M
        )
        group = batch // n_phases
        phase = batch % n_phases
        # Input positions of this phase: i = ph + j·stride, j < J.
        ph_d, ph_h, ph_w = split_phase(phase, STRIDE_H, STRIDE_W)
        k0_d, nt_d, q0_d, J_D = phase_dim(ph_d, D, STRIDE_D, PAD_D, DIL_D, KD, TSTEP_D)
        k0_h, nt_h, q0_h, J_H = phase_dim(ph_h, H, STRIDE_H, PAD_H, DIL_H, KH, TSTEP_H)
        k0_w, nt_w, q0_w, J_W = phase_dim(ph_w, W, STRIDE_W, PAD_W, DIL_W, KW, TSTEP_W)
        rows = wide(tile_m, USE_INT64) * BLOCK_M + tl.arange(0, BLOCK_M)
        # (With FLAT_Y the one phase has M_MAX rows: an argument, so Triton knows its divisibility.)
        row_ok = rows < (M_MAX if FLAT_Y else wide(N, USE_INT64) * J_D * J_H * J_W)
        # max(·, 1): an empty phase (size < stride) must not divide by zero; its rows are masked.
        n, jd, jh, jw = unflatten(rows, tl.maximum(J_D, 1), tl.maximum(J_H, 1), tl.maximum(J_W, 1))
        ci = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
        ci_ok = ci < C_IN
        ci_off = wide(group * C_IN + ci, USE_INT64)

        n_r = n[:, None]
        zd = (jd + q0_d)[:, None]
        zh = (jh + q0_h)[:, None]
        zw = (jw + q0_w)[:, None]
        row_mask = row_ok[:, None]
        w_col = wide(ci, USE_INT64) * sw_i  # the weight's in-channel index is per group

        acc = _bwd_input_sum(
            go_ptr, w_ptr, w_col, ci_ok, n_r, group, zd, zh, zw, row_mask, C_OUT, OD, OH, OW,
            nt_d, nt_h, nt_w, k0_d, k0_h, k0_w, TSTEP_D, TSTEP_H, TSTEP_W, OSTEP_D, OSTEP_H,
            OSTEP_W, sgo_n, sgo_c, sgo_d, sgo_h, sgo_w, sw_o, sw_d, sw_h, sw_w, 0,
            FLAT_K, USE_INT64, PRECISION, ACC_DTYPE, BLOCK_M, BLOCK_N, BLOCK_K, FLAT_C, FLAT_KH,
            FLAT_KW, 0,
        )  # fmt: skip
        if FLAT_Y:
            gi_row = _flat_row(rows, P, sgi_n)
        else:
            gi_row = n * sgi_n + (ph_d + jd * STRIDE_D) * sgi_d + (ph_h + jh * STRIDE_H) * sgi_h
            gi_row += (ph_w + jw * STRIDE_W) * sgi_w
        mask = row_mask & ci_ok[None, :]
        if OWN_IN == 0:
            _bwd_input_store(acc, gi_ptr, z_ptr, gi_row, ci_off, sgi_c, ci_ok, mask, b_ptr, sb,
                             aw_ptr, saw, ACT_ALPHA, ACT_ALPHA_LO, HAS_BIAS, ACC_DTYPE,
                             ACT)  # fmt: skip
        else:
            own = ci // OWN_IN
            redo, first, last = _unmerged(acc, tl.where(ci_ok, own, 0))
            if redo:  # (each group's columns stored as they are summed: one accumulator)
                for j in range(first, last + 1):
                    acc = _bwd_input_sum(
                        go_ptr, w_ptr, w_col, ci_ok, n_r, group, zd, zh, zw, row_mask, C_OUT, OD,
                        OH, OW, nt_d, nt_h, nt_w, k0_d, k0_h, k0_w, TSTEP_D, TSTEP_H, TSTEP_W,
                        OSTEP_D, OSTEP_H, OSTEP_W, sgo_n, sgo_c, sgo_d, sgo_h, sgo_w, sw_o, sw_d,
                        sw_h, sw_w, j, FLAT_K, USE_INT64, PRECISION, ACC_DTYPE, BLOCK_M, BLOCK_N,
                        ONE_GROUP_K, FLAT_C, FLAT_KH, FLAT_KW, OWN_OUT,
                    )  # fmt: skip
                    _bwd_input_store(acc, gi_ptr, z_ptr, gi_row, ci_off, sgi_c, ci_ok,
                                     mask & (own == j)[None, :], b_ptr, sb, aw_ptr, saw, ACT_ALPHA,
                                     ACT_ALPHA_LO, HAS_BIAS, ACC_DTYPE, ACT)  # fmt: skip
            else:
                _bwd_input_store(acc, gi_ptr, z_ptr, gi_row, ci_off, sgi_c, ci_ok, mask, b_ptr, sb,
                                 aw_ptr, saw, ACT_ALPHA, ACT_ALPHA_LO, HAS_BIAS, ACC_DTYPE,
                                 ACT)  # fmt: skip


@triton.jit
def _paired_bwd_input(
    go_ptr, w_ptr, b_ptr, gi_ptr, z_ptr, N, M_MAX, C_IN, C_OUT, D, H, W, OD, OH, OW, KD, KH, KW,
    STRIDE_D, STRIDE_H, PAD_D, PAD_H, PAD_W, DIL_D, DIL_H, DIL_W,
    TSTEP_D, TSTEP_H, TSTEP_W, OSTEP_D, OSTEP_H, OSTEP_W,
    sgo_n, sgo_c, sgo_d, sgo_h, sgo_w, sw_o, sw_i, sw_d, sw_h, sw_w,
    sgi_n, sgi_c, sgi_d, sgi_h, sgi_w, sb, aw_ptr, saw, ACT_ALPHA, ACT_ALPHA_LO,
    HAS_BIAS: tl.constexpr, FLAT_K: tl.constexpr, USE_INT64: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, ACT: tl.constexpr,
    FLAT_C: tl.constexpr, FLAT_KH: tl.constexpr, FLAT_KW: tl.constexpr, PAIR_W: tl.constexpr,
):  # fmt: skip
    """:func:`_conv_bwd_input_kernel` with ``PAIR_W``: the program's rows are ``BLOCK_M``
    positions ``j`` of one (d, h) phase at half the width, W/2 per image row; it sums both w
    phases of them (``w = 2j`` and ``2j + 1``: their taps differ) and stores the two tiles
    interleaved, ``2·BLOCK_M`` consecutive positions of whole rows of ``grad_in``."""
    # (C_OUT, C_IN and grad_out's and w's strides come rebuilt by the kernel's GO_ALIGN and
    # W_ALIGN; runs of PAIR_W positions: it divides W and grad_in's other strides,
    # ``paired_width``)
    W, sgi_n, sgi_c = aligned(W, PAIR_W), aligned(sgi_n, PAIR_W), aligned(sgi_c, PAIR_W)
    sgi_d, sgi_h = aligned(sgi_d, PAIR_W), aligned(sgi_h, PAIR_W)
    n_phases = STRIDE_D * STRIDE_H  # (the w phases are this program's)
    batch, tile_m, tile_n = grouped_tile(
        tl.program_id(0), tl.cdiv(M_MAX, BLOCK_M), tl.cdiv(C_IN, BLOCK_N), GROUP_M
    )
    group = batch // n_phases
    phase = batch % n_phases
    ph_d, ph_h = phase // STRIDE_H, phase % STRIDE_H
    k0_d, nt_d, q0_d, J_D = phase_dim(ph_d, D, STRIDE_D, PAD_D, DIL_D, KD, TSTEP_D)
    k0_h, nt_h, q0_h, J_H = phase_dim(ph_h, H, STRIDE_H, PAD_H, DIL_H, KH, TSTEP_H)
    k0_w0, nt_w0, q0_w0, J_W = phase_dim(0, W, 2, PAD_W, DIL_W, KW, TSTEP_W)
    k0_w1, nt_w1, q0_w1, _ = phase_dim(1, W, 2, PAD_W, DIL_W, KW, TSTEP_W)
    rows = wide(tile_m, USE_INT64) * BLOCK_M + tl.arange(0, BLOCK_M)
    m_phase = wide(N, USE_INT64) * J_D * J_H * J_W
    row_ok = rows < m_phase
    n, jd, jh, jw = unflatten(rows, tl.maximum(J_D, 1), tl.maximum(J_H, 1), tl.maximum(J_W, 1))
    ci = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ci_ok = ci < C_IN
    ci_off = wide(group * C_IN + ci, USE_INT64)
    n_r = n[:, None]
    zd = (jd + q0_d)[:, None]
    zh = (jh + q0_h)[:, None]
    row_mask = row_ok[:, None]
    w_col = wide(ci, USE_INT64) * sw_i
    acc0 = _bwd_input_sum(
        go_ptr, w_ptr, w_col, ci_ok, n_r, group, zd, zh, (jw + q0_w0)[:, None], row_mask, C_OUT,
        OD, OH, OW, nt_d, nt_h, nt_w0, k0_d, k0_h, k0_w0, TSTEP_D, TSTEP_H, TSTEP_W, OSTEP_D,
        OSTEP_H, OSTEP_W, sgo_n, sgo_c, sgo_d, sgo_h, sgo_w, sw_o, sw_d, sw_h, sw_w, 0,
        FLAT_K, USE_INT64, PRECISION, ACC_DTYPE, BLOCK_M, BLOCK_N, BLOCK_K, FLAT_C, FLAT_KH,
        FLAT_KW, 0,
    )  # fmt: skip
    acc1 = _bwd_input_sum(
        go_ptr, w_ptr, w_col, ci_ok, n_r, group, zd, zh, (jw + q0_w1)[:, None], row_mask, C_OUT,
        OD, OH, OW, nt_d, nt_h, nt_w1, k0_d, k0_h, k0_w1, TSTEP_D, TSTEP_H, TSTEP_W, OSTEP_D,
        OSTEP_H, OSTEP_W, sgo_n, sgo_c, sgo_d, sgo_h, sgo_w, sw_o, sw_d, sw_h, sw_w, 0,
        FLAT_K, USE_INT64, PRECISION, ACC_DTYPE, BLOCK_M, BLOCK_N, BLOCK_K, FLAT_C, FLAT_KH,
        FLAT_KW, 0,
    )  # fmt: skip
    # Interleaved: row 2·m + p is position w = 2·j + p of row m's image row.
    acc = tl.reshape(tl.permute(tl.join(acc0, acc1), (0, 2, 1)), (2 * BLOCK_M, BLOCK_N))
    # The same rows counted over whole image rows (W of them per (n, d, h)): 2·m + p.
    q = wide(tile_m, USE_INT64) * (2 * BLOCK_M) + tl.arange(0, 2 * BLOCK_M)
    # (2·m_phase, written so that Triton sees PAIR_W divide it, through W: a bound it could not
    # see divided — a batch size not a multiple of 16 — made the mask, and so the stores, pairs)
    q_ok = q < wide(N, USE_INT64) * J_D * J_H * W
    n, jd, jh, w = unflatten(q, tl.maximum(J_D, 1), tl.maximum(J_H, 1), W)
    gi_row = n * sgi_n + (ph_d + jd * STRIDE_D) * sgi_d + (ph_h + jh * STRIDE_H) * sgi_h
    gi_row += w * sgi_w
    mask = q_ok[:, None] & ci_ok[None, :]
    _bwd_input_store(acc, gi_ptr, z_ptr, gi_row, ci_off, sgi_c, ci_ok, mask, b_ptr, sb, aw_ptr,
                     saw, ACT_ALPHA, ACT_ALPHA_LO, HAS_BIAS, ACC_DTYPE, ACT)  # fmt: skip


@triton.jit
def _bwd_input_store(acc, gi_ptr, z_ptr, gi_row, ci_off, sgi_c, ci_ok, mask, b_ptr, sb, aw_ptr,
                     saw, ACT_ALPHA, ACT_ALPHA_LO, HAS_BIAS: tl.constexpr,
                     ACC_DTYPE: tl.constexpr, ACT: tl.constexpr):  # fmt: skip
    """grad-input's epilogue: ``act(acc + bias)`` stored where ``mask`` (the forward's
    :func:`_fwd_store`, the columns ``ci_off`` the channels of ``grad_in``; ``acc + bias`` to
    ``z`` unless ``z_ptr`` is None)."""
    if HAS_BIAS:
        bias = tl.load(b_ptr + ci_off * sb, mask=ci_ok, other=0.0)
        acc += bias.to(ACC_DTYPE)[None, :]
    _fwd_store(acc, gi_ptr, z_ptr, gi_row, sgi_c, ci_off, ci_ok, mask, aw_ptr, saw, ACT_ALPHA,
               ACT_ALPHA_LO, ACT)  # fmt: skip


@triton.jit
def _positions(p0, end, OD, OH, OW, Q_OD, Q_OH, Q_OW, BLOCK_K: tl.constexpr,
               FLAT_K: tl.constexpr, USE_INT64: tl.constexpr):  # fmt: skip
    """One chunk of grad-weight's reduction: ``(pos, pos_ok, n, od, oh, ow)``."""
    pos = p0 + tl.arange(0, BLOCK_K)
    pos_ok = pos < end
    if FLAT_K:
        # Multiply-shift splits are cheap enough for the compiler to redo per element of the
        # flat gather (divisions it keeps per position): more instructions, not fewer.
        n, od, oh, ow = unflatten(pos, OD, OH, OW)
    else:
        n, od, oh, ow = unflatten_fast(pos, OD, OH, OW, Q_OD, Q_OH, Q_OW, USE_INT64)
    return pos, pos_ok, n, od, oh, ow


@triton.jit
def _grad_out_chunk(go_ptr, go_row, co_ok, pos, pos_ok, n, od, oh, ow,
                    sgo_n, sgo_d, sgo_h, sgo_w, DENSE_GO: tl.constexpr):  # fmt: skip
    """grad_out's (output channels × positions) tile of one chunk."""
    # Dense positions lie one stride apart: grad_out's offsets need no split.
    go_col = pos * sgo_w if DENSE_GO else n * sgo_n + od * sgo_d + oh * sgo_h + ow * sgo_w
    return tl.load(
        go_ptr + go_row + go_col[None, :], mask=co_ok[:, None] & pos_ok[None, :], other=0.0
    )


@triton.jit(do_not_specialize=["Q_OD", "Q_OH", "Q_OW"])
def _conv_bwd_weight_kernel(
    x_ptr, go_ptr, gw_ptr, gb_ptr,
    P, P_SPLIT, N_SPLIT, C_IN, C_OUT,
    D, H, W, OD, OH, OW, Q_OD, Q_OH, Q_OW, KD, KH, KW,
    STRIDE_D, STRIDE_H, STRIDE_W, PAD_D, PAD_H, PAD_W, DIL_D, DIL_H, DIL_W,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sgo_n, sgo_c, sgo_d, sgo_h, sgo_w,
    sgw_split, sgw_o, sgw_i, sgw_d, sgw_h, sgw_w, sgb_split,
    PAD_MODE: tl.constexpr, FLAT_K: tl.constexpr, USE_INT64: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, DENSE_GO: tl.constexpr, C_ALIGN: tl.constexpr,
    GO_ALIGN: tl.constexpr, IN_BOUNDS: tl.constexpr, OWN_IN: tl.constexpr,
    OWN_OUT: tl.constexpr,
):  # fmt: skip
    """gw[split, group·C_OUT + co, ci, tap] =
    Σ_{positions of split} grad_out[n, co, o] · x[n, ci, ·]; with ``BIAS``, also
    gb[split, group·C_OUT + co] = Σ_{positions of split} grad_out[n, co, o].

    ``gw`` (``gb``) is the weight (bias) gradient itself (``N_SPLIT`` 1, ``sgw_split`` 0) or a
    workspace of one partial gradient per split.

    Rows = C_OUT, cols = (taps, C_IN), reduction over N·output positions ``[split·P_SPLIT, …)``,
    split into coordinates every step by ``Q_OD``, ``Q_OH``, ``Q_OW`` (``fast_divisor``). The
    bias has a column tile of its own, after the weight's: it loads only grad_out's chunks (the
    ones its row's other tiles load at about the same time, from L2) and sums them
    (``channel_sums``), so the weight's loop keeps its registers.
    ``DENSE_GO``: grad_out's positions lie ``sgo_w`` apart (``dense_positions``). ``C_ALIGN``
    divides C_IN and the position strides of ``x``, ``GO_ALIGN`` C_OUT and those of ``grad_out``
    (``channel_alignment``); ``IN_BOUNDS`` as in the forward.
    ``OWN_IN``, ``OWN_OUT`` > 0: each group of the launch is several groups of the convolution
    (``merged_groups``) of that many channels each, ``C_IN`` and ``C_OUT`` their channels
    together: the tile computes every (output, input) pair of them and stores the pairs of one
    group only, at that group's own input-channel index (constants: the divisions are shifts
    or multiplies).
    Grid: groups · N_SPLIT × C_OUT tiles × (column tiles + BIAS), flat. Each program writes its
    own slot: no atomics, so the result is bitwise repeatable.
    """
    C_IN = aligned(C_IN, C_ALIGN)
    sx_n, sx_d, sx_h = aligned(sx_n, C_ALIGN), aligned(sx_d, C_ALIGN), aligned(sx_h, C_ALIGN)
    sx_w = aligned(sx_w, C_ALIGN)
    C_OUT, sgo_n, sgo_d = (
        aligned(C_OUT, GO_ALIGN),
        aligned(sgo_n, GO_ALIGN),
        aligned(sgo_d, GO_ALIGN),
    )
    sgo_h, sgo_w = aligned(sgo_h, GO_ALIGN), aligned(sgo_w, GO_ALIGN)
    n_taps = KD * KH * KW
    c_blocks = tl.cdiv(C_IN, BLOCK_N)
    n_cols = tl.cdiv(n_taps * C_IN, BLOCK_N) if FLAT_K else n_taps * c_blocks
    batch, tile_m, tile_n = grouped_tile(
        tl.program_id(0), tl.cdiv(C_OUT, BLOCK_M), n_cols + (1 if BIAS else 0), GROUP_M
    )
    group = batch // N_SPLIT
    split = batch % N_SPLIT
    start = wide(split, USE_INT64) * P_SPLIT
    end = tl.minimum(start + P_SPLIT, P)

    if BIAS and tile_n == n_cols:  # the bias's column tile
        co = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
        co_ok = co < C_OUT
        co_off = wide(group * C_OUT + co, USE_INT64)
        go_row = (co_off * sgo_c)[:, None]
        sums = tl.zeros((BLOCK_M, SUM_COLUMNS), dtype=ACC_DTYPE)
        for p0 in tl.range(start, end, BLOCK_K, num_stages=SUM_STAGES):
            pos, pos_ok, n, od, oh, ow = _positions(
                p0, end, OD, OH, OW, Q_OD, Q_OH, Q_OW, BLOCK_K, FLAT_K, USE_INT64
            )
            a = _grad_out_chunk(go_ptr, go_row, co_ok, pos, pos_ok, n, od, oh, ow,
                                sgo_n, sgo_d, sgo_h, sgo_w, DENSE_GO)  # fmt: skip
            sums = channel_sums(a, sums, PRECISION, ACC_DTYPE)
        gb = gb_ptr + wide(split, USE_INT64) * sgb_split + co_off
        tl.store(gb, first_column(sums).to(gb_ptr.dtype.element_ty), mask=co_ok)
    else:
        co = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
        co_ok = co < C_OUT
        co_off = wide(group * C_OUT + co, USE_INT64)
        go_row = (co_off * sgo_c)[:, None]
        td, th, tw, ci, col_ok = _k_step(tile_n, C_IN, c_blocks, n_taps, KH, KW, BLOCK_N, FLAT_K)
        ci_group = group * C_IN + ci
        x_col = wide(ci_group, USE_INT64) * sx_c + td * DIL_D * sx_d + th * DIL_H * sx_h
        x_col += tw * DIL_W * sx_w
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
        for p0 in range(start, end, BLOCK_K):
            pos, pos_ok, n, od, oh, ow = _positions(
                p0, end, OD, OH, OW, Q_OD, Q_OH, Q_OW, BLOCK_K, FLAT_K, USE_INT64
            )
            a = _grad_out_chunk(go_ptr, go_row, co_ok, pos, pos_ok, n, od, oh, ow,
                                sgo_n, sgo_d, sgo_h, sgo_w, DENSE_GO)  # fmt: skip
            if IN_BOUNDS:  # (no padding: the tap's part of the offset is the same every step)
                x_row = n * sx_n + od * STRIDE_D * sx_d + oh * STRIDE_H * sx_h
                x_row += ow * STRIDE_W * sx_w
                b = tl.load(
                    x_ptr + x_row[:, None] + x_col[None, :],
                    mask=pos_ok[:, None] & col_ok[None, :],
                    other=0.0,
                )
            else:
                b = _gather5(
                    x_ptr, n[:, None], ci_group,
                    (od * STRIDE_D - PAD_D)[:, None], (oh * STRIDE_H - PAD_H)[:, None],
                    (ow * STRIDE_W - PAD_W)[:, None],
                    td * DIL_D, th * DIL_H, tw * DIL_W,
                    pos_ok[:, None] & col_ok[None, :],
                    sx_n, sx_c, sx_d, sx_h, sx_w, D, H, W, PAD_MODE, USE_INT64,
                )  # fmt: skip
            acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)

        mask = co_ok[:, None] & col_ok[None, :]
        if OWN_IN > 0:  # one group's own pairs, at its own input-channel index
            mask &= (co // OWN_OUT)[:, None] == (ci // OWN_IN)[None, :]
            ci = ci % OWN_IN
        gw_col = wide(ci, USE_INT64) * sgw_i + td * sgw_d + th * sgw_h + tw * sgw_w
        gw_row = wide(split, USE_INT64) * sgw_split + co_off * sgw_o
        tl.store(gw_ptr + gw_row[:, None] + gw_col[None, :], acc.to(gw_ptr.dtype.element_ty),
                 mask=mask)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Tuners: one per kernel and loop shape (tap or flattened), each with its own candidates
# --------------------------------------------------------------------------------------------


def _tuners(
    name: str, kernel, tables: dict, outputs: tuple[str, ...], block_k: int | None = None
) -> dict:
    """``{variant: tuner}`` of one kernel, ``tables`` giving each variant's candidates (those
    above 4 warps unproven: ``_gemm_common``), ``outputs`` the kernel's pointers it writes. A
    variant is ``flat`` (the flattened loop or the tap loop) or ``(flat, narrow)``, narrow when
    the tiles' channel side is a narrow group's (``_gemm_common.narrow``)."""

    def suffix(variant) -> str:
        flat, thin = variant if isinstance(variant, tuple) else (variant, False)
        return f"{'flat' if flat else 'tap'}{'_narrow' if thin else ''}"

    def tuner(variant, table) -> Tuner:
        candidates = configs(table, block_k)
        return Tuner(
            f"{name}_{suffix(variant)}", kernel, candidates, shared_estimate,
            unproven=unproven(candidates), outputs=outputs,
        )  # fmt: skip

    return {variant: tuner(variant, table) for variant, table in tables.items()}


_TABLES = {
    (False, False): TAP_TABLE,
    (True, False): FLAT_TABLE,
    (False, True): NARROW_TAP_TABLE,
    (True, True): NARROW_FLAT_TABLE,
}
_FWD = _tuners("conv_fwd", _conv_fwd_kernel, _TABLES, ("y_ptr", "z_ptr"))
# The forward with a fused maxout: smaller tiles (see ``_gemm_common``), keyed by ``flat``.
_FWD_MAXOUT = _tuners(
    "conv_fwd_maxout",
    _conv_fwd_kernel,
    {False: MAXOUT_TAP_TABLE, True: MAXOUT_FLAT_TABLE},
    ("y_ptr", "win_ptr"),
)
_BWD_INPUT = _tuners("conv_bwd_input", _conv_bwd_input_kernel, _TABLES, ("gi_ptr", "z_ptr"))
# Grad-weight: BLOCK_K is its reduction chunk, so it is fixed; the tuner picks among tilings
# that keep the summation order.
_BWD_WEIGHT = _tuners(
    "conv_bwd_weight",
    _conv_bwd_weight_kernel,
    {(flat, thin): NARROW_WEIGHT_TABLE if thin else _TABLES[flat, False] for flat, thin in _TABLES},
    ("gw_ptr", "gb_ptr"),
    WEIGHT_BLOCK_K,
)

# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------

#: Channels per group below which taps × channels form one flattened reduction axis.
FLAT_BELOW = 16

#: Output channels per group up to which a flattened weight gradient merges groups
#: (:func:`merged_groups`), and the most channels a merged group may span.
MERGE_OUTPUTS_UP_TO, MERGED_CHANNELS = 8, 64


def merges_groups(dtype: torch.dtype, allow_tf32: bool) -> bool:
    """Whether convolutions of ``dtype`` operands may merge groups (:func:`merged_groups`,
    :func:`merged_sums`): where their products run on tensor cores (16-bit operands; fp32
    under TF32), which the merged loops have to spare. fp32 without TF32 and fp64 multiply on
    CUDA cores, where every product of another group's block would cost its full price.
    Triton's interpreter merges every dtype, so that float64 tests check the merged kernels."""
    return (
        INTERPRET
        or dtype in (torch.float16, torch.bfloat16)
        or (dtype == torch.float32 and dot_precision(dtype, allow_tf32) == "tf32")
    )


def merged_groups(cg_in: int, cg_out: int, groups: int) -> int:
    """How many groups a weight gradient computes as one (1: none).

    A group of a few channels each way (ResNeXt's 4 and 8) leaves the flattened loop gathering
    one group's few channels per tap and position, each with its own address and padding mask:
    in the sm_90 code its main loop issues ~370 instructions per thread for 4 × 36 gradients of
    32 positions, bounded by instruction issue, not by the tensor cores. ``m`` groups taken as one
    group of ``m·cg_in`` inputs and ``m·cg_out`` outputs run the tap loop instead — each tap's
    channels one contiguous run, loaded as 16-byte vectors — and the kernel stores of their
    dense (m·cg_out × m·cg_in per tap) gradient the diagonal blocks, each group's own channels;
    the rest is computed and dropped (tensor-core work the loop had to spare: see
    ``benchmarks/results/compile-report/merged-groups-sm_90.md``). ``m`` is the largest divisor
    of ``groups`` keeping a merged group within ``MERGED_CHANNELS`` channels each way, used when
    that makes at least ``FLAT_BELOW`` inputs."""
    if cg_in >= FLAT_BELOW or cg_out > MERGE_OUTPUTS_UP_TO:
        return 1
    widest = MERGED_CHANNELS // max(cg_in, cg_out)
    m = max(d for d in range(1, min(groups, widest) + 1) if groups % d == 0)
    return m if m * cg_in >= FLAT_BELOW else 1


#: Channels per group, each way, up to which the forward and the input gradient merge groups
#: (:func:`merged_sums`).
MERGE_SUMS_UP_TO = 4


def merged_sums(cg_in: int, cg_out: int, groups: int) -> int:
    """How many groups the forward and the input gradient compute as one (1: none): as the
    weight gradient does (:func:`merged_groups`), for groups of at most ``MERGE_SUMS_UP_TO``
    channels each way, where a merged group has at least ``FLAT_BELOW`` channels each way (both
    sums — the forward's over input channels, the input gradient's over output channels — then
    take the tap loop).

    Their operand is the block-diagonal weight of the merged groups (:func:`merged_weight`):
    ``m`` merged groups cost ``m``× the tensor-core work per real product. In the sm_90 code
    (``benchmarks/results/compile-report/merged-sums-sm_90.md``) that doubles the real products
    per cycle of ResNeXt's 4-channel groups (the flattened loop is bounded by issue there), and
    gains nothing at 8 channels, where the flattened loop already issues about as many as the
    tensor cores give a merged one. Unlike the weight gradient's dropped blocks, the zeros meet
    every group's inputs: the kernels check each tile for a NaN a non-finite input of another
    group may have made, and sum such a tile again one group at a time (exact, and only there
    slower)."""
    if max(cg_in, cg_out) > MERGE_SUMS_UP_TO:
        return 1
    m = merged_groups(cg_in, cg_out, groups)
    return m if m * cg_out >= FLAT_BELOW else 1


def merged_weight(w: torch.Tensor, groups: int) -> torch.Tensor:
    """``w`` (C_out, C_in/groups, *K) as the forward and input gradient of merged groups read it
    (:func:`merged_sums`), in a new tensor: each output channel's row spans the input channels
    of its whole merged group, its own group's block the weight and the rest zeros, with the
    input channel innermost. Pass it as ``merged_weight`` and the launch builds none: a caller
    may keep it as long as ``w`` does not change."""
    c_out, cg_in = w.shape[:2]
    cg_out = c_out // groups
    m = merged_sums(cg_in, cg_out, groups)
    if m == 1:
        raise ValueError(
            f"merged_weight: groups of {cg_in} input and {cg_out} output channels do not merge "
            "(merged_sums)"
        )
    rows = torch.arange(c_out, device=w.device)
    blocks = w.new_zeros((c_out, m, *w.shape[1:]))
    blocks[rows, rows % (m * cg_out) // cg_out] = w
    return blocks.flatten(1, 2).movedim(1, -1).contiguous().movedim(-1, 1)


def sums_merge(cg_in: int, cg_out: int, groups: int, dtype: torch.dtype, allow_tf32: bool) -> int:
    """How many groups a forward or input-gradient launch of ``dtype`` operands merges (1: none):
    :func:`merged_sums` where :func:`merges_groups`."""
    if not merges_groups(dtype, allow_tf32):
        return 1
    return merged_sums(cg_in, cg_out, groups)


def _merging(
    w5: torch.Tensor,
    cg_in: int,
    cg_out: int,
    groups: int,
    merge: int,
    given: torch.Tensor | None,
    launcher: str,
) -> tuple[torch.Tensor, int, int, int, dict[str, int]]:
    """What a forward or input-gradient launch of merged groups (``merge`` at a time, 1: none)
    sees: the weight (``given``: :func:`merged_weight`'s, else built now), groups, channels per
    group in and out, and the kernel's ``OWN_IN``, ``OWN_OUT``."""
    if merge == 1:
        if given is not None:
            raise ValueError(
                f"{launcher}: merged_weight is for convolutions whose groups merge "
                "(merged_sums): pass the weight alone"
            )
        return w5, groups, cg_in, cg_out, {"OWN_IN": 0, "OWN_OUT": 0}
    shape = (w5.shape[0], merge * cg_in, *w5.shape[2:])
    if given is None:
        given = merged_weight(w5, groups)
    elif tuple(as_5d(given).shape) != shape:
        raise ValueError(
            f"{launcher}: expected merged_weight's layout of a {tuple(w5.shape)} weight in "
            f"{groups} groups, shape {shape}, but got {tuple(given.shape)}"
        )
    own = {"OWN_IN": cg_in, "OWN_OUT": cg_out}
    return as_5d(given), groups // merge, merge * cg_in, merge * cg_out, own


def _flat_shape(flat: bool, channels: int, w5: torch.Tensor) -> dict[str, int]:
    """A flat reduction axis as constants (0 in the tap loop): its channels per group and the
    tap grid's height and width (the forward's; the input gradient's, whose channels are the
    output's, at stride 1). One compiled variant per such shape (stems, narrow groups), in which
    splitting a flat index into tap and channel is multiply-shift arithmetic instead of three
    divisions per column: in the sm_90 code of the stems, half the main loop's instructions."""
    if not flat:
        return {"FLAT_C": 0, "FLAT_KH": 0, "FLAT_KW": 0}
    return {"FLAT_C": channels, "FLAT_KH": w5.shape[3], "FLAT_KW": w5.shape[4]}


def dense_positions(t5: torch.Tensor) -> bool:
    """Whether ``t5``'s flat positions ``((n·D + d)·H + h)·W + w`` lie one ``w`` stride apart
    (dense channels-last; NCHW only with one channel): offsets are then ``position·stride(4)``."""
    expected = t5.stride(4) * t5.shape[4]
    for dim in (3, 2, 0):
        if t5.shape[dim] > 1 and t5.stride(dim) != expected:
            return False
        expected *= t5.shape[dim]
    return True


def in_bounds(x5: torch.Tensor, y5: torch.Tensor, w5: torch.Tensor, geometry: tuple) -> bool:
    """Whether every tap of every output position of ``y5`` lies inside ``x5`` (``geometry``:
    ``pack_geometry``'s strides, paddings, dilations): no padding before any dim, and the last
    window of each dim ends inside the input."""
    strides, paddings, dilations = geometry[:3], geometry[3:6], geometry[6:]
    return all(
        pad == 0 and (out - 1) * stride + (k - 1) * dil < size
        for size, out, k, stride, pad, dil in zip(
            x5.shape[2:], y5.shape[2:], w5.shape[2:], strides, paddings, dilations, strict=True
        )
    )


def _layout_class(*tensors: torch.Tensor) -> tuple[bool, ...]:
    """Which operands have unit channel stride (dim 1): what decides the loads' widths."""
    return tuple(t.stride(1) == 1 for t in tensors)


def gemm_conv_forward(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    *,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    pad_mode: str,
    allow_tf32: bool,
    activation: str | None = None,
    alpha: float = 0.0,
    act_weight: torch.Tensor | None = None,
    pre_activation: torch.Tensor | None = None,
    pieces: int = 1,
    winner: torch.Tensor | None = None,
    merged_weight: torch.Tensor | None = None,
) -> None:
    """Convolution forward into the preallocated ``out`` (N, C_out, *O); writes every element.

    ``x`` (N, C_in, *S) and ``w`` (C_out, C_in/groups, *K) with 1–3 spatial dims and any strides
    (channels-inner operands load as 16-byte vectors, others element by element). ``padding`` is
    the padding before each spatial dim; the padding after is implied by ``out``'s size.
    Out-of-range input coordinates follow ``pad_mode`` ('zeros', 'reflect', 'replicate',
    'circular'), applied inside the loads. ``activation`` (an ``ACTIVATIONS`` name; ``alpha``,
    ``act_weight``: its parameters, see ``_activation``) is applied after the bias, in the epilogue;
    ``pre_activation`` (``out``'s shape, dtype and strides), where given, gets what it is applied
    to.

    Fused maxout (``pieces`` > 1): ``w`` has ``C_out·pieces`` rows, ``out`` gets the max over
    each unit's pieces (rows ``c·pieces + k``) and ``winner`` (int64, ``out``'s shape and
    strides) the winning ``k``; the ``C_out·pieces`` channels are never written.

    Groups of a few channels (16-bit or TF32 operands, no maxout) are computed
    :func:`merged_sums` at a time, reading the block-diagonal weight ``merged_weight``
    (:func:`merged_weight`'s, made earlier; else built here).
    """
    check_device(x, w, bias, out, act_weight, winner, merged_weight, pre_activation)
    win = maxout_epilogue(pieces, winner, out, activation)
    z = pre_activation_target("gemm_conv_forward", pre_activation, out, activation)
    x5, w5, y5 = as_5d(x), as_5d(w), as_5d(out)
    n_batch, c_out = y5.shape[0], y5.shape[1]
    m = n_batch * y5.shape[2] * y5.shape[3] * y5.shape[4]
    if m == 0 or c_out == 0:
        return
    cg_in, cg_out = x5.shape[1] // groups, c_out // groups
    merge = sums_merge(cg_in, cg_out, groups, x.dtype, allow_tf32) if pieces == 1 else 1
    w5, groups, cg_in, cg_out, own = _merging(
        w5, cg_in, cg_out, groups, merge, merged_weight, "gemm_conv_forward"
    )
    flat = cg_in < FLAT_BELOW
    geometry = pack_geometry((stride, 1), (padding, 0), (dilation, 1))
    use_int64 = needs_int64(x, w, bias, out)
    precision = dot_precision(x.dtype, allow_tf32)
    key = (x.dtype, _layout_class(x5, w5, y5), pad_mode, tuple(w5.shape[2:]), geometry[:3],
           geometry[6:], groups, cg_in, cg_out, merge, bucket(m), use_int64, precision,
           activation, z is not None, pieces)  # fmt: skip

    def grid(c: Config) -> tuple[int]:
        return flat_grid(cdiv(m, c["BLOCK_M"]), cdiv(cg_out, c["BLOCK_N"]), groups)

    tuner = _FWD[flat, narrow(cg_out)] if pieces == 1 else _FWD_MAXOUT[flat]
    tuner.launch(
        key,
        grid,
        (
            x5, w5, w5 if bias is None else bias, y5, z,
            m, m // n_batch, cg_in, cg_out,
            *x5.shape[2:], *y5.shape[2:], *w5.shape[2:],
            *geometry,
            *x5.stride(), *w5.stride(), *y5.stride(),
            0 if bias is None else bias.stride(0),
            *epilogue_args(activation, alpha, act_weight, w5),
            as_5d(win),
        ),
        dict(
            HAS_BIAS=bias is not None, PAD_MODE=PAD_MODES[pad_mode], FLAT_K=flat,
            USE_INT64=use_int64, PRECISION=precision, ACC_DTYPE=acc_dtype(x.dtype),
            GROUP_M=GROUP_M, ACT=ACTIVATIONS[activation], PIECES=pieces,
            FLAT_Y=flat_alignment(y5), **_flat_shape(flat, cg_in, w5),
            C_ALIGN=channel_alignment(cg_in, x5, w5), IN_BOUNDS=in_bounds(x5, y5, w5, geometry),
            OUT_ALIGN=channel_alignment(cg_out, y5), **own,
        ),
    )  # fmt: skip


def gemm_conv_backward_input(
    grad_out: torch.Tensor,
    w: torch.Tensor,
    grad_in: torch.Tensor,
    *,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    allow_tf32: bool,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    alpha: float = 0.0,
    act_weight: torch.Tensor | None = None,
    pre_activation: torch.Tensor | None = None,
    merged_weight: torch.Tensor | None = None,
) -> None:
    """Gradient of a zero-padded convolution w.r.t. its input, into ``grad_in`` (N, C_in, *I),
    plus ``bias`` (C_in,) per channel when given, then ``activation`` (an ``ACTIVATIONS`` name;
    ``alpha``, ``act_weight``: its parameters, a PReLU weight per channel of ``grad_in`` or one,
    see ``_activation``) in the epilogue, as the forward's: ``grad_in = act(conv_transpose(
    grad_out, w) + bias)``, a transposed convolution with its bias and activation.

    Writes every element (``act(bias)``, or ``act(0)``, where no tap reaches). The input is split
    into prod(stride) phases; each is a dense implicit GEMM over only the taps that reach it.
    Groups merge as in the forward (``merged_weight``: :func:`merged_weight`'s).
    """
    check_device(grad_out, w, grad_in, bias, act_weight, merged_weight, pre_activation)
    z = pre_activation_target("gemm_conv_backward_input", pre_activation, grad_in, activation)
    go5, w5, gi5 = as_5d(grad_out), as_5d(w), as_5d(grad_in)
    n_batch = gi5.shape[0]
    if gi5.numel() == 0:
        return
    cg_in, cg_out = gi5.shape[1] // groups, w5.shape[0] // groups
    merge = sums_merge(cg_in, cg_out, groups, grad_out.dtype, allow_tf32)
    w5, groups, cg_in, cg_out, own = _merging(
        w5, cg_in, cg_out, groups, merge, merged_weight, "gemm_conv_backward_input"
    )
    strides = spatial3(stride, 1)
    # Phase 0 is the largest along every dim: it sets the row extent of the grid.
    m_max = n_batch * math.prod(cdiv(i, s) for i, s in zip(gi5.shape[2:], strides, strict=True))
    flat = cg_out < FLAT_BELOW
    one_phase = all(s == 1 for s in strides)
    flat_shape = _flat_shape(flat, cg_out, w5)
    if not one_phase:  # phases reach fewer taps each: only the channels are constants
        flat_shape.update(FLAT_KH=0, FLAT_KW=0)
    geometry = pack_geometry((stride, 1), (padding, 0), (dilation, 1))
    use_int64 = needs_int64(grad_out, w, grad_in)
    precision = dot_precision(grad_out.dtype, allow_tf32)
    pair = paired_width(gi5, strides, own["OWN_IN"] > 0)
    # (paired: a program computes both w phases)
    batches = groups * math.prod(strides) // (2 if pair else 1)
    key = (grad_out.dtype, _layout_class(go5, w5, gi5), tuple(w5.shape[2:]), geometry[:3],
           geometry[6:], groups, cg_in, cg_out, merge, bucket(m_max), use_int64, precision,
           activation, z is not None, pair)  # fmt: skip

    def grid(c: Config) -> tuple[int]:
        return flat_grid(cdiv(m_max, c["BLOCK_M"]), cdiv(cg_in, c["BLOCK_N"]), batches)

    _BWD_INPUT[flat, narrow(cg_in)].launch(
        key,
        grid,
        (
            go5, w5, w5 if bias is None else bias, gi5, z,
            n_batch, m_max, math.prod(gi5.shape[2:]), cg_in, cg_out,
            *gi5.shape[2:], *go5.shape[2:], *w5.shape[2:],
            *geometry, *phase_steps(stride, dilation),
            *go5.stride(), *w5.stride(), *gi5.stride(),
            0 if bias is None else bias.stride(0),
            *epilogue_args(activation, alpha, act_weight, w5),
        ),
        dict(
            HAS_BIAS=bias is not None, FLAT_K=flat, USE_INT64=use_int64, PRECISION=precision,
            ACC_DTYPE=acc_dtype(grad_out.dtype), GROUP_M=GROUP_M, ACT=ACTIVATIONS[activation],
            FLAT_Y=flat_alignment(gi5) if one_phase else 0,
            GO_ALIGN=channel_alignment(cg_out, go5), W_ALIGN=channel_alignment(cg_in, w5),
            PAIR_W=pair, **flat_shape, **own,
        ),
    )  # fmt: skip


def paired_width(gi5: torch.Tensor, strides: tuple[int, int, int], merged: bool) -> int:
    """``PAIR_W`` of an input-gradient launch into the 5-d ``gi5``: 0 (each program one phase)
    unless the stride along w is 2, the width even, no groups merge and ``gi5`` has unit stride
    along w (NCHW); else the largest power of two up to 16 dividing the width and ``gi5``'s
    other strides — the runs of positions its interleaved rows store as vectors."""
    width = gi5.shape[4]
    if strides[2] != 2 or width % 2 or merged or gi5.stride(4) != 1:
        return 0
    return math.gcd(width, *gi5.stride()[:4], 16)


def gemm_conv_backward_weight(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    grad_w: torch.Tensor,
    *,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    pad_mode: str,
    allow_tf32: bool,
    grad_bias: torch.Tensor | None = None,
) -> None:
    """Gradient of the convolution w.r.t. its weight, into ``grad_w`` (C_out, C_in/groups, *K),
    and w.r.t. its bias into ``grad_bias`` (C_out,) when given: ``grad_out`` summed per channel
    by a column tile of its own in each row of tiles, which reads the chunks of ``grad_out`` the
    row's other tiles read (``conv.conv_backward_weight`` passes it where ``sums_bias``).

    Groups of at most ``MERGE_OUTPUTS_UP_TO`` output channels and fewer than ``FLAT_BELOW``
    inputs, with products on tensor cores (:func:`merges_groups`), are computed
    :func:`merged_groups` at a time, on the tap loop, each tile storing its
    groups' own blocks (the kernel's ``OWN_IN``, ``OWN_OUT``).

    Reads ``x`` through ``pad_mode`` like the forward. Deterministic: when the (C_out × taps·C_in)
    grid is small the reduction is split into a fixed number of slices (chosen from the shapes)
    written to an fp32 (fp64) workspace and summed with ``torch.sum``; no atomics.
    """
    check_device(x, grad_out, grad_w)
    x5, go5, gw5 = as_5d(x), as_5d(grad_out), as_5d(grad_w)
    c_out, cg_in = gw5.shape[0], gw5.shape[1]
    cg_out = c_out // groups
    if gw5.numel() == 0:
        return
    merge = merged_groups(cg_in, cg_out, groups) if merges_groups(x.dtype, allow_tf32) else 1
    own = {"OWN_IN": cg_in, "OWN_OUT": cg_out} if merge > 1 else {"OWN_IN": 0, "OWN_OUT": 0}
    groups, cg_in, cg_out = groups // merge, cg_in * merge, cg_out * merge  # as the kernel sees it
    positions = go5.shape[0] * go5.shape[2] * go5.shape[3] * go5.shape[4]
    n_taps = gw5.shape[2] * gw5.shape[3] * gw5.shape[4]
    tiles = cdiv(cg_out, NOMINAL_TILE) * cdiv(n_taps * cg_in, NOMINAL_TILE) * groups
    n_split = choose_split(tiles, positions)
    target = gw5 if n_split == 1 else split_workspace(gw5, n_split)
    split_stride = 0 if n_split == 1 else target.stride(0)
    flat = cg_in < FLAT_BELOW
    geometry = pack_geometry((stride, 1), (padding, 0), (dilation, 1))
    use_int64 = needs_int64(x, grad_out, grad_w, None if n_split == 1 else target)
    precision = dot_precision(x.dtype, allow_tf32)
    sums = bias_target(grad_bias, n_split)
    p_split = cdiv(positions, n_split)
    key = (x.dtype, _layout_class(x5, go5, gw5), pad_mode, tuple(gw5.shape[2:]), geometry[:3],
           geometry[6:], groups, cg_in, cg_out, merge, bucket(p_split), n_split, use_int64,
           precision, sums is not None)  # fmt: skip

    def grid(c: Config) -> tuple[int]:
        # Column tiles: flattened taps × channels, or per tap a run of channel blocks; then the
        # bias's.
        cols = cdiv(n_taps * cg_in, c["BLOCK_N"]) if flat else n_taps * cdiv(cg_in, c["BLOCK_N"])
        return flat_grid(cdiv(cg_out, c["BLOCK_M"]), cols + (sums is not None), groups * n_split)

    # Narrow columns: input channels per tap, or the flattened taps × channels (the rows, output
    # channels, stay 64 or more: see NARROW_WEIGHT_TABLE).
    _BWD_WEIGHT[flat, narrow(n_taps * cg_in if flat else cg_in)].launch(
        key,
        grid,
        (
            x5, go5, target, target if sums is None else sums,
            positions, p_split, n_split, cg_in, cg_out,
            *x5.shape[2:], *go5.shape[2:], *map(fast_divisor, go5.shape[2:]), *gw5.shape[2:],
            *geometry,
            *x5.stride(), *go5.stride(), split_stride, *target.stride()[-5:],
            0 if sums is None else sums.stride(0),
        ),
        dict(
            PAD_MODE=PAD_MODES[pad_mode], FLAT_K=flat, USE_INT64=use_int64, PRECISION=precision,
            ACC_DTYPE=acc_dtype(x.dtype), BIAS=sums is not None, GROUP_M=GROUP_M,
            DENSE_GO=dense_positions(go5),
            C_ALIGN=channel_alignment(cg_in, x5), GO_ALIGN=channel_alignment(cg_out, go5),
            IN_BOUNDS=in_bounds(x5, go5, gw5, geometry), **own,
        ),
    )  # fmt: skip
    if n_split > 1:
        gw5.copy_(target.sum(0))
        if sums is not None:
            grad_bias.copy_(sums.sum(0))
