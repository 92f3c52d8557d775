"""What each kind of layer does to the spatial size and to the receptive field.

:func:`layer_step` knows torch's convolution, transposed convolution, pooling (fixed, adaptive,
global, pyramid), interpolation, padding, ``Flatten`` and ``Linear`` layers (and so ours, which
subclass them or are ours), our locally connected and tiled convolutions and maxout; it returns
``None`` for any other layer, which :func:`generic_step` treats as leaving the field alone when
it keeps its input's shape (activations, normalisation, dropout) and as unknown otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from .. import nn as our_nn
from .._args import expand_pairs, same_padding, transposed_same
from ..nn.local import _MultiKernelConv
from .fields import (
    Field,
    adaptive_field,
    aligned_resize_field,
    pad_field,
    resize_field,
    transposed_field,
    transposed_output,
    union,
    whole_field,
    window_field,
    window_output,
)


@dataclass(frozen=True)
class Step:
    """A layer's effect: its output's spatial size by the formulas (``None``: not checked) and
    its output's receptive field (``None``: unknown)."""

    expected: tuple[int, ...] | None
    field: Field | None


_SPATIAL_DIMS: dict[type, int] = {
    nn.MaxPool1d: 1,
    nn.MaxPool2d: 2,
    nn.MaxPool3d: 3,
    nn.AvgPool1d: 1,
    nn.AvgPool2d: 2,
    nn.AvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1,
    nn.AdaptiveMaxPool2d: 2,
    nn.AdaptiveMaxPool3d: 3,
    nn.AdaptiveAvgPool1d: 1,
    nn.AdaptiveAvgPool2d: 2,
    nn.AdaptiveAvgPool3d: 3,
}

#: Input neighbours an interpolation reads per axis.
_INTERPOLATION_TAPS = {
    "nearest": 1,
    "nearest-exact": 1,
    "linear": 2,
    "bilinear": 2,
    "trilinear": 2,
    "bicubic": 4,
}

_WHOLE_INPUT = (our_nn.GlobalAvgPool, our_nn.GlobalMaxPool, our_nn.SpatialPyramidPool)


def _tuple(value, n: int) -> tuple:
    """A layer attribute (a value, or a sequence of 1 or ``n``) as ``n`` values."""
    if not isinstance(value, Sequence):
        return (value,) * n
    values = tuple(value)
    return values * n if len(values) == 1 else values


def _fits(field: Field | None, n: int) -> bool:
    return field is not None and field.ndim == n


def _spatial_dims(module: nn.Module) -> int | None:
    return next((n for cls, n in _SPATIAL_DIMS.items() if isinstance(module, cls)), None)


def _window(
    field: Field | None,
    sizes: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding,
    dilation: Sequence[int],
    ceil_mode: bool = False,
) -> Step:
    """A convolution or pooling window; ``padding`` ints, ``(before, after)`` pairs, ``'same'``
    or ``'valid'``."""
    n = len(kernel)
    if padding == "same":
        pairs = [same_padding(*a) for a in zip(sizes, kernel, stride, dilation)]
        before, after = [p[0] for p in pairs], [p[1] for p in pairs]
    elif padding == "valid":
        before = after = [0] * n
    else:
        before, after = expand_pairs(padding, n)
    out = tuple(
        window_output(*a, ceil_mode=ceil_mode)
        for a in zip(sizes, kernel, stride, before, after, dilation)
    )
    if not _fits(field, n):
        return Step(out, None)
    return Step(out, window_field(field, kernel, stride, before, dilation, out))


def _conv(m: _ConvNd, x: Tensor, field: Field | None, returned: Sequence[int] | None) -> Step:
    n = len(m.kernel_size)
    sizes = tuple(x.shape[-n:])
    if not m.transposed:
        return _window(field, sizes, m.kernel_size, m.stride, m.padding, m.dilation)
    if m.padding == "same":
        crops = [transposed_same(*a) for a in zip(m.kernel_size, m.stride, m.dilation)]
        before, end = [c[0] for c in crops], [c[1] for c in crops]
    elif m.padding == "valid":
        before = end = [0] * n
    else:  # ints, or (before, after) pairs; the output padding lowers the end's crop
        before, after = expand_pairs(m.padding, n)
        end = [a - op for a, op in zip(after, _tuple(m.output_padding, n))]
    out = tuple(
        transposed_output(*a) for a in zip(sizes, m.kernel_size, m.stride, before, end, m.dilation)
    )
    expected = out
    if returned is not None:  # given an output size, torch adds the difference at the end
        expected, out = None, tuple(returned[-n:])
    if not _fits(field, n):
        return Step(expected, None)
    return Step(expected, transposed_field(field, m.kernel_size, m.stride, before, m.dilation, out))


def _pool(m: nn.Module, x: Tensor, field: Field | None) -> Step:
    n = _spatial_dims(m)
    sizes = tuple(x.shape[-n:])
    kernel = _tuple(m.kernel_size, n)
    stride = _tuple(m.stride if m.stride is not None else m.kernel_size, n)
    dilation = _tuple(getattr(m, "dilation", 1), n)
    padding = m.padding if isinstance(m.padding, str) else _tuple(m.padding, n)
    return _window(field, sizes, kernel, stride, padding, dilation, m.ceil_mode)


