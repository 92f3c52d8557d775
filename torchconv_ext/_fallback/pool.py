"""Pooling on ATen.

torch's own arguments go straight to ATen's pooling ops, so the fallback is torch, bit for bit.
What ATen cannot express — TensorFlow-style ``'same'``'s asymmetric padding or padding past half
the kernel, 3-d average pooling of an input smaller than the kernel — or computes wrongly —
max-pooling windows that miss the input, whose gradient ATen's CPU backward writes out of
bounds — is padded explicitly (``-inf`` for max, zeros plus an explicit divisor for average)
and mapped back, and
pyramid pooling is its definition: adaptive pooling per level, flattened and concatenated.
1-d pooling runs as 2-d pooling of ``(N, C, 1, L)``, as in ATen.

Max-pooling gradients are scattered through the indices (what ATen's backward does); the
results come back in whatever layout ATen picks and the registered ops fix the layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F

from .._backend import exporting_onnx
from .._memory import pool_input_channels_last
from .._pool_args import PoolGeometry, first_tap, per_dim_outer, pool_output_shape
from . import without_autocast

aten = torch.ops.aten

_MAX_POOL = {2: aten.max_pool2d_with_indices, 3: aten.max_pool3d_with_indices}
_MAX_POOL_BWD = {2: aten.max_pool2d_with_indices_backward, 3: aten.max_pool3d_with_indices_backward}
_ADAPTIVE_MAX_BWD = {2: aten.adaptive_max_pool2d_backward, 3: aten.adaptive_max_pool3d_backward}
_AVG_POOL = {2: aten.avg_pool2d, 3: aten.avg_pool3d}
_AVG_POOL_BWD = {2: aten.avg_pool2d_backward, 3: aten.avg_pool3d_backward}
_ADAPTIVE_AVG = {2: aten.adaptive_avg_pool2d, 3: aten.adaptive_avg_pool3d}
_ADAPTIVE_AVG_BWD = {2: aten._adaptive_avg_pool2d_backward, 3: aten._adaptive_avg_pool3d_backward}
_ADAPTIVE_MAX = {2: aten.adaptive_max_pool2d, 3: aten.adaptive_max_pool3d}


def _lift(t: torch.Tensor) -> torch.Tensor:
    """1-d problems as 2-d ones: ``(N, C, L)`` → ``(N, C, 1, L)``."""
    return t.unsqueeze(2) if t.dim() == 3 else t


def _lift_geometry(g: PoolGeometry) -> PoolGeometry:
    if len(g.kernel_size) != 1:
        return g
    return replace(
        g,
        kernel_size=(1, *g.kernel_size),
        stride=(1, *g.stride),
        padding=(0, *g.padding),
        padding_end=(0, *g.padding_end),
        dilation=(1, *g.dilation),
    )


def _drop(t: torch.Tensor, was_1d: bool) -> torch.Tensor:
    return t.squeeze(2) if was_1d else t


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# Explicit padding for geometries ATen cannot express
# --------------------------------------------------------------------------------------------


def _explicit_pads(x: torch.Tensor, g: PoolGeometry, out: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) per spatial dim so that ATen's unpadded windows reach every output.

    The end padding is extended where a window would run past it (only ever padding).
    """
    pads = []
    for size, k, s, p, pe, d, o in zip(
        x.shape[2:], g.kernel_size, g.stride, g.padding, g.padding_end, g.dilation, out
    ):
        need = (o - 1) * s + d * (k - 1) + 1
        pads.append((p, max(pe, need - size - p)))
    return pads


def _pad(t: torch.Tensor, pads: Sequence[tuple[int, int]], value: float) -> torch.Tensor:
    flat = [v for pair in reversed(pads) for v in pair]
    return F.pad(t, flat, value=value)


def _crop(t: torch.Tensor, out: Sequence[int]) -> torch.Tensor:
    for i, o in enumerate(out):
        t = t.narrow(2 + i, 0, o)
    return t


