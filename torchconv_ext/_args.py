"""Argument forms every op family shares: tensors, ints-or-tuples and TensorFlow-style
padding strings.

The family modules (``_conv_args``, ``_pool_args``, ``_upsample_args``) check their own
arguments with their own messages; the shapes of those arguments are read here, once.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

#: An int, or one int per spatial dimension.
IntOrTuple = int | Sequence[int]

#: A convolution's numeric padding: an int, or per spatial dimension an int (both sides) or a
#: ``(before, after)`` pair.
Padding = int | Sequence[int | Sequence[int]]


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for ``b > 0``, as ``(a + b - 1) // b``: sizes are non-negative, so its
    division is of non-negative numbers — recorded from a trace's sizes, ONNX's integer
    division (which truncates) computes it right, where ``-(-a // b)`` would round the wrong
    way."""
    return (a + b - 1) // b


def check_tensor(name: str, label: str, value: object, *, optional: bool = False) -> None:
    """Refuse an operand ``label`` of op ``name`` that is not a tensor (nor ``None``, where
    ``optional``) with the ``TypeError`` torch's argument parser raises for one."""
    if isinstance(value, torch.Tensor) or (optional and value is None):
        return
    expected = "Tensor or None" if optional else "Tensor"
    raise TypeError(f"{name}(): argument '{label}' must be {expected}, not {type(value).__name__}")


def is_int(value: object) -> bool:
    """Python, NumPy and symbolic integers (not bools), and tensors of one integer (or bool)
    element, as torch's int arguments accept them (``Tensor.__index__``)."""
    if type(value) is int:
        return True  # the common case, without the slower ABC check below
    if isinstance(value, torch.Tensor):
        return is_index_tensor(value)
    return isinstance(value, numbers.Integral | torch.SymInt) and not isinstance(value, bool)


def is_index_tensor(t: torch.Tensor) -> bool:
    """Whether torch takes tensor ``t`` for an int: one element of an integer or bool dtype."""
    return not (t.is_floating_point() or t.is_complex()) and t.numel() == 1


def expand(value: object, ndim: int) -> tuple[int, ...] | None:
    """``value`` — an int, or a sequence of 1 or ``ndim`` ints — as ``ndim`` ints.

    Returns ``None`` for any other form, so each caller raises its own family's error.
    """
    if type(value) is int:
        return (value,) * ndim
    if is_int(value):
        return (_plain(value),) * ndim
    if not isinstance(value, Sequence) or isinstance(value, str):
        return None
    values = tuple(value)
    if len(values) not in (1, ndim) or not all(is_int(v) for v in values):
        return None
    values = tuple(_plain(v) for v in values)
    return values * ndim if len(values) == 1 else values


