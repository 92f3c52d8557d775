"""Pooling launchers: windowed max / average reductions and their gather-form backward.

The device code is in :mod:`triton_kernels.pool_kernels`; this module holds the launchers and
the design:

One windowed-reduction kernel serves every pooling with windows — max and average, fixed
windows (``max_pool``/``avg_pool``: start ``o·stride - pad``, ``kernel_size`` taps ``dilation``
apart), adaptive windows (``[floor(o·In/Out), ceil((o+1)·In/Out))``) and pyramid pooling (adaptive
windows for several output sizes at once, one level per ``program_id(2)``, so all levels take
one launch). The window kind (``WINDOW``: ``FIXED``, ``ADAPTIVE``, ``PYRAMID``), the reduction
(``MODE``: ``MAX``, ``AVG``) and the layout (``CHANNELS_INNER``) are ``constexpr`` switches of that
one kernel; everything else (sizes, strides, windows) is a runtime argument.

Every tensor is viewed as ``(N, C, D, H, W)`` through its strides (``as_5d``), so 1-, 2- and 3-d
pooling share the code and any input layout is read in place (channels-last input is never
copied). A program owns a tile of ``BLOCK_P`` flattened (batch, position) indices ×
``BLOCK_C`` channels; the innermost tile axis is the one contiguous in memory (channels for
channels-last tensors, positions otherwise), see ``_tiles``. Each output element scans its window
in row-major order exactly as ATen does, so the results do not depend on the tiling:

* max: a value wins when it is greater than the best so far or NaN — the first maximum keeps
  its index on ties, the last NaN of a window wins, and an all ``-inf`` window points at its
  first in-range element. Padded positions are never read, so they never win.
* average: fp32 (fp64) sum divided by ATen's divisor: ``divisor_override``, else the window
  clipped to the padded input (``count_include_pad``) or to the input.

The backward is a gather: every input element sums, over the outputs whose window covers it
(for max: whose index points at it), in output order — deterministic, no atomics.

Global pooling (adaptive pooling to one element per plane) is a single-pass reduction with its
own kernel that vectorises along the window instead of across outputs; dense NCHW planes whose
size is no multiple of 16 (ResNet's 7×7) are read from the aligned boundary at or before each, as
whole vectors, the elements outside the plane left out. Its gradient, where the
input gradient is dense (contiguous or channels-last), is written in memory order: each
element its plane's share of the gradient, stored as whole vectors whatever the plane's size.

Row segments: on NCHW-like inputs the generic tile walks outputs, so each tap is a strided
gather (one scalar load per element). When the windows tile the input rows exactly along
``w`` — ``kernel_size == stride`` of 2 or 4 there, no padding or dilation along ``w``, unit ``w``
stride (VGG's 2×2/2 and 2×2×2/2 poolings) — ``_pool_rows_fwd_kernel`` loads each row segment
under a block of outputs whole (contiguous, vectorised where the row strides allow) and splits
the taps apart in registers, scanning them in the same order (same bits). Its backward,
``_pool_rows_bwd_input_kernel``, loads the grad_out (and index) row segments whole and
interleaves them back over the windows' input columns, summing in the generic order. Sizes and
strides reach both in units of the largest power of two (up to 16 bytes) dividing them all,
which shows the compiler the alignment Triton detects by itself only for multiples of 16.
Windows that overlap or are padded along ``w`` at stride 1 or 2 (ResNet's 3×3/2 max pool) take
``_pool_rows_taps_fwd_kernel``: aligned row vectors and each tap's view built from them in
registers (:mod:`triton_kernels._rows`, shared with the depthwise convolution). Their backward,
``_pool_rows_taps_bwd_input_kernel``, reads each covering grad_out (and index) row as aligned
vectors of ``V / stride`` outputs under ``V`` input columns; tap ``tw`` hands input ``i`` the
output ``(i + pad - tw) / stride`` — a shifted view at stride 1, at stride 2 a shifted view of
half the width interleaved with zeros — summed in the generic kernel's order (same bits).
The forward reads the rows of a contiguous input that no vector divides (AlexNet's 55 and 27
columns) from the 16-byte boundary before each, as 16-byte vectors, and shifts each tap's view
by the row's lead; the lead decides the shifts, which are built at compile time, so a program
takes the rows of one output row in planes that start equally far past a boundary, and each
possible lead has its copy of the taps (``_taps_vectors``). Their backward reads the grad_out
(and index) rows so, 16 bytes of grad_out a vector, where the input's or grad_out's rows no
vector divides (``_taps_backward_vectors``), and stores each input gradient row from its own
start. Both compute their rows' offsets from planes numbered across ``N·C`` (``_planes``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._common import (
    ADAPTIVE,
    FIXED,
    INT32_LIMIT,
    INTERPRET,
    MAX,
    POOL_MODES,
    PYRAMID,
    acc_dtype,
    as_5d,
    cdiv,
    channels_inner,
    check_device,
    fast_divisor,
    needs_int64,
    next_power_of_2,
    pack_geometry,
    row_alignment,
    row_strides,
)
from ._plan import launch
from ._rows import (
    aligned_vectors,
    lead_classes,
    lead_grid,
    lead_tiles,
    lead_vectors,
    row_divisors,
    row_tiles,
    taps_reach,
    whole_rows,
)
from .pool_kernels import (
    _global_pool_bwd_kernel,
    _global_pool_fwd_kernel,
    _pool_bwd_input_kernel,
    _pool_fwd_kernel,
    _pool_rows_bwd_input_kernel,
    _pool_rows_fwd_kernel,
    _pool_rows_taps_bwd_input_kernel,
    _pool_rows_taps_fwd_kernel,
)

# --------------------------------------------------------------------------------------------
# Launch helpers
# --------------------------------------------------------------------------------------------


def _tiles(c_inner: bool, channels: int) -> tuple[int, int, int]:
    """``(BLOCK_P, BLOCK_C, num_warps)`` of the windowed kernels.

    Results do not depend on the tiling (each element's scan is sequential), so this is a
    speed choice only: wide channel blocks when channels are contiguous, long position blocks
    otherwise. Small under the interpreter, where tiny test shapes still span several tiles.
    """
    if INTERPRET:
        return 64, 4, 1  # the interpreter's cost is per program and op, not per element
    # Channel blocks go on grid axis 1, which holds at most 65535 programs.
    at_least = next_power_of_2(cdiv(channels, 65535))
    if c_inner:
        bc = max(min(64, next_power_of_2(channels)), at_least)
        return max(16, 1024 // bc), bc, 4
    return max(16, 256 // at_least), at_least, 4


def _split_row_tiles(out_w: int, kw: int) -> tuple[int, int, int]:
    """``(BLOCK_R, BLOCK_O, num_warps)`` of the row-segment kernel: segments of up to 128 or 256
    input elements, 2048 per tile."""
    if INTERPRET:
        return 4, 4, 1
    bo = min(next_power_of_2(out_w), 64)
    return max(1, 2048 // (bo * kw)), bo, 4


#: Window widths the row-segment kernel splits in registers.
ROW_TAPS: tuple[int, ...] = (2, 4)


def _global_tiles(c_inner: bool, channels: int, window: int) -> tuple[int, int, int]:
    """``(BLOCK_R, BLOCK_C, num_warps)`` of the global reduction."""
    if INTERPRET:
        return 16, 4, 1
    if c_inner:
        bc = min(128, next_power_of_2(channels))
        return max(1, 2048 // bc), bc, 4
    br = min(1024, next_power_of_2(window))
    return br, max(1, 2048 // br), 4


#: Pyramid levels uploaded, per (levels, device).
_uploaded_levels: dict[tuple, torch.Tensor] = {}


def _levels_tensor(levels: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Pyramid levels on the device, uploaded once per (levels, device); inside a CUDA graph's
    capture, where a copy from the host cannot run, written by launches the graph records (and
    not kept: the tensor holds its values only once the graph has run)."""
    key = (levels, device)
    uploaded = _uploaded_levels.get(key)
    if uploaded is not None:
        return uploaded
    if _capturing(device):
        written = torch.empty(len(levels), dtype=torch.int32, device=device)
        for i, level in enumerate(levels):
            written[i].fill_(level)
        return written
    if len(_uploaded_levels) >= 64:
        _uploaded_levels.clear()
    uploaded = _uploaded_levels[key] = torch.tensor(levels, dtype=torch.int32, device=device)
    return uploaded


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _use_int64(*tensors: torch.Tensor | None, products: Sequence[int] = ()) -> bool:
    """int64 offsets when a tensor spans 2**31 elements or a window product could overflow."""
    return needs_int64(*tensors) or any(v >= INT32_LIMIT for v in products)


def _strides5(t: torch.Tensor | None) -> tuple[int, ...]:
    return tuple(as_5d(t).stride()) if t is not None else (0,) * 5


def _pyramid_grid(levels: Sequence[int], nd: int) -> tuple[int, int, int]:
    """The largest level's output grid (the kernels size their grid for it)."""
    top = max(levels)
    return (top if nd == 3 else 1, top if nd >= 2 else 1, top)


def _pyramid_strides(t: torch.Tensor | None) -> tuple[int, ...]:
    """Strides of an ``(N, C·Σ l**nd)`` pyramid tensor as the kernels take them: per row and per
    feature (the kernels derive each level's channel and position strides from the latter)."""
    return (t.stride(0), 0, 0, 0, t.stride(1)) if t is not None else (0,) * 5


def _check_rank(x: torch.Tensor, *others: torch.Tensor) -> None:
    if not 3 <= x.dim() <= 5 or any(o.dim() != x.dim() for o in others):
        raise ValueError("pooling: expected (N, C, *spatial) tensors with 1 to 3 spatial dims")


def _fixed_geometry(kernel_size, stride, padding, padding_end, dilation) -> tuple[int, ...]:
    """A fixed window's geometry as the kernels take it (``KD, KH, KW, STRIDE_D, …, DIL_W``)."""
    return pack_geometry(
        (kernel_size, 1), (stride, 1), (padding, 0), (padding_end, 0), (dilation, 1)
    )


#: Adaptive and pyramid windows come from the sizes; their geometry arguments are unused.
_NO_GEOMETRY = _fixed_geometry((), (), (), (), ())


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _launch_forward(x, out, indices, mode, window, out5_shape, out_strides, idx_strides,
                    geometry, divisor, include_pad, levels=None):  # fmt: skip
    x5 = as_5d(x)
    n, c = x5.shape[:2]
    c_inner = channels_inner(x5)
    bp, bc, warps = _tiles(c_inner, c)
    m = n * out5_shape[0] * out5_shape[1] * out5_shape[2]
    # Without levels any tensor fills the unused pointer argument.
    levels_arg = _levels_tensor(tuple(levels), x.device) if levels is not None else x5
    is_max = POOL_MODES[mode] == MAX.value
    grid = (cdiv(m, bp), cdiv(c, bc), len(levels) if levels is not None else 1)
    products = [s * o for s, o in zip(x5.shape[2:], out5_shape)]
    launch(_pool_fwd_kernel, grid, (
        x5, out, indices if is_max else out, levels_arg,
        n, c, *x5.shape[2:], *out5_shape, *geometry, divisor,
        *x5.stride(), *out_strides, *idx_strides,
    ), dict(
        MODE=POOL_MODES[mode], WINDOW=window, ND=x.dim() - 2, INCLUDE_PAD=include_pad,
        CHANNELS_INNER=c_inner, USE_INT64=_use_int64(x, out, indices, products=products),
        ACC_DTYPE=acc_dtype(x.dtype), BLOCK_P=bp, BLOCK_C=bc, num_warps=warps,
    ))  # fmt: skip


def pool_forward(
    x: torch.Tensor,
    out: torch.Tensor,
    indices: torch.Tensor | None,
    *,
    mode: str,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    padding_end: Sequence[int],
    dilation: Sequence[int],
    count_include_pad: bool = True,
    divisor_override: int = 0,
) -> None:
    """Fixed-window max / average pooling of ``x`` written into ``out`` (and ``indices``).

    x: (N, C, *S), 1–3 spatial dims, any strides; out: (N, C, *O) preallocated (its size sets
    the number of windows, so ``ceil_mode`` is the caller's output size); indices: int64 like
    ``out`` for max (flat index into each input plane), ignored for avg. ``padding`` /
    ``padding_end`` pad before / after each dim (never read); ``count_include_pad`` and
    ``divisor_override`` (0 = none) set the average's divisor as ATen does.
    """
    check_device(x, out, indices)
    _check_rank(x, out)
    if out.numel() == 0:
        return
    y5 = as_5d(out)
    idx5 = as_5d(indices) if indices is not None else None
    geometry = _fixed_geometry(kernel_size, stride, padding, padding_end, dilation)
    if _tiles_rows(as_5d(x), geometry):
        _launch_rows_forward(
            x, y5, idx5, mode, geometry, int(divisor_override), bool(count_include_pad)
        )
        return
    vectors = _taps_vectors(as_5d(x), geometry)
    if vectors:
        _launch_taps_forward(
            x, y5, idx5, mode, geometry, int(divisor_override), bool(count_include_pad), *vectors
        )
        return
    _launch_forward(
        x, y5, idx5, mode, FIXED.value, tuple(y5.shape[2:]), y5.stride(), _strides5(indices),
        geometry, int(divisor_override), bool(count_include_pad),
    )  # fmt: skip


def _tiles_rows(x5: torch.Tensor, geometry: Sequence[int]) -> bool:
    """Whether fixed windows tile ``x5``'s contiguous rows exactly along ``w`` (the row-segment
    kernel's case): ``kernel_size == stride`` in :data:`ROW_TAPS`, no padding or dilation."""
    kw, sw, pw, dw = geometry[2], geometry[5], geometry[8], geometry[14]
    return (
        kw == sw
        and kw in ROW_TAPS
        and pw == 0
        and dw == 1
        and x5.stride(4) == 1
        and not channels_inner(x5)
    )


def _row_forward(x, y5, idx5, mode):  # fmt: skip
    """What both row forwards launch with: the 5-d input, the number of output rows, the
    indices' tensor (the output stands in for it when averaging) and 64-bit indexing."""
    x5 = as_5d(x)
    products = [s * o for s, o in zip(x5.shape[2:], y5.shape[2:])]
    rows = x5.shape[0] * x5.shape[1] * y5.shape[2] * y5.shape[3]
    indices = idx5 if POOL_MODES[mode] == MAX.value else y5
    return x5, rows, indices, _use_int64(x, y5, idx5, products=products)


def _planes(*tensors5: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The 5-d tensors viewed as ``(N·C, 1, D, H, W)`` where every one's planes lie evenly
    spaced (a contiguous tensor's do), else as they are. A kernel whose program holds rows of
    many planes then finds each row's offset without dividing its plane's number by ``C``
    (which Triton specialises when it is 1): the rows read from the boundary before them
    store their results through shared memory, the offsets computed anew for every element."""
    n, c = tensors5[0].shape[:2]
    if not all(n == 1 or c == 1 or t.stride(0) == c * t.stride(1) for t in tensors5):
        return tensors5
    return tuple(t.view(n * c, 1, *t.shape[2:]) for t in tensors5)


def _launch_rows_forward(x, y5, idx5, mode, geometry, divisor, include_pad):  # fmt: skip
    x5, rows, indices, use_int64 = _row_forward(x, y5, idx5, mode)
    _, c, d, h, w = x5.shape
    od, oh, ow = y5.shape[2:]
    kd, kh, kw, sd, sh, _, pd, ph, _, ped, peh, pew, dd, dh, _ = geometry
    # The input's rows in units of their alignment (the loads), the output's and the indices'
    # in units of theirs (the stores).
    align, align_out = row_alignment(w, x5), row_alignment(ow, y5, indices)
    br, bo, warps = _split_row_tiles(ow, kw)
    launch(_pool_rows_fwd_kernel, (cdiv(rows, br) * cdiv(ow, bo),), (
        x5, y5, indices,
        rows, c, d, h, w // align, od, oh, ow // align_out,
        *row_divisors(ow, bo, c, od, oh),
        kd, kh, sd, sh, pd, ph, ped, peh, pew, dd, dh, divisor,
        *(s // align for s in row_strides(x5)),
        *(s // align_out for s in row_strides(y5)), y5.stride(4),
        *(s // align_out for s in row_strides(indices)), indices.stride(4),
    ), dict(
        KW=kw, MODE=POOL_MODES[mode], INCLUDE_PAD=include_pad,
        USE_INT64=use_int64 or rows + br >= INT32_LIMIT, ACC_DTYPE=acc_dtype(x.dtype),
        ALIGN=align, ALIGN_OUT=align_out, BLOCK_R=br, BLOCK_O=bo, num_warps=warps,
        WHOLE_ROWS=whole_rows(ow, bo),
    ))  # fmt: skip


def _taps_vectors(x5: torch.Tensor, geometry: Sequence[int]) -> tuple[int, int] | None:
    """``(V, LEAD_ROWS)`` of the row-taps forward for ``x5`` (windows that do not tile the
    rows), or ``None`` when it does not apply: NCHW-like rows with unit stride, stride 1 or 2
    and unit dilation along ``w``, and every tap within one vector of its output.

    ``V``: the vector width in outputs, the rows' alignment over the stride (a vector's
    source columns one aligned span of at most 16 bytes: ``_rows``) — or, for a
    contiguous input whose rows no vector divides (rows of 55, 27 or 13, as AlexNet's:
    ``_rows.lead_vectors``; ``LEAD_ROWS``), 16 bytes of source columns (``V`` times the
    stride), each row read from the boundary before it and its taps shifted by its lead, which
    the taps must reach too."""
    kw, sw, pw, dw = geometry[2], geometry[5], geometry[8], geometry[14]
    if sw not in (1, 2) or dw != 1 or x5.stride(4) != 1 or channels_inner(x5):
        return None
    lead = lead_vectors(x5, sw)
    if lead and taps_reach(-pw, kw - 1 - pw, sw, lead, lead=True):
        return lead, True
    vector = aligned_vectors(x5, sw)
    if vector and taps_reach(-pw, kw - 1 - pw, sw, vector):
        return vector, False
    return None


def _launch_taps_forward(x, y5, idx5, mode, geometry, divisor, include_pad, vector, lead_rows):  # fmt: skip
    x5, rows, indices, use_int64 = _row_forward(x, y5, idx5, mode)
    n, c, d, h, w = x5.shape
    od, oh, ow = y5.shape[2:]
    kd, kh, kw, sd, sh, sw, pd, ph, pw, ped, peh, pew, dd, dh, _ = geometry
    unit_w = y5.stride(4) == 1 and indices.stride(4) == 1
    out_vector = row_alignment(ow, y5, indices) if unit_w else 1  # (the output's and indices')
    # (a max keeps an int64 index beside each output: half the tile, without spills)
    outputs = 1024 if POOL_MODES[mode] == MAX.value else 2048
    br, bo, warps = lead_tiles(vector, outputs) if lead_rows else row_tiles(ow, vector, outputs)
    if not lead_rows:  # rows aligned: rows of outputs, sizes and strides in spans
        classes, unit = 1, sw * vector
        grid = cdiv(rows, br) * cdiv(ow, bo)
        # (a program's rows reach a row tile past the last: quotients below 2**31)
        use_int64 = use_int64 or rows + br >= INT32_LIMIT
    else:  # planes that start equally far past a boundary, a program's rows in one of them
        rows = n * c
        x5, y5, indices = _planes(x5, y5, indices)
        classes, unit, c = lead_classes(x5, sw * vector), 1, x5.shape[1]
        grid = lead_grid(rows, od * oh, ow, (br, bo), classes)
        # (a row's reads reach a column block and two vectors past its start, masked)
        use_int64 = use_int64 or x.numel() + sw * (bo + 2 * vector) >= INT32_LIMIT
    launch(_pool_rows_taps_fwd_kernel, (grid,), (
        x5, y5, indices,
        rows, c, d, h, w // unit, od, oh, ow // out_vector, x.numel(),
        *row_divisors(ow, bo, c, od, oh),
        kd, kh, sd, sh, pd, ph, ped, peh, pew, dd, dh, divisor,
        *(s // unit for s in row_strides(x5)),
        *(s // out_vector for s in row_strides(y5)), y5.stride(4),
        *(s // out_vector for s in row_strides(indices)), indices.stride(4),
    ), dict(
        KW=kw, STRIDE_W=sw, PAD_W=pw, MODE=POOL_MODES[mode], INCLUDE_PAD=include_pad,
        USE_INT64=use_int64, ACC_DTYPE=acc_dtype(x.dtype), V=vector, LEAD_ROWS=lead_rows,
        LEAD_CLASSES=classes, V_OUT=out_vector, BLOCK_R=br, BLOCK_O=bo, num_warps=warps,
        WHOLE_ROWS=not lead_rows and whole_rows(ow, bo),
    ))  # fmt: skip


def adaptive_pool_forward(
    x: torch.Tensor, out: torch.Tensor, indices: torch.Tensor | None, *, mode: str
) -> None:
    """Adaptive max / average pooling of ``x`` to ``out``'s spatial size (indices for max).

    Output ``o`` pools ``[floor(o·In/Out), ceil((o+1)·In/Out))`` along each dim. An output of one
    element per plane is a global pooling and runs the single-pass reduction.
    """
    check_device(x, out, indices)
    _check_rank(x, out)
    if out.numel() == 0:
        return
    if all(s == 1 for s in out.shape[2:]):
        _global_forward(
            x,
            out.flatten(2)[..., 0],
            indices.flatten(2)[..., 0] if indices is not None else None,
            mode,
        )
        return
    y5 = as_5d(out)
    _launch_forward(
        x, y5, as_5d(indices) if indices is not None else None, mode, ADAPTIVE.value,
        tuple(y5.shape[2:]), y5.stride(), _strides5(indices), _NO_GEOMETRY, 0, False,
    )  # fmt: skip


def pyramid_pool_forward(
    x: torch.Tensor,
    out: torch.Tensor,
    indices: torch.Tensor | None,
    *,
    mode: str,
    levels: Sequence[int],
) -> None:
    """Spatial pyramid pooling in one launch: ``out`` (N, C·Σ l**nd) holds, level by level, the
    adaptive pooling of ``x`` to ``(l, …, l)`` flattened as ``(C, l, …, l)`` (``indices`` alike
    for max). ``torch.cat([adaptive_pool(x, l).flatten(1) for l in levels], 1)``'s layout."""
    check_device(x, out, indices)
    _check_rank(x)
    nd = x.dim() - 2
    if out.dim() != 2 or out.shape[1] != x.shape[1] * sum(level**nd for level in levels):
        raise ValueError(f"pyramid pooling: out must be (N, C·Σ l**{nd}), got {tuple(out.shape)}")
    if out.numel() == 0:
        return
    if x.numel() == 0:  # one bin per level over no position: a mean of nothing, as torch's
        out.fill_(float("nan"))
        return
    _launch_forward(
        x, out, indices, mode, PYRAMID.value, _pyramid_grid(levels, nd), _pyramid_strides(out),
        _pyramid_strides(indices), _NO_GEOMETRY, 0, False, levels=levels,
    )  # fmt: skip


def _global_forward(
    x: torch.Tensor, out: torch.Tensor, indices: torch.Tensor | None, mode: str
) -> None:
    """out (N, C) = max / mean of each plane of x; indices (N, C) the flat argmax."""
    x5 = as_5d(x)
    n, c, d, h, w = x5.shape
    flat = _flat_spatial(x5)
    if flat is not None:  # collapsing the spatial dims saves the per-element index split
        x5, (d, h, w) = flat, (1, 1, d * h * w)
    c_inner = channels_inner(x5)
    r = d * h * w
    # Dense planes of 16 or more elements that are not a multiple of 16 (and so not aligned
    # for the compiler) are read from the aligned boundary before each, at most 15 more.
    align_down = x.is_contiguous() and not c_inner and r >= 16 and r % 16 != 0
    br, bc, warps = _global_tiles(c_inner, c, r + 15 if align_down else r)
    # (reading past the planes, offsets reach a tile beyond the last element)
    use_int64 = _use_int64(x, out, indices, products=[x.numel() + 15 + br if align_down else 0])
    is_max = POOL_MODES[mode] == MAX.value
    idx = indices if is_max else out
    launch(_global_pool_fwd_kernel, (n * cdiv(c, bc),), (
        x5, out, idx,
        c, r, h, w, x.numel(),
        *x5.stride(), *out.stride(), *idx.stride(),
    ), dict(
        MODE=POOL_MODES[mode], CHANNELS_INNER=c_inner, FLAT=flat is not None,
        ALIGN_DOWN=align_down, USE_INT64=use_int64, ACC_DTYPE=acc_dtype(x.dtype),
        BLOCK_R=br, BLOCK_C=bc, num_warps=warps,
    ))  # fmt: skip


#: Elements of the input gradient each program of the global backward writes.
GLOBAL_BACKWARD_BLOCK = 64 if INTERPRET else 2048


def _global_backward(
    grad_out: torch.Tensor, indices: torch.Tensor | None, grad_in: torch.Tensor, mode: str
) -> bool:
    """grad_in = each plane's ``grad_out`` (N, C) spread over the plane (avg: divided by its
    size) or put at its argmax ``indices`` (N, C) (max), in one pass over ``grad_in``'s memory
    when it is dense (contiguous, or channels-last); ``False`` (nothing launched) otherwise."""
    n, c = grad_in.shape[:2]
    r = grad_in[0, 0].numel()
    try:
        flat = grad_in.view(n, c, r)
    except RuntimeError:  # (spatial dims that do not collapse: not dense either way)
        return False
    if flat.is_contiguous():
        c_inner = False
    elif flat.transpose(1, 2).is_contiguous():
        c_inner = True
    else:
        return False
    block = GLOBAL_BACKWARD_BLOCK
    total = grad_in.numel()
    is_max = POOL_MODES[mode] == MAX.value
    idx = indices if is_max else grad_out
    use_int64 = _use_int64(grad_out, indices, grad_in, products=[total + block])
    # (64-bit indices divide as they are; a plane may then be too large for a fast divisor)
    q_c, q_r = (0, 0) if use_int64 else (fast_divisor(c), fast_divisor(r))
    launch(_global_pool_bwd_kernel, (cdiv(total, block),), (
        grad_out, idx, grad_in,
        total, c, r, q_c, q_r,
        *grad_out.stride(), *idx.stride(),
    ), dict(
        MODE=POOL_MODES[mode], CHANNELS_INNER=c_inner, USE_INT64=use_int64,
        ACC_DTYPE=acc_dtype(grad_in.dtype), BLOCK=block, num_warps=4,
    ))  # fmt: skip
    return True


def _flat_spatial(x5: torch.Tensor) -> torch.Tensor | None:
    """``x5`` as ``(N, C, 1, 1, D·H·W)`` when the spatial dims collapse to one stride."""
    n, c, d, h, w = x5.shape
    try:
        return x5.view(n, c, 1, 1, d * h * w)
    except RuntimeError:
        return None


def _launch_backward(grad_out, indices, grad_in, mode, window, out5_shape, go_strides,
                     idx_strides, geometry, divisor, include_pad, levels=None):  # fmt: skip
    gi5 = as_5d(grad_in)
    n, c = gi5.shape[:2]
    c_inner = channels_inner(gi5)
    bp, bc, warps = _tiles(c_inner, c)
    m = n * gi5.shape[2] * gi5.shape[3] * gi5.shape[4]
    levels_arg = _levels_tensor(tuple(levels), grad_in.device) if levels is not None else gi5
    is_max = POOL_MODES[mode] == MAX.value
    products = [s * o for s, o in zip(gi5.shape[2:], out5_shape)]
    grid = (cdiv(m, bp), cdiv(c, bc))
    launch(_pool_bwd_input_kernel, grid, (
        grad_out, indices if is_max else grad_out, gi5, levels_arg,
        n, c, len(levels) if levels is not None else 1,
        *gi5.shape[2:], *out5_shape, *geometry, divisor,
        *go_strides, *idx_strides, *gi5.stride(),
    ), dict(
        MODE=POOL_MODES[mode], WINDOW=window, ND=grad_in.dim() - 2, INCLUDE_PAD=include_pad,
        CHANNELS_INNER=c_inner, USE_INT64=_use_int64(grad_out, indices, grad_in, products=products),
        ACC_DTYPE=acc_dtype(grad_in.dtype), BLOCK_P=bp, BLOCK_C=bc, num_warps=warps,
    ))  # fmt: skip


def pool_backward(
    grad_out: torch.Tensor,
    indices: torch.Tensor | None,
    grad_in: torch.Tensor,
    *,
    mode: str,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    padding_end: Sequence[int],
    dilation: Sequence[int],
    count_include_pad: bool = True,
    divisor_override: int = 0,
) -> None:
    """Gradient of :func:`pool_forward` w.r.t. its input, written to ``grad_in`` (every element).

    Gather form: each input element sums the grad_out elements of the windows covering it
    (max: those whose index is that element), in output order — deterministic, no atomics.
    """
    check_device(grad_out, indices, grad_in)
    _check_rank(grad_in, grad_out)
    if grad_in.numel() == 0:
        return
    go5 = as_5d(grad_out)
    idx5 = as_5d(indices) if indices is not None else None
    geometry = _fixed_geometry(kernel_size, stride, padding, padding_end, dilation)
    gi5 = as_5d(grad_in)
    unit_w = all(t.stride(4) == 1 for t in (go5, idx5) if t is not None)
    if unit_w and _tiles_rows(gi5, geometry):
        _launch_rows_backward(
            go5, idx5, gi5, mode, geometry, int(divisor_override), bool(count_include_pad)
        )
        return
    vectors = _taps_backward_vectors(go5, idx5, gi5, geometry) if unit_w else None
    if vectors:
        _launch_taps_backward(
            go5, idx5, gi5, mode, geometry, int(divisor_override), bool(count_include_pad),
            *vectors,
        )  # fmt: skip
        return
    _launch_backward(
        go5, idx5, grad_in, mode, FIXED.value, tuple(go5.shape[2:]), go5.stride(),
        _strides5(indices), geometry, int(divisor_override), bool(count_include_pad),
    )  # fmt: skip


def _launch_rows_backward(go5, idx5, gi5, mode, geometry, divisor, include_pad):  # fmt: skip
    n, c, d, h, w = gi5.shape
    od, oh, ow = go5.shape[2:]
    kd, kh, kw, sd, sh, _, pd, ph, _, ped, peh, pew, dd, dh, _ = geometry
    is_max = POOL_MODES[mode] == MAX.value
    idx5 = idx5 if is_max else go5
    # Each tensor's rows in units of its own alignment (grad_out and the indices share one).
    align_gi, align_go = row_alignment(w, gi5), row_alignment(ow, go5, idx5)
    br, bo, warps = _split_row_tiles(ow, kw)
    rows = n * c * d * h
    products = [s * o for s, o in zip(gi5.shape[2:], (od, oh, ow))]
    launch(_pool_rows_bwd_input_kernel, (cdiv(rows, br) * cdiv(w, bo * kw),), (
        go5, idx5, gi5,
        rows, c, d, h, w // align_gi, od, oh, ow // align_go,
        *row_divisors(w, bo * kw, c, d, h),
        kd, kh, sd, sh, pd, ph, ped, peh, pew, dd, dh, divisor,
        *(s // align_go for t in (go5, idx5) for s in row_strides(t)),
        *(s // align_gi for s in row_strides(gi5)),
    ), dict(
        KW=kw, MODE=POOL_MODES[mode], INCLUDE_PAD=include_pad,
        USE_INT64=_use_int64(go5, idx5, gi5, products=products) or rows + br >= INT32_LIMIT,
        ACC_DTYPE=acc_dtype(gi5.dtype), ALIGN_GO=align_go, ALIGN_GI=align_gi, BLOCK_R=br,
        BLOCK_O=bo, num_warps=warps, WHOLE_ROWS=whole_rows(w, bo * kw),
    ))  # fmt: skip


def _taps_backward_vectors(go5, idx5, gi5, geometry: Sequence[int]) -> tuple[int, bool] | None:
    """``(V, LEAD_ROWS)`` of the row-taps backward (``V`` input columns over ``V / stride``
    grad_out columns), or ``None`` when it does not apply: NCHW-like rows with unit stride
    along ``w``, stride 1 or 2 and unit dilation there, and every tap's output within one
    grad_out vector of its input's.

    ``V``: as wide as the input gradient's and grad_out's rows (and the indices') allow — or,
    where either's rows no vector divides (AlexNet's 55 and 27 columns) and grad_out is
    contiguous (``LEAD_ROWS``), 16 bytes of grad_out columns: each grad_out (and index) row
    read from the boundary before it and the taps shifted by its lead, which the taps must
    reach too, and the input gradient's rows stored from their own start."""
    kw, sw, pw, dw = geometry[2], geometry[5], geometry[8], geometry[14]
    if sw not in (1, 2) or dw != 1 or gi5.stride(4) != 1 or channels_inner(gi5):
        return None
    sources = [t for t in (go5, idx5) if t is not None]
    # the grad_out column each tap reads, less its input's (i / stride), per tap
    shifts = [(e % sw + e) // sw for e in range(pw - kw + 1, pw + 1)]
    # grad_out's rows and width (the index rows: the same strides in elements)
    source_vector = row_alignment(go5.shape[4], *sources)
    vector = min(row_alignment(gi5.shape[4], gi5), sw * source_vector)
    if vector == 1 and all(t.is_contiguous() and t.stride() == go5.stride() for t in sources):
        lead = 16 // go5.element_size()
        if min(shifts) >= -lead and max(shifts) <= 1:  # (a lead shifts them up to lead - 1)
            return sw * lead, True
    if vector < 2 or max(map(abs, shifts)) > vector // sw:
        return None
    return vector, False


def _launch_taps_backward(go5, idx5, gi5, mode, geometry, divisor, include_pad, vector, lead_rows):  # fmt: skip
    n, c, d, h, w = gi5.shape
    od, oh, ow = go5.shape[2:]
    kd, kh, kw, sd, sh, sw, pd, ph, pw, ped, peh, pew, dd, dh, _ = geometry
    is_max = POOL_MODES[mode] == MAX.value
    idx5 = idx5 if is_max else go5
    source_vector = vector // sw
    products = [s * o for s, o in zip(gi5.shape[2:], (od, oh, ow))]
    use_int64 = _use_int64(go5, idx5, gi5, products=products)
    if not lead_rows:  # rows aligned: input rows, sizes and strides in vectors
        unit, unit_source, classes, rows = vector, source_vector, 1, n * c * d * h
        br, bo, warps = row_tiles(w, vector)
        grid = cdiv(rows, br) * cdiv(w, bo)
        # (a program's rows reach a row tile past the last: quotients below 2**31)
        use_int64 = use_int64 or rows + br >= INT32_LIMIT
    else:  # grad_out planes that start equally far past a boundary, a program's in one of them
        go5, idx5, gi5 = _planes(go5, idx5, gi5)
        unit, unit_source, rows, c = 1, 1, n * c, gi5.shape[1]
        classes = lead_classes(go5, source_vector)
        br, bo, warps = lead_tiles(vector)
        grid = lead_grid(rows, d * h, w, (br, bo), classes)
        # (a row's reads reach a column block and two vectors past its start, masked)
        use_int64 = use_int64 or go5.numel() + bo // sw + 2 * source_vector >= INT32_LIMIT
    launch(_pool_rows_taps_bwd_input_kernel, (grid,), (
        go5, idx5, gi5,
        rows, c, d, h, w // unit, od, oh, ow // unit_source, go5.numel(),
        *row_divisors(w, bo, c, d, h),
        kd, kh, sd, sh, pd, ph, ped, peh, pew, dd, dh, divisor,
        *(s // unit_source for t in (go5, idx5) for s in row_strides(t)),
        *(s // unit for s in row_strides(gi5)),
    ), dict(
        KW=kw, STRIDE_W=sw, PAD_W=pw, MODE=POOL_MODES[mode], INCLUDE_PAD=include_pad,
        USE_INT64=use_int64, ACC_DTYPE=acc_dtype(gi5.dtype), V=vector, LEAD_ROWS=lead_rows,
        LEAD_CLASSES=classes, BLOCK_R=br, BLOCK_O=bo, num_warps=warps,
        WHOLE_ROWS=not lead_rows and whole_rows(w, bo),
    ))  # fmt: skip


def adaptive_pool_backward(
    grad_out: torch.Tensor, indices: torch.Tensor | None, grad_in: torch.Tensor, *, mode: str
) -> None:
    """Gradient of :func:`adaptive_pool_forward` w.r.t. its input, written to ``grad_in``."""
    check_device(grad_out, indices, grad_in)
    _check_rank(grad_in, grad_out)
    if grad_in.numel() == 0:
        return
    if grad_out.numel() == 0:
        grad_in.zero_()
        return
    if all(s == 1 for s in grad_out.shape[2:]) and _global_backward(
        grad_out.flatten(2)[..., 0],
        indices.flatten(2)[..., 0] if indices is not None else None,
        grad_in,
        mode,
    ):
        return
    go5 = as_5d(grad_out)
    _launch_backward(
        go5, as_5d(indices) if indices is not None else None, grad_in, mode, ADAPTIVE.value,
        tuple(go5.shape[2:]), go5.stride(), _strides5(indices), _NO_GEOMETRY, 0, False,
    )  # fmt: skip


def pyramid_pool_backward(
    grad_out: torch.Tensor,
    indices: torch.Tensor | None,
    grad_in: torch.Tensor,
    *,
    mode: str,
    levels: Sequence[int],
) -> None:
    """Gradient of :func:`pyramid_pool_forward` w.r.t. its input (all levels, one launch)."""
    check_device(grad_out, indices, grad_in)
    _check_rank(grad_in)
    if grad_in.numel() == 0:
        return
    nd = grad_in.dim() - 2
    _launch_backward(
        grad_out, indices, grad_in, mode, PYRAMID.value, _pyramid_grid(levels, nd),
        _pyramid_strides(grad_out), _pyramid_strides(indices), _NO_GEOMETRY, 0, False,
        levels=levels,
    )  # fmt: skip
