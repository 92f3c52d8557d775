"""The implementations timed side by side, and how each is set up.

* ``torch`` / ``torch_cl``: torch's own op (cuDNN on GPUs with ``cudnn.benchmark=True``, oneDNN
  or ATen on CPUs) on NCHW and channels-last tensors;
* ``compile``: ``torch.compile`` of torch's op, in the run's compile mode (``max-autotune`` by
  default; GPU runs; a failure to compile is recorded for that provider, never fatal);
* ``ours`` / ``ours_cl``: torchconv_ext — its Triton kernels on GPUs, its fallback on CPUs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Provider:
    """One implementation: whether it is ours, its memory layout, whether it is compiled."""

    name: str
    label: str
    ours: bool
    channels_last: bool = False
    compiled: bool = False


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("torch", "torch NCHW", ours=False),
        Provider("torch_cl", "torch channels_last", ours=False, channels_last=True),
        Provider("compile", "torch.compile", ours=False, compiled=True),
        Provider("ours", "torchconv_ext NCHW", ours=True),
        Provider("ours_cl", "torchconv_ext channels_last", ours=True, channels_last=True),
    )
}


def is_ours(name: str) -> bool:
    """Provider names starting with ``ours`` are ours (suites may add variants)."""
    return name.startswith("ours")


def is_baseline(name: str) -> bool:
    """``torch`` and ``torch_*`` providers: the eager torch op in some layout."""
    return name == "torch" or name.startswith("torch_")


def default_providers(device: str) -> list[str]:
    """Every provider on GPUs; on CPUs (sanity only) torch and ours in NCHW."""
    if device.startswith("cuda"):
        return list(PROVIDERS)
    return ["torch", "ours"]


def ours_backend(device: str) -> str:
    """The torchconv_ext backend "ours" runs on ``device``: Triton on GPUs, the fallback else."""
    return "triton" if device.startswith("cuda") else "torch"


def memory_format(dims: int) -> torch.memory_format | None:
    """The channels-last format for ``dims`` spatial dims (``None`` where torch has none)."""
    return {2: torch.channels_last, 3: torch.channels_last_3d}.get(dims)


#: ``torch.compile`` modes a run can time (``--compile-mode``).
COMPILE_MODES: tuple[str, ...] = ("max-autotune", "default")


def label(name: str, compile_mode: str) -> str:
    """A provider's label in result files; the compiled one names its mode."""
    if name not in PROVIDERS:
        return name
    p = PROVIDERS[name]
    return f'{p.label}(mode="{compile_mode}")' if p.compiled else p.label


def compiled(fn: Callable, mode: str) -> Callable:
    """``torch.compile(fn, mode=mode)`` with a fresh cache, one static shape per case."""
    torch._dynamo.reset()
    return torch.compile(fn, mode=None if mode == "default" else mode, dynamic=False)