def expand_pairs(value: object, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """``value`` — an int, or a sequence of 1 or ``ndim`` entries, each an int (both sides) or a
    ``(before, after)`` pair of ints — as ``(before, after)``, ``ndim`` ints each.

    Returns ``None`` for any other form (:func:`pairs_count` tells a wrong count apart)."""
    ints = expand(value, ndim)
    if ints is not None:
        return ints, ints
    if pairs_count(value) not in (1, ndim):
        return None
    pairs = [(e, e) if is_int(e) else tuple(e) for e in value]  # type: ignore[union-attr]
    pairs *= ndim // len(pairs)
    return tuple(_plain(p[0]) for p in pairs), tuple(_plain(p[1]) for p in pairs)


def checked_pairs(
    name: str, padding: object, ndim: int, count_error: Callable[[], str]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """:func:`expand_pairs` of a numeric ``padding``, or torch's error types: a ``TypeError``
    naming the accepted forms for a malformed entry, the ``RuntimeError`` ``count_error()``
    (each family words torch's own) for a wrong count."""
    pairs = expand_pairs(padding, ndim)
    if pairs is not None:
        return pairs
    if pairs_count(padding) is None:
        raise TypeError(
            f"{name}: padding must be an int, a tuple of ints, 'same' or 'valid', or one (before, "
            f"after) pair of ints per spatial dimension, but got padding={padding!r}"
        )
    raise RuntimeError(count_error())


def has_pairs(padding: object) -> bool:
    """Whether a numeric ``padding`` holds ``(before, after)`` pairs (ours: torch takes ints)."""
    return isinstance(padding, Sequence) and any(
        isinstance(entry, Sequence) and not isinstance(entry, str) for entry in padding
    )


def pairs_count(value: object) -> int | None:
    """How many entries ``value`` has where it is a sequence of ints and ``(before, after)``
    pairs of ints; else ``None``."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        return None
    for entry in value:
        if is_int(entry):
            continue
        if not (isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 2):
            return None
        if not all(is_int(v) for v in entry):
            return None
    return len(value)


def is_ints(value: object) -> bool:
    """Whether ``value`` is an int or a sequence of ints, of any length: what torch's argument
    parser takes for an int-tuple argument (any other form is a ``TypeError`` there)."""
    if is_int(value):
        return True
    return (
        isinstance(value, Sequence) and not isinstance(value, str) and all(is_int(v) for v in value)
    )


def plain_int(name: str, value: object) -> int:
    """An int argument (Python, NumPy or symbolic) as torch takes it; ``TypeError`` otherwise,
    as torch's argument parser raises."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, but got {name}={value!r}")
    return _plain(value)


def _plain(v):
    """A NumPy integer or an integer tensor as a Python int (symbolic ints stay symbolic)."""
    return v if isinstance(v, int | torch.SymInt) else int(v)


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's ``'same'``: output ``ceil(size/stride)``, the odd padding element at the end.

    With stride 1 this is exactly torch's ``'same'``. A symbolic ``size`` (``torch.export``,
    ``torch.compile(dynamic=True)``) gives symbolic padding: no branch on it, so no guard.
    """
    span = (kernel - 1) * dilation + 1
    # (ceil(size / stride) - 1) * stride + span - size, in a form whose range is plain to see
    # for a symbolic size: between span - stride and span - 1.
    total = span - stride + (-size) % stride
    if stride > span:  # only then can the total be negative
        # (torch 2.11's Dynamo cannot trace sym_max on plain ints)
        total = torch.sym_max(total, 0) if isinstance(total, torch.SymInt) else max(total, 0)
    return total // 2, total - total // 2


def transposed_same(kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """What a transposed convolution padded ``'same'`` (output ``size · stride``) crops from the
    start and the end of its full output: ``D·(F − 1) + 1 − S`` split evenly, the odd element at
    the end; a negative crop (stride beyond the kernel's span) extends the end instead."""
    crop = (kernel - 1) * dilation + 1 - stride
    before = max(crop, 0) // 2
    return before, crop - before


def string_padding(
    name: str,
    padding: str,
    sizes: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    error: type[Exception],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(before, after)`` per spatial dim for ``'valid'`` or ``'same'``; ``error`` otherwise."""
    if padding == "valid":
        zeros = (0,) * len(sizes)
        return zeros, zeros
    if padding == "same":
        pairs = [same_padding(*a) for a in zip(sizes, kernel, stride, dilation)]
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    raise error(f"{name}: invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")


# --------------------------------------------------------------------------------------------
# Validated arguments, remembered
# --------------------------------------------------------------------------------------------

#: Validated argument tuples each checker remembers (its table is cleared when full).
MEMO_CAPACITY = 1024

Check = TypeVar("Check", bound=Callable)

#: How :func:`plain_key` takes each argument type: a tensor by its metadata, a value as it is, a
#: tuple or list when it holds ints only (or ints and tuples or lists of ints: padding pairs);
#: other types are not plain.
_TENSOR, _VALUE, _INTS = "tensor", "value", "ints"
_KINDS: dict[type, str] = {
    torch.Tensor: _TENSOR,
    torch.nn.Parameter: _TENSOR,
    **dict.fromkeys((int, str, float, type(None), bool), _VALUE),
    **dict.fromkeys((tuple, list), _INTS),
}
#: Per tuple of argument types: where its tensors and its sequences are (``None``: not plain).
_PLACES: dict[tuple[type, ...], tuple[tuple[int, ...], tuple[int, ...]] | None] = {}


def _places(types: tuple[type, ...]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    kinds = [_KINDS.get(t) for t in types]
    places = None
    if None not in kinds:
        places = (
            tuple(i for i, k in enumerate(kinds) if k == _TENSOR),
            tuple(i for i, k in enumerate(kinds) if k == _INTS),
        )
    if len(_PLACES) >= MEMO_CAPACITY:
        _PLACES.clear()
    _PLACES[types] = places
    return places


def plain_key(args: tuple) -> tuple | None:
    """``args`` as a key that tells apart everything a checker can read of them — a tensor's
    type, shape, dtype and device; a value's type and value — or ``None`` when one is not plain
    (NumPy or symbolic ints, tensor subclasses, other objects: those are checked every time).

    The key is the arguments' types (which tell ``1``, ``True`` and ``1.0`` apart), then their
    values with each tensor's metadata in its place (a functional op computes one per call)."""
    types = tuple(map(type, args))
    places = _PLACES.get(types, False)
    if places is False:  # (a tuple of types not seen before)
        places = _places(types)
    if places is None:
        return None
    tensors, sequences = places
    if not tensors and not sequences:
        return types, args
    values = list(args)
    for i in tensors:
        t = args[i]
        dtype = t.dtype
        if not dtype.is_floating_point and is_index_tensor(t):
            return None  # (perhaps an int argument given as a tensor: its value would matter)
        values[i] = (t.shape, dtype, t.device)
    for i in sequences:
        values[i] = _plain_ints(args[i])
        if values[i] is None:
            return None
    return types, tuple(values)


def _plain_ints(sequence: Sequence) -> tuple | None:
    """A sequence of Python ints, or of ints and sequences of them (padding pairs), as a tuple
    of ints and tuples; ``None`` for any other content."""
    if all(type(v) is int for v in sequence):
        return tuple(sequence)
    entries = []
    for v in sequence:
        if type(v) is not int:
            if type(v) not in (tuple, list) or not all(type(e) is int for e in v):
                return None
            v = tuple(v)
        entries.append(v)
    return tuple(entries)


def memoized(check: Check) -> Check:
    """Remember a pure argument checker's result per plain argument tuple (positional only).

    ``check`` must read nothing but its arguments — of tensors only their type, shape, dtype
    and device — and return an immutable value; calls that raise are not remembered (they raise
    again), and nothing is remembered while ``torch.compile`` traces (sizes may be symbolic).
    """
    table: dict[tuple, object] = {}

    @functools.wraps(check)
    def checked(*args, **kwargs):
        if kwargs or torch.compiler.is_compiling():
            return check(*args, **kwargs)
        key = plain_key(args)
        if key is None:
            return check(*args)
        value = table.get(key)
        if value is None:
            value = check(*args)
            if len(table) >= MEMO_CAPACITY:
                table.clear()
            table[key] = value
        return value

    checked.cache_clear = table.clear  # type: ignore[attr-defined]
    return checked  # type: ignore[return-value]
