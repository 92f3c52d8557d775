"""Row segments: NCHW-like rows read as aligned vectors, and each tap's view built in registers.

A row-segment kernel owns ``BLOCK_R`` rows × ``BLOCK_O`` output columns, grouped in vectors of
``V`` adjacent columns (``[BLOCK_R, BLOCK_O // V, V]``; ``V`` a power of two, 16 bytes where the
rows' alignment allows: ``_common.row_alignment``). Per source row it loads three aligned
vectors per group — the group's own columns and its neighbours' on either side
(:func:`source_phases`) — and builds the view of every tap, shifted by up to ``V`` columns,
from them (:func:`shifted`, :func:`funnel`: register selects only, no shared memory, no
shuffles). At stride 2 a group's source spans ``2·V`` columns, split into its even and odd
phases, and each tap reads one phase (:func:`tap_view`); there ``V`` is half the rows'
alignment, so that a span is one aligned vector of at most 16 bytes, which one thread holds
whole (split over two threads, Triton 3.6 moves it through shared memory at every step).
Gradients go the other way
(:func:`adjoint_view`): at stride 2 each destination column of one parity takes a source column
of a group of half the width.

Rows that start off the vectors' boundaries (a contiguous input's rows of odd widths) are read
from the boundary before them (:func:`aligned_down`, :func:`lead_phases`: masked by the tensor's
bounds only, so every load is still a whole aligned vector), and each tap's view is shifted by
the row's lead as well: a constexpr, so the caller gives each possible lead its own copy of the
taps and runs the one of its rows, which must share their lead.

A program's tile of aligned rows (:func:`row_tile`, :func:`phase_tile`) splits its program
number and its rows' indices by multiply-shift, by divisors its launcher computes
(:func:`row_divisors`, :func:`phase_grid`): a runtime ``//`` is a long instruction sequence,
which the compiler also redoes after the taps' loop, and a row kernel's program holds only a
few outputs a thread. Where one column block covers the rows (:func:`whole_rows`: most
layers'), the programs are the row bands and the columns constants.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, cdiv, fast_divisor, next_power_of_2, row_alignment
from ._indexing import quotient, unflatten_fast, wide


@triton.jit
def funnel(a, b, M: tl.constexpr, V: tl.constexpr):
    """Columns ``M .. M+V-1`` (``0 <= M <= V``) of ``[a, b]`` concatenated along the last dim
    (``V`` columns each, a power of two): ``a``'s last ``V - M`` columns, then ``b``'s first
    ``M``. Split into even and odd columns, each half is a funnel of half the width, so the
    result is register selects only when the last dim lies within a thread."""
    if V == 1:
        r = a if M == 0 else b
    else:
        shape: tl.constexpr = a.shape
        halves: tl.constexpr = [shape[0], shape[1], V // 2, 2]
        a_even, a_odd = tl.split(tl.reshape(a, halves))
        b_even, b_odd = tl.split(tl.reshape(b, halves))
        if M % 2 == 0:
            r_even = funnel(a_even, b_even, M // 2, V // 2)
            r_odd = funnel(a_odd, b_odd, M // 2, V // 2)
        else:
            r_even = funnel(a_odd, b_odd, M // 2, V // 2)
            r_odd = funnel(a_even, b_even, M // 2 + 1, V // 2)
        r = tl.reshape(tl.join(r_even, r_odd), [shape[0], shape[1], V])
    return r


@triton.jit
def shifted(before, own, after, SHIFT: tl.constexpr, V: tl.constexpr):
    """Columns ``col + SHIFT`` (``|SHIFT| <= V``) of a group of ``V`` columns ``col``, from the
    group's own columns and its neighbours' on either side."""
    return funnel(before, own, SHIFT + V, V) if SHIFT < 0 else funnel(own, after, SHIFT, V)


@triton.jit
def row_offset(n, c, d, h, s_n_units, s_c_units, s_d_units, s_h_units, UNIT: tl.constexpr):
    """The offset of row ``(n, c, d, h)`` of a tensor whose row strides arrive in units of
    ``UNIT`` elements (a power of two dividing them all, ``_common.row_alignment``): multiplied
    back here, they show the compiler rows that start aligned to ``UNIT`` elements."""
    return (
        n * (s_n_units * UNIT)
        + c * (s_c_units * UNIT)
        + d * (s_d_units * UNIT)
        + h * (s_h_units * UNIT)
    )


@triton.jit
def _band(DST_W, Q_COLS, BLOCK_O: tl.constexpr, V: tl.constexpr, WHOLE_ROWS: tl.constexpr):
    """This program's row band (programs walk a band's column blocks first; ``Q_COLS``:
    ``fast_divisor`` of the column blocks), ``first``, its first destination column, and
    ``col``, its ``BLOCK_O`` columns as ``[1, G, V]`` vectors. ``WHOLE_ROWS``: one column
    block covers a row (rows of up to 128 columns: most layers'), so the programs are the bands
    and the columns constants, which spares the taps' loop a few instructions too."""
    G: tl.constexpr = BLOCK_O // V
    band, col_block = band_split(Q_COLS, tl.cdiv(DST_W, BLOCK_O), WHOLE_ROWS)
    first = col_block * BLOCK_O
    col = first + tl.arange(0, G)[None, :, None] * V + tl.arange(0, V)[None, None, :]
    return band, first, col


@triton.jit
def band_split(Q_COLS, COL_BLOCKS, WHOLE_ROWS: tl.constexpr):
    """This program's ``(row band, column block)``: programs walk a band's ``COL_BLOCKS``
    column blocks first (``Q_COLS``: their ``fast_divisor``), or, with ``WHOLE_ROWS`` (one
    column block), the programs are the bands."""
    pid = tl.program_id(0)
    if WHOLE_ROWS:
        band = pid
        col_block = 0
    else:
        band = quotient(pid, Q_COLS)
        col_block = pid - band * COL_BLOCKS
    return band, col_block


@triton.jit
def vector_tile(DST_W, Q_COLS, BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr, V: tl.constexpr,
                USE_INT64: tl.constexpr, WHOLE_ROWS: tl.constexpr):  # fmt: skip
    """This program's tile: ``r``, its ``BLOCK_R`` rows (``[BLOCK_R, 1, 1]``), and
    :func:`_band`'s ``first`` and ``col``."""
    band, first, col = _band(DST_W, Q_COLS, BLOCK_O, V, WHOLE_ROWS)
    r = wide(band, USE_INT64) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None, None]
    return r, first, col


