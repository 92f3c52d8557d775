"""1×1 stride-1 convolutions as plain GEMMs: no tap loop, no padding masks, no index splits.

A 1×1 convolution with stride 1 and no padding maps each position to itself, so with positions
as rows (``n`` and the flattened spatial index ``p``) and channels as columns every operand is a
plain strided matrix, per group:

* forward        y[(n, p), co] = Σ_ci x[(n, p), ci] · w[co, ci]   (+ bias[co])
* grad-input     gi[(n, p), ci] = Σ_co go[(n, p), co] · w[co, ci]  (+ bias[ci], then an
                 activation: a transposed convolution's, fused)
* grad-weight    gw[co, ci] = Σ_(n, p) go[(n, p), co] · x[(n, p), ci]   (split-K, deterministic)

The first two are one kernel (``_conv1x1_kernel``: A rows are positions); grad-weight reduces
over positions (``_conv1x1_bwd_weight_kernel``). A position's offset is ``n·s_n + p·s_p``, so this
path serves every tensor whose spatial dims collapse into one stride (contiguous, channels-last
and their batch-sliced views); when ``s_n == P·s_p`` for every operand (``FLAT_ROWS``) the
position index is not even split. The launchers return ``False`` for anything else (the caller
then runs the implicit GEMM).

NCHW operands (unit position stride) load and store runs of positions as vectors. Triton knows
of an integer argument only whether 16 divides it, so each such operand comes with the power of
two dividing its positions per image and its batch and channel strides (``_gemm_common.flat_alignment``),
and the kernels rebuild those values as visible multiples of it (``_gemm_common.aligned_rows``): 16-byte
vectors (bf16) where 8 divides the positions per image, 8-byte ones where 4 does (14×14).
"""

from __future__ import annotations

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
from ._common import acc_dtype, as_5d, cdiv, check_device, dot_precision, needs_int64
from ._gemm_common import (
    GEMM_TABLE,
    GEMM_WEIGHT_TABLE,
    GROUP_M,
    MAXOUT_GEMM_TABLE,
    NARROW_GEMM_TABLE,
    NARROW_WEIGHT_TABLE,
    NOMINAL_TILE,
    SUM_COLUMNS,
    SUM_STAGES,
    WEIGHT_BLOCK_K,
    aligned_rows,
    bias_target,
    channel_sums,
    choose_split,
    configs,
    first_column,
    flat_alignment,
    flat_grid,
    narrow,
    position_strides,
    shared_estimate,
    split_workspace,
)
from ._indexing import grouped_tile, wide
from ._tuning import Config, Tuner, bucket
from .maxout import maxout_epilogue, running_max

__all__ = [
    "conv1x1_backward_input",
    "conv1x1_backward_weight",
    "conv1x1_forward",
    "is_pointwise",
]

# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _position_offset(i, P, s_n, s_p, FLAT_ROWS: tl.constexpr):
    """Offset of flat position ``i`` over ``N·P``: ``(i // P)·s_n + (i % P)·s_p``."""
    return i * s_p if FLAT_ROWS else (i // P) * s_n + (i % P) * s_p


@triton.jit
def _conv1x1_kernel(
    a_ptr, b_ptr, bias_ptr, c_ptr, z_ptr,
    M, N, K, P,
    sa_n, sa_p, sa_k, sb_k, sb_n, sc_n, sc_p, sc_c, sbias,
    ga, gb,
    aw_ptr, saw, ACT_ALPHA, ACT_ALPHA_LO,
    win_ptr,
    HAS_BIAS: tl.constexpr, FLAT_ROWS: tl.constexpr, USE_INT64: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    ACT: tl.constexpr, PIECES: tl.constexpr, A_ALIGN: tl.constexpr, C_ALIGN: tl.constexpr,
):  # fmt: skip
    """c[m, group·N + j] = act(Σ_k a[m, group·K + k] · b[group·gb + k, j] (+ bias[group·N + j]))
    (``act``: the epilogue activation of the forward or of a transposed convolution, its PReLU
    weight indexed by the column's channel ``group·N + j``), and what ``act`` is applied to
    into ``z`` (``c``'s offsets) unless ``z_ptr`` is None.

    Rows ``m`` run over ``M = batch·P`` positions; ``a`` and ``c`` columns are channels (strides
    ``sa_k``, ``sc_c``); ``b`` is the weight as a (K × N) matrix per group (offset ``ga`` /
    ``gb`` elements per group for ``a`` / ``b``). Grid: groups × row tiles × column tiles, flat.

    Maxout (forward only, ``PIECES`` > 1, ``ACT`` none): column ``j`` is a unit, the max over
    ``k < PIECES`` of the GEMM with ``b``'s column (and bias) ``j·PIECES + k`` — one GEMM per
    piece, a running max in registers — and ``win`` (int64, ``c``'s offsets) the winning ``k``.

    ``A_ALIGN`` / ``C_ALIGN`` > 1: ``a`` / ``c`` is NCHW and that power of two divides ``P``
    and its batch and channel strides (``flat_alignment``): rows load or store as vectors.
    """
    M, P, sa_n, sa_k = aligned_rows(M, P, sa_n, sa_k, A_ALIGN)
    M, P, sc_n, sc_c = aligned_rows(M, P, sc_n, sc_c, C_ALIGN)
    group, tile_m, tile_n = grouped_tile(
        tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M
    )
    group = wide(group, USE_INT64)
    rows = wide(tile_m, USE_INT64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < M
    col_ok = cols < N
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + group * ga + _position_offset(rows, P, sa_n, sa_p, FLAT_ROWS)[:, None]
    a_ptrs += wide(ks, USE_INT64)[None, :] * sa_k
    b_ptrs = b_ptr + group * gb + wide(ks, USE_INT64)[:, None] * sb_k

    c_cols = wide(group * N + cols, USE_INT64)
    if PIECES == 1:
        acc = _gemm_tile(
            a_ptrs, b_ptrs + wide(cols, USE_INT64)[None, :] * sb_n, bias_ptr + c_cols * sbias,
            row_ok, col_ok, ks, K, sa_k, sb_k,
            HAS_BIAS, PRECISION, ACC_DTYPE, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
    else:
        acc = tl.full((BLOCK_M, BLOCK_N), float("-inf"), ACC_DTYPE)
        won = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for k in range(0, PIECES):
            z = _gemm_tile(
                a_ptrs, b_ptrs + wide(cols * PIECES + k, USE_INT64)[None, :] * sb_n,
                bias_ptr + (c_cols * PIECES + k) * sbias,
                row_ok, col_ok, ks, K, sa_k, sb_k,
                HAS_BIAS, PRECISION, ACC_DTYPE, BLOCK_M, BLOCK_N, BLOCK_K,
            )  # fmt: skip
            # Compared as stored (rounded to the output's dtype), as a maxout of the stored
            # convolution compares: ties there keep the first piece here too.
            z = z.to(c_ptr.dtype.element_ty).to(ACC_DTYPE)
            acc, won = running_max(acc, won, z, k)
    c_rows = _position_offset(rows, P, sc_n, sc_p, FLAT_ROWS)
    c_offs = c_rows[:, None] + (c_cols * sc_c)[None, :]
    c_mask = row_ok[:, None] & col_ok[None, :]
    if z_ptr is not None:
        acc = stored_pre_activation(acc, z_ptr + c_offs, c_mask)
    acc = activate(
        acc, aw_ptr, (c_cols * saw)[None, :], col_ok[None, :], ACT_ALPHA, ACT_ALPHA_LO, ACT
    )
    tl.store(c_ptr + c_offs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)
    if PIECES > 1:
        tl.store(win_ptr + c_offs, won.to(tl.int64), mask=c_mask)


@triton.jit
def _gemm_tile(
    a_ptrs, b_ptrs, bias_ptrs, row_ok, col_ok, ks, K, sa_k, sb_k,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """``a @ b`` over the whole reduction for one tile (``a_ptrs``, ``b_ptrs``: its first
    ``BLOCK_K`` slice), plus the bias at ``bias_ptrs`` (one per column) when ``HAS_BIAS``."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for k0 in range(0, K, BLOCK_K):
        k_ok = ks < K - k0
        a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        a_ptrs += BLOCK_K * sa_k
        b_ptrs += BLOCK_K * sb_k
    if HAS_BIAS:
        acc += tl.load(bias_ptrs, mask=col_ok, other=0.0).to(ACC_DTYPE)[None, :]
    return acc


@triton.jit
def _conv1x1_bwd_weight_kernel(
    go_ptr, x_ptr, gw_ptr, gb_ptr,
    M, P_SPLIT, N_SPLIT, C_IN, C_OUT, P,
    sgo_n, sgo_p, sgo_c, sx_n, sx_p, sx_c, sgw_split, sgw_o, sgw_i, sgb_split,
    FLAT_ROWS: tl.constexpr, USE_INT64: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr, BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, GO_ALIGN: tl.constexpr, X_ALIGN: tl.constexpr,
):  # fmt: skip
    """gw[split, group·C_OUT + co, ci] = Σ_{positions of split} go[·, group·C_OUT + co] ·
    x[·, group·C_IN + ci], the positions ``[split·P_SPLIT, …)`` of ``M = batch·P``; with
    ``BIAS``, also gb[split, group·C_OUT + co] = Σ go[·, group·C_OUT + co] (``channel_sums``),
    by a column tile of its own after the weight's (see ``_conv_bwd_weight_kernel``).

    Grid: groups · N_SPLIT × C_OUT tiles × (C_IN tiles + BIAS), flat. The reduction runs in BLOCK_K
    chunks from the split's start whatever the tiling, and every program writes its own slot:
    no atomics, bitwise repeatable. ``GO_ALIGN`` / ``X_ALIGN``: as ``_conv1x1_kernel``'s
    alignments, for ``go`` and ``x`` (``P_SPLIT`` is a multiple of 16).
    """
    M, P, sgo_n, sgo_c = aligned_rows(M, P, sgo_n, sgo_c, GO_ALIGN)
    M, P, sx_n, sx_c = aligned_rows(M, P, sx_n, sx_c, X_ALIGN)
    n_cols = tl.cdiv(C_IN, BLOCK_N)
    batch, tile_m, tile_n = grouped_tile(
        tl.program_id(0), tl.cdiv(C_OUT, BLOCK_M), n_cols + (1 if BIAS else 0), GROUP_M
    )
    group = batch // N_SPLIT
    split = batch % N_SPLIT
    co = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    co_ok = co < C_OUT
    co_off = wide(group * C_OUT + co, USE_INT64)
    go_col = (co_off * sgo_c)[:, None]
    start = wide(split, USE_INT64) * P_SPLIT
    end = tl.minimum(start + P_SPLIT, M)

    if BIAS and tile_n == n_cols:  # the bias's column tile: grad_out's chunks alone, summed
        sums = tl.zeros((BLOCK_M, SUM_COLUMNS), dtype=ACC_DTYPE)
        for p0 in tl.range(start, end, BLOCK_K, num_stages=SUM_STAGES):
            pos = p0 + tl.arange(0, BLOCK_K)
            a = tl.load(
                go_ptr + go_col + _position_offset(pos, P, sgo_n, sgo_p, FLAT_ROWS)[None, :],
                mask=co_ok[:, None] & (pos < end)[None, :],
                other=0.0,
            )
            sums = channel_sums(a, sums, PRECISION, ACC_DTYPE)
        gb = gb_ptr + wide(split, USE_INT64) * sgb_split + co_off
        tl.store(gb, first_column(sums).to(gb_ptr.dtype.element_ty), mask=co_ok)
    else:
        ci = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
        ci_ok = ci < C_IN
        x_col = (wide(group * C_IN + ci, USE_INT64) * sx_c)[None, :]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
        for p0 in range(start, end, BLOCK_K):
            pos = p0 + tl.arange(0, BLOCK_K)
            pos_ok = pos < end
            a = tl.load(
                go_ptr + go_col + _position_offset(pos, P, sgo_n, sgo_p, FLAT_ROWS)[None, :],
                mask=co_ok[:, None] & pos_ok[None, :],
                other=0.0,
            )
            b = tl.load(
                x_ptr + _position_offset(pos, P, sx_n, sx_p, FLAT_ROWS)[:, None] + x_col,
                mask=pos_ok[:, None] & ci_ok[None, :],
                other=0.0,
            )
            acc = tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)

        gw_rows = wide(split, USE_INT64) * sgw_split + co_off * sgw_o
        tl.store(
            gw_ptr + gw_rows[:, None] + (wide(ci, USE_INT64) * sgw_i)[None, :],
            acc.to(gw_ptr.dtype.element_ty),
            mask=co_ok[:, None] & ci_ok[None, :],
        )


# ``{narrow: tuner}``: narrow when the tiles' channel side is a narrow group's (at most 32
# channels, ``_gemm_common.narrow``): 16- and 32-wide tiles then.
_GEMM = {
    thin: Tuner(
        f"conv1x1{'_narrow' if thin else ''}",
        _conv1x1_kernel,
        configs(NARROW_GEMM_TABLE if thin else GEMM_TABLE),
        shared_estimate,
    )
    for thin in (False, True)
}
# The forward with a fused maxout: smaller tiles (see ``_gemm_common``).
_GEMM_MAXOUT = Tuner("conv1x1_maxout", _conv1x1_kernel, configs(MAXOUT_GEMM_TABLE), shared_estimate)
_BWD_WEIGHT = {
    thin: Tuner(
        f"conv1x1_bwd_weight{'_narrow' if thin else ''}",
        _conv1x1_bwd_weight_kernel,
        configs(NARROW_WEIGHT_TABLE if thin else GEMM_WEIGHT_TABLE, WEIGHT_BLOCK_K),
        shared_estimate,
    )
    for thin in (False, True)
}

# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def is_pointwise(kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int]) -> bool:
    """Whether a convolution is 1×1 with stride 1 and no padding (each position maps to itself;
    the padding after is then 0 as well, since output and input sizes agree)."""
    return all(k == 1 for k in kernel_size) and all(s == 1 for s in stride) and not any(padding)


def _rows(*tensors: torch.Tensor) -> tuple[list[tuple[int, int]], bool] | None:
    """Position strides of every operand whose rows are positions, and whether rows are flat
    (``s_n == P·s_p`` for all of them); ``None`` if some operand's positions do not collapse."""
    if any(t.shape[2:] != tensors[0].shape[2:] for t in tensors):
        return None  # padding after the input (a transposed convolution's crop or extension)
    found = [position_strides(t) for t in tensors]
    if any(f is None for f in found):
        return None
    p = tensors[0].shape[2] * tensors[0].shape[3] * tensors[0].shape[4]
    return found, all(s_n == p * s_p for s_n, s_p in found)


# An epilogue, ``(activation, alpha, act_weight, z5)`` (see ``_activation``; ``z5``: the
# 5-d pre-activation target or None): none.
_NO_EPILOGUE = (None, 0.0, None, None)


def _launch_gemm(
    a5, w5, bias, c5, *, transpose_w: bool, groups: int, allow_tf32: bool, epilogue=_NO_EPILOGUE,
    pieces: int = 1, win5=None,
) -> bool:  # fmt: skip
    rows = _rows(a5, c5)
    if rows is None:
        return False
    ((sa_n, sa_p), (sc_n, sc_p)), flat_rows = rows
    n_batch, p = c5.shape[0], c5.shape[2] * c5.shape[3] * c5.shape[4]
    m, k, n = n_batch * p, a5.shape[1] // groups, c5.shape[1] // groups
    sw_o, sw_i = w5.stride(0), w5.stride(1)
    # Forward: b[k=ci, j=co] with group offset C_out/groups rows of w. Grad-input: b[k=co, j=ci].
    sb_k, sb_n = (sw_o, sw_i) if transpose_w else (sw_i, sw_o)
    g_rows = (k if transpose_w else n * pieces) * sw_o
    use_int64 = needs_int64(a5, w5, bias, c5)
    precision = dot_precision(a5.dtype, allow_tf32)
    alignments = flat_alignment(a5), flat_alignment(c5)
    key = (a5.dtype, (a5.stride(1) == 1, sb_n == 1, c5.stride(1) == 1), transpose_w, groups, k,
           n, bucket(m), flat_rows, alignments, use_int64, precision, epilogue[0],
           epilogue[3] is not None, pieces)  # fmt: skip

    def grid(c: Config) -> tuple[int]:
        return flat_grid(cdiv(m, c["BLOCK_M"]), cdiv(n, c["BLOCK_N"]), groups)

    (_GEMM[narrow(n)] if pieces == 1 else _GEMM_MAXOUT).launch(
        key,
        grid,
        (
            a5, w5, w5 if bias is None else bias, c5, epilogue[3],
            m, n, k, p,
            sa_n, sa_p, a5.stride(1), sb_k, sb_n, sc_n, sc_p, c5.stride(1),
            0 if bias is None else bias.stride(0),
            k * a5.stride(1), g_rows,
            *epilogue_args(*epilogue[:3], w5),
            c5 if win5 is None else win5,
        ),
        dict(
            HAS_BIAS=bias is not None, FLAT_ROWS=flat_rows, USE_INT64=use_int64,
            PRECISION=precision, ACC_DTYPE=acc_dtype(a5.dtype), GROUP_M=GROUP_M,
            ACT=ACTIVATIONS[epilogue[0]], PIECES=pieces, A_ALIGN=alignments[0],
            C_ALIGN=alignments[1],
        ),
    )  # fmt: skip
    return True


def conv1x1_forward(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    *,
    groups: int,
    allow_tf32: bool,
    activation: str | None = None,
    alpha: float = 0.0,
    act_weight: torch.Tensor | None = None,
    pre_activation: torch.Tensor | None = None,
    pieces: int = 1,
    winner: torch.Tensor | None = None,
) -> bool:
    """``out = act(conv1x1(x, w) + bias)`` for a pointwise convolution (:func:`is_pointwise`;
    ``activation``, ``alpha``, ``act_weight``, ``pre_activation``: the epilogue's, see
    ``conv_gemm.gemm_conv_forward``). With
    ``pieces`` > 1, a fused maxout as in ``conv_gemm.gemm_conv_forward`` (``winner``: int64,
    ``out``'s shape and strides).

    Returns ``False``, launching nothing, when an operand's spatial dims do not collapse into
    one stride (then the implicit GEMM serves it)."""
    check_device(x, w, bias, out, act_weight, winner, pre_activation)
    win = maxout_epilogue(pieces, winner, out, activation)
    z = pre_activation_target("conv1x1_forward", pre_activation, out, activation)
    return _launch_gemm(
        as_5d(x), as_5d(w), bias, as_5d(out),
        transpose_w=False, groups=groups, allow_tf32=allow_tf32,
        epilogue=(activation, alpha, act_weight, z), pieces=pieces, win5=as_5d(win),
    )  # fmt: skip


def conv1x1_backward_input(
    grad_out: torch.Tensor,
    w: torch.Tensor,
    grad_in: torch.Tensor,
    *,
    groups: int,
    allow_tf32: bool,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    alpha: float = 0.0,
    act_weight: torch.Tensor | None = None,
    pre_activation: torch.Tensor | None = None,
) -> bool:
    """``grad_in = act(conv1x1ᵀ(grad_out, w) + bias)`` (a pointwise transposed convolution;
    ``activation``, ``alpha``, ``act_weight``, ``pre_activation``: the epilogue's, as the
    forward's, the PReLU weight per channel of ``grad_in`` or one); ``False`` as in
    :func:`conv1x1_forward`."""
    check_device(grad_out, w, grad_in, bias, act_weight, pre_activation)
    z = pre_activation_target("conv1x1_backward_input", pre_activation, grad_in, activation)
    return _launch_gemm(
        as_5d(grad_out), as_5d(w), bias, as_5d(grad_in),
        transpose_w=True, groups=groups, allow_tf32=allow_tf32,
        epilogue=(activation, alpha, act_weight, z),
    )  # fmt: skip


def conv1x1_backward_weight(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    grad_w: torch.Tensor,
    *,
    groups: int,
    allow_tf32: bool,
    grad_bias: torch.Tensor | None = None,
) -> bool:
    """``grad_w = Σ_positions grad_out ⊗ x`` per group (and ``grad_bias = Σ_positions
    grad_out`` when given), split into a deterministic number of slices when the weight alone is
    too small to fill the GPU; ``False`` as in :func:`conv1x1_forward`."""
    check_device(x, grad_out, grad_w)
    x5, go5, gw5 = as_5d(x), as_5d(grad_out), as_5d(grad_w)
    rows = _rows(go5, x5)
    if rows is None:
        return False
    ((sgo_n, sgo_p), (sx_n, sx_p)), flat_rows = rows
    c_out, cg_in = gw5.shape[0], gw5.shape[1]
    cg_out = c_out // groups
    p = go5.shape[2] * go5.shape[3] * go5.shape[4]
    m = go5.shape[0] * p
    tiles = cdiv(cg_out, NOMINAL_TILE) * cdiv(cg_in, NOMINAL_TILE) * groups
    n_split = choose_split(tiles, m)
    target = gw5 if n_split == 1 else split_workspace(gw5, n_split)
    split_stride = 0 if n_split == 1 else target.stride(0)
    use_int64 = needs_int64(x, grad_out, grad_w, None if n_split == 1 else target)
    precision = dot_precision(x.dtype, allow_tf32)
    sums = bias_target(grad_bias, n_split)
    # Splits start at multiples of 16 positions: NCHW rows then load as 16-byte vectors (the
    # last splits may be short or empty: they add zeros).
    p_split = cdiv(cdiv(m, n_split), 16) * 16
    alignments = flat_alignment(go5), flat_alignment(x5)
    key = (x.dtype, (go5.stride(1) == 1, x5.stride(1) == 1, gw5.stride(1) == 1), groups, cg_in,
           cg_out, bucket(p_split), n_split, flat_rows, alignments, use_int64, precision,
           sums is not None)  # fmt: skip

    def grid(c: Config) -> tuple[int]:
        cols = cdiv(cg_in, c["BLOCK_N"]) + (sums is not None)  # (then the bias's column tile)
        return flat_grid(cdiv(cg_out, c["BLOCK_M"]), cols, groups * n_split)

    _BWD_WEIGHT[narrow(cg_in)].launch(
        key,
        grid,
        (
            go5, x5, target, target if sums is None else sums,
            m, p_split, n_split, cg_in, cg_out, p,
            sgo_n, sgo_p, go5.stride(1), sx_n, sx_p, x5.stride(1),
            split_stride, target.stride(-5), target.stride(-4),
            0 if sums is None else sums.stride(0),
        ),
        dict(
            FLAT_ROWS=flat_rows, USE_INT64=use_int64, PRECISION=precision,
            ACC_DTYPE=acc_dtype(x.dtype), BIAS=sums is not None, GROUP_M=GROUP_M,
            GO_ALIGN=alignments[0], X_ALIGN=alignments[1],
        ),
    )  # fmt: skip
    if n_split > 1:
        gw5.copy_(target.sum(0))
        if sums is not None:
            grad_bias.copy_(sums.sum(0))
    return True
