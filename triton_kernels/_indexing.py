"""Index arithmetic shared by the kernels: int64 widening, tile indices, flat-index splits and
padding modes applied to source coordinates.

A padded input is never materialised: a kernel computes the unpadded coordinate ``i`` it would
read (possibly outside ``[0, size)``) and maps it here, so reflect / replicate / circular padding
cost a few integer ops per load instead of a padded copy.

Tiles are 2-d, ``BLOCK_P`` flattened positions × ``BLOCK_C`` channels, shaped ``[BLOCK_P,
BLOCK_C]`` when channels are innermost (``CHANNELS_INNER``) and ``[BLOCK_C, BLOCK_P]``
otherwise.
"""

import triton
import triton.language as tl

from ._common import PAD_REFLECT, PAD_REPLICATE, PAD_ZEROS


@triton.jit
def wide(i, USE_INT64: tl.constexpr):
    """``i`` as int64 when ``USE_INT64`` (some tensor of the launch needs 64-bit offsets)."""
    if USE_INT64:
        i = i.to(tl.int64)
    return i


@triton.jit
def tile_indices(
    p_start, c_start, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    CHANNELS_INNER: tl.constexpr, USE_INT64: tl.constexpr,
):  # fmt: skip
    """Index tensors ``(p, c)`` of one tile, shaped to broadcast into the tile's 2-d shape.

    ``p`` indexes flattened positions from ``p_start``, ``c`` channels from ``c_start``; the
    innermost tile axis is the channel axis when ``CHANNELS_INNER``. Both are int64 with
    ``USE_INT64``.
    """
    p = tl.arange(0, BLOCK_P)
    c = tl.arange(0, BLOCK_C)
    if USE_INT64:
        p = p.to(tl.int64) + p_start.to(tl.int64)
        c = c.to(tl.int64) + c_start.to(tl.int64)
    else:
        p = p + p_start
        c = c + c_start
    if CHANNELS_INNER:
        return p[:, None], c[None, :]
    else:
        return p[None, :], c[:, None]


@triton.jit
def full_tile(
    value, dtype: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    CHANNELS_INNER: tl.constexpr,
):  # fmt: skip
    """A tile-shaped tensor filled with ``value``, in ``tile_indices``' orientation."""
    if CHANNELS_INNER:
        t = tl.full([BLOCK_P, BLOCK_C], value, dtype)
    else:
        t = tl.full([BLOCK_C, BLOCK_P], value, dtype)
    return t


@triton.jit
def unflatten(p, S0, S1, S2):
    """Split a flat index over sizes ``(·, S0, S1, S2)`` (``S2`` fastest) into ``(n, i0, i1, i2)``."""
    i2 = p % S2
    t = p // S2
    i1 = t % S1
    t = t // S1
    return t // S0, t % S0, i1, i2


@triton.jit
def quotient(x, divisor):
    """``x // d`` for ``0 <= x < 2**31``, ``divisor = _common.fast_divisor(d)``: a
    multiply-high, an add and a shift where ``//`` by a runtime value is a long instruction
    sequence (the sum stays below ``2**32`` because the high product is at most ``x``)."""
    multiplier = (divisor & 0xFFFFFFFF).to(tl.uint32)
    shift = (divisor >> 33).to(tl.uint32)
    xu = x.to(tl.uint32)
    return ((tl.umulhi(xu, multiplier) + xu) >> shift).to(tl.int32)


@triton.jit
def unflatten_fast(p, S0, S1, S2, Q0, Q1, Q2, USE_INT64: tl.constexpr):
    """:func:`unflatten` by :func:`quotient` (``Qi = fast_divisor(Si)``), for split indices in
    a loop; int64 indices (``USE_INT64``) divide as :func:`unflatten` does."""
    if USE_INT64:
        n, i0, i1, i2 = unflatten(p, S0, S1, S2)
    else:
        t2 = quotient(p, Q2)
        t1 = quotient(t2, Q1)
        n = quotient(t1, Q0)
        i0, i1, i2 = t1 - n * S0, t2 - t1 * S1, p - t2 * S2
    return n, i0, i1, i2


@triton.jit
def unflatten_rows(r, S0, S1, Q0, Q1, USE_INT64: tl.constexpr):
    """A flat row index over sizes ``(·, S0, S1)`` split into ``(n, i0, i1)`` as
    :func:`unflatten_fast` splits one over three sizes."""
    if USE_INT64:
        t = r // S1
        n, i0, i1 = t // S0, t % S0, r % S1
    else:
        t = quotient(r, Q1)
        n = quotient(t, Q0)
        i0, i1 = t - n * S0, r - t * S1
    return n, i0, i1


