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
        if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return fn(t, *args, **kwargs)
        return fn(t, *args, **kwargs)

    return run
