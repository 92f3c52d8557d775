"""Argument checking, output sizes and output memory formats for pooling, shared by every path.

The functional API validates and normalises its arguments here once per call; the registered
ops, their fake implementations, the fallback and the Triton launchers then work from the
normalised :class:`PoolGeometry` (fixed windows), output sizes (adaptive windows) or levels
(pyramid pooling). The formulas are ATen's (``pooling_output_shape_pad_lr`` and friends), and
the memory-format rules are what torch's CPU kernels return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ._memory import new_output

IntOrTuple = int | Sequence[int]

MODES: tuple[str, ...] = ("max", "avg")


# --------------------------------------------------------------------------------------------
# Fixed windows (max_pool / avg_pool)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolGeometry:
    """Normalised fixed-window pooling arguments, one entry per spatial dimension.

    ``padding`` is applied before and ``padding_end`` after each dimension; they differ only for
    TensorFlow-style ``'same'`` padding with an odd total. ``divisor_override`` is 0 for "none".
    """

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    padding_end: tuple[int, ...]
    dilation: tuple[int, ...]
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int = 0

    @property
    def symmetric(self) -> bool:
        """Whether ATen's own ``padding`` argument expresses this padding."""
        return self.padding == self.padding_end

    def as_args(self) -> tuple:
        """The geometry as the registered ops' arguments (lists, bools and an int)."""
        return (
            list(self.kernel),
            list(self.stride),
            list(self.padding),
            list(self.padding_end),
            list(self.dilation),
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )


