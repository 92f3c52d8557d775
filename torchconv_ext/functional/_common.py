"""Pieces every functional op shares: ``__torch_function__`` handling, the choice between our
kernels and torch's own op, and the call's opening (rank, unbatched inputs, autocast)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.overrides import handle_torch_function, has_torch_function

from .. import _backend
from .._args import check_tensor, plain_key
from .._backend import exporting, get_backend, use_triton
from . import _autocast

FLOATS: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: The dtypes our kernels compute, per op family. Torch's own ops compute every other dtype
#: (integers, bool, complex, ...), on every backend, so those behave exactly as in torch.
KERNEL_DTYPES: dict[str, tuple[torch.dtype, ...]] = {
    "conv": FLOATS,
    "pool": FLOATS,
    "upsample": (*FLOATS, torch.uint8),
}

Op = TypeVar("Op", bound=Callable)


def overridable(op: Op) -> Op:
    """Give a public op ``__torch_function__`` handling, as ``torch.nn.functional``'s ops have.

    When an argument defines ``__torch_function__`` — an ``torch.fx`` proxy, a tensor subclass —
    the call goes to it with ``op`` itself as the function, so ``torch.fx.symbolic_trace``
    records one ``call_function`` to our op instead of tracing into its argument checks, and
    subclasses see our op as they see torch's. Plain tensors pay one C-level test.
    """

    @functools.wraps(op)
    def public(*args, **kwargs):
        if has_torch_function(args) or (kwargs and has_torch_function(tuple(kwargs.values()))):
            relevant = (*args, *kwargs.values())
            return handle_torch_function(public, relevant, *args, **kwargs)
        return op(*args, **kwargs)

    return public


def runs_kernels(family: str, input: torch.Tensor, dtype: torch.dtype | None) -> bool:
    """Whether our Triton kernels compute a ``family`` op (``"conv"``, ``"pool"``,
    ``"upsample"``) on ``input`` in ``dtype``: the backend chooses them for ``input``'s device
    and they compute ``dtype``.

    Otherwise the call goes to torch's own op where torch accepts its arguments (the fallback
    *is* torch's op then: torch's speed, autograd and error messages); so it does wherever the
    call is recorded for another runtime (``_backend.exporting``). Raises where the backend
    demands Triton but Triton's CPU interpreter would compute ``dtype`` wrongly.
    """
    if not isinstance(input, torch.Tensor) or exporting():
        return False  # torch's op gives the error; a graph for another runtime holds torch's ops
    return dtype in KERNEL_DTYPES[family] and use_triton(input, family, dtype)


def empty_batch(input: object, spatial_dims: int) -> bool:
    """Whether ``input`` is a batch of no samples (``(0, C, *spatial)``)."""
    return (
        isinstance(input, torch.Tensor) and input.dim() == spatial_dims + 2 and not input.shape[0]
    )


def conv_dtype(input: torch.Tensor) -> tuple[torch.dtype | None, torch.dtype | None]:
    """``(cast, dtype)``: the dtype autocast casts a convolution's operands to (``None``: no
    cast), and the dtype the convolution of ``input`` then computes in."""
    if not isinstance(input, torch.Tensor):
        return None, None  # torch's op gives the error
    cast = _autocast.conv_dtype(input)
    return cast, _autocast.dtype_after(cast, input)


def autocast_dtype(op: str, input: torch.Tensor) -> tuple[torch.dtype | None, torch.dtype | None]:
    """``(cast, dtype)`` for pooling or upsampling as torch's ATen op ``op``: the dtype autocast
    casts the input to (``None``: no cast), and the dtype the op then computes in."""
    if not isinstance(input, torch.Tensor):
        return None, None  # torch's op gives the error
    cast = _autocast.torch_op_dtype(op, input)
    return cast, cast or input.dtype


def cast_operands(dtype: torch.dtype | None, *tensors: torch.Tensor | None) -> tuple:
    """``tensors`` cast as autocast casts them to ``dtype`` (unchanged for ``None``)."""
    return _autocast.cast(dtype, *tensors)


def check_rank(name: str, input: torch.Tensor, spatial_dims: int) -> bool:
    """Check ``input`` is ``(C, *spatial)`` or ``(N, C, *spatial)``; return whether batched."""
    check_tensor(name, "input", input)
    if input.dim() not in (spatial_dims + 1, spatial_dims + 2):
        raise RuntimeError(
            f"Expected {spatial_dims + 1}D (unbatched) or {spatial_dims + 2}D (batched) input to "
            f"{name}, but got input of size: {list(input.shape)}"
        )
    return input.dim() == spatial_dims + 2


def open_call(
    name: str,
    spatial_dims: int,
    input: torch.Tensor,
    *operands: torch.Tensor | None,
    cast: torch.dtype | None = None,
) -> tuple:
    """The opening of every functional op on our path: check the rank, view an unbatched
    ``(C, *spatial)`` input as a batch of one, and cast the floating operands as autocast does
    (to ``cast``, see ``_autocast``).

    Returns ``(batched, input, *operands)``; the op squeezes the batch off its result when
    ``batched`` is false.
    """
    batched = check_rank(name, input, spatial_dims)
    if not batched:
        input = input.unsqueeze(0)
    input, *operands = cast_operands(cast, input, *operands)
    return (batched, input, *operands)


#: A remembered opening that hands the call to torch's own op.
TORCH_OP = "torch's own op"


class Openings:
    """What a functional op's opening decided for a plain call — the checked arguments, the
    backend's choice, the geometry — remembered per call signature, so that the next call with
    the same arguments, tensor metadata (type, shape, dtype, device) and backend, outside
    autocast, goes straight to the primitive (or, :data:`TORCH_OP`, to torch's own op).

    The op remembers only what its opening computed from those; a call that raises is never
    remembered (it raises again), and nothing is while ``torch.compile`` or ``torch.jit.trace``
    traces or under autocast.
    """

    #: Signatures held before the table is cleared (this bounds memory only).
    CAPACITY = 1024

    def __init__(self) -> None:
        self._table: dict[tuple, object] = {}

    def key(self, *args: object) -> tuple | None:
        """The signature of a call with ``args`` (``None``: one that is never remembered)."""
        if (
            torch._C._is_any_autocast_enabled()
            or torch.compiler.is_compiling()
            # (``jit_tracing()`` inline: a trace records the opening's every step, the same
            # each time)
            or torch._C._get_tracing_state() is not None
        ):
            return None
        key = plain_key(args)
        # (``get_backend()`` once chosen, read inline: every call asks)
        return None if key is None else (_backend._current or get_backend(), key)

    def get(self, key: tuple | None) -> object | None:
        return None if key is None else self._table.get(key)

    def bind(self, key: tuple | None, prim: Any, *static: Any) -> Callable:
        """The primitive ``prim`` with its trailing arguments ``static`` fixed, for the call of
        signature ``key``: bound (``Primitive.bind``, the lean eager path) when the opening is
        remembered — a bound primitive's tapes are keyed by the object itself, so it lives as
        long as the opening — else a plain call (a one-off, under autocast or tracing)."""
        if key is None:
            return lambda *leading: prim(*leading, *static)
        return prim.bind(*static)

    def remember(self, key: tuple | None, opening: object) -> None:
        if key is None:
            return
        if len(self._table) >= self.CAPACITY:
            self._table.clear()
        self._table[key] = opening
