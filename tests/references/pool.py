"""Independent pooling references, written from the definitions with loops over output windows;
the inputs and layouts the pooling tests share.

Only for tiny tensors. Each window is scanned in row-major order with torch's documented rules:
max takes a value that is greater than the best so far or NaN (first maximum on ties, NaN
propagates), and starts from the window's first in-range element; average divides the sum of the
in-range elements by ``divisor_override``, or the window clipped to the padded input
(``count_include_pad``), or the number of in-range elements.
"""

from __future__ import annotations

import itertools
import math

import torch

import torchconv_ext
from torchconv_ext import functional as TF


def tf_same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding, from its documentation: output ceil(size / stride)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _tuple(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def out_size(size, k, s, before, after, d, ceil_mode):
    """torch's documented output size (MaxPool2d / AvgPool2d docs), with per-side padding."""
    span = d * (k - 1) + 1
    rounding = math.ceil if ceil_mode else math.floor
    o = rounding((size + before + after - span) / s) + 1
    if ceil_mode and (o - 1) * s >= size + before:  # the last window must start inside
        o -= 1
    return o


def _scan_max(values, positions):
    """Sequential max over ``values`` (list of (N, C) tensors) → (best, index)."""
    best = torch.full_like(values[0], float("-inf")) if values else None
    idx = None
    for v, p in zip(values, positions):
        if idx is None:
            idx = torch.full(v.shape, p, dtype=torch.int64)
        win = (v > best) | torch.isnan(v)
        best = torch.where(win, v, best)
        idx = torch.where(win, torch.full_like(idx, p), idx)
    return best, idx


def reference_pool(
    x: torch.Tensor,
    mode: str,
    kernel,
    stride=None,
    pads=0,
    dilation=1,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """Fixed-window pooling of a batched float64 ``x``; ``pads`` is an int (both sides) or a
    list of (before, after) per spatial dim. Returns ``(out, indices)`` (indices None for avg)."""
    nd = x.dim() - 2
    sizes = x.shape[2:]
    k = _tuple(kernel, nd)
    s = k if stride is None else _tuple(stride, nd)
    d = _tuple(dilation, nd)
    if isinstance(pads, int):
        pads = [(pads, pads)] * nd
    elif isinstance(pads[0], int):
        pads = [(p, p) for p in pads]
    outs = [
        out_size(*a, ceil_mode)
        for a in zip(sizes, k, s, [p[0] for p in pads], [p[1] for p in pads], d)
    ]
    out = x.new_zeros((*x.shape[:2], *outs))
    idx = torch.zeros(out.shape, dtype=torch.int64) if mode == "max" else None
    plane_strides = [math.prod(sizes[i + 1 :]) for i in range(nd)]
    for o in itertools.product(*[range(v) for v in outs]):
        starts = [oi * si - p[0] for oi, si, p in zip(o, s, pads)]
        taps = [
            [st + t * di for t in range(ki) if 0 <= st + t * di < size]
            for st, ki, di, size in zip(starts, k, d, sizes)
        ]
        coords = list(itertools.product(*taps))
        values = [x[(slice(None), slice(None), *c)] for c in coords]
        flat = [sum(ci * ps for ci, ps in zip(c, plane_strides)) for c in coords]
        where = (slice(None), slice(None), *o)
        if mode == "max":
            if coords:
                best, arg = _scan_max(values, flat)
            else:  # an empty window (impossible with valid torch arguments)
                best, arg = (
                    x.new_full(x.shape[:2], float("-inf")),
                    torch.zeros(x.shape[:2], dtype=torch.int64),
                )
            out[where], idx[where] = best, arg
            continue
        total = sum(values) if values else x.new_zeros(x.shape[:2])
        if divisor_override:
            div = divisor_override
        elif count_include_pad:
            div = math.prod(
                min(st + ki, size + p[1]) - st for st, ki, size, p in zip(starts, k, sizes, pads)
            )
        else:
            div = len(coords)
        out[where] = total / div if div else 0.0
    return out, idx


def adaptive_window(i: int, in_size: int, out_size: int) -> range:
    """torch's adaptive window: [floor(i·In/Out), ceil((i+1)·In/Out))."""
    return range(math.floor(i * in_size / out_size), math.ceil((i + 1) * in_size / out_size))


def reference_adaptive(x: torch.Tensor, mode: str, output_size):
    """Adaptive pooling of a batched float64 ``x`` → ``(out, indices)`` (indices None for avg)."""
    nd = x.dim() - 2
    sizes = x.shape[2:]
    outs = _tuple(output_size, nd)
    out = x.new_zeros((*x.shape[:2], *outs))
    idx = torch.zeros(out.shape, dtype=torch.int64) if mode == "max" else None
    plane_strides = [math.prod(sizes[i + 1 :]) for i in range(nd)]
    for o in itertools.product(*[range(v) for v in outs]):
        coords = list(
            itertools.product(*[adaptive_window(oi, s, os) for oi, s, os in zip(o, sizes, outs)])
        )
        values = [x[(slice(None), slice(None), *c)] for c in coords]
        where = (slice(None), slice(None), *o)
        if mode == "max":
            flat = [sum(ci * ps for ci, ps in zip(c, plane_strides)) for c in coords]
            out[where], idx[where] = _scan_max(values, flat)
        else:
            out[where] = sum(values) / len(values)
    return out, idx


# Inputs and layouts shared by the pooling tests

SIZES = {1: (7,), 2: (5, 6), 3: (4, 5, 3)}
LAYOUTS = ("contiguous", "channels_last", "strided")


def special_batch(nd: int, channels: int = 3, sizes=None, seed: int = 0) -> torch.Tensor:
    """(4, C, *sizes) float64: random, NaN-laden, -inf-laden, tie-heavy integer samples."""
    sizes = sizes or SIZES[nd]
    g = torch.Generator().manual_seed(seed)
    shape = (channels, *sizes)
    rand = torch.randn(shape, generator=g, dtype=torch.float64)
    nan = torch.randn(shape, generator=g, dtype=torch.float64)
    nan.view(-1)[::4] = float("nan")  # several NaNs per window: the last one's index wins
    neg = torch.randn(shape, generator=g, dtype=torch.float64)
    neg.view(-1)[::3] = float("-inf")
    neg[0] = float("-inf")  # whole windows of -inf
    ties = torch.randint(0, 3, shape, generator=g).to(torch.float64)
    return torch.stack([rand, nan, neg, ties])


def in_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``x`` in ``layout``: contiguous, channels-last (channels fastest, also
    for 1-d) or strided (a view of every other element of the last dim)."""
    if layout == "channels_last":
        return x.movedim(1, -1).contiguous().movedim(-1, 1)
    if layout == "strided":
        return torch.repeat_interleave(x, 2, dim=-1)[..., ::2]
    return x.contiguous()


def significant_strides(t: torch.Tensor) -> list[int]:
    """The strides layout comparisons look at: those of dims longer than 1 (none if empty)."""
    return [st for s, st in zip(t.shape, t.stride()) if s > 1] if t.numel() else []


# Our ops, run the same way by several test modules


def backward_twice(x, backend):
    """The input gradient of a sum of poolings (fixed, pyramid, adaptive), computed twice."""
    grads = []
    for _ in range(2):
        with torchconv_ext.use_backend(backend):
            y = (
                TF.max_pool2d(x, 3, 1, 1).sum()
                + TF.avg_pool2d(x, 3, 2, 1, ceil_mode=True).sum()
                + TF.spatial_pyramid_pool(x, (1, 2, 3), "avg").sum()
                + TF.adaptive_max_pool2d(x, (4, 3)).sum()
            )
            grads.append(torch.autograd.grad(y, x)[0])
    return grads
