"""Direct depthwise convolution kernels (groups == C_in, C_out = C_in × multiplier).

A depthwise convolution has one input channel per group, so an implicit GEMM would waste almost
all of each tensor-core tile. These kernels are direct instead: every program owns a tile of
``BLOCK_P`` flattened (batch, position) indices × ``BLOCK_C`` channels and loops over the taps,
with fp32 accumulation (fp64 for fp64 tensors).

One code path serves 1-, 2- and 3-d convolutions: tensors are viewed as ``(N, C, D, H, W)``
(``as_5d``) and every size and stride is a runtime argument (but the input gradient's strides:
constexprs). Padding modes are index arithmetic in the loads (``map_padded``), never a padded
copy. The input gradient's tiles take one phase of the input positions modulo the stride each,
whose taps are known per program (``_indexing.phase_taps``), as the implicit GEMM's do.

Tile orientation. The 2-d tile is ``[BLOCK_P, BLOCK_C]`` when channels are the fastest-varying
dim of the main input (channels_last, ``CHANNELS_INNER``) and ``[BLOCK_C, BLOCK_P]`` otherwise,
so the innermost tile axis — the one adjacent threads walk — is the contiguous one in memory in
both layouts. Everything else is written with broadcast index tensors, so the kernels' bodies do not
depend on the orientation.

Output channel ``co`` reads input channel ``co // multiplier``.

Row segments (NCHW-like rows, stride 1 or 2 along ``w``, zero padding). The
positions tile gathers each tap ``kw`` at a shifted, unaligned address — one scalar load per
element and tap. ``_conv_depthwise_rows_kernel`` instead owns ``BLOCK_R`` output rows ×
``BLOCK_O`` columns, grouped in vectors of ``V`` adjacent columns (16 bytes where the rows'
alignment allows): per input row it loads three aligned vectors per group — the group's own
columns and its neighbours' on either side — and builds every tap's shifted view from them in
registers (``_rows.funnel``: no shared memory, no shuffles), so a row costs three vector loads
instead of ``KW·V`` scalar ones. Taps shifted by at most ``V`` either way qualify (3×3 to 17×17
kernels with "same" padding in bf16, dilated ones as far as their taps reach); the taps are
summed in the positions tile's order. At
stride 2 a group's source spans ``2·V`` columns, one aligned vector (``V`` half the rows'
alignment): loaded the same way and split into its even
and odd columns (``_rows.source_phases``), each tap reads one phase, shifted
(``_rows.tap_view``). The same kernel with ``ADJOINT`` computes the input gradient (grad_out
rows, the flipped taps); at stride 2 it reads grad_out as vectors of ``V / 2`` under groups of
``V`` input columns, each tap landing on the columns of one parity (``_rows.adjoint_view``),
and along depth and height a program takes the rows of one phase modulo the strides
(``_rows.phase_tile``), visiting only the taps that reach it.
``_conv_depthwise_rows_bwd_weight_kernel`` reduces grad_out · x over row segments per
(channel, tap), building the tap's view the same way.

Rows that no vector divides (a contiguous input's rows of odd widths: MobileNetV2's 7×7 maps)
are read, for the forward and the stride-1 input gradient of one output channel per input
channel, from the 16-byte boundary before each row as whole 16-byte vectors,
each tap's view shifted by the row's lead (``_lead_rows``; :mod:`._rows`): a program takes one
output row in planes that share their lead, each possible lead has its copy of the taps, and
a tile is one vector of columns wide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
    INT32_LIMIT,
    INTERPRET,
    PAD_MODES,
    PAD_ZEROS,
    acc_dtype,
    acc_torch_dtype,
    as_5d,
    cdiv,
    channels_inner,
    check_device,
    fast_divisor,
    needs_int64,
    pack_geometry,
    phase_steps,
    row_alignment,
    row_strides,
    workspace,
)
from ._indexing import (
    full_tile,
    in_range,
    map_padded,
    phase_dim,
    phase_taps,
    split_phase,
    tile_indices,
    unflatten,
    unflatten_fast,
    unflatten_rows,
    wide,
)
from ._plan import launch
from ._rows import (
    adjoint_view,
    aligned_down,
    aligned_vectors,
    lead_classes,
    lead_grid,
    lead_phases,
    lead_tiles,
    lead_vectors,
    phase_grid,
    phase_tile,
    row_offset,
    row_tile,
    row_tiles,
    source_phases,
    tap_view,
    taps_reach,
    whole_rows,
)
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


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _conv_depthwise_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, z_ptr,
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
    # (by division: split by multiply-shift, the compiler redid the split in the taps' loop,
    # which grew severalfold: depthwise-forward-divisors-experiment-sm_90.md)
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
    y_off = n * sy_n + co * sy_c + od * sy_d + oh * sy_h + ow * sy_w
    if z_ptr is not None:  # (the pre-activation, at y's offsets)
        acc = stored_pre_activation(acc, z_ptr + y_off, p_ok & c_ok)
    acc = activate(acc, aw_ptr, co * saw, c_ok, ACT_ALPHA, ACT_ALPHA_LO, ACT)
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=p_ok & c_ok)


@triton.jit
def _conv_depthwise_bwd_input_kernel(
    go_ptr, w_ptr, b_ptr, gi_ptr, z_ptr,
    N, M, C, MULT,
    D, H, W, OD, OH, OW, KD, KH, KW,
    PAD_D, PAD_H, PAD_W, DIL_D, DIL_H, DIL_W,
    TSTEP_D, TSTEP_H, TSTEP_W, OSTEP_D, OSTEP_H, OSTEP_W,
    sgo_n, sgo_c, sgo_d, sgo_h, sgo_w,
    sw_o, sw_d, sw_h, sw_w,
    sgi_n, sgi_c, sgi_d, sgi_h, sgi_w,
    sb,
    aw_ptr, saw, ACT_ALPHA, ACT_ALPHA_LO,
    STRIDE_D: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    HAS_BIAS: tl.constexpr, CHANNELS_INNER: tl.constexpr, USE_INT64: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    ACT: tl.constexpr,
):  # fmt: skip
    # Gather form (deterministic, no atomics), one phase of the input positions per program
    # (per dim i = ph + j·stride, as the implicit GEMM's input gradient): the taps that reach a
    # phase are every TSTEP-th from its first (phase_taps), once per program, so a stride-s
    # layer visits about 1/s of the taps per dim, none of them masked, and no element divides
    # by the stride. Tile = BLOCK_P flattened positions of the phase (over N and its J_D·J_H·J_W
    # positions; M: those of phase 0, the largest) × BLOCK_C input channels, programs phases ×
    # position tiles along axis 0; each element sums, over the multiplier and the taps, the
    # grad_out elements whose window covered it, in the taps' order. Zero padding only. With
    # HAS_BIAS, plus a transposed convolution's bias per input channel, and then its activation
    # (ACT: the forward's epilogue, the PReLU weight per input channel). The strides are
    # constexprs: a phase's coordinates divide by them, which folds away at stride 1.
    tiles = tl.cdiv(M, BLOCK_P)
    phase = tl.program_id(0) // tiles
    tile = tl.program_id(0) - phase * tiles
    # Input positions of this phase: i = ph + j·stride, j < J.
    ph_d, ph_h, ph_w = split_phase(phase, STRIDE_H, STRIDE_W)
    k0_d, nt_d, q0_d, J_D = phase_dim(ph_d, D, STRIDE_D, PAD_D, DIL_D, KD, TSTEP_D)
    k0_h, nt_h, q0_h, J_H = phase_dim(ph_h, H, STRIDE_H, PAD_H, DIL_H, KH, TSTEP_H)
    k0_w, nt_w, q0_w, J_W = phase_dim(ph_w, W, STRIDE_W, PAD_W, DIL_W, KW, TSTEP_W)
    p, ci = tile_indices(
        wide(tile, USE_INT64) * BLOCK_P, tl.program_id(1) * BLOCK_C, BLOCK_P, BLOCK_C,
        CHANNELS_INNER, USE_INT64,
    )  # fmt: skip
    p_ok = p < wide(N, USE_INT64) * J_D * J_H * J_W
    c_ok = ci < C
    # max(·, 1): an empty phase (size < stride) must not divide by zero; its rows are masked.
    n, j_d, j_h, j_w = unflatten(p, tl.maximum(J_D, 1), tl.maximum(J_H, 1), tl.maximum(J_W, 1))

    acc = full_tile(0, ACC_DTYPE, BLOCK_P, BLOCK_C, CHANNELS_INNER)
    for j in range(MULT):
        co = ci * MULT + j
        go_base = n * sgo_n + co * sgo_c
        w_base = co * sw_o
        for td in range(nt_d):
            o_d = j_d + (q0_d - td * OSTEP_D)
            go_d = go_base + o_d * sgo_d
            w_d = w_base + (k0_d + td * TSTEP_D) * sw_d
            for th in range(nt_h):
                o_h = j_h + (q0_h - th * OSTEP_H)
                go_dh = go_d + o_h * sgo_h
                w_dh = w_d + (k0_h + th * TSTEP_H) * sw_h
                ok_dh = p_ok & in_range(o_d, OD) & in_range(o_h, OH)
                for tw in range(nt_w):
                    o_w = j_w + (q0_w - tw * OSTEP_W)
                    gv = tl.load(
                        go_ptr + (go_dh + o_w * sgo_w),
                        mask=(ok_dh & in_range(o_w, OW)) & c_ok,
                        other=0.0,
                    )
                    wv = tl.load(
                        w_ptr + (w_dh + (k0_w + tw * TSTEP_W) * sw_w), mask=c_ok, other=0.0
                    )
                    acc += gv.to(ACC_DTYPE) * wv.to(ACC_DTYPE)
    if HAS_BIAS:
        acc += tl.load(b_ptr + ci * sb, mask=c_ok, other=0.0).to(ACC_DTYPE)
    i_d, i_h, i_w = ph_d + j_d * STRIDE_D, ph_h + j_h * STRIDE_H, ph_w + j_w * STRIDE_W
    gi_off = n * sgi_n + ci * sgi_c + i_d * sgi_d + i_h * sgi_h + i_w * sgi_w
    if z_ptr is not None:  # (the pre-activation, at grad_in's offsets)
        acc = stored_pre_activation(acc, z_ptr + gi_off, p_ok & c_ok)
    acc = activate(acc, aw_ptr, ci * saw, c_ok, ACT_ALPHA, ACT_ALPHA_LO, ACT)
    tl.store(gi_ptr + gi_off, acc.to(gi_ptr.dtype.element_ty), mask=p_ok & c_ok)


@triton.jit(do_not_specialize=["Q_OD", "Q_OH", "Q_OW"])
def _conv_depthwise_bwd_weight_kernel(
    x_ptr, go_ptr, gw_ptr,
    M, C_OUT, MULT, CHUNK,
    D, H, W, OD, OH, OW, Q_OD, Q_OH, Q_OW, KH, KW,
    STRIDE_D, STRIDE_H, STRIDE_W, PAD_D, PAD_H, PAD_W, DIL_D, DIL_H, DIL_W,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sgo_n, sgo_c, sgo_d, sgo_h, sgo_w,
    sgw_split, sgw_o, sgw_d, sgw_h, sgw_w,
    PAD_MODE: tl.constexpr, CHANNELS_INNER: tl.constexpr, USE_INT64: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # Program (channel block, tap, split): reduces grad_out · x over the split's CHUNK of the
    # flattened N·OD·OH·OW axis and writes one partial per channel (no atomics). Each step
    # splits its positions into coordinates by Q_OD, Q_OH, Q_OW (fast_divisor).
    tap = tl.program_id(0)  # (axis 0: a long kernel's taps may pass 65535)
    pid_c = tl.program_id(1)
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
        n, od, oh, ow = unflatten_fast(p, OD, OH, OW, Q_OD, Q_OH, Q_OW, USE_INT64)
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


@triton.jit
def _tap_walk(a, ph, STRIDE: tl.constexpr, PAD, DIL, K, TSTEP, OSTEP, ADJOINT: tl.constexpr):
    """How a dst row's taps along one dim walk the src rows: ``(k0, count, kstep, b0, bstep)``,
    tap ``t < count`` being ``k0 + t·kstep`` and reading src row ``b0 + t·bstep``. The
    forward: every tap, input row ``a·STRIDE − PAD + k·DIL``. The adjoint (``a`` the row's
    index in its phase ``ph``, input row ``ph + a·STRIDE``): only the taps that reach the phase
    (``phase_taps``), grad_out row ``a + q0 − t·OSTEP``."""
    if ADJOINT and STRIDE > 1:
        k0, count, q0 = phase_taps(ph, STRIDE, PAD, DIL, K, TSTEP)
        kstep = TSTEP
        b0 = a + q0
        bstep = -OSTEP
    elif ADJOINT:  # (one phase: every tap)
        k0 = 0
        count = K
        kstep = 1
        b0 = a + PAD
        bstep = -DIL
    else:
        k0 = 0
        count = K
        kstep = 1
        b0 = a * STRIDE - PAD
        bstep = DIL
    return k0, count, kstep, b0, bstep


@triton.jit(do_not_specialize=["Q_COLS", "Q_BANDS", "Q_C", "Q_RD", "Q_RH"])
def _conv_depthwise_rows_kernel(
    src_ptr, w_ptr, b_ptr, dst_ptr, z_ptr,
    PLANES, C_DST, MULT, Q_COLS, Q_BANDS, Q_C, Q_RD, Q_RH,
    SRC_D, SRC_H, SRC_W_UNITS, DST_D, DST_H, DST_W_UNITS, KD, KH, TOTAL,
    PAD_D, PAD_H, DIL_D, DIL_H, OSTEP_D, OSTEP_H,
    ssrc_n_units, ssrc_c_units, ssrc_d_units, ssrc_h_units,
    sw_o, sw_d, sw_h, sw_w,
    sb,
    sdst_n_units, sdst_c_units, sdst_d_units, sdst_h_units, sdst_w,
    aw_ptr, saw, ACT_ALPHA, ACT_ALPHA_LO,
    STRIDE_D: tl.constexpr, STRIDE_H: tl.constexpr, TSTEP_D: tl.constexpr,
    TSTEP_H: tl.constexpr,
    KW: tl.constexpr, PAD_W: tl.constexpr, STRIDE_W: tl.constexpr, DIL_W: tl.constexpr,
    V: tl.constexpr, V_OUT: tl.constexpr, LEAD_ROWS: tl.constexpr, LEAD_CLASSES: tl.constexpr,
    ADJOINT: tl.constexpr, HAS_BIAS: tl.constexpr, USE_INT64: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr, ACT: tl.constexpr,
    WHOLE_ROWS: tl.constexpr,
):  # fmt: skip
    # The row-segment form of the forward (src = x, dst = y) and, with ADJOINT, of the input
    # gradient (src = grad_out, dst = grad_in: each input channel sums its MULT output
    # channels, tap kw of the flipped kernel). Either adds the bias and applies the activation
    # (ACT) per dst channel. Tile: BLOCK_R dst rows (flattened n, c, d, h of PLANES planes
    # n, c) × BLOCK_O dst columns, as [BLOCK_R, BLOCK_O // V, V]; the adjoint's rows are
    # those of one phase modulo the strides along d and h (rows ph + a·STRIDE), whose taps
    # are known per program (_tap_walk): only those are visited. The src row width and strides
    # arrive in units of VS elements, the dst's in units of V_OUT (powers of two dividing them):
    # scaled back here, they show the compiler aligned vectors. Summation order: the positions
    # tile's (multiplier, kd, kh, kw).
    #
    # With LEAD_ROWS the src rows (of a contiguous src, MULT 1, the adjoint at stride 1 along
    # w only) start off the vectors' boundaries, as in _pool_rows_taps_fwd_kernel: each is read
    # from the SPAN-element boundary before it, its taps shifted by its lead, a program's rows
    # are one dst row (d, h) in planes LEAD_CLASSES apart (which share their leads), and the
    # src strides arrive in elements.
    G: tl.constexpr = BLOCK_O // V
    ALIGNED: tl.constexpr = not LEAD_ROWS
    SPAN: tl.constexpr = STRIDE_W * V
    # The src's vectors: V columns, except for the adjoint at stride 2 (V / 2 grad_out columns
    # under V input columns).
    VS: tl.constexpr = V // STRIDE_W if ADJOINT else V
    # (the src's units: the adjoint's vectors, the forward's spans of STRIDE_W vectors)
    UNIT: tl.constexpr = (VS if ADJOINT else SPAN) if ALIGNED else 1
    SRC_W = SRC_W_UNITS * UNIT
    DST_W = DST_W_UNITS * V_OUT
    if ALIGNED:
        # The adjoint's rows in phases modulo the strides along d and h (one otherwise): rows
        # ph + a·STRIDE; each phase split as phase 0, the largest, whose sizes rows_d, rows_h
        # the launcher's divisors Q_RD, Q_RH split (Q_C: C_DST's).
        PHASED: tl.constexpr = ADJOINT and STRIDE_D * STRIDE_H > 1
        rows_d = tl.cdiv(DST_D, STRIDE_D) if PHASED else DST_D
        rows_h = tl.cdiv(DST_H, STRIDE_H) if PHASED else DST_H
        phase, r, first, col = phase_tile(
            DST_W, PLANES * rows_d * rows_h, Q_COLS, Q_BANDS, BLOCK_R, BLOCK_O, V, USE_INT64,
            WHOLE_ROWS,
        )  # fmt: skip
        n, c, a_d, a_h = unflatten_fast(r, C_DST, rows_d, rows_h, Q_C, Q_RD, Q_RH, USE_INT64)
        row_ok = r < PLANES * rows_d * rows_h
        ph_d = phase // STRIDE_H if PHASED else 0
        ph_h = phase % STRIDE_H if PHASED else 0
        if PHASED:  # (a later phase may end a row earlier)
            row_ok &= (ph_d + a_d * STRIDE_D < DST_D) & (ph_h + a_h * STRIDE_H < DST_H)
        lead_class = 0
    else:  # one dst row a program, hence one phase
        r, first, col, lead_class, n, c, d, h = row_tile(
            DST_W, C_DST, DST_D, DST_H, Q_COLS, Q_C, Q_RD, Q_RH, LEAD_ROWS, LEAD_CLASSES,
            BLOCK_R, BLOCK_O, V, USE_INT64, False,
        )  # fmt: skip
        row_ok = r < PLANES
        ph_d, a_d = (d % STRIDE_D, d // STRIDE_D) if ADJOINT else (0, d)
        ph_h, a_h = (h % STRIDE_H, h // STRIDE_H) if ADJOINT else (0, h)
    k0_d, taps_d, kstep_d, b0_d, bstep_d = _tap_walk(
        a_d, ph_d, STRIDE_D, PAD_D, DIL_D, KD, TSTEP_D, OSTEP_D, ADJOINT
    )
    k0_h, taps_h, kstep_h, b0_h, bstep_h = _tap_walk(
        a_h, ph_h, STRIDE_H, PAD_H, DIL_H, KH, TSTEP_H, OSTEP_H, ADJOINT
    )
    first_src = tl.multiple_of(first // STRIDE_W, BLOCK_O // STRIDE_W) if ADJOINT else first

    acc = tl.zeros([BLOCK_R, G, V], ACC_DTYPE)
    for j in range(MULT if ADJOINT else 1):
        c_w = c * MULT + j if ADJOINT else c  # the weight's (and grad_out's) channel
        c_src = c_w if ADJOINT else c // MULT
        src_c = n * (ssrc_n_units * UNIT) + c_src * (ssrc_c_units * UNIT)
        src_plane = src_ptr + src_c
        for td in range(taps_d):
            kd = k0_d + td * kstep_d
            b_d = b0_d + td * bstep_d
            ok_d = row_ok & in_range(b_d, SRC_D)
            for th in range(taps_h):
                kh = k0_h + th * kstep_h
                b_h = b0_h + th * bstep_h
                ok = ok_d & in_range(b_h, SRC_H)
                in_plane = b_d * (ssrc_d_units * UNIT) + b_h * (ssrc_h_units * UNIT)
                w_row = w_ptr + (c_w * sw_o + kd * sw_d + kh * sw_h)
                if ALIGNED:
                    if ADJOINT:
                        be, oe, ae, bo, oo, ao = source_phases(
                            src_plane + in_plane, first_src, ok, SRC_W, G, VS, 1
                        )
                    else:
                        be, oe, ae, bo, oo, ao = source_phases(
                            src_plane + in_plane, first, ok, SRC_W, G, V, STRIDE_W
                        )
                    acc = _row_taps(
                        acc, be, oe, ae, bo, oo, ao, w_row, sw_w, row_ok,
                        0, KW, PAD_W, STRIDE_W, DIL_W, V, VS, ADJOINT, ACC_DTYPE,
                    )  # fmt: skip
                else:
                    base = aligned_down(src_c + in_plane, SPAN)
                    # (the row's lead: that of its plane class's first plane, the same for
                    # all; planes D·H·W apart, as a unit dim's stride may be anything)
                    lead = (lead_class * (SRC_D * SRC_H * SRC_W) + b_d * (ssrc_d_units * UNIT)
                            + b_h * (ssrc_h_units * UNIT)) % SPAN  # fmt: skip
                    be, oe, ae, bo, oo, ao = lead_phases(
                        src_ptr + base, first, ok, -base, TOTAL - base, lead, lead + SRC_W, G, V,
                        STRIDE_W, True,
                    )  # fmt: skip
                    for LEAD in tl.static_range(SPAN):
                        if lead == LEAD:
                            acc = _row_taps(
                                acc, be, oe, ae, bo, oo, ao, w_row, sw_w, row_ok,
                                LEAD, KW, PAD_W, STRIDE_W, DIL_W, V, VS, ADJOINT,
                                ACC_DTYPE,
                            )  # fmt: skip
    if HAS_BIAS:
        acc += tl.load(b_ptr + c * sb, mask=row_ok, other=0.0).to(ACC_DTYPE)
    d, h = (ph_d + a_d * STRIDE_D, ph_h + a_h * STRIDE_H) if ADJOINT else (a_d, a_h)
    dst_off = (
        row_offset(n, c, d, h, sdst_n_units, sdst_c_units, sdst_d_units, sdst_h_units, V_OUT)
        + col * sdst_w
    )
    dst_ok = row_ok & (col < DST_W)
    if z_ptr is not None:  # (the pre-activation, at dst's offsets)
        acc = stored_pre_activation(acc, z_ptr + dst_off, dst_ok)
    acc = activate(acc, aw_ptr, c * saw, row_ok, ACT_ALPHA, ACT_ALPHA_LO, ACT)
    tl.store(dst_ptr + dst_off, acc.to(dst_ptr.dtype.element_ty), mask=dst_ok)


@triton.jit
def _row_taps(acc, be, oe, ae, bo, oo, ao, w_row, sw_w, row_ok, LEAD: tl.constexpr,
              KW: tl.constexpr, PAD_W: tl.constexpr, STRIDE_W: tl.constexpr, DIL_W: tl.constexpr,
              V: tl.constexpr, VS: tl.constexpr, ADJOINT: tl.constexpr,
              ACC_DTYPE: tl.constexpr):  # fmt: skip
    """Add one src row's ``KW`` taps, each weighted, to ``acc``: the src (zero outside the row)
    read ``LEAD`` columns on where the row starts past its vectors' boundary."""
    for kw in tl.static_range(KW):
        if ADJOINT:  # grad_out column (col + PAD_W - kw·DIL_W) / STRIDE_W
            v = adjoint_view(be, oe, ae, PAD_W - kw * DIL_W + LEAD, VS, STRIDE_W)
        else:  # input column STRIDE_W·col + kw·DIL_W - PAD_W
            v = tap_view(be, oe, ae, bo, oo, ao, kw * DIL_W - PAD_W + LEAD, V, STRIDE_W)
        wv = tl.load(w_row + kw * sw_w, mask=row_ok, other=0.0)
        acc += v.to(ACC_DTYPE) * wv.to(ACC_DTYPE)
    return acc


