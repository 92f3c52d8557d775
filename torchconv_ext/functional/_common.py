"""Pieces every functional op shares: unbatched inputs, autocast, rank checks."""

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


def runs_natively(input: torch.Tensor) -> bool:
    """Whether ``input`` goes to the fallback, which — for arguments torch itself accepts — is
    torch's own op, called directly: torch's speed (no per-call overhead of our op layer, which
    small layers on a CPU would feel), torch's autograd and torch's error messages."""
    return isinstance(input, torch.Tensor) and not use_triton(input)