def _adaptive(m: nn.Module, x: Tensor, field: Field | None) -> Step:
    n = _spatial_dims(m)
    sizes = tuple(x.shape[-n:])
    out = tuple(s if o is None else o for o, s in zip(_tuple(m.output_size, n), sizes))
    if not _fits(field, n) or any(o == 0 for o in out):
        return Step(out, None)
    return Step(out, adaptive_field(field, sizes, out))


def _interpolation(m: nn.Upsample, x: Tensor, field: Field | None) -> Step:
    n = x.dim() - 2
    sizes = tuple(x.shape[-n:])
    if m.size is not None:
        out = _tuple(m.size, n)
    else:
        out = tuple(int(s * f) for s, f in zip(sizes, _tuple(m.scale_factor, n)))
    taps = _INTERPOLATION_TAPS.get(m.mode)
    if not _fits(field, n) or taps is None:
        return Step(out, None)
    if m.align_corners:
        return Step(out, aligned_resize_field(field, sizes, out, taps))
    return Step(out, resize_field(field, sizes, out, taps))


_PADDING_LAYERS = (
    nn.modules.padding._ConstantPadNd,
    nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd,
    nn.modules.padding._CircularPadNd,
)


def _padding(m: nn.Module, x: Tensor, field: Field | None) -> Step:
    """A padding layer: ``m.padding`` is ``F.pad``'s ``(before, after)`` pairs, last axis first;
    it pads the last ``len(m.padding) // 2`` axes (a negative entry crops)."""
    n = len(m.padding) // 2
    pairs = [tuple(m.padding[2 * i : 2 * i + 2]) for i in reversed(range(n))]
    out = tuple(s + b + a for s, (b, a) in zip(x.shape[x.dim() - n :], pairs))
    if field is None or n > field.ndim or x.dim() != field.ndim + 2:
        return Step(out, None)
    before = [0] * (field.ndim - n) + [b for b, _ in pairs]
    return Step(out, pad_field(field, before, tuple(x.shape[2 : x.dim() - n]) + out))


def _whole(field: Field | None) -> Step:
    if field is None:
        return Step(None, None)
    covered = whole_field(field)
    return Step(None, Field(covered.size, covered.jump, covered.start, (1,) * field.ndim))


def layer_step(
    module: nn.Module, x: Tensor, field: Field | None, returned: Sequence[int] | None = None
) -> Step | None:
    """``module``'s effect on its input ``x`` whose field is ``field``; ``None`` if unknown.

    ``returned``: the shape the layer returned, when the call passed an output size (a
    transposed convolution's ``output_size``), so that its size is not predicted.
    """
    if isinstance(module, _ConvNd):
        return _conv(module, x, field, returned)
    if isinstance(module, _MultiKernelConv):  # locally connected / tiled: a convolution's window
        n = len(module.kernel_size)
        sizes = tuple(x.shape[-n:])
        return _window(
            field, sizes, module.kernel_size, module.stride, module.padding, module.dilation
        )
    if isinstance(module, nn.modules.pooling._MaxPoolNd | nn.modules.pooling._AvgPoolNd):
        return _pool(module, x, field)
    if isinstance(
        module, nn.modules.pooling._AdaptiveAvgPoolNd | nn.modules.pooling._AdaptiveMaxPoolNd
    ):
        return _adaptive(module, x, field)
    if isinstance(module, nn.Upsample):
        return _interpolation(module, x, field)
    if isinstance(module, _PADDING_LAYERS):
        return _padding(module, x, field)
    if isinstance(module, _WHOLE_INPUT):
        return _whole(field)
    if isinstance(module, our_nn.Maxout) and module.dim in (1, 1 - x.dim()):
        return Step(None, field)  # a max across channels: each output sees what its inputs saw
    if isinstance(module, nn.Linear):
        # On a flattened map it sees all of it; on a map it mixes the last spatial axis.
        return _whole(field) if x.dim() == 2 else Step(None, None)
    if isinstance(module, nn.Flatten):
        # Into (N, features) each feature keeps its pixel's field; other flattenings mix axes.
        keeps = field is not None and x.dim() == field.ndim + 2
        flat = (
            keeps and module.start_dim in (1, 1 - x.dim()) and module.end_dim in (-1, x.dim() - 1)
        )
        return Step(None, field if flat else None)
    return None


def generic_step(x: Tensor, output: Tensor, fields: Sequence[Field | None]) -> Step:
    """Any other layer, given the fields of its traced inputs (``x`` the first input): their
    union when the output keeps ``x``'s shape (activations, normalisation, dropout), else
    unknown."""
    if output.shape != x.shape or any(f is None for f in fields):
        return Step(None, None)
    return Step(None, _union(fields))


def _union(fields: Sequence[Field]) -> Field | None:
    """:func:`union`, or unknown when the fields do not have the same number of axes."""
    return union(fields) if len({f.ndim for f in fields}) == 1 else None