def _divisors(x: torch.Tensor, g: PoolGeometry, out: Sequence[int]) -> torch.Tensor:
    """ATen's average divisor of every output position, shape ``out``."""
    if g.divisor_override:
        return torch.full(list(out), g.divisor_override, dtype=torch.float64, device=x.device)
    counts = []
    for size, k, s, p, pe, o in zip(
        x.shape[2:], g.kernel_size, g.stride, g.padding, g.padding_end, out
    ):
        start = torch.arange(o, device=x.device) * s - p
        if g.count_include_pad:  # clipped to the padded input
            counts.append((start + k).clamp(max=size + pe) - start)
        else:
            counts.append((start + k).clamp(max=size) - start.clamp(min=0))
    return per_dim_outer(counts, torch.mul).to(torch.float64)


def _first_in_range(x: torch.Tensor, g: PoolGeometry, out: Sequence[int]) -> torch.Tensor:
    """Flat index of each window's first in-range tap (ATen's argmax before any update)."""
    sizes = list(x.shape[2:])
    firsts = []
    for i, (s, p, d, o) in enumerate(zip(g.stride, g.padding, g.dilation, out)):
        first = first_tap(torch.arange(o, device=x.device) * s - p, d)
        plane_stride = 1
        for later in sizes[i + 1 :]:
            plane_stride *= later
        firsts.append(first * plane_stride)
    return per_dim_outer(firsts, torch.add)