@triton.jit
def in_range(i, size):
    """``0 <= i < size`` as one comparison: ``i`` reinterpreted as unsigned, so that a negative
    one lies far past any size (Triton compares unsigned with signed as unsigned). The implicit
    GEMMs' zero-padded gathers test their coordinates so: in their sm_90 code, about a tenth
    fewer instructions per main-loop step
    (``benchmarks/results/compile-report/unsigned-bounds-sm_90.md``).

    One ``return``: Triton's compiler goes on past a ``return`` inside a compile-time ``if``,
    so an ``if`` returning early would compile the 32-bit cast of a 64-bit index too (and fail:
    the int64 offset path of every implicit GEMM did, while the interpreter ran it)."""
    unsigned = tl.uint64 if i.dtype.primitive_bitwidth == 64 else tl.uint32
    return i.to(unsigned, bitcast=True) < size


@triton.jit
def map_padded(i, size, PAD_MODE: tl.constexpr):
    """Map coordinate ``i`` of the padded input to ``(source index, in_bounds)``.

    ``PAD_MODE``: ``PAD_ZEROS`` (out-of-range reads are masked), ``PAD_REFLECT`` (edge not
    repeated), ``PAD_REPLICATE`` (clamp) or ``PAD_CIRCULAR`` (wrap). Reflect and circular assume
    the padding is smaller than ``size`` (reflect) or not larger than it (circular), which the
    argument checks guarantee.
    """
    if PAD_MODE == PAD_ZEROS:
        src = i
        ok = (i >= 0) & (i < size)
    elif PAD_MODE == PAD_REFLECT:
        src = tl.where(i < 0, -i, i)
        src = tl.where(src >= size, 2 * (size - 1) - src, src)
        ok = src == src
    elif PAD_MODE == PAD_REPLICATE:
        src = tl.minimum(tl.maximum(i, 0), size - 1)
        ok = src == src
    else:  # PAD_CIRCULAR
        src = tl.where(i < 0, i + size, i)
        src = tl.where(src >= size, src - size, src)
        ok = src == src
    return src, ok


@triton.jit
def grouped_tile(pid, TILES_M, TILES_N, GROUP_M: tl.constexpr):
    """``(batch, tile_m, tile_n)`` of program ``pid`` of a 1-d GEMM grid.

    The grid holds ``batches × TILES_M × TILES_N`` programs (a batch is a convolution group, a
    stride phase or a reduction split), batch-major. Inside a batch, runs of ``GROUP_M`` row
    tiles sweep the column tiles together, so the rows and columns they share are re-read from
    L2 instead of memory. One grid axis holds 2**31 - 1 programs, so the 65535-program limit of
    axes 1 and 2 never binds.
    """
    per_batch = TILES_M * TILES_N
    batch = pid // per_batch
    t = pid - batch * per_batch
    per_group = GROUP_M * TILES_N
    first_m = (t // per_group) * GROUP_M
    rows = tl.minimum(TILES_M - first_m, GROUP_M)
    in_group = t - (t // per_group) * per_group
    return batch, first_m + in_group % rows, in_group // rows


@triton.jit
def phase_taps(phase, STRIDE, PAD, DIL, K, TAP_STEP):
    """Taps of one dim that reach the input positions ``i = phase + j*STRIDE``.

    Tap k reaches ``i = o*STRIDE - PAD + k*DIL`` iff ``k*DIL ≡ phase + PAD (mod STRIDE)``; the
    solutions are ``k0 + t*TAP_STEP`` (``TAP_STEP = STRIDE / gcd(STRIDE, DIL)``). Returns
    ``(k0, count in [0, K), q0)`` with ``o = j + q0 - t*(DIL / gcd)`` for the t-th tap.
    """
    r = (phase + PAD) % STRIDE
    k0 = phase * 0 + K  # "none" (a tensor, so the loop-carried type is stable)
    for k in range(0, TAP_STEP):  # period TAP_STEP ≤ STRIDE: at most one solution in here
        k0 = tl.where((k * DIL) % STRIDE == r, k, k0)
    count = (K - k0 + TAP_STEP - 1) // TAP_STEP  # 0 when k0 ≥ K (then K - k0 > -TAP_STEP)
    q0 = (phase + PAD - k0 * DIL) // STRIDE  # exact division whenever count > 0
    return k0, count, q0


@triton.jit
def split_phase(phase, STRIDE_H, STRIDE_W):
    """A phase number of an input gradient split into phases modulo the stride (w fastest):
    ``(ph_d, ph_h, ph_w)``."""
    return phase // (STRIDE_W * STRIDE_H), (phase // STRIDE_W) % STRIDE_H, phase % STRIDE_W


@triton.jit
def phase_dim(ph, SIZE, STRIDE, PAD, DIL, K, TAP_STEP):
    """One dim of a phase: :func:`phase_taps`' ``(k0, count, q0)`` and ``J``, how many input
    positions ``i = ph + j·STRIDE`` lie below ``SIZE`` (0 for a phase past the size)."""
    k0, count, q0 = phase_taps(ph, STRIDE, PAD, DIL, K, TAP_STEP)
    return k0, count, q0, (SIZE - ph + STRIDE - 1) // STRIDE