@triton.jit
def phase_tile(DST_W, ROWS, Q_COLS, Q_BANDS, BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr,
               V: tl.constexpr, USE_INT64: tl.constexpr, WHOLE_ROWS: tl.constexpr):  # fmt: skip
    """:func:`vector_tile` over rows in phases (an input gradient's rows split modulo the
    strides, ``ROWS`` rows a phase; ``Q_BANDS``: ``fast_divisor`` of a phase's row bands):
    ``(phase, r, first, col)``, ``r`` the rows within the phase (programs walk a row band's
    column blocks, then a phase's bands, then the phases: :func:`phase_grid`)."""
    band, first, col = _band(DST_W, Q_COLS, BLOCK_O, V, WHOLE_ROWS)  # (across phases)
    phase = quotient(band, Q_BANDS)
    band = wide(band - phase * tl.cdiv(ROWS, BLOCK_R), USE_INT64)
    r = band * BLOCK_R + tl.arange(0, BLOCK_R)[:, None, None]
    return phase, r, first, col


@triton.jit
def lead_class_tile(OW, OD, OH, LEAD_CLASSES: tl.constexpr, BLOCK_R: tl.constexpr,
                    BLOCK_O: tl.constexpr, V: tl.constexpr, USE_INT64: tl.constexpr):  # fmt: skip
    """:func:`vector_tile` over rows that start off the vectors' boundaries, whose lead a
    program's rows must share: ``r``, its ``BLOCK_R`` planes of one lead class (planes
    ``LEAD_CLASSES`` apart: :func:`lead_classes`) as ``[BLOCK_R, 1, 1]``; ``first`` and ``col``
    as in :func:`vector_tile`; the class; and the destination row ``(od, oh)``, the same for
    all (programs walk column blocks, then rows, then classes, then planes:
    :func:`lead_grid`). Split by division: with multiply-shift the compiler let these
    kernels' loops grow more than their prologues shrank (pooling's input gradient of AlexNet's
    rows: `benchmarks/results/compile-report/row-tile-divisors-sm_90.md`)."""
    G: tl.constexpr = BLOCK_O // V
    col_blocks = tl.cdiv(OW, BLOCK_O)
    pid = wide(tl.program_id(0), USE_INT64)
    first = (pid % col_blocks) * BLOCK_O
    t = pid // col_blocks
    oh = t % OH
    t = t // OH
    od = t % OD
    t = t // OD
    lead_class = t % LEAD_CLASSES
    block = t // LEAD_CLASSES
    r = lead_class + LEAD_CLASSES * (block * BLOCK_R + tl.arange(0, BLOCK_R)[:, None, None])
    col = first + tl.arange(0, G)[None, :, None] * V + tl.arange(0, V)[None, None, :]
    return r, first, col, lead_class, od, oh


