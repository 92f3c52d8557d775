"""Locally connected and tiled convolution as implicit GEMMs on tensor cores (``tl.dot``):
forward, grad-input and grad-weight.

The weight is ``(*tiles, C_out, C_in/groups, *kernel)``, viewed as ``(TD, TH, TW, C_out,
C_in/groups, KD, KH, KW)``; output position ``o`` uses the kernel of tile ``o mod T`` per dim.
Tiles equal to the output size make a locally connected (unshared) convolution, one tile an
ordinary convolution. The positions that share a tile share a kernel, so each (tile, group) is
one dense GEMM, and every (tile, group) GEMM is a batch of one 1-d grid (``_program``):

* forward      rows = N·(positions of the tile), cols = C_out/groups,
               reduction = (taps, C_in/groups);
* grad-input   input positions split into phases modulo stride·T per dim: at every position
               of a phase, a given tap meets an output position of the same tile, so a phase is
               a dense GEMM with rows = N·(positions of the phase), cols = C_in/groups,
               reduction = (the taps that reach the phase, C_out/groups);
* grad-weight  rows = C_out/groups, cols = (taps, C_in/groups), reduction = N·(positions of
               the tile). Each program owns its output block: no atomics, bitwise repeatable.

For a locally connected layer the rows of the forward and grad-input GEMMs are the batch (one
position, or phase, per tile); for one tile they are the implicit GEMM of a convolution.
Nothing is materialised — no im2col, no per-position copy of the weight, no padded input: taps
and padding modes are index arithmetic in the loads. The reduction runs over one flattened
(taps × channels) axis, channels fastest, so channels_last loads are contiguous and small
channel counts still fill a 16-wide ``tl.dot`` operand.

Each kernel's config comes from a ``_tuning.Tuner``, as the GEMMs' do: keyed by dtype, which
operands have unit channel stride, tiles, kernel size, geometry and the rows bucketed to a power
of two, remembered on disk, and launched through launch plans, so the launchers tape and replay.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from ._common import (
    INT32_LIMIT,
    PAD_MODES,
    acc_dtype,
    as_5d,
    check_device,
    dot_precision,
    fast_divisor,
    needs_int64,
    pack_geometry,
    phase_steps,
)
from ._gemm_common import GROUP_M, configs, flat_grid, shared_estimate
from ._indexing import grouped_tile, map_padded, phase_taps, unflatten, unflatten_fast, wide
from ._tuning import Config, Tuner, bucket

__all__ = ["local_conv_backward_input", "local_conv_backward_weight", "local_conv_forward"]

# (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps). Small-M tiles serve locally connected
# layers, whose GEMM rows are the batch. 4 warps only: the tap loop's shape, which Triton has
# miscompiled at 8 (``_gemm_common``). BLOCK_K stays 32: it is grad-weight's reduction chunk, so
# every config sums in the same order (results bitwise equal whichever config is chosen).
_BLOCK_K = 32
_TABLE = [
    (16, 64, _BLOCK_K, 4, 4),
    (32, 64, _BLOCK_K, 4, 4),
    (64, 64, _BLOCK_K, 4, 4),
    (128, 64, _BLOCK_K, 3, 4),
    (64, 128, _BLOCK_K, 3, 4),
    (128, 128, _BLOCK_K, 3, 4),
]


# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _load_window(
    x_ptr, n, c, zd, zh, zw, mask, sx_n, sx_c, sx_d, sx_h, sx_w, D, H, W,
    PAD_MODE: tl.constexpr,
):  # fmt: skip
    """``x[n, c, zd, zh, zw]``, coordinates of the padded input mapped by ``PAD_MODE``
    (outside reads 0 with zero padding); the pieces broadcast to the tile."""
    i_d, ok_d = map_padded(zd, D, PAD_MODE)
    i_h, ok_h = map_padded(zh, H, PAD_MODE)
    i_w, ok_w = map_padded(zw, W, PAD_MODE)
    offs = n * sx_n + c * sx_c + i_d * sx_d + i_h * sx_h + i_w * sx_w
    return tl.load(x_ptr + offs, mask=mask & ok_d & ok_h & ok_w, other=0.0)


@triton.jit
def _program(ROW_TILES, COL_TILES, GROUPS, GROUP_M: tl.constexpr):
    """``(gemm, group, row tile, column tile)`` of this program of the 1-d grid: one batch of
    ``grouped_tile`` per GEMM (a tile or a phase) and group, GEMM-major, so no grid axis is
    bounded by 65535 and neighbouring row tiles share their columns in L2."""
    batch, tile_m, tile_n = grouped_tile(tl.program_id(0), ROW_TILES, COL_TILES, GROUP_M)
    return batch // GROUPS, batch % GROUPS, tile_m, tile_n


@triton.jit
def _floor_mod(a, m):
    """``a mod m`` in ``[0, m)`` for any sign of ``a`` (``%`` truncates on the GPU)."""
    r = a % m
    return tl.where(r < 0, r + m, r)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _local_conv_fwd_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    M, C_IN, C_OUT, GROUPS,
    D, H, W, OD, OH, OW, KD, KH, KW, TD, TH, TW, QD, QH, QW,
    STRIDE_D, STRIDE_H, STRIDE_W, PAD_D, PAD_H, PAD_W, DIL_D, DIL_H, DIL_W,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sw_td, sw_th, sw_tw, sw_o, sw_i, sw_d, sw_h, sw_w,
    sy_n, sy_c, sy_d, sy_h, sy_w,
    sb_td, sb_th, sb_tw, sb_o,
    HAS_BIAS: tl.constexpr, PAD_MODE: tl.constexpr, USE_INT64: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, GROUP_M: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """y[n, g·C_OUT + co, o] = bias[r, g·C_OUT + co] +
    Σ_{tap, ci} x[n, g·C_IN + ci, o·stride - padding + tap·dilation] · w[r, g·C_OUT + co, ci, tap]
    with ``o = q·T + r``.

    Programs (``_program``): tiles × groups GEMMs of row tiles over N·Q and C_OUT column tiles;
    ``Q = ceil(O / T)`` positions per tile and dim (rows past ``O`` are masked). C_IN / C_OUT
    are per group.
    """
    tile, group, tile_m, tile_n = _program(
        tl.cdiv(M, BLOCK_M), tl.cdiv(C_OUT, BLOCK_N), GROUPS, GROUP_M
    )
    _, rd, rh, rw = unflatten(tile, TD, TH, TW)
    rows = wide(tile_m, USE_INT64) * BLOCK_M + tl.arange(0, BLOCK_M)
    n, qd, qh, qw = unflatten(rows, QD, QH, QW)
    od, oh, ow = qd * TD + rd, qh * TH + rh, qw * TW + rw
    row_ok = (rows < M) & (od < OD) & (oh < OH) & (ow < OW)
    co = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    co_ok = co < C_OUT
    co_off = wide(group * C_OUT + co, USE_INT64)

    # Padded-input coordinates of tap 0 per row; a tap adds tap·dilation.
    zd = (od * STRIDE_D - PAD_D)[:, None]
    zh = (oh * STRIDE_H - PAD_H)[:, None]
    zw = (ow * STRIDE_W - PAD_W)[:, None]
    row_mask = row_ok[:, None]
    w_tile = wide(rd, USE_INT64) * sw_td + rh * sw_th + rw * sw_tw
    w_col = (co_off * sw_o)[None, :]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for k0 in range(0, KD * KH * KW * C_IN, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < KD * KH * KW * C_IN
        td, th, tw, ci = unflatten(k, KH, KW, C_IN)
        a = _load_window(
            x_ptr, n[:, None], wide(group * C_IN + ci, USE_INT64)[None, :],
            zd + td * DIL_D, zh + th * DIL_H, zw + tw * DIL_W, row_mask & k_ok[None, :],
            sx_n, sx_c, sx_d, sx_h, sx_w, D, H, W, PAD_MODE,
        )  # fmt: skip
        w_row = wide(ci, USE_INT64) * sw_i + td * sw_d + th * sw_h + tw * sw_w
        b = tl.load(
            w_ptr + w_tile + w_row[:, None] + w_col,
            mask=k_ok[:, None] & co_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)

    if HAS_BIAS:
        b_off = wide(rd, USE_INT64) * sb_td + rh * sb_th + rw * sb_tw + co_off * sb_o
        acc += tl.load(b_ptr + b_off, mask=co_ok, other=0.0).to(ACC_DTYPE)[None, :]
    y_row = n * sy_n + od * sy_d + oh * sy_h + ow * sy_w
    tl.store(
        y_ptr + y_row[:, None] + (co_off * sy_c)[None, :],
        acc.to(y_ptr.dtype.element_ty),
        mask=row_mask & co_ok[None, :],
    )


@triton.jit
def _local_conv_bwd_input_kernel(
    go_ptr, w_ptr, gi_ptr,
    N, C_IN, C_OUT, GROUPS,
    D, H, W, OD, OH, OW, KD, KH, KW, TD, TH, TW, PHD, PHH, PHW,
    STRIDE_D, STRIDE_H, STRIDE_W, PAD_D, PAD_H, PAD_W, DIL_D, DIL_H, DIL_W,
    TSTEP_D, TSTEP_H, TSTEP_W, OSTEP_D, OSTEP_H, OSTEP_W,
    sgo_n, sgo_c, sgo_d, sgo_h, sgo_w,
    sw_td, sw_th, sw_tw, sw_o, sw_i, sw_d, sw_h, sw_w,
    sgi_n, sgi_c, sgi_d, sgi_h, sgi_w,
    USE_INT64: tl.constexpr, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    GROUP_M: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """grad_in of a zero-padded convolution, one phase per program row.

    Input position ``i = ph + j·stride·T`` (per dim) meets tap ``k`` at output position
    ``o = (ph + padding - k·dilation)/stride + j·T`` when that division is exact: the same tile
    ``o mod T`` for every ``j``, so the phase is a dense GEMM. Rows = N·(positions of the
    phase), cols = C_IN, reduction = (the taps that reach the phase, C_OUT): per dim every
    ``TSTEP``-th tap from the phase's first (``phase_taps``; ``TSTEP = stride / gcd(stride,
    dilation)``, ``OSTEP = dilation / gcd``), so a stride-s layer sums about 1/s of the taps
    per dim, not all of them masked.
    Programs (``_program``): phases × groups GEMMs of the largest phase's row tiles and C_IN
    column tiles; the phase counts ``PH = min(stride·T, size)`` per dim leave out empty phases,
    and every input element lies in exactly one phase (zeros where no tap reaches).
    """
    per_d, per_h, per_w = STRIDE_D * TD, STRIDE_H * TH, STRIDE_W * TW
    # Phase 0 is the largest along every dim: it sets the row tiles of every phase.
    positions = wide(N, USE_INT64) * tl.cdiv(D, per_d) * tl.cdiv(H, per_h) * tl.cdiv(W, per_w)
    row_tiles = tl.cdiv(positions, BLOCK_M)
    phase, group, tile_m, tile_n = _program(row_tiles, tl.cdiv(C_IN, BLOCK_N), GROUPS, GROUP_M)
    _, ph_d, ph_h, ph_w = unflatten(phase, PHD, PHH, PHW)
    J_D = (D - ph_d + per_d - 1) // per_d
    J_H = (H - ph_h + per_h - 1) // per_h
    J_W = (W - ph_w + per_w - 1) // per_w
    rows = wide(tile_m, USE_INT64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < wide(N, USE_INT64) * J_D * J_H * J_W
    n, jd, jh, jw = unflatten(rows, J_D, J_H, J_W)
    ci = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ci_ok = ci < C_IN
    ci_off = wide(group * C_IN + ci, USE_INT64)
    w_col = (wide(ci, USE_INT64) * sw_i)[None, :]  # the weight's in-channel index is per group

    k0_d, nt_d, q0_d = phase_taps(ph_d, STRIDE_D, PAD_D, DIL_D, KD, TSTEP_D)
    k0_h, nt_h, q0_h = phase_taps(ph_h, STRIDE_H, PAD_H, DIL_H, KH, TSTEP_H)
    k0_w, nt_w, q0_w = phase_taps(ph_w, STRIDE_W, PAD_W, DIL_W, KW, TSTEP_W)
    reduction = nt_d * nt_h * nt_w * C_OUT

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for k0 in range(0, reduction, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        t_d, t_h, t_w, co = unflatten(k, nt_h, nt_w, C_OUT)
        hits = k < reduction
        td, th, tw = k0_d + t_d * TSTEP_D, k0_h + t_h * TSTEP_H, k0_w + t_w * TSTEP_W
        # (ph + padding - k·dilation) / stride per dim for this tap: exact, as it reaches.
        bd, bh, bw = q0_d - t_d * OSTEP_D, q0_h - t_h * OSTEP_H, q0_w - t_w * OSTEP_W
        od = bd[None, :] + (jd * TD)[:, None]
        oh = bh[None, :] + (jh * TH)[:, None]
        ow = bw[None, :] + (jw * TW)[:, None]
        inside = (od >= 0) & (od < OD) & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW)
        co_group = wide(group * C_OUT + co, USE_INT64)
        a = tl.load(
            go_ptr + n[:, None] * sgo_n + (co_group * sgo_c)[None, :]
            + od * sgo_d + oh * sgo_h + ow * sgo_w,
            mask=row_ok[:, None] & hits[None, :] & inside,
            other=0.0,
        )  # fmt: skip
        w_row = (
            wide(_floor_mod(bd, TD), USE_INT64) * sw_td
            + _floor_mod(bh, TH) * sw_th
            + _floor_mod(bw, TW) * sw_tw
            + co_group * sw_o
            + td * sw_d
            + th * sw_h
            + tw * sw_w
        )
        b = tl.load(w_ptr + w_row[:, None] + w_col, mask=hits[:, None] & ci_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)

    gi_row = n * sgi_n + (ph_d + jd * per_d) * sgi_d + (ph_h + jh * per_h) * sgi_h
    gi_row += (ph_w + jw * per_w) * sgi_w
    tl.store(
        gi_ptr + gi_row[:, None] + (ci_off * sgi_c)[None, :],
        acc.to(gi_ptr.dtype.element_ty),
        mask=row_ok[:, None] & ci_ok[None, :],
    )


@triton.jit(do_not_specialize=["Q_QD", "Q_QH", "Q_QW"])
def _local_conv_bwd_weight_kernel(
    x_ptr, go_ptr, gw_ptr,
    R, C_IN, C_OUT, GROUPS,
    D, H, W, OD, OH, OW, KD, KH, KW, TD, TH, TW, QD, QH, QW, Q_QD, Q_QH, Q_QW,
    STRIDE_D, STRIDE_H, STRIDE_W, PAD_D, PAD_H, PAD_W, DIL_D, DIL_H, DIL_W,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sgo_n, sgo_c, sgo_d, sgo_h, sgo_w,
    sgw_td, sgw_th, sgw_tw, sgw_o, sgw_i, sgw_d, sgw_h, sgw_w,
    PAD_MODE: tl.constexpr, USE_INT64: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, GROUP_M: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """gw[r, g·C_OUT + co, ci, tap] =
    Σ_{n, q} grad_out[n, g·C_OUT + co, o] · x[n, g·C_IN + ci, o·stride - padding + tap·dilation]
    over the positions ``o = q·T + r`` of tile ``r`` (``R = N·Q`` reduction rows).

    Rows = C_OUT, cols = (taps, C_IN), reduction over (n, q) in a fixed order. A tile no output
    position uses gets zeros. Programs (``_program``): tiles × groups GEMMs of C_OUT row tiles
    and column tiles. Each step splits its positions by ``Q_QD``, ``Q_QH``, ``Q_QW``
    (``fast_divisor``).
    """
    tile, group, tile_m, tile_n = _program(
        tl.cdiv(C_OUT, BLOCK_M), tl.cdiv(KD * KH * KW * C_IN, BLOCK_N), GROUPS, GROUP_M
    )
    _, rd, rh, rw = unflatten(tile, TD, TH, TW)
    co = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    co_ok = co < C_OUT
    co_off = wide(group * C_OUT + co, USE_INT64)
    cols = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < KD * KH * KW * C_IN
    td, th, tw, ci = unflatten(cols, KH, KW, C_IN)
    ci_group = wide(group * C_IN + ci, USE_INT64)[None, :]
    go_row = (co_off * sgo_c)[:, None]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for p0 in range(0, R, BLOCK_K):
        pos = wide(p0 + tl.arange(0, BLOCK_K), USE_INT64)
        n, qd, qh, qw = unflatten_fast(pos, QD, QH, QW, Q_QD, Q_QH, Q_QW, USE_INT64)
        od, oh, ow = qd * TD + rd, qh * TH + rh, qw * TW + rw
        pos_ok = (pos < R) & (od < OD) & (oh < OH) & (ow < OW)
        go_col = n * sgo_n + od * sgo_d + oh * sgo_h + ow * sgo_w
        a = tl.load(
            go_ptr + go_row + go_col[None, :], mask=co_ok[:, None] & pos_ok[None, :], other=0.0
        )
        b = _load_window(
            x_ptr, n[:, None], ci_group,
            (od * STRIDE_D - PAD_D)[:, None] + td * DIL_D,
            (oh * STRIDE_H - PAD_H)[:, None] + th * DIL_H,
            (ow * STRIDE_W - PAD_W)[:, None] + tw * DIL_W,
            pos_ok[:, None] & col_ok[None, :],
            sx_n, sx_c, sx_d, sx_h, sx_w, D, H, W, PAD_MODE,
        )  # fmt: skip
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)

    gw_tile = wide(rd, USE_INT64) * sgw_td + rh * sgw_th + rw * sgw_tw
    gw_col = wide(ci, USE_INT64) * sgw_i + td * sgw_d + th * sgw_h + tw * sgw_w
    tl.store(
        gw_ptr + gw_tile + (co_off * sgw_o)[:, None] + gw_col[None, :],
        acc.to(gw_ptr.dtype.element_ty),
        mask=co_ok[:, None] & col_ok[None, :],
    )


def _tuner(name: str, kernel, output: str) -> Tuner:
    return Tuner(name, kernel, configs(_TABLE), shared_estimate, outputs=(output,))


_FWD = _tuner("local_conv_fwd", _local_conv_fwd_kernel, "y_ptr")
_BWD_INPUT = _tuner("local_conv_bwd_input", _local_conv_bwd_input_kernel, "gi_ptr")
_BWD_WEIGHT = _tuner("local_conv_bwd_weight", _local_conv_bwd_weight_kernel, "gw_ptr")

# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _weight_8d(w: torch.Tensor, nd: int) -> torch.Tensor:
    """``(*tiles, C_out, C_in/groups, *kernel)`` with ``nd`` spatial dims viewed as ``(TD, TH,
    TW, C_out, C_in/groups, KD, KH, KW)``."""
    for _ in range(3 - nd):
        w = w.unsqueeze(0)
    for _ in range(3 - nd):
        w = w.unsqueeze(5)
    return w


def _bias_4d(b: torch.Tensor, nd: int) -> torch.Tensor:
    """``(*tiles, C_out)`` viewed as ``(TD, TH, TW, C_out)``."""
    for _ in range(3 - nd):
        b = b.unsqueeze(0)
    return b


def _per_tile(out, tiles) -> list[int]:
    """Positions per tile and dim, ``ceil(out / tiles)``."""
    return [triton.cdiv(o, t) for o, t in zip(out, tiles)]


def local_conv_forward(
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
) -> None:
    """``out = local_conv(x, w) + bias`` into the preallocated ``out`` (N, C_out, *O).

    ``x`` (N, C_in, *S), ``w`` (*tiles, C_out, C_in/groups, *K), ``bias`` (*tiles, C_out); any
    strides. ``padding`` is the padding before each dim (after: implied by ``out``'s size);
    out-of-range reads follow ``pad_mode``.
    """
    check_device(x, w, bias, out)
    nd = x.dim() - 2
    x5, w8, y5 = as_5d(x), _weight_8d(w, nd), as_5d(out)
    b4 = None if bias is None else _bias_4d(bias, nd)
    tiles = w8.shape[:3]
    cg_in, cg_out = x5.shape[1] // groups, y5.shape[1] // groups
    per_tile = _per_tile(y5.shape[2:], tiles)
    m = y5.shape[0] * per_tile[0] * per_tile[1] * per_tile[2]
    if y5.numel() == 0:
        return

    geometry = pack_geometry((stride, 1), (padding, 0), (dilation, 1))
    use_int64 = needs_int64(x, w, bias, out)
    precision = dot_precision(x.dtype, allow_tf32)
    key = (x.dtype, _layout_class(x5, w8, y5), tuple(tiles), tuple(w8.shape[5:]), geometry,
           pad_mode, groups, cg_in, cg_out, bucket(m), use_int64, precision, bias is not None)  # fmt: skip

    _FWD.launch(
        key,
        _grid(_count(tiles), m, cg_out, groups),
        (
            x5, w8, w8 if b4 is None else b4, y5,
            m, cg_in, cg_out, groups,
            *x5.shape[2:], *y5.shape[2:], *w8.shape[5:], *tiles, *per_tile, *geometry,
            *x5.stride(), *w8.stride(), *y5.stride(),
            *(b4.stride() if b4 is not None else (0, 0, 0, 0)),
        ),
        dict(
            HAS_BIAS=bias is not None, PAD_MODE=PAD_MODES[pad_mode], USE_INT64=use_int64,
            PRECISION=precision, ACC_DTYPE=acc_dtype(x.dtype), GROUP_M=GROUP_M,
        ),
    )  # fmt: skip


def local_conv_backward_input(
    grad_out: torch.Tensor,
    w: torch.Tensor,
    grad_in: torch.Tensor,
    *,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    allow_tf32: bool,
) -> None:
    """Gradient of a zero-padded local convolution w.r.t. its input, into ``grad_in`` (N, C_in,
    *I); writes every element (zeros where no tap reaches). Padding modes: the caller asks for
    the gradient of the padded input (``padding`` 0) and folds it onto its sources."""
    check_device(grad_out, w, grad_in)
    nd = grad_in.dim() - 2
    go5, w8, gi5 = as_5d(grad_out), _weight_8d(w, nd), as_5d(grad_in)
    tiles = w8.shape[:3]
    n_batch, c_in = gi5.shape[:2]
    cg_in, cg_out = c_in // groups, w8.shape[3] // groups
    if gi5.numel() == 0:
        return
    strides = [1] * (3 - nd) + list(stride)
    periods = [s * t for s, t in zip(strides, tiles)]
    phases = [min(p, size) for p, size in zip(periods, gi5.shape[2:])]
    m_max = n_batch * _count(_per_tile(gi5.shape[2:], periods))

    geometry = pack_geometry((stride, 1), (padding, 0), (dilation, 1))
    use_int64 = needs_int64(grad_out, w, grad_in)
    precision = dot_precision(grad_out.dtype, allow_tf32)
    key = (grad_out.dtype, _layout_class(go5, w8, gi5), tuple(tiles), tuple(w8.shape[5:]),
           geometry, groups, cg_in, cg_out, bucket(m_max), use_int64, precision)  # fmt: skip

    _BWD_INPUT.launch(
        key,
        _grid(_count(phases), m_max, cg_in, groups),
        (
            go5, w8, gi5,
            n_batch, cg_in, cg_out, groups,
            *gi5.shape[2:], *go5.shape[2:], *w8.shape[5:], *tiles, *phases,
            *geometry, *phase_steps(stride, dilation),
            *go5.stride(), *w8.stride(), *gi5.stride(),
        ),
        dict(
            USE_INT64=use_int64, PRECISION=precision, ACC_DTYPE=acc_dtype(grad_out.dtype),
            GROUP_M=GROUP_M,
        ),
    )  # fmt: skip


def local_conv_backward_weight(
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
) -> None:
    """Gradient of a local convolution w.r.t. its weight, into ``grad_w`` (*tiles, C_out,
    C_in/groups, *K); reads ``x`` through ``pad_mode`` like the forward. Deterministic."""
    check_device(x, grad_out, grad_w)
    nd = x.dim() - 2
    x5, go5, gw8 = as_5d(x), as_5d(grad_out), _weight_8d(grad_w, nd)
    tiles, c_out, cg_in = gw8.shape[:3], gw8.shape[3], gw8.shape[4]
    cg_out = c_out // groups
    if gw8.numel() == 0:
        return
    per_tile = _per_tile(go5.shape[2:], tiles)
    reduction = go5.shape[0] * _count(per_tile)
    cols = _count(gw8.shape[5:]) * cg_in

    geometry = pack_geometry((stride, 1), (padding, 0), (dilation, 1))
    # (a step's positions reach a chunk past the last: quotient's operands stay below 2**31)
    use_int64 = needs_int64(x, grad_out, grad_w) or reduction + _BLOCK_K >= INT32_LIMIT
    precision = dot_precision(x.dtype, allow_tf32)
    key = (x.dtype, _layout_class(x5, go5, gw8), tuple(tiles), tuple(gw8.shape[5:]), geometry,
           pad_mode, groups, cg_in, cg_out, bucket(reduction), use_int64, precision)  # fmt: skip

    _BWD_WEIGHT.launch(
        key,
        _grid(_count(tiles), cg_out, cols, groups),
        (
            x5, go5, gw8,
            reduction, cg_in, cg_out, groups,
            *x5.shape[2:], *go5.shape[2:], *gw8.shape[5:], *tiles, *per_tile,
            *map(fast_divisor, per_tile), *geometry,
            *x5.stride(), *go5.stride(), *gw8.stride(),
        ),
        dict(
            PAD_MODE=PAD_MODES[pad_mode], USE_INT64=use_int64, PRECISION=precision,
            ACC_DTYPE=acc_dtype(x.dtype), GROUP_M=GROUP_M,
        ),
    )  # fmt: skip


def _grid(gemms: int, rows: int, cols: int, groups: int) -> Callable[[Config], tuple[int, ...]]:
    """The 1-d launch grid of ``gemms`` GEMMs (tiles or phases) of ``rows`` × ``cols`` per group
    for a config's tile (the kernels split it: ``_program``)."""
    return lambda c: flat_grid(
        triton.cdiv(rows, c["BLOCK_M"]), triton.cdiv(cols, c["BLOCK_N"]), gemms * groups
    )


def _layout_class(activation: torch.Tensor, w8: torch.Tensor, other: torch.Tensor) -> tuple:
    """Which operands have unit channel stride (the weight's: its input channels): what decides
    the loads' widths, so a tuning key's part."""
    return (activation.stride(1) == 1, w8.stride(4) == 1, other.stride(1) == 1)


def _count(sizes) -> int:
    """The number of elements of a grid of ``sizes``."""
    count = 1
    for s in sizes:
        count *= int(s)
    return count
