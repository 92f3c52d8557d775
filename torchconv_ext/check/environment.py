"""Where the check ran: device, versions, the code's git SHA, date — the report's header."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from .device import device, interpreter

INTERPRETER = "cpu-interpreter"
GPU = "cuda"


def mode() -> str:
    return GPU if device() == "cuda" else INTERPRETER


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_sha() -> tuple[str, bool | None]:
    """``(SHA, uncommitted changes?)`` of the checkout this package runs from; ``("unknown",
    None)`` when it is not one (an installed copy, or a tree without ``.git``)."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
        if done.returncode:
            raise OSError(done.stderr)
        return done.stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return "unknown", None  # some other repository around an installed copy
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def describe() -> dict[str, Any]:
    """The header fields of the report."""
    sha, dirty = git_sha()
    on_gpu = mode() == GPU
    if on_gpu:
        name = torch.cuda.get_device_name()
        capability = ".".join(map(str, torch.cuda.get_device_capability()))
        memory = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    else:
        name = f"CPU ({platform.machine()}), Triton interpreter"
        capability, memory = None, None
    return {
        "mode": mode(),
        "device": name,
        "compute_capability": capability,
        "device_memory_gib": memory,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "cuda": torch.version.cuda or "none",
        "python": sys.version.split()[0],
        "git_sha": sha,
        "git_dirty": dirty,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "triton_interpret": interpreter(),
    }