def _aten_max_pools(x: torch.Tensor, g: PoolGeometry) -> bool:
    """Whether ATen's max pooling computes ``g`` on ``x`` as it stands: padding its own
    argument expresses (symmetric, at most half the kernel — TensorFlow's ``'same'`` with a
    dilation can need more) and no window that misses the input (ATen's CPU backward writes
    out of bounds for one)."""
    if not g.symmetric or any(p > k // 2 for p, k in zip(g.padding, g.kernel_size)):
        return False
    return not g.misses_input(x.shape[2:])


def _aten_avg_pools(x: torch.Tensor, g: PoolGeometry) -> bool:
    """Whether ATen's average pooling computes ``g`` on ``x`` as it stands: symmetric padding
    (within half the kernel for every geometry the checks let through) and, in 3-d, an input
    at least as large as the kernel (ATen refuses a smaller one, padding or not); and, recorded
    for ONNX, no ``divisor_override`` (its exporters drop it)."""
    sizes, kernel = x.shape[2:], g.kernel_size
    if g.divisor_override and exporting_onnx():
        return False
    return g.symmetric and (x.dim() != 5 or all(n >= k for n, k in zip(sizes, kernel)))


def _unpad_indices(
    idx: torch.Tensor, sizes: Sequence[int], pads: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """Flat indices into the padded plane → flat indices into the unpadded plane."""
    padded = [s + b + e for s, (b, e) in zip(sizes, pads)]
    rest, flat = idx, torch.zeros_like(idx)
    coords = []
    for ps in reversed(padded):
        coords.append(rest % ps)
        rest = rest // ps
    for size, (b, _), coord in zip(sizes, pads, reversed(coords)):
        flat = flat * size + (coord - b)
    return flat


# --------------------------------------------------------------------------------------------
# Fixed windows
# --------------------------------------------------------------------------------------------


@without_autocast
def max_pool(x: torch.Tensor, g: PoolGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    aten = _aten_max_pools(x, g)
    was_1d, x, g = x.dim() == 3, _lift(x), _lift_geometry(g)
    nd = x.dim() - 2
    if aten:
        out, idx = _MAX_POOL[nd](
            x, list(g.kernel_size), list(g.stride), list(g.padding), list(g.dilation), g.ceil_mode
        )
        if nd == 3 and pool_input_channels_last(x):
            # ATen's channels-last 3-d kernel drops the depth term of an all -inf window's
            # index; its contiguous kernels (and ours) point at the first in-range element.
            o = pool_output_shape(x.shape, g)[2:]
            idx = torch.where(out == float("-inf"), _first_in_range(x, g, o), idx)
    else:  # padded with -inf: a padded element wins only in an all -inf window, fixed below
        # (an empty window's index, too: its first tap, as ATen's CUDA kernels give)
        o = pool_output_shape(x.shape, g)[2:]
        pads = _explicit_pads(x, g, o)
        raw, idx = _MAX_POOL[nd](
            _pad(x, pads, float("-inf")),
            list(g.kernel_size),
            list(g.stride),
            [0] * nd,
            list(g.dilation),
            False,
        )
        out, idx = _crop(raw, o), _unpad_indices(_crop(idx, o), x.shape[2:], pads)
        idx = torch.where(out == float("-inf"), _first_in_range(x, g, o), idx)
    return _drop(out, was_1d), _drop(idx, was_1d)


@without_autocast
def avg_pool(x: torch.Tensor, g: PoolGeometry) -> torch.Tensor:
    was_1d, x, g = x.dim() == 3, _lift(x), _lift_geometry(g)
    nd = x.dim() - 2
    if _aten_avg_pools(x, g):
        out = _AVG_POOL[nd](
            x,
            list(g.kernel_size),
            list(g.stride),
            list(g.padding),
            g.ceil_mode,
            g.count_include_pad,
            g.divisor_override or None,
        )
    else:  # window sums over zero padding, then ATen's divisor made explicit
        o = pool_output_shape(x.shape, g)[2:]
        pads = _explicit_pads(x, g, o)
        xp = _pad(x.to(_acc_dtype(x.dtype)), pads, 0.0)
        kernel, stride = list(g.kernel_size), list(g.stride)
        if exporting_onnx():  # (ONNX's exporters drop divisor_override; every window here is whole)
            sums = _AVG_POOL[nd](xp, kernel, stride, [0] * nd) * math.prod(kernel)
        else:
            sums = _AVG_POOL[nd](xp, kernel, stride, [0] * nd, False, True, 1)
        sums = _crop(sums, o)
        out = (sums / _divisors(x, g, o).to(sums.dtype)).to(x.dtype)
    return _drop(out, was_1d)


@without_autocast
def avg_pool_backward(grad_out: torch.Tensor, x: torch.Tensor, g: PoolGeometry) -> torch.Tensor:
    was_1d, x, g, grad_out = x.dim() == 3, _lift(x), _lift_geometry(g), _lift(grad_out)
    nd = x.dim() - 2
    if _aten_avg_pools(x, g):
        grad = _AVG_POOL_BWD[nd](
            grad_out,
            x,
            list(g.kernel_size),
            list(g.stride),
            list(g.padding),
            g.ceil_mode,
            g.count_include_pad,
            g.divisor_override or None,
        )
        return _drop(grad, was_1d)
    o = list(grad_out.shape[2:])
    pads = _explicit_pads(x, g, o)
    padded = [s + b + e for s, (b, e) in zip(x.shape[2:], pads)]
    acc = _acc_dtype(x.dtype)
    scaled = grad_out.to(acc) / _divisors(x, g, o).to(acc)
    full = [
        (p - d * (k - 1) - 1) // s + 1
        for p, k, s, d in zip(padded, g.kernel_size, g.stride, g.dilation)
    ]
    scaled = _pad(scaled, [(0, f - oo) for f, oo in zip(full, o)], 0.0)
    xp = x.new_empty([*x.shape[:2], *padded], dtype=acc)
    gp = _AVG_POOL_BWD[nd](
        scaled, xp, list(g.kernel_size), list(g.stride), [0] * nd, False, True, 1
    )
    for i, (b, _) in enumerate(pads):
        gp = gp.narrow(2 + i, b, x.shape[2 + i])
    return _drop(gp.to(x.dtype), was_1d)


@without_autocast
def max_pool_backward(
    grad_out: torch.Tensor, x: torch.Tensor, idx: torch.Tensor, g: PoolGeometry
) -> torch.Tensor:
    """Max-pooling gradient: ATen's backward where ATen's forward ran, else a scatter (empty
    windows send nothing back)."""
    if not _aten_max_pools(x, g):
        empty = g.empty_windows(x.shape[2:], grad_out.shape[2:], x.device)
        return scatter_backward(grad_out.masked_fill(empty, 0), x, idx.masked_fill(empty, 0))
    was_1d, x, g = x.dim() == 3, _lift(x), _lift_geometry(g)
    grad = _MAX_POOL_BWD[x.dim() - 2](
        _lift(grad_out),
        x,
        list(g.kernel_size),
        list(g.stride),
        list(g.padding),
        list(g.dilation),
        g.ceil_mode,
        _lift(idx),
    )
    return _drop(grad, was_1d)


@without_autocast
def adaptive_max_pool_backward(
    grad_out: torch.Tensor, x: torch.Tensor, idx: torch.Tensor
) -> torch.Tensor:
    if grad_out.numel() == 0:  # ATen refuses empty outputs; nothing flows back
        return torch.zeros_like(x, dtype=grad_out.dtype)
    was_1d, x = x.dim() == 3, _lift(x)
    # ATen's 3-d CPU kernel reads its indices as if contiguous: other strides (a batching
    # rule's views) gave wrong gradients, and a zero stride a crash.
    idx = _lift(idx).contiguous()
    return _drop(_ADAPTIVE_MAX_BWD[x.dim() - 2](_lift(grad_out), x, idx), was_1d)


def scatter_backward(grad_out: torch.Tensor, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Max-pooling gradient: grad_out summed into the input elements its indices point at.

    ``grad_out`` and ``idx`` are ``(N, C, *)`` with any trailing shape (flat indices into each
    input plane).
    """
    n, c = x.shape[:2]
    grad = torch.zeros((n, c, math.prod(x.shape[2:])), dtype=grad_out.dtype, device=grad_out.device)
    outputs = math.prod(idx.shape[2:])
    grad.scatter_add_(2, idx.reshape(n, c, outputs), grad_out.reshape(n, c, outputs))
    return grad.view(x.shape)


# --------------------------------------------------------------------------------------------
# Adaptive windows and pyramids
# --------------------------------------------------------------------------------------------


@without_autocast
def adaptive_pool(
    x: torch.Tensor, mode: str, output_size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not x.shape[1] and x.shape[0] and (mode == "max" or x.dim() == 5):
        # ATen's max and 3-d kernels refuse an input without channels, not an empty batch
        out, idx = adaptive_pool(x.transpose(0, 1), mode, output_size)
        return out.transpose(0, 1), None if idx is None else idx.transpose(0, 1)
    was_1d, x = x.dim() == 3, _lift(x)
    size = [1, *output_size] if was_1d else list(output_size)
    nd = x.dim() - 2
    if mode == "max":
        out, idx = _ADAPTIVE_MAX[nd](x, size)
        return _drop(out, was_1d), _drop(idx, was_1d)
    return _drop(_ADAPTIVE_AVG[nd](x, size), was_1d), None


@without_autocast
def adaptive_avg_pool_backward(grad_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if grad_out.numel() == 0:  # ATen refuses empty outputs; nothing flows back
        return torch.zeros_like(x, dtype=grad_out.dtype)
    if all(s == 1 for s in grad_out.shape[2:]):  # a mean in ATen: its gradient, as torch's
        return grad_out.expand(x.shape) / math.prod(x.shape[2:])
    was_1d = x.dim() == 3
    grad_out, x = _lift(grad_out), _lift(x)
    return _drop(_ADAPTIVE_AVG_BWD[x.dim() - 2](grad_out.contiguous(), x), was_1d)


def _level_blocks(
    t: torch.Tensor, channels: int, levels: Sequence[int], nd: int
) -> list[torch.Tensor]:
    """Split an ``(N, C·Σ l**nd)`` pyramid tensor into its ``(N, C, l, …, l)`` levels."""
    sizes = [channels * level**nd for level in levels]
    return [
        block.reshape(t.shape[0], channels, *([level] * nd))
        for block, level in zip(t.split(sizes, dim=1), levels)
    ]


@without_autocast
def pyramid_pool(
    x: torch.Tensor, mode: str, levels: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``torch.cat([adaptive_pool(x, l).flatten(1) for l in levels], 1)`` (indices alike)."""
    nd = x.dim() - 2
    pooled = [adaptive_pool(x, mode, [level] * nd) for level in levels]
    out = torch.cat([o.flatten(1) for o, _ in pooled], 1)
    idx = torch.cat([i.flatten(1) for _, i in pooled], 1) if mode == "max" else None
    return out, idx


@without_autocast
def pyramid_pool_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    idx: torch.Tensor | None,
    mode: str,
    levels: Sequence[int],
) -> torch.Tensor:
    nd, c = x.dim() - 2, x.shape[1]
    grads = _level_blocks(grad_out, c, levels, nd)
    if mode == "max":
        blocks = _level_blocks(idx, c, levels, nd)
        flat_g = torch.cat([g.flatten(2) for g in grads], 2)
        flat_i = torch.cat([i.flatten(2) for i in blocks], 2)
        return scatter_backward(flat_g, x, flat_i)
    total = None
    for g in grads:
        part = adaptive_avg_pool_backward(g, x)
        total = part if total is None else total + part
    return total
