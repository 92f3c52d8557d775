"""Argument forms every op family shares: ints-or-tuples and TensorFlow-style padding strings.

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

PADDING_STRINGS: tuple[str, ...] = ("valid", "same")


def is_int(value: object) -> bool:
    """Python, NumPy and symbolic integers (not bools), as torch's int arguments accept them."""
    if type(value) is int:
        return True  # the common case, without the slower ABC check below
    return isinstance(value, numbers.Integral | torch.SymInt) and not isinstance(value, bool)


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
    """A NumPy integer as a Python int (symbolic ints stay symbolic)."""
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
        total = torch.sym_max(total, 0)
    return total // 2, total - total // 2


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

_PLAIN_SCALARS = (int, str, float, type(None))
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)

Check = TypeVar("Check", bound=Callable)


def plain_key(args: tuple) -> tuple | None:
    """``args`` as a key that tells apart everything a checker can read of them — a tensor's
    type, shape, dtype and device; a value's type and value — or ``None`` when one is not plain
    (NumPy or symbolic ints, tensor subclasses, other objects: those are checked every time)."""
    key = []
    for a in args:
        t = type(a)
        if t in _PLAIN_TENSORS:
            key.append((t, a.shape, a.dtype, a.device))
        elif t in _PLAIN_SCALARS or t is bool:
            key.append((t, a))
        elif (t is tuple or t is list) and all(type(v) is int for v in a):
            key.append((t, *a))
        else:
            return None
    return tuple(key)


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
