"""Output sizes and receptive fields: the lecture notes' formulas, one spatial axis at a time.

Output size of a window of ``F`` taps (dilation ``D``), stride ``S``, padding ``P`` before and
``P'`` after: ``⌊(W − D·(F − 1) − 1 + P + P') / S⌋ + 1`` — the notes' ``(W − F + 2P)/S + 1``
with dilation and asymmetric padding; pooling's ``ceil_mode`` rounds up but drops a last window
that would start in the right padding; TensorFlow's ``'same'`` makes the output ``⌈W/S⌉`` with
``P + P' = max((⌈W/S⌉ − 1)·S + D·(F − 1) + 1 − W, 0)``, the odd element at the end; a transposed
convolution inverts the window: ``(W − 1)·S − P − P' + D·(F − 1) + 1``, its crops ``P`` and
``P'`` (torch's ``P' = P − output_padding``).

Receptive field of one unit of a feature map, in input pixels: its size ``r``, the distance
``j`` (jump) between the fields of neighbouring units, and the centre ``start`` of the first
unit's field (pixel centres are at 0, 1, …). From the input (``r = 1, j = 1, start = 0``) a
window layer gives::

    j_out = j_in · S
    r_out = r_in + (F − 1) · D · j_in
    start_out = start_in + ((F − 1)/2 · D − P) · j_in

The size is not clipped at the input's borders (it may exceed the input).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """Receptive field of a unit of a feature map, one entry per spatial axis of the input.

    ``extent`` is the feature map's own spatial size (what a global layer covers).
    """

    size: tuple[float, ...]
    jump: tuple[float, ...]
    start: tuple[float, ...]
    extent: tuple[int, ...]

    @classmethod
    def of_input(cls, spatial: Sequence[int]) -> Field:
        n = len(spatial)
        return cls((1.0,) * n, (1.0,) * n, (0.0,) * n, tuple(spatial))

    @property
    def ndim(self) -> int:
        return len(self.size)


# ---------------------------------------------------------------------------------------------
# Output sizes
# ---------------------------------------------------------------------------------------------


def window_output(
    size: int,
    kernel: int,
    stride: int,
    padding: int,
    padding_end: int,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output length of a convolution or pooling window along one axis."""
    reach = size + padding + padding_end - dilation * (kernel - 1) - 1
    out = (reach + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:  # the last window starts in padding
        out -= 1
    return out


def transposed_output(
    size: int, kernel: int, stride: int, padding: int, padding_end: int, dilation: int = 1
) -> int:
    """Output length of a transposed convolution along one axis: its full output cropped by
    ``padding`` at the start and ``padding_end`` at the end (torch's ``padding − output_padding``
    for an int ``padding``)."""
    return (size - 1) * stride - padding - padding_end + dilation * (kernel - 1) + 1


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each adaptive pooling window: ``⌊i·W/O⌋`` to ``⌈(i+1)·W/O⌉``."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


# ---------------------------------------------------------------------------------------------
# Receptive fields
# ---------------------------------------------------------------------------------------------


def _per_axis(field: Field, extent: Sequence[int], step) -> Field:
    """Apply ``step(axis, r, j, start) -> (r, j, start)`` to every axis."""
    axes = [
        step(a, r, j, s) for a, (r, j, s) in enumerate(zip(field.size, field.jump, field.start))
    ]
    return Field(
        tuple(float(a[0]) for a in axes),
        tuple(float(a[1]) for a in axes),
        tuple(float(a[2]) for a in axes),
        tuple(extent),
    )


def window_field(
    field: Field,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    extent: Sequence[int],
) -> Field:
    """Through a convolution or pooling window (``padding``: the part before each axis)."""

    def step(a, r, j, s):
        k, st, p, d = kernel[a], stride[a], padding[a], dilation[a]
        return r + (k - 1) * d * j, j * st, s + ((k - 1) / 2 * d - p) * j

    return _per_axis(field, extent, step)


def transposed_field(
    field: Field,
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    extent: Sequence[int],
) -> Field:
    """Through a transposed convolution: output ``o`` receives input ``i`` through tap ``t``
    when ``o = i·S + t·D − P``, so ``j_out = j_in / S``.

    The taps that reach one output are ``S / gcd(S, D)`` apart, so the output units that see the
    most inputs see ``span = ⌊(F − 1) / (S / gcd(S, D))⌋ · D / gcd(S, D)`` input steps and
    ``r_out = r_in + span · j_in`` (exact for them; e.g. ``F = S = 2`` gives ``r_out = r_in``).
    ``start_out = start_in + (P − (F − 1)/2 · D) · j_in / S``: the centre of the kernel's
    footprint.
    """

    def step(a, r, j, s):
        k, st, p, d = kernel[a], stride[a], padding[a], dilation[a]
        period = st // math.gcd(st, d)  # taps that hit the same output are `period` apart
        span = ((k - 1) // period) * period * d // st  # in input steps
        return r + span * j, j / st, s + (p - (k - 1) / 2 * d) * j / st

    return _per_axis(field, extent, step)


def adaptive_field(field: Field, in_size: Sequence[int], out_size: Sequence[int]) -> Field:
    """Through adaptive pooling: the widest window, the first window's centre and the mean
    spacing of the windows' centres, ``(last − first) / (O − 1)`` (the first and last windows
    touch the borders, so this is not ``W/O``)."""

    def step(a, r, j, s):
        windows = adaptive_windows(in_size[a], out_size[a])
        widest = max(e - b for b, e in windows)
        centres = [(b + e - 1) / 2 for b, e in windows]
        spacing = (centres[-1] - centres[0]) / (len(centres) - 1) if len(centres) > 1 else 1
        return r + (widest - 1) * j, j * spacing, s + centres[0] * j

    return _per_axis(field, out_size, step)


def whole_field(field: Field) -> Field:
    """Through a layer that sees its whole input (global pooling, a fully-connected layer on a
    flattened map): one window covering the field's extent."""
    ones = (1,) * field.ndim
    return window_field(field, field.extent, field.extent, (0,) * field.ndim, ones, ones)


def resize_field(field: Field, in_size: Sequence[int], out_size: Sequence[int], taps: int) -> Field:
    """Through an interpolation from ``in_size`` to ``out_size`` reading ``taps`` neighbours
    per axis (nearest 1, linear 2, cubic 4): ``j_out = j_in · W/O``, pixel centres aligned."""

    def step(a, r, j, s):
        scale = in_size[a] / out_size[a]
        return r + (taps - 1) * j, j * scale, s + (scale - 1) / 2 * j

    return _per_axis(field, out_size, step)


def aligned_resize_field(
    field: Field, in_size: Sequence[int], out_size: Sequence[int], taps: int
) -> Field:
    """Through an interpolation with ``align_corners=True``: output ``o`` reads around input
    position ``o·(W − 1)/(O − 1)``, so the corner pixels' centres coincide:
    ``j_out = j_in · (W − 1)/(O − 1)``, ``start_out = start_in``."""

    def step(a, r, j, s):
        scale = (in_size[a] - 1) / (out_size[a] - 1) if out_size[a] > 1 else 0
        return r + (taps - 1) * j, j * scale, s

    return _per_axis(field, out_size, step)


def pad_field(field: Field, before: Sequence[int], extent: Sequence[int]) -> Field:
    """Through a padding layer adding ``before`` units at the start of each axis (a negative
    number crops): the first unit is ``before`` units earlier, ``start_out = start_in −
    before · j_in``, as a convolution's padding shifts it."""
    return _per_axis(field, extent, lambda a, r, j, s: (r, j, s - before[a] * j))


def union(fields: Sequence[Field]) -> Field:
    """The field of a unit computed from several maps (a residual sum, a concatenation): the
    smallest interval holding every field, the largest jump, the largest extent."""
    if len(fields) == 1:
        return fields[0]
    size, start = [], []
    for axis in range(fields[0].ndim):
        lo = min(f.start[axis] - (f.size[axis] - 1) / 2 for f in fields)
        hi = max(f.start[axis] + (f.size[axis] - 1) / 2 for f in fields)
        size.append(hi - lo + 1)
        start.append((lo + hi) / 2)
    jump = tuple(max(f.jump[a] for f in fields) for a in range(fields[0].ndim))
    extent = tuple(max(f.extent[a] for f in fields) for a in range(fields[0].ndim))
    return Field(tuple(size), jump, tuple(start), extent)