@triton.jit(do_not_specialize=["Q_OD", "Q_OH"])
def _conv_depthwise_rows_bwd_weight_kernel(
    x_ptr, go_ptr, gw_ptr,
    M_ROWS, MULT, CHUNK,
    D, H, W_UNITS, OD, OH, OW_UNITS, Q_OD, Q_OH, KH,
    STRIDE_D, STRIDE_H, PAD_D, PAD_H, DIL_D, DIL_H,
    sx_n_units, sx_c_units, sx_d_units, sx_h_units,
    sgo_n_units, sgo_c_units, sgo_d_units, sgo_h_units,
    sgw_split, sgw_o, sgw_d, sgw_h, sgw_w,
    KW: tl.constexpr, PAD_W: tl.constexpr, STRIDE_W: tl.constexpr, DIL_W: tl.constexpr,
    V: tl.constexpr, V_GO: tl.constexpr, USE_INT64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr,
):  # fmt: skip
    # Program (output channel, tap, split): reduces grad_out · x over the split's CHUNK of the
    # channel's grad_out rows (flattened n, od, oh), BLOCK_R rows × BLOCK_O columns at a time
    # as [BLOCK_R, BLOCK_O // V, V]; x's row is read as three aligned vectors per group and the
    # tap's shifted view built in registers, as in _conv_depthwise_rows_kernel. One partial per
    # program (no atomics); the order depends on the shapes only. x's width and strides arrive
    # in units of SPAN = STRIDE_W·V elements (the x columns under a vector of outputs),
    # grad_out's in units of V_GO. Each step splits its rows by Q_OD, Q_OH (fast_divisor).
    G: tl.constexpr = BLOCK_O // V
    SPAN: tl.constexpr = STRIDE_W * V
    co = tl.program_id(0)
    tap = tl.program_id(1)
    split = wide(tl.program_id(2), USE_INT64)
    kw_tap = tap % KW
    kh = (tap // KW) % KH
    kd = tap // (KW * KH)
    W = W_UNITS * SPAN
    OW = OW_UNITS * V_GO
    col = tl.arange(0, G)[None, :, None] * V + tl.arange(0, V)[None, None, :]
    x_c = x_ptr + (co // MULT) * (sx_c_units * SPAN)
    go_c = go_ptr + co * (sgo_c_units * V_GO)

    acc = tl.zeros([BLOCK_R, G, V], ACC_DTYPE)
    for r0 in range(0, CHUNK, BLOCK_R):
        in_chunk = r0 + tl.arange(0, BLOCK_R)[:, None, None]
        r = split * CHUNK + in_chunk
        n, od, oh = unflatten_rows(r, OD, OH, Q_OD, Q_OH, USE_INT64)
        row_ok = (in_chunk < CHUNK) & (r < M_ROWS)
        i_d, ok_d = _input_coord(od, kd, D, STRIDE_D, PAD_D, DIL_D, PAD_ZEROS)
        i_h, ok_h = _input_coord(oh, kh, H, STRIDE_H, PAD_H, DIL_H, PAD_ZEROS)
        ok = row_ok & ok_d & ok_h
        x_row = x_c + (
            n * (sx_n_units * SPAN) + i_d * (sx_d_units * SPAN) + i_h * (sx_h_units * SPAN)
        )
        go_row = go_c + (
            n * (sgo_n_units * V_GO) + od * (sgo_d_units * V_GO) + oh * (sgo_h_units * V_GO)
        )
        for c0 in range(0, OW, BLOCK_O):
            c = c0 + col
            gv = tl.load(go_row + c, mask=row_ok & (c < OW), other=0.0).to(ACC_DTYPE)
            be, oe, ae, bo, oo, ao = source_phases(x_row, c0, ok, W, G, V, STRIDE_W)
            for kw in tl.static_range(KW):
                if kw == kw_tap:  # uniform per program: one tap's view is built
                    xv = tap_view(be, oe, ae, bo, oo, ao, kw * DIL_W - PAD_W, V, STRIDE_W)
                    acc += gv * xv.to(ACC_DTYPE)

    part = tl.sum(tl.sum(tl.sum(acc, axis=2), axis=1), axis=0)
    gw_off = split * sgw_split + co * sgw_o + kd * sgw_d + kh * sgw_h + kw_tap * sgw_w
    tl.store(gw_ptr + gw_off, part.to(gw_ptr.dtype.element_ty))


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
    pre_activation: torch.Tensor | None = None,
) -> None:
    """Depthwise convolution ``out = act(conv(x, w, groups=C) + bias)``, written into ``out``
    (``activation``, ``alpha``, ``act_weight``, ``pre_activation``: the epilogue's, see
    ``conv_gemm.gemm_conv_forward``).

    x: (N, C, *S) with 1–3 spatial dims; w: (C·mult, 1, *K); bias: (C·mult,) or None;
    out: (N, C·mult, *O), preallocated, every element written. Any strides everywhere.
    ``padding`` is the padding before each spatial dim; the padding after is whatever ``O``
    implies, so asymmetric padding works. ``pad_mode``: zeros | reflect | replicate | circular.
    """
    check_device(x, w, bias, out, act_weight, pre_activation)
    _check(x, w, out, (stride, padding, dilation))
    z = pre_activation_target("depthwise_conv_forward", pre_activation, out, activation)
    if out.numel() == 0:
        return
    x5, w5, y5 = as_5d(x), as_5d(w), as_5d(out)
    epilogue = epilogue_args(activation, alpha, act_weight, w5)
    geometry = pack_geometry((stride, 1), (padding, 0), (dilation, 1))
    lead = _lead_rows(x5, w5, x5.shape[1], stride[-1], padding[-1], dilation[-1], pad_mode, False)
    vector = _row_vector(x5, w5.shape[-1], stride[-1], padding[-1], dilation[-1], pad_mode, True)
    if lead or vector:
        vector, lead_rows = (lead, True) if lead else (vector, False)
        _launch_rows(
            x5, w5, bias, y5, z, geometry, padding[-1], vector, epilogue, activation, False,
            lead_rows,
        )  # fmt: skip
        return
    n, c = x5.shape[:2]
    co = w5.shape[0]
    m = n * y5.shape[2] * y5.shape[3] * y5.shape[4]
    has_bias = bias is not None
    b = bias if has_bias else w5  # dummy pointer, never read
    c_inner, use_int64 = channels_inner(x5), needs_int64(x, w, bias, out)
    key = (x.dtype, (c_inner, y5.stride(1) == 1), pad_mode, tuple(w5.shape[2:]), geometry[:3],
           geometry[6:], co, co // c, bucket(m), use_int64, activation, z is not None)  # fmt: skip
    _FWD.launch(
        key,
        lambda cfg: (cdiv(m, cfg["BLOCK_P"]), cdiv(co, cfg["BLOCK_C"])),
        (
            x5, w5, b, y5, z,
            m, co, co // c,
            *x5.shape[2:], *y5.shape[2:], *w5.shape[2:],
            *geometry,
            *x5.stride(),
            w5.stride(0), *w5.stride()[2:],
            bias.stride(0) if has_bias else 0,
            *y5.stride(),
            *epilogue,
        ),
        dict(
            PAD_MODE=PAD_MODES[pad_mode], HAS_BIAS=has_bias, CHANNELS_INNER=c_inner,
            USE_INT64=use_int64, ACC_DTYPE=acc_dtype(out.dtype), ACT=ACTIVATIONS[activation],
        ),
    )  # fmt: skip


def _row_vector(src5, kw: int, stride: int, pad: int, dilation: int, pad_mode: str,
                spans: bool = False) -> int:  # fmt: skip
    """The vector width (elements) of the row-segment kernels reading ``src5``, or 0 when they
    do not apply: NCHW-like rows with unit stride, stride 1 or 2 along ``w``, zero padding, and
    every tap within one vector of its output (``_rows.shifted``'s reach; at stride 2, within
    its phase) — dilation along ``w`` only moves the taps further out.

    ``spans`` (the forward and the weight gradient, which read ``src5`` at the stride): the
    width in output columns whose ``stride`` times as many source columns are one aligned span
    (``_rows.aligned_vectors``); else (the input gradient, reading grad_out) in ``src5``'s
    columns."""
    if stride not in (1, 2) or pad_mode != "zeros" or src5.stride(4) != 1 or channels_inner(src5):
        return 0
    vector = aligned_vectors(src5, stride if spans else 1)
    reaches = taps_reach(-pad, (kw - 1) * dilation - pad, stride, vector)
    return vector if vector and reaches else 0


def _lead_rows(src5, w5, channels: int, stride: int, pad: int, dilation: int, pad_mode: str,
               adjoint: bool) -> int | None:  # fmt: skip
    """``V`` of the row-segment kernel over a contiguous ``src5`` whose rows no
    vector divides (MobileNetV2's 7×7 maps: ``_rows.lead_vectors``), or ``None``: one output
    channel per input channel (of ``channels``), zero padding, stride 1 or 2 (the input
    gradient: 1), and every tap within one vector of its output, a row's lead added."""
    kw = w5.shape[4]
    if (
        stride not in ((1,) if adjoint else (1, 2))
        or pad_mode != "zeros"
        or w5.shape[0] != channels
        or src5.stride(4) != 1
        or channels_inner(src5)
    ):
        return None
    lead = lead_vectors(src5, stride)
    # the src columns a dst column reads: col - pad + kw·dil forward, col + pad - kw·dil back
    first, last = (pad - (kw - 1) * dilation, pad) if adjoint else (-pad, (kw - 1) * dilation - pad)
    return lead if lead and taps_reach(first, last, stride, lead, lead=True) else None


def _launch_rows(src5, w5, bias, dst5, z5, geometry, pad_w, vector, epilogue, activation,
                 adjoint, lead_rows=False):  # fmt: skip
    """The row-segment kernel: the forward ``dst5 = conv(src5, w5)`` or, ``adjoint``, the input
    gradient ``dst5`` of grad_out ``src5`` (``z5``: the pre-activation's target or None);
    ``geometry`` as ``pack_geometry`` packs it.
    ``vector``: the tile's groups of dst columns (the src's vectors for the forward, ``stride``
    src vectors for the adjoint); ``lead_rows``: the src rows start off the vectors'
    boundaries (:func:`_lead_rows`)."""
    src_vector = vector // geometry[2] if adjoint else vector * geometry[2]
    n, c_dst = dst5.shape[:2]
    mult = w5.shape[0] // (c_dst if adjoint else src5.shape[1])
    dst_d, dst_h, dst_w = dst5.shape[2:]
    # (rows read from a boundary: one vector of columns a tile, see _rows.lead_tiles)
    br, bo, warps = lead_tiles(vector) if lead_rows else row_tiles(dst_w, vector)
    planes, strides = n * c_dst, geometry[:3]
    # The adjoint's rows in phases modulo the strides along d and h, each split as phase 0's
    # (the kernel's PHASED), and its tap steps (the forward's: 1, one variant).
    phases = strides[0] * strides[1] if adjoint and not lead_rows else 1
    steps = phase_steps(strides, geometry[6:]) if adjoint else (1,) * 6
    rows_d, rows_h = (cdiv(dst_d, strides[0]), cdiv(dst_h, strides[1])) if phases > 1 else (
        dst_d, dst_h)  # fmt: skip
    rows = planes * rows_d * rows_h
    grid, q_cols, q_bands = phase_grid(rows, phases, dst_w, (br, bo))
    # (a band's rows reach a row tile past the last: quotient's operands stay below 2**31)
    classes, use_int64 = 1, needs_int64(src5, w5, bias, dst5) or rows + br >= INT32_LIMIT
    if lead_rows:  # planes of one lead class a program, strides in elements
        src_vector = 1
        classes = lead_classes(src5, geometry[2] * vector)
        grid = lead_grid(planes, dst_d * dst_h, dst_w, (br, bo), classes)
        # (a row's reads reach a column block and two vectors past its start, masked)
        use_int64 |= src5.numel() + geometry[2] * (bo + 2 * vector) >= INT32_LIMIT
    dst_vector = row_alignment(dst_w, dst5) if dst5.stride(4) == 1 else 1
    launch(_conv_depthwise_rows_kernel, (grid,), (
        src5, w5, w5 if bias is None else bias, dst5, z5,
        planes, c_dst, mult, q_cols, q_bands, *map(fast_divisor, (c_dst, rows_d, rows_h)),
        *src5.shape[2:4], src5.shape[4] // src_vector, dst_d, dst_h, dst_w // dst_vector,
        *w5.shape[2:4], src5.numel(),
        *geometry[3:5], *geometry[6:8], *steps[3:5],
        *(s // src_vector for s in row_strides(src5)),
        w5.stride(0), *w5.stride()[2:],
        0 if bias is None else bias.stride(0),
        *(s // dst_vector for s in row_strides(dst5)), dst5.stride(4),
        *epilogue,
    ), dict(
        STRIDE_D=geometry[0], STRIDE_H=geometry[1], TSTEP_D=steps[0], TSTEP_H=steps[1],
        KW=w5.shape[4], PAD_W=pad_w, STRIDE_W=geometry[2], DIL_W=geometry[8], V=vector,
        V_OUT=dst_vector, LEAD_ROWS=lead_rows, LEAD_CLASSES=classes,
        ADJOINT=adjoint,
        HAS_BIAS=bias is not None, USE_INT64=use_int64,
        ACC_DTYPE=acc_dtype(dst5.dtype), BLOCK_R=br, BLOCK_O=bo, num_warps=warps,
        ACT=ACTIVATIONS[activation], WHOLE_ROWS=not lead_rows and whole_rows(dst_w, bo),
    ))  # fmt: skip


def depthwise_conv_backward_input(
    grad_out: torch.Tensor,
    w: torch.Tensor,
    grad_in: torch.Tensor,
    *,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    alpha: float = 0.0,
    act_weight: torch.Tensor | None = None,
    pre_activation: torch.Tensor | None = None,
) -> None:
    """Gradient of a zero-padded depthwise convolution w.r.t. its input, written to ``grad_in``,
    plus ``bias`` (C,) per channel when given, then ``activation`` (``alpha``, ``act_weight``:
    its parameters, a PReLU weight per channel of ``grad_in`` or one; ``pre_activation``: see
    ``conv_gemm.gemm_conv_forward``): a transposed convolution's ``grad_in =
    act(conv_transpose(grad_out, w) + bias)``.

    grad_out: (N, C·mult, *O); w: (C·mult, 1, *K); grad_in: (N, C, *I), preallocated, every
    element written (``act(bias)``, or ``act(0)``, where no window reaches). Any strides.
    Deterministic gather: each input element sums the grad_out elements whose windows covered
    it; no atomics.
    """
    check_device(grad_out, w, grad_in, bias, act_weight, pre_activation)
    _check(grad_in, w, grad_out, (stride, padding, dilation))
    z = pre_activation_target("depthwise_conv_backward_input", pre_activation, grad_in, activation)
    if grad_in.numel() == 0:
        return
    go5, w5, gi5 = as_5d(grad_out), as_5d(w), as_5d(grad_in)
    n, c = gi5.shape[:2]
    co = w5.shape[0]
    m = n * gi5.shape[2] * gi5.shape[3] * gi5.shape[4]
    epilogue = epilogue_args(activation, alpha, act_weight, w5)
    geometry = pack_geometry((stride, 1), (padding, 0), (dilation, 1))
    # grad_out's vectors; at stride 2 they lie under input groups twice as wide
    lead = _lead_rows(go5, w5, gi5.shape[1], stride[-1], padding[-1], dilation[-1], "zeros", True)
    vector = _row_vector(go5, w5.shape[-1], stride[-1], padding[-1], dilation[-1], "zeros")
    if lead or vector:
        vector, lead_rows = (lead, True) if lead else (vector * stride[-1], False)
        _launch_rows(
            go5, w5, bias, gi5, z, geometry, padding[-1], vector, epilogue, activation, True,
            lead_rows,
        )  # fmt: skip
        return
    c_inner, use_int64 = channels_inner(go5), needs_int64(grad_out, w, grad_in)
    key = (grad_out.dtype, (c_inner, gi5.stride(1) == 1), tuple(w5.shape[2:]), geometry[:3],
           geometry[6:], c, co // c, bucket(m), use_int64, activation, z is not None)  # fmt: skip
    # (positions of phase 0, the largest: per dim ceil(size / stride))
    m0 = n * math.prod(cdiv(size, s) for size, s in zip(gi5.shape[2:], geometry[:3]))
    phases = math.prod(geometry[:3])
    _BWD_INPUT.launch(
        key,
        lambda cfg: (phases * cdiv(m0, cfg["BLOCK_P"]), cdiv(c, cfg["BLOCK_C"])),
        (
            go5, w5, w5 if bias is None else bias, gi5, z,
            n, m0, c, co // c,
            *gi5.shape[2:], *go5.shape[2:], *w5.shape[2:],
            *geometry[3:], *phase_steps(stride, dilation),
            *go5.stride(),
            w5.stride(0), *w5.stride()[2:],
            *gi5.stride(),
            0 if bias is None else bias.stride(0),
            *epilogue,
        ),
        dict(
            STRIDE_D=geometry[0], STRIDE_H=geometry[1], STRIDE_W=geometry[2],
            HAS_BIAS=bias is not None, CHANNELS_INNER=c_inner, USE_INT64=use_int64,
            ACC_DTYPE=acc_dtype(grad_in.dtype), ACT=ACTIVATIONS[activation],
        ),
    )  # fmt: skip


def _reduction_split(items: int, block: int, tiles: int) -> tuple[int, int]:
    """``(split, chunk)`` of a grad-weight reduction over ``items`` (taken ``block`` at a
    time) for ``tiles`` programs per split: chosen from the shapes only, so the summation order
    — and the result, bitwise — repeats. The split fills the device when ``tiles`` alone gives
    too few programs."""
    blocks = cdiv(items, block)
    split = max(1, min(cdiv(_BW_TARGET_PROGRAMS, tiles), blocks // _BW_MIN_BLOCKS_PER_SPLIT, 65535))
    chunk = cdiv(blocks, split) * block
    return cdiv(items, chunk), chunk


def backward_weight_split(m: int, co: int, taps: int) -> tuple[int, int]:
    """``(split, chunk)`` of the positions-tile grad-weight reduction over ``m`` = N·output
    positions (:func:`_reduction_split`)."""
    return _reduction_split(m, _BW_BLOCK_P, cdiv(co, _BW_BLOCK_C) * taps)


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
    NCHW rows that the row-segment forward reads take its grad-weight form (row segments).
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
    geometry = pack_geometry((stride, 1), (padding, 0), (dilation, 1))
    vector = _row_vector(x5, kw, stride[-1], padding[-1], dilation[-1], pad_mode, True)
    if vector and go5.stride(4) == 1 and not channels_inner(go5):
        _launch_rows_backward_weight(x5, go5, gw5, geometry, padding[-1], vector)
        return
    split, chunk = backward_weight_split(m, co, kd * kh * kw)
    ws, ws_strides = _grad_weight_workspace(gw5, split)
    launch(_conv_depthwise_bwd_weight_kernel, (kd * kh * kw, cdiv(co, _BW_BLOCK_C), split), (
        x5, go5, ws,
        m, co, co // c, chunk,
        *x5.shape[2:], *go5.shape[2:], *map(fast_divisor, go5.shape[2:]), kh, kw,
        *geometry,
        *x5.stride(),
        *go5.stride(),
        *ws_strides,
    ), dict(
        PAD_MODE=PAD_MODES[pad_mode], CHANNELS_INNER=channels_inner(x5),
        # (positions split by fast divisors stay below 2**31, the tile past the last too)
        USE_INT64=needs_int64(x, grad_out, grad_w, ws) or m + _BW_BLOCK_P >= INT32_LIMIT,
        ACC_DTYPE=acc_dtype(grad_w.dtype),
        BLOCK_P=_BW_BLOCK_P, BLOCK_C=_BW_BLOCK_C, num_warps=_BW_WARPS,
    ))  # fmt: skip
    if split > 1:
        gw5[:, 0].copy_(ws.sum(0))


def _grad_weight_workspace(gw5: torch.Tensor, split: int) -> tuple[torch.Tensor, tuple]:
    """Where a grad-weight reduction split ``split`` ways writes: straight into ``gw5`` (its
    strides, one rounding) for one split, else fp32 (fp64) partials ``(split, C·mult, KD, KH,
    KW)`` that torch sums in a fixed order (:func:`_sum_partials`)."""
    if split == 1:
        return gw5, (0, gw5.stride(0), *gw5.stride()[2:])
    co, _, kd, kh, kw = gw5.shape
    ws = workspace(
        torch.empty((split, co, kd, kh, kw), device=gw5.device, dtype=acc_torch_dtype(gw5.dtype))
    )
    return ws, ws.stride()


def _launch_rows_backward_weight(x5, go5, gw5, geometry, pad_w, vector):  # fmt: skip
    n, c = x5.shape[:2]
    co, _, kd, kh, kw = gw5.shape
    od, oh, ow = go5.shape[2:]
    go_vector = row_alignment(ow, go5)
    span = geometry[2] * vector  # (the x columns under a vector of outputs)
    rows = n * od * oh
    br, bo, warps = row_tiles(ow, vector)
    split, chunk = _reduction_split(rows, br, co * kd * kh * kw)
    ws, ws_strides = _grad_weight_workspace(gw5, split)
    launch(_conv_depthwise_rows_bwd_weight_kernel, (co, kd * kh * kw, split), (
        x5, go5, ws,
        rows, co // c, chunk,
        *x5.shape[2:4], x5.shape[4] // span, od, oh, ow // go_vector,
        fast_divisor(od), fast_divisor(oh), kh,
        *geometry[:2], *geometry[3:5], *geometry[6:8],
        *(s // span for s in row_strides(x5)),
        *(s // go_vector for s in row_strides(go5)),
        *ws_strides,
    ), dict(
        KW=kw, PAD_W=pad_w, STRIDE_W=geometry[2], DIL_W=geometry[8], V=vector, V_GO=go_vector,
        # (a step's rows reach a row tile past the last: quotient's operands stay below 2**31)
        USE_INT64=needs_int64(x5, go5, gw5, ws) or rows + br >= INT32_LIMIT,
        ACC_DTYPE=acc_dtype(gw5.dtype), BLOCK_R=br, BLOCK_O=bo, num_warps=warps,
    ))  # fmt: skip
    if split > 1:
        gw5[:, 0].copy_(ws.sum(0))
