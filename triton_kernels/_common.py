"""Helpers shared by every launcher: N-d → 5-d views, int64 choice, dot precision.

Every kernel in this package works on 5-d tensors ``(N, C, D, H, W)``; 1-d and 2-d problems are
viewed as 3-d ones with unit leading spatial sizes (a view, never a copy), so one kernel serves
all three ranks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

#: True when the kernels were decorated under Triton's CPU interpreter.
INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"

#: Padding modes, as the integer codes the kernels take as a ``constexpr``.
PAD_MODES: dict[str, int] = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}

_INT32_LIMIT = 2**31


def as_5d(t: torch.Tensor) -> torch.Tensor:
    """View an ``(N, C, *spatial)`` tensor with 1–3 spatial dims as ``(N, C, D, H, W)``."""
    while t.dim() < 5:
        t = t.unsqueeze(2)
    return t


def spatial3(values: Sequence[int], fill: int) -> tuple[int, int, int]:
    """Left-pad per-dimension parameters to three entries (depth, height, width)."""
    values = tuple(int(v) for v in values)
    return (fill,) * (3 - len(values)) + values


def needs_int64(*tensors: torch.Tensor | None) -> bool:
    """Whether any tensor can be addressed past 2**31 elements (then offsets must be int64)."""
    for t in tensors:
        if t is None:
            continue
        span = 1 + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()) if s > 0)
        if max(span, t.numel()) >= _INT32_LIMIT:
            return True
    return False


def dot_precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    """``tl.dot``'s ``input_precision`` that matches torch for this dtype."""
    if dtype == torch.float32 and allow_tf32 and not INTERPRET:
        return "tf32"
    return "ieee"


def check_device(*tensors: torch.Tensor | None) -> None:
    """Refuse a launch that cannot run (CPU tensors without the interpreter)."""
    for t in tensors:
        if t is not None and not t.is_cuda and not INTERPRET:
            raise RuntimeError(
                "Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 set before "
                "triton_kernels is imported to run them on the CPU"
            )
