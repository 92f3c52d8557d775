"""A bounds check for Triton's CPU interpreter: ``TRITON_INTERPRET=1`` with
``TORCHCONV_EXT_BOUNDS_CHECK=1`` (the test suite and the fuzzer set both).

On a GPU, a kernel that reads or writes past its tensors faults — an illegal memory access, which
ends the process's CUDA context — or silently touches another allocation; on the interpreter it
reads and writes host memory, and nothing notices. With the check on, every element a load or
store lets through its mask must lie within one of the launch's tensor arguments (from its first
element to the last its strides reach), else :class:`OutOfBounds` is raised naming the kernel.
Loads and stores outside a launch (none of ours) and launches with tensors off the CPU (whose
copies the interpreter makes) are not checked.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["OutOfBounds", "check_bounds"]


class OutOfBounds(IndexError):
    """A kernel's load or store reached outside every tensor of its launch."""


#: ``.launch``: the running launch's kernel name and its tensors' byte ranges.
_running = threading.local()


def check_bounds() -> None:
    """Check every interpreted load and store from now on (at most once per process)."""
    from triton.runtime import interpreter

    executor, builder = interpreter.GridExecutor, interpreter.InterpreterBuilder
    if getattr(executor.__call__, "bounds_checked", False):
        return
    run, load, store = executor.__call__, builder.create_masked_load, builder.create_masked_store

    @functools.wraps(run)
    def run_checked(self, *args, **kwargs):
        tensors = list(_tensors((*args, *kwargs.values())))
        checked = all(t.device.type == "cpu" for t in tensors)
        outer = getattr(_running, "launch", None)
        _running.launch = (self.fn.__name__, [_span(t) for t in tensors]) if checked else None
        try:
            return run(self, *args, **kwargs)
        finally:
            _running.launch = outer

    @functools.wraps(load)
    def load_checked(self, ptrs, mask, *rest, **named):
        _check(ptrs, mask, "load")
        return load(self, ptrs, mask, *rest, **named)

    @functools.wraps(store)
    def store_checked(self, ptrs, value, mask, *rest, **named):
        _check(ptrs, mask, "store")
        return store(self, ptrs, value, mask, *rest, **named)

    run_checked.bounds_checked = True
    executor.__call__ = run_checked
    builder.create_masked_load = load_checked
    builder.create_masked_store = store_checked


def _tensors(args: Iterable[Any]) -> Iterator[Any]:
    """The torch tensors among a launch's arguments (inside tuples too, views of reinterpreted
    ones as their base)."""
    for arg in args:
        if isinstance(arg, tuple):
            yield from _tensors(arg)
        elif hasattr(arg, "data_ptr"):
            tensor = getattr(arg, "base", arg)  # (Triton's reinterpreting wrapper)
            if tensor.numel():
                yield tensor


def _span(t: Any) -> tuple[int, int]:
    """The bytes ``[start, end)`` from a tensor's first element to the end of its last."""
    reach = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + (reach + 1) * t.element_size()


def _check(ptrs: Any, mask: Any, access: str) -> None:
    launch = getattr(_running, "launch", None)
    if launch is None:
        return
    name, spans = launch
    size = max(1, ptrs.get_element_ty().primitive_bitwidth // 8)
    # (The interpreter's NumPy arrays, through their methods: the library imports no NumPy.)
    addresses = ptrs.data
    # (a mask of scalar comparisons can come as int32, whose reductions' `where` refuses)
    active = True if mask is None else mask.data.astype(bool, copy=False)
    lowest = int(addresses.min(initial=2**64 - 1, where=active))
    highest = int(addresses.max(initial=0, where=active))
    if lowest > highest or any(s <= lowest and highest + size <= e for s, e in spans):
        return  # (nothing active, or all inside one tensor: the usual case, two reductions)
    _raise_outside(name, spans, addresses, active, size, access)


def _raise_outside(name: str, spans: list, addresses: Any, active: Any, size: int, access: str):
    """Raise :class:`OutOfBounds` unless each active address lies in some tensor."""
    addresses = addresses[(addresses == addresses) & active].ravel()  # (broadcast)
    inside = addresses != addresses
    for start, end in spans:
        inside |= (addresses >= start) & (addresses <= end - size)
    if inside.all():
        return
    outside = addresses[~inside]
    first = int(outside[0])
    below = [(start, end) for start, end in spans if start <= first]
    if below:
        start, end = max(below)
        where = f"at byte {first - start} of the {end - start} bytes from {start:#x}"
    elif spans:
        start = min(spans)[0]
        where = f"{start - first} bytes before the tensor at {start:#x}"
    else:
        where = "(the launch has no tensor)"
    raise OutOfBounds(
        f"{name}: a {access} of {outside.size} element(s) outside every tensor of the launch, "
        f"the first {where}"
    )