@triton.jit
def row_tile(DST_W, C, DST_D, DST_H, Q_COLS, Q_C, Q_D, Q_H, LEAD_ROWS: tl.constexpr,
             LEAD_CLASSES: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr,
             V: tl.constexpr, USE_INT64: tl.constexpr, WHOLE_ROWS: tl.constexpr):  # fmt: skip
    """A row kernel's tile, ``(r, first, col, lead_class, n, c, d, h)``: rows aligned to the
    vectors (:func:`vector_tile`: ``r`` the flattened ``(n, c, d, h)``, lead class 0, every
    index split by multiply-shift, :func:`row_divisors`' ``Q_COLS``, ``Q_C``, ``Q_D``, ``Q_H``;
    int64 rows by division) or, with ``LEAD_ROWS``, read from the boundary before them
    (:func:`lead_class_tile`: ``r`` the planes ``(n, c)`` of one lead class, ``(d, h)`` the
    destination row, the same for all)."""
    if LEAD_ROWS:
        r, first, col, lead_class, d, h = lead_class_tile(
            DST_W, DST_D, DST_H, LEAD_CLASSES, BLOCK_R, BLOCK_O, V, USE_INT64
        )
        n = r // C
        c = r % C
    else:
        r, first, col = vector_tile(DST_W, Q_COLS, BLOCK_R, BLOCK_O, V, USE_INT64, WHOLE_ROWS)
        n, c, d, h = unflatten_fast(r, C, DST_D, DST_H, Q_C, Q_D, Q_H, USE_INT64)
        lead_class = 0
    return r, first, col, lead_class, n, c, d, h


@triton.jit
def source_phases(row, first, ok, SRC_W, G: tl.constexpr, V: tl.constexpr,
                   STRIDE_W: tl.constexpr):  # fmt: skip
    """The source row under ``G`` groups of ``V`` output columns from column ``first`` (and
    their neighbours' on either side), as ``(before, own, after)`` of the even source columns
    and of the odd ones — stride 2 reads both phases, stride 1 one (returned twice). Each is
    ``[.., G, V]``, loaded as aligned vectors of ``STRIDE_W·V`` columns (zero outside the row:
    zero padding)."""
    span: tl.constexpr = STRIDE_W * V
    c = first * STRIDE_W + tl.arange(0, G)[None, :, None] * span + tl.arange(0, span)[None, None, :]
    before = tl.load(row + (c - span), mask=ok & (c >= span) & (c - span < SRC_W), other=0.0)
    own = tl.load(row + c, mask=ok & (c < SRC_W), other=0.0)
    after = tl.load(row + (c + span), mask=ok & (c + span < SRC_W), other=0.0)
    return _phases(before, own, after, G, V, STRIDE_W)