def pool_output_size(
    size: int, kernel: int, stride: int, pad: int, pad_end: int, dilation: int, ceil_mode: bool
) -> int:
    """Output length along one dimension (ATen's ``pooling_output_shape_pad_lr``).

    With ``ceil_mode`` a last window that would start in the right padding is dropped.
    """
    span = dilation * (kernel - 1) + 1
    out = (size + pad + pad_end - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_output_shape(input_shape: Sequence[int], g: PoolGeometry) -> list[int]:
    """``[N, C, *out]`` of a batched fixed-window pooling."""
    spatial = [
        pool_output_size(s, k, st, p, pe, d, g.ceil_mode)
        for s, k, st, p, pe, d in zip(
            input_shape[2:], g.kernel, g.stride, g.padding, g.padding_end, g.dilation
        )
    ]
    return [input_shape[0], input_shape[1], *spatial]


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's ``'same'``: output ``ceil(size/stride)``, the odd padding element at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _is_int(v) -> bool:
    return isinstance(v, int | torch.SymInt) and not isinstance(v, bool)


def _expand(
    name: str, arg: str, value, ndim: int, *, allow_empty: bool = False
) -> tuple[int, ...] | None:
    """An int or a sequence of 1 or ``ndim`` ints as ``ndim`` ints (torch's rule for pooling)."""
    if _is_int(value):
        return (value,) * ndim
    values = tuple(value) if isinstance(value, Sequence) else None
    if values is not None and allow_empty and len(values) == 0:
        return None
    if values is None or len(values) not in (1, ndim) or not all(_is_int(v) for v in values):
        what = "either be omitted, a single int" if allow_empty else "either be a single int"
        raise RuntimeError(
            f"{name}: {arg} must {what}, or a tuple of {ndim} ints, but got {arg}={value!r}"
        )
    return values * ndim if len(values) == 1 else values


def _check_input(name: str, input: torch.Tensor) -> None:
    """Non-batch dimensions must be non-empty (a zero batch is allowed, as in torch)."""
    if any(s == 0 for s in input.shape[1:]):
        raise RuntimeError(
            f"{name}: expected input with non-zero channel and spatial sizes (a zero batch size "
            f"is allowed), but got input of size {list(input.shape)}"
        )


def pool_geometry(
    name: str,
    input: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None,
    padding: str | IntOrTuple,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> PoolGeometry:
    """Validate fixed-window pooling arguments for a batched ``input`` and normalise them.

    ``padding`` is an int / tuple (torch's symmetric padding, at most half the kernel) or
    ``'valid'`` / ``'same'`` (TensorFlow's rule: output ``ceil(size/stride)``, asymmetric
    padding allowed). Padded positions never win a max; with ``'same'`` they are never counted
    in an average either (``count_include_pad`` is ignored). Raises ``RuntimeError`` like torch
    (``ValueError`` for an unknown padding string).
    """
    ndim = input.dim() - 2
    _check_input(name, input)
    kernel = _expand(name, "kernel_size", kernel_size, ndim)
    stride_t = _expand(name, "stride", stride if stride is not None else (), ndim, allow_empty=True)
    stride_t = kernel if stride_t is None else stride_t
    dilation_t = _expand(name, "dilation", dilation, ndim)
    if any(k <= 0 for k in kernel):
        raise RuntimeError(f"{name}: kernel_size must be greater than zero, but got {list(kernel)}")
    if any(s <= 0 for s in stride_t):
        raise RuntimeError(f"{name}: stride must be greater than zero, but got {list(stride_t)}")
    if any(d <= 0 for d in dilation_t):
        raise RuntimeError(
            f"{name}: dilation must be greater than zero, but got {list(dilation_t)}"
        )
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError(f"{name}: divisor must be not zero (divisor_override=0)")

    sizes = tuple(input.shape[2:])
    if isinstance(padding, str):
        if padding == "valid":
            before = end = (0,) * ndim
        elif padding == "same":
            pairs = [same_padding(*a) for a in zip(sizes, kernel, stride_t, dilation_t)]
            before, end = tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
            count_include_pad = False  # TensorFlow's rule: padding is never part of a window
        else:
            raise ValueError(
                f"{name}: invalid padding string {padding!r}, should be one of {{'valid', 'same'}}"
            )
    else:
        before = end = _expand(name, "padding", padding, ndim)
        if any(p < 0 for p in before):
            raise RuntimeError(f"{name}: pad must be non-negative, but got padding={list(before)}")
        if any(p > k // 2 for p, k in zip(before, kernel)):
            raise RuntimeError(
                f"{name}: pad should be at most half of kernel size, but got "
                f"padding={list(before)} and kernel_size={list(kernel)}"
            )

    g = PoolGeometry(
        tuple(kernel),
        tuple(stride_t),
        tuple(before),
        tuple(end),
        tuple(dilation_t),
        bool(ceil_mode),
        bool(count_include_pad),
        int(divisor_override or 0),
    )
    out = pool_output_shape(input.shape, g)[2:]
    if any(o < 1 for o in out):
        raise RuntimeError(
            f"{name}: given input size {list(sizes)}, kernel_size={list(kernel)}, "
            f"stride={list(stride_t)}, padding={list(before)}, dilation={list(dilation_t)}: the "
            f"calculated output size {list(out)} is too small (every size must be at least 1)"
        )
    return g


# --------------------------------------------------------------------------------------------
# Adaptive windows (adaptive pooling, pyramid pooling, global pooling)
# --------------------------------------------------------------------------------------------


def adaptive_window(i: int, in_size: int, out_size: int) -> tuple[int, int]:
    """``[start, end)`` of adaptive output ``i``: ``floor(i·In/Out)``, ``ceil((i+1)·In/Out)``."""
    return (i * in_size) // out_size, -(-((i + 1) * in_size) // out_size)


def adaptive_output_size(name: str, input: torch.Tensor, output_size) -> list[int]:
    """Validate an adaptive pooling's ``output_size`` (``None`` entries keep the input size)."""
    ndim = input.dim() - 2
    _check_input(name, input)
    if output_size is None or _is_int(output_size):
        values = (output_size,) * ndim
    else:
        values = tuple(output_size)
        if len(values) == 1:
            values = values * ndim
        if len(values) != ndim:
            raise RuntimeError(
                f"{name}: output_size must be an int or a tuple of {ndim} ints (or None), but "
                f"got output_size={output_size!r}"
            )
    out = [s if v is None else v for v, s in zip(values, input.shape[2:])]
    if not all(_is_int(v) for v in out):
        raise RuntimeError(f"{name}: output_size must hold ints or None, but got {output_size!r}")
    if any(v < 0 for v in out):
        raise RuntimeError(
            f"{name}: elements of output_size must be greater than or equal to 0, but got {out}"
        )
    return out


def check_levels(levels) -> tuple[int, ...]:
    """Pyramid levels: a non-empty sequence of positive ints (level ``l`` pools to ``l`` bins
    per spatial dimension)."""
    if _is_int(levels):
        levels = (levels,)
    if not isinstance(levels, Sequence) or isinstance(levels, str) or len(levels) == 0:
        raise ValueError(
            f"levels must be a non-empty sequence of positive ints, but got {levels!r}"
        )
    if not all(_is_int(v) for v in levels):
        raise TypeError(f"levels must hold ints, but got {levels!r}")
    if any(v <= 0 for v in levels):
        raise ValueError(f"levels must be positive, but got {list(levels)}")
    return tuple(int(v) for v in levels)


def check_mode(name: str, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"{name}: mode must be 'max' or 'avg', but got mode={mode!r}")


def pyramid_features(channels: int, levels: Sequence[int], ndim: int) -> int:
    """Length of the pyramid-pooled vector: ``C · Σ level**ndim``."""
    return channels * sum(level**ndim for level in levels)


def pyramid_input_check(name: str, input: torch.Tensor) -> None:
    """Pyramid and global pooling take a batched ``(N, C, *spatial)`` input, 1–3 spatial dims."""
    if input.dim() not in (3, 4, 5):
        raise RuntimeError(
            f"{name}: expected a batched (N, C, *spatial) input with 1 to 3 spatial dims, but "
            f"got input of size {list(input.shape)}"
        )
    _check_input(name, input)


# --------------------------------------------------------------------------------------------
# Output memory formats (what torch's kernels return)
# --------------------------------------------------------------------------------------------


def _strides_like_channels_last(sizes: Sequence[int], strides: Sequence[int]) -> bool:
    """ATen's ``is_channels_last_strides_{2d_s4,3d_s5}`` (``suggest_memory_format``'s test)."""
    order = [1, *range(len(sizes) - 1, 1, -1), 0]
    if strides[1] == 0:
        return False
    low = 0
    for d in order:
        if sizes[d] == 0 or strides[d] < low:
            return False
        if d == 0 and low == strides[1]:
            return False  # ambiguous (N,1,1,1)-like cases default to contiguous
        low = strides[d] * sizes[d] if sizes[d] > 1 else strides[d]
    return True


def input_channels_last(input: torch.Tensor) -> bool:
    """Whether torch treats a batched pooling input as channels-last.

    1-d pooling runs as 2-d pooling of ``input.unsqueeze(-2)`` in ATen, so a 1-d input counts as
    channels-last when that view does.
    """
    sizes, strides = list(input.shape), list(input.stride())
    if input.dim() == 3:
        sizes.insert(2, 1)
        strides.insert(2, strides[2] * sizes[3])
    return len(sizes) in (4, 5) and _strides_like_channels_last(sizes, strides)


def output_channels_last(kind: str, input: torch.Tensor) -> bool:
    """Whether torch's ``kind`` pooling (max, avg, adaptive_max, adaptive_avg) returns a
    channels-last output (and indices) for ``input``: 3-d pooling keeps channels-last only for
    max pooling; 1-d and 2-d pooling keep it for every kind."""
    if input.dim() == 5 and kind != "max":
        return False
    return input_channels_last(input)


def grad_channels_last(kind: str, input: torch.Tensor, output_size: Sequence[int]) -> bool:
    """Whether torch's gradient of ``kind`` pooling w.r.t. ``input`` is channels-last.

    Adaptive average pooling to one element per plane is a mean in ATen, whose gradient is
    contiguous.
    """
    if kind == "adaptive_avg" and all(s == 1 for s in output_size):
        return False
    return output_channels_last(kind, input)


def empty_in_layout(
    shape: Sequence[int],
    like: torch.Tensor,
    channels_last: bool,
    dtype: torch.dtype | None = None,
    poison: bool = False,
) -> torch.Tensor:
    """An uninitialised ``(N, C, *spatial)`` tensor, channels-last (channels fastest) or
    contiguous; NaN/-1 filled when ``poison`` and tests turn poisoning on."""
    shape = list(shape)
    alloc = new_output if poison else (lambda s, t, dtype=None: t.new_empty(s, dtype=dtype))
    if not channels_last:
        return alloc(shape, like, dtype=dtype or like.dtype)
    flipped = alloc([shape[0], *shape[2:], shape[1]], like, dtype=dtype or like.dtype)
    return flipped.movedim(-1, 1)


def to_layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``t`` in the layout :func:`empty_in_layout` gives (a copy only when it differs)."""
    if _same_significant_strides(t, _layout_strides(t.shape, channels_last)):
        return t
    return empty_in_layout(t.shape, t, channels_last).copy_(t)


def _layout_strides(shape: Sequence[int], channels_last: bool) -> list[int]:
    """The strides :func:`empty_in_layout` gives a tensor of ``shape``."""
    order = [0, *range(2, len(shape)), 1] if channels_last else list(range(len(shape)))
    strides, step = [0] * len(shape), 1
    for d in reversed(order):
        strides[d] = step
        step *= shape[d]
    return strides


def _same_significant_strides(t: torch.Tensor, strides: Sequence[int]) -> bool:
    """Equal strides on every dimension longer than 1 (what layout comparisons look at)."""
    return t.numel() == 0 or all(s <= 1 or x == y for s, x, y in zip(t.shape, t.stride(), strides))


__all__ = [
    "MODES",
    "IntOrTuple",
    "PoolGeometry",
    "adaptive_output_size",
    "adaptive_window",
    "check_levels",
    "check_mode",
    "empty_in_layout",
    "grad_channels_last",
    "input_channels_last",
    "output_channels_last",
    "pool_geometry",
    "pool_output_shape",
    "pool_output_size",
    "pyramid_features",
    "pyramid_input_check",
    "same_padding",
    "to_layout",
]
