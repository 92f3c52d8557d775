"""Output allocation: ATen's memory-format rule, and NaN poisoning for tests."""

from __future__ import annotations

import os

import torch

# Tests set TORCHCONV_EXT_POISON=1 so that every output a kernel fails to write shows as NaN.
_POISON = os.environ.get("TORCHCONV_EXT_POISON", "0") == "1"


def _channels_last_format(dim: int) -> torch.memory_format | None:
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(dim)


def is_channels_last(t: torch.Tensor) -> bool:
    """True when ``t`` is laid out channels-last and not (also) plain contiguous."""
    fmt = _channels_last_format(t.dim())
    return fmt is not None and t.is_contiguous(memory_format=fmt) and not t.is_contiguous()


def suggest_memory_format(*tensors: torch.Tensor) -> torch.memory_format:
    """ATen's rule for convolution-like ops: channels-last if any operand is channels-last."""
    fmt = _channels_last_format(tensors[0].dim())
    if fmt is not None and any(is_channels_last(t) for t in tensors):
        return fmt
    return torch.contiguous_format


def new_output(
    shape: torch.Size | list[int] | tuple[int, ...],
    like: torch.Tensor,
    memory_format: torch.memory_format = torch.contiguous_format,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """An uninitialised output tensor (NaN-filled when poisoning is on)."""
    out = torch.empty(
        shape, dtype=dtype or like.dtype, device=like.device, memory_format=memory_format
    )
    if _POISON:
        out.fill_(float("nan") if out.is_floating_point() else -1)
    return out