@triton.jit
def lead_phases(base, first, ok, LO, HI, START, END, G: tl.constexpr, V: tl.constexpr,
                STRIDE_W: tl.constexpr, ZEROS: tl.constexpr):  # fmt: skip
    """:func:`source_phases` of a row at ``[START, END)`` from the aligned ``base``
    (:func:`aligned_down`): the columns from ``base``, each loaded where its offset from
    ``base`` lies in ``[LO, HI)`` — the tensor's bounds, constant over each aligned vector —
    and, with ``ZEROS``, kept where it lies in the row (zero elsewhere: zero padding, as
    :func:`source_phases`; without, the neighbouring rows' elements stay, for a caller that
    masks every tap)."""
    span: tl.constexpr = STRIDE_W * V
    c = first * STRIDE_W + tl.arange(0, G)[None, :, None] * span + tl.arange(0, span)[None, None, :]
    b = c - span
    a = c + span
    before = tl.load(base + b, mask=ok & (b >= LO) & (b < HI), other=0.0)
    own = tl.load(base + c, mask=ok & (c >= LO) & (c < HI), other=0.0)
    after = tl.load(base + a, mask=ok & (a >= LO) & (a < HI), other=0.0)
    if ZEROS:
        before = tl.where((b >= START) & (b < END), before, 0.0)
        own = tl.where((c >= START) & (c < END), own, 0.0)
        after = tl.where((a >= START) & (a < END), after, 0.0)
    return _phases(before, own, after, G, V, STRIDE_W)


