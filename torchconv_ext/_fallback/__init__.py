"""The fallback backend: every op built from ATen, for any device torch supports."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

Fn = TypeVar("Fn", bound=Callable)


def without_autocast(fn: Fn) -> Fn:
    """Run ``fn`` — a fallback computation whose first argument is a tensor — with autocast off
    on that tensor's device.

    The functional layer casts the operands as torch's autocast does, once; the ATen ops a
    computation is built from must then compute in the dtypes they are given (CPU autocast
    would run a reflection pad in float32, say, and hand a float32 input to a bfloat16
    convolution). Costs one test when autocast is off.
    """

    @functools.wraps(fn)
    def run(t: torch.Tensor, *args, **kwargs):
        device = t.device.type
        if autocast_on(device):
            with torch.autocast(device, enabled=False):
                return fn(t, *args, **kwargs)
        return fn(t, *args, **kwargs)

    return run


#: Whether each device type has autocast, asked once per type: Dynamo before torch 2.13 cannot
#: trace the question (``torch._C._is_autocast_available``), and compiled code asks it.
_AUTOCAST_AVAILABLE = {d: torch.amp.is_autocast_available(d) for d in ("cpu", "cuda")}


def autocast_on(device: str) -> bool:
    """Whether autocast is on for the device type ``device`` (never for a type without
    autocast, such as meta: counting FLOPs without running)."""
    available = _AUTOCAST_AVAILABLE.get(device)
    if available is None:
        available = _AUTOCAST_AVAILABLE[device] = torch.amp.is_autocast_available(device)
    return available and torch.is_autocast_enabled(device)
