"""Argument checking and output sizes for pooling, shared by every path.

The functional API validates and normalises its arguments here once per call; the registered
ops, their fake implementations, the fallback and the Triton launchers then work from the
normalised :class:`PoolGeometry` (fixed windows), output sizes (adaptive windows) or levels
(pyramid pooling). The formulas are ATen's (``pooling_output_shape_pad_lr`` and friends); the
output memory formats are in ``_memory``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ._args import (
    IntOrTuple,
    Padding,
    ceil_div,
    check_tensor,
    checked_pairs,
    expand,
    has_pairs,
    is_int,
    is_ints,
    memoized,
    plain_int,
    string_padding,
)

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

    kernel_size: tuple[int, ...]
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
        """The geometry as the registered ops' trailing arguments, in field order (per-dim
        tuples as lists, as op schemas take them)."""
        return (
            list(self.kernel_size),
            list(self.stride),
            list(self.padding),
            list(self.padding_end),
            list(self.dilation),
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def misses_input(self, sizes: Sequence[int]) -> bool:
        """Whether a window holds no input element — a dilated window stepping over a small
        input —, read off the sizes alone (only windows that start in the padding, and the
        last, can): its max is -inf, its index its first tap's (as ATen's CUDA kernels give,
        possibly past the input), and nothing flows back through it."""
        out = pool_output_shape((1, 1, *sizes), self)[2:]
        for size, k, s, p, d, o in zip(
            sizes, self.kernel_size, self.stride, self.padding, self.dilation, out
        ):
            for i in {*range(min(o, ceil_div(p, s))), o - 1} if o > 0 else ():
                if _misses(i * s - p, size, k, d):
                    return True
        return False

    def empty_windows(self, sizes: Sequence[int], out: Sequence[int], device) -> torch.Tensor:
        """Where a window holds no input element (see :meth:`misses_input`): a bool tensor
        broadcastable to ``(N, C, *out)``."""
        starts = [
            torch.arange(o, device=device) * s - p
            for s, p, o in zip(self.stride, self.padding, out)
        ]
        return per_dim_outer(
            [
                _misses(start, size, k, d)
                for start, size, k, d in zip(starts, sizes, self.kernel_size, self.dilation)
            ],
            torch.logical_or,
        )

    @classmethod
    def from_args(cls, *args) -> PoolGeometry:
        """The inverse of :meth:`as_args`: a geometry from the registered ops' arguments."""
        kernel_size, stride, padding, padding_end, dilation, *flags = args
        return cls(
            tuple(kernel_size), tuple(stride), tuple(padding), tuple(padding_end), tuple(dilation),
            *flags,
        )  # fmt: skip


def first_tap(start, dilation: int):
    """The first tap at or after position 0 of windows starting at ``start`` (an int or a
    tensor of them), taps ``dilation`` apart: the start itself, or ``start mod dilation``
    before 0."""
    if isinstance(start, torch.Tensor):
        return torch.maximum(start, start % dilation)
    return max(start, start % dilation)


def _misses(start, size: int, kernel: int, dilation: int):
    """Whether windows starting at ``start`` (an int or a tensor of them) hold no element of
    an input ``size`` long: their first tap in it is past it, or past their last tap."""
    first = first_tap(start, dilation)
    return (first >= size) | (first > start + (kernel - 1) * dilation)


def per_dim_outer(vectors: Sequence[torch.Tensor], op) -> torch.Tensor:
    """Combine one vector per spatial dim into a grid (``op``: add, mul, logical or),
    broadcastable to ``(N, C, *out)``."""
    nd = len(vectors)
    total = None
    for i, v in enumerate(vectors):
        shaped = v.view([-1 if j == i else 1 for j in range(nd)])
        total = shaped if total is None else op(total, shaped)
    return total


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
            input_shape[2:], g.kernel_size, g.stride, g.padding, g.padding_end, g.dilation
        )
    ]
    return [input_shape[0], input_shape[1], *spatial]


def _expand(
    name: str, arg: str, value, ndim: int, *, allow_empty: bool = False
) -> tuple[int, ...] | None:
    """An int or a sequence of 1 or ``ndim`` ints as ``ndim`` ints (torch's rule for pooling:
    ``TypeError`` for anything but ints, ``RuntimeError`` for a wrong count); ``None`` for an
    empty sequence when ``allow_empty``."""
    if allow_empty and isinstance(value, Sequence) and len(value) == 0:
        return None
    values = expand(value, ndim)
    if values is None:
        if not is_ints(value):
            raise TypeError(f"{name}: {arg} must be an int or a tuple of ints, but got {value!r}")
        what = "either be omitted, a single int" if allow_empty else "either be a single int"
        raise RuntimeError(
            f"{name}: {arg} must {what}, or a tuple of {ndim} ints, but got {arg}={value!r}"
        )
    return values


