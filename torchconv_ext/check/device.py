"""Where the check runs, and whether that device can still run work."""

from __future__ import annotations

import torch


class BrokenDevice(RuntimeError):
    """The device cannot run more work in this process (a kernel faulted and left the CUDA
    context unusable); raised after the failing case's row was reported."""


def device() -> str:
    """``"cuda"``, or ``"cpu"`` (Triton's interpreter)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def healthy() -> bool:
    """Whether the device still runs work: a CUDA fault shows at the next synchronisation."""
    if not torch.cuda.is_available():
        return True
    try:
        torch.cuda.synchronize()
        return True
    except Exception:
        return False
