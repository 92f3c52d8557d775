"""Where the check runs, and whether that device can still run work."""

from __future__ import annotations

import os

import torch


class BrokenDevice(RuntimeError):
    """The device cannot run more work in this process (a kernel faulted and left the CUDA
    context unusable); raised after the failing case's row was reported."""


def interpreter() -> bool:
    """Whether Triton's interpreter runs the kernels (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def device() -> str:
    """``"cuda"``, or ``"cpu"`` for Triton's interpreter (also chosen on a GPU machine when
    ``TRITON_INTERPRET=1``: the interpreter is a CPU tool)."""
    return "cuda" if torch.cuda.is_available() and not interpreter() else "cpu"


def healthy() -> bool:
    """Whether the device still runs work: a CUDA fault shows at the next synchronisation."""
    if device() != "cuda":
        return True
    try:
        torch.cuda.synchronize()
        return True
    except Exception:
        return False