def _padding(name: str, padding, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Numeric pooling padding as ``(before, after)``: an int, ``ndim`` ints or — beyond torch
    — per spatial dim an int or a ``(before, after)`` pair; torch's error types otherwise."""
    if has_pairs(padding):
        return checked_pairs(
            name, padding, ndim,
            lambda: f"{name}: padding must either be a single int, or a tuple of {ndim} entries, "
            f"but got padding={padding!r}",
        )  # fmt: skip
    ints = _expand(name, "padding", padding, ndim)
    return ints, ints


def _check_input(name: str, input: torch.Tensor, channels: bool = True) -> None:
    """Spatial dimensions — and the channels, where ``channels`` — must be non-empty (a zero
    batch is allowed, as in torch)."""
    if any(s == 0 for s in input.shape[1 if channels else 2 :]):
        what = "channel and spatial sizes" if channels else "spatial sizes"
        raise RuntimeError(
            f"{name}: expected input with non-zero {what} (a zero batch size is allowed), but "
            f"got input of size {list(input.shape)}"
        )


def _check_adaptive_input(
    name: str, input: torch.Tensor, mode: str, output_size: Sequence[int], batched: bool
) -> None:
    """Torch's checks of an adaptive ``mode`` pooling's batched ``input`` (a batch of one where
    not ``batched``) before pooling it to ``output_size``: an average to one element per plane
    is a mean, of any sizes (a NaN of none); the other average poolings check the spatial sizes,
    and the 3-d one and every max pooling also the channels of a batched input (every dim after
    the first of the input as given)."""
    if mode == "avg" and all(s == 1 for s in output_size):
        return
    _check_input(name, input, channels=batched and (mode == "max" or input.dim() == 5))


@memoized
def pool_geometry(
    name: str,
    input: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None,
    padding: str | Padding,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> PoolGeometry:
    """Validate fixed-window pooling arguments for a batched ``input`` and normalise them.

    ``padding`` is an int / tuple (torch's symmetric padding, at most half the kernel), per
    spatial dim a ``(before, after)`` pair (each side at most half the kernel), or
    ``'valid'`` / ``'same'`` (TensorFlow's rule: output ``ceil(size/stride)``, asymmetric
    padding allowed). Padded positions never win a max; with ``'same'`` they are never counted
    in an average either (``count_include_pad`` is ignored). Raises ``RuntimeError`` like torch
    (``ValueError`` for an unknown padding string).
    """
    ndim = input.dim() - 2
    _check_input(name, input)
    for label, flag in (("ceil_mode", ceil_mode), ("count_include_pad", count_include_pad)):
        if type(flag) is not bool:  # (torch's parser takes nothing else: no truthiness)
            raise TypeError(f"{name}(): argument '{label}' must be bool, not {type(flag).__name__}")
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
    if divisor_override is not None:
        divisor_override = plain_int("divisor_override", divisor_override)
    if divisor_override == 0:
        raise RuntimeError(f"{name}: divisor must be not zero (divisor_override=0)")

    sizes = tuple(input.shape[2:])
    if isinstance(padding, str):
        before, end = string_padding(
            name, padding, sizes, kernel, stride_t, dilation_t, error=ValueError
        )
        shown = padding
        if padding == "same":
            count_include_pad = False  # TensorFlow's rule: padding is never part of a window
    else:
        before, end = _padding(name, padding, ndim)
        shown = list(before) if before == end else padding  # (uneven sides: as given)
        if min(before + end) < 0:
            raise RuntimeError(f"{name}: pad must be non-negative, but got padding={shown}")
        if any(max(b, e) > k // 2 for b, e, k in zip(before, end, kernel)):
            raise RuntimeError(
                f"{name}: pad should be at most half of kernel size, but got "
                f"padding={shown} and kernel_size={list(kernel)}"
            )
        if name == "avg_pool3d" and before == end and any(s < k for s, k in zip(sizes, kernel)):
            # torch's avg_pool3d (alone of the pools) wants the input itself, padding aside, at
            # least as large as the window (kept for torch's padding, not for pairs)
            raise RuntimeError(
                f"{name}: input image (T: {sizes[0]} H: {sizes[1]} W: {sizes[2]}) smaller than "
                f"kernel size (kT: {kernel[0]} kH: {kernel[1]} kW: {kernel[2]}): every input "
                "size must be at least the kernel's, whatever the padding"
            )

    g = PoolGeometry(
        kernel_size=tuple(kernel),
        stride=tuple(stride_t),
        padding=tuple(before),
        padding_end=tuple(end),
        dilation=tuple(dilation_t),
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        divisor_override=int(divisor_override or 0),
    )
    out = pool_output_shape(input.shape, g)[2:]
    if any(o < 1 for o in out):
        raise RuntimeError(
            f"{name}: given input size {list(sizes)}, kernel_size={list(kernel)}, "
            f"stride={list(stride_t)}, padding={shown!r}, dilation={list(dilation_t)}: the "
            f"calculated output size {list(out)} is too small (every size must be at least 1)"
        )
    return g


# --------------------------------------------------------------------------------------------
# Adaptive windows (adaptive pooling, pyramid pooling, global pooling)
# --------------------------------------------------------------------------------------------


def adaptive_window(i: int, in_size: int, out_size: int) -> tuple[int, int]:
    """``[start, end)`` of adaptive output ``i``: ``floor(i·In/Out)``, ``ceil((i+1)·In/Out)``."""
    return (i * in_size) // out_size, ceil_div((i + 1) * in_size, out_size)


def adaptive_output_size(
    name: str, input: torch.Tensor, output_size, mode: str = "avg", batched: bool = True
) -> list[int]:
    """Validate an adaptive ``mode`` pooling's ``output_size`` (``None`` entries keep the input
    size) and its ``input``, batched (a batch of one where not ``batched``), as torch does."""
    return list(_adaptive_output_size(name, input, output_size, mode, batched))


@memoized
def _adaptive_output_size(
    name: str, input: torch.Tensor, output_size, mode: str, batched: bool
) -> tuple[int, ...]:
    ndim = input.dim() - 2
    # (A tensor stands for an int where torch's wrappers let it through: 1-D pooling's.)
    if is_int(output_size) and not (torch.is_tensor(output_size) and ndim > 1):
        values = (output_size,) * ndim
    elif output_size is None or isinstance(output_size, str):
        raise TypeError(
            f"{name}: output_size must be an int or a tuple of {ndim} ints or None (None keeps "
            f"that dim's size), but got output_size={output_size!r}"
        )
    else:
        values = tuple(output_size)
        if len(values) == 1:
            values = values * ndim
        if len(values) != ndim:
            raise RuntimeError(
                f"{name}: output_size must be an int or a tuple of {ndim} ints or None (None "
                f"keeps that dim's size), but got output_size={output_size!r}"
            )
    out = [s if v is None else v for v, s in zip(values, input.shape[2:])]
    if not all(is_int(v) for v in out):
        raise TypeError(f"{name}: output_size must hold ints or None, but got {output_size!r}")
    out = [plain_int("output_size", v) for v in out]
    if any(v < 0 for v in out):
        raise RuntimeError(
            f"{name}: elements of output_size must be greater than or equal to 0, but got {out}"
        )
    _check_adaptive_input(name, input, mode, out, batched)
    return tuple(out)


def check_levels(name: str, levels) -> tuple[int, ...]:
    """Pyramid levels: a non-empty sequence of positive ints (level ``l`` pools to ``l`` bins
    per spatial dimension)."""
    if is_int(levels):
        levels = (levels,)
    if not isinstance(levels, Sequence) or isinstance(levels, str) or len(levels) == 0:
        raise ValueError(
            f"{name}: levels must be a non-empty sequence of positive ints, but got {levels!r}"
        )
    if not all(is_int(v) for v in levels):
        raise TypeError(f"{name}: levels must hold ints, but got {levels!r}")
    if any(v <= 0 for v in levels):
        raise ValueError(f"{name}: levels must be positive, but got {list(levels)}")
    return tuple(int(v) for v in levels)


def check_mode(name: str, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"{name}: mode must be 'max' or 'avg', but got mode={mode!r}")


def pyramid_features(channels: int, levels: Sequence[int], ndim: int) -> int:
    """Length of the pyramid-pooled vector: ``C · Σ level**ndim``."""
    return channels * sum(level**ndim for level in levels)


def pyramid_input_check(
    name: str, input: torch.Tensor, mode: str, levels: Sequence[int] = (1,)
) -> None:
    """Pyramid and global pooling take a batched ``(N, C, *spatial)`` input, 1–3 spatial dims,
    where the adaptive ``mode`` pooling of each level (global: one) takes it."""
    check_tensor(name, "input", input)
    if input.dim() not in (3, 4, 5):
        raise RuntimeError(
            f"{name}: expected a batched (N, C, *spatial) input with 1 to 3 spatial dims, but "
            f"got input of size {list(input.shape)}"
        )
    for level in set(levels):
        _check_adaptive_input(name, input, mode, (level,) * (input.dim() - 2), True)


__all__ = [
    "MODES",
    "IntOrTuple",
    "PoolGeometry",
    "adaptive_output_size",
    "adaptive_window",
    "check_levels",
    "check_mode",
    "pool_geometry",
    "pool_output_shape",
    "pool_output_size",
    "pyramid_features",
    "pyramid_input_check",
]