@triton.jit
def aligned_down(offset, V: tl.constexpr):
    """The ``V``-element boundary at or before ``offset``, as a product by ``V`` (which shows
    the compiler the alignment)."""
    return (offset // V) * V


@triton.jit
def _phases(before, own, after, G: tl.constexpr, V: tl.constexpr, STRIDE_W: tl.constexpr):
    if STRIDE_W == 1:
        before_even, own_even, after_even = before, own, after
        before_odd, own_odd, after_odd = before, own, after
    else:
        shape: tl.constexpr = [own.shape[0], G, V, 2]
        before_even, before_odd = tl.split(tl.reshape(before, shape))
        own_even, own_odd = tl.split(tl.reshape(own, shape))
        after_even, after_odd = tl.split(tl.reshape(after, shape))
    return before_even, own_even, after_even, before_odd, own_odd, after_odd


@triton.jit
def tap_view(b_even, o_even, a_even, b_odd, o_odd, a_odd, SHIFT: tl.constexpr,
              V: tl.constexpr, STRIDE_W: tl.constexpr):  # fmt: skip
    """Source column ``STRIDE_W·col + SHIFT`` for each output column ``col`` of the groups:
    phase ``SHIFT % 2`` shifted by ``SHIFT // 2`` at stride 2, ``SHIFT`` at stride 1."""
    if STRIDE_W == 1:
        r = shifted(b_even, o_even, a_even, SHIFT, V)
    elif SHIFT % 2 == 0:
        r = shifted(b_even, o_even, a_even, SHIFT // 2, V)
    else:
        r = shifted(b_odd, o_odd, a_odd, SHIFT // 2, V)
    return r


@triton.jit
def adjoint_view(before, own, after, SHIFT: tl.constexpr, VS: tl.constexpr,
                 STRIDE_W: tl.constexpr):  # fmt: skip
    """The adjoint of :func:`tap_view`: for each destination column ``i`` of the groups, source
    column ``(i + SHIFT) / STRIDE_W`` of a row read as ``VS``-wide groups (``before``, ``own``,
    ``after``, from column ``first / STRIDE_W``): at stride 1 a shifted view; at stride 2 the
    columns of parity ``SHIFT % 2`` take a shifted view of half the width and the others 0
    (no source column lands on them at this tap)."""
    if STRIDE_W == 1:
        r = shifted(before, own, after, SHIFT, VS)
    else:
        half = shifted(before, own, after, (SHIFT % 2 + SHIFT) // 2, VS)
        if SHIFT % 2 == 0:
            r = tl.interleave(half, tl.zeros_like(half))
        else:
            r = tl.interleave(tl.zeros_like(half), half)
    return r


def aligned_vectors(src5: torch.Tensor, stride: int) -> int:
    """``V`` of the aligned row kernels reading ``src5``'s rows at ``stride``: the rows'
    alignment over the stride, so that a vector of destination columns reads one aligned span
    of at most 16 bytes, which one thread holds whole (Triton 3.6 moves a span split over two
    threads through shared memory at every step of the taps' loop); 0 for rows aligned to one
    element, whose one-element vectors would only waste the tile's unused columns."""
    span = row_alignment(src5.shape[4], src5)
    return span // stride if span >= 2 else 0


def lead_vectors(src5: torch.Tensor, stride: int) -> int | None:
    """``V`` for a contiguous ``src5`` whose rows no vector divides (odd widths, such as 55, 27
    or 7), read from the 16-byte boundary before each: ``V`` destination columns over 16
    bytes of source columns at ``stride``, a row's lead any of them; else ``None``.

    Rows aligned to 2 or 4 elements (bf16 rows of 14 or 28) keep the aligned kernels' narrower
    vectors: read from the boundary instead, their compiled steps run fewer instructions with
    Triton 3.9 but 1.3–1.7 times as many with 3.6
    (``benchmarks/results/compile-report/depthwise-rows-off-boundaries-sm_90.md``)."""
    if row_alignment(src5.shape[4], src5) != 1 or not src5.is_contiguous():
        return None
    return 16 // src5.element_size() // stride


def taps_reach(first: int, last: int, stride: int, vector: int, lead: bool = False) -> bool:
    """Whether source columns ``stride·col + first .. stride·col + last`` of every destination
    column ``col`` lie within one vector (``vector`` destination columns) of its own — with
    ``lead``, a row's lead (below ``stride·vector``) added: :func:`tap_view`'s shifts."""
    most = stride * vector - 1 if lead else 0
    return -(first // stride) <= vector and (last + most) // stride <= vector


def lead_classes(src5: torch.Tensor, span: int) -> int:
    """How many planes apart (``LEAD_CLASSES``) the planes of a contiguous ``src5`` start
    equally far past a ``span``-element boundary."""
    return span // math.gcd(src5.shape[2] * src5.shape[3] * src5.shape[4], span)


def lead_grid(planes: int, dst_rows: int, dst_w: int, tiles: tuple[int, int], classes: int) -> int:
    """The programs of :func:`lead_class_tile`: ``dst_rows`` destination rows per plane,
    ``tiles`` its ``(BLOCK_R, BLOCK_O)``."""
    block_r, block_o = tiles
    return cdiv(planes, block_r * classes) * classes * dst_rows * cdiv(dst_w, block_o)


def whole_rows(dst_w: int, block_o: int) -> bool:
    """``WHOLE_ROWS`` of a row kernel's tile (:func:`_band`): one column block covers a row."""
    return dst_w <= block_o


def row_divisors(dst_w: int, block_o: int, c: int, d: int, h: int) -> tuple[int, ...]:
    """``(Q_COLS, Q_C, Q_D, Q_H)`` of :func:`row_tile`: ``fast_divisor`` of the column blocks
    of rows ``dst_w`` wide and of the rows' channels, depth and height."""
    return tuple(map(fast_divisor, (cdiv(dst_w, block_o), c, d, h)))


def phase_grid(rows: int, phases: int, dst_w: int, tiles: tuple[int, int]) -> tuple[int, ...]:
    """``(programs, Q_COLS, Q_BANDS)`` of :func:`phase_tile`: ``phases`` phases of ``rows``
    rows, ``tiles`` its ``(BLOCK_R, BLOCK_O)``."""
    block_r, block_o = tiles
    bands, col_blocks = cdiv(rows, block_r), cdiv(dst_w, block_o)
    return phases * bands * col_blocks, fast_divisor(col_blocks), fast_divisor(bands)


def lead_tiles(vector: int, outputs: int = 2048) -> tuple[int, int, int]:
    """:func:`row_tiles` of rows read from the boundary before them: one vector of columns
    (``BLOCK_O = V``) in ``outputs // V`` rows. With several vectors a row, Triton 3.9 moves
    the views of some leads through shared memory (a barrier each: MobileNetV2's 14-wide
    rows); with one it never does."""
    if INTERPRET:
        return 8, 4 * vector, 1
    return outputs // vector, vector, 4


def row_tiles(dst_w: int, vector: int, outputs: int = 2048) -> tuple[int, int, int]:
    """``(BLOCK_R, BLOCK_O, num_warps)`` of a row-segment kernel: rows of up to 128 columns,
    ``outputs`` per tile (a memory-bound stencil: fixed tiles, no tuning)."""
    if INTERPRET:  # the interpreter's time goes by programs and ops: few, still several tiles
        return 8, 4 * vector, 1
    bo = max(vector, min(next_power_of_2(dst_w), 128))
    return max(1, outputs // bo), bo, 4
