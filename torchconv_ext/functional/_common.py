"""Pieces every functional op shares: the call's opening (rank, unbatched inputs, autocast) and
the choice to hand a call to torch's own op."""

from __future__ import annotations

import torch

from .._backend import use_triton


def check_rank(name: str, input: torch.Tensor, spatial_dims: int) -> bool:
    """Check ``input`` is ``(C, *spatial)`` or ``(N, C, *spatial)``; return whether batched."""
    if input.dim() not in (spatial_dims + 1, spatial_dims + 2):
        raise RuntimeError(
            f"Expected {spatial_dims + 1}D (unbatched) or {spatial_dims + 2}D (batched) input to "
            f"{name}, but got input of size: {list(input.shape)}"
        )
    return input.dim() == spatial_dims + 2


def autocast_cast(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Cast floating operands to the autocast dtype where torch's convolution would be cast."""
    device = tensors[0].device.type
    # Devices without autocast (meta, used to count FLOPs without running) have nothing to cast.
    if not torch.amp.is_autocast_available(device) or not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(
        t.to(dtype) if t is not None and t.is_floating_point() and t.dtype != torch.float64 else t
        for t in tensors
    )


def open_call(
    name: str,
    spatial_dims: int,
    input: torch.Tensor,
    *operands: torch.Tensor | None,
    autocast: bool = False,
) -> tuple:
    """The opening of every functional op: check the rank, view an unbatched ``(C, *spatial)``
    input as a batch of one, and — for ops autocast casts (convolutions) — cast the floating
    operands to the autocast dtype.

    Returns ``(batched, input, *operands)``; the op squeezes the batch off its result when
    ``batched`` is false.
    """
    batched = check_rank(name, input, spatial_dims)
    if not batched:
        input = input.unsqueeze(0)
    if autocast:
        input, *operands = autocast_cast(input, *operands)
    return (batched, input, *operands)


def calls_torch_op(input: torch.Tensor) -> bool:
    """Whether a call on ``input`` goes to torch's own op: true on the fallback (backend
    ``"torch"``, or ``"auto"`` off CUDA), where — for arguments torch itself accepts — the
    fallback *is* torch's op, called directly: torch's speed, autograd and error messages."""
    return isinstance(input, torch.Tensor) and not use_triton(input)
