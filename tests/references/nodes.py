"""Which of our entry points made an autograd node: a bound call's, or a primitive's own."""

from __future__ import annotations

import torch

from torchconv_ext._ops._primitive import BoundFunction, EagerFunction


def entry(node: torch.autograd.graph.Node | None) -> str | None:
    """``"bound"`` for a node of a bound call (``Bound``), ``"eager"`` for one of a primitive's
    own call (its ``EagerFunction``), else ``None`` (torch's nodes, or none)."""
    forward = getattr(type(node), "_forward_cls", None)
    if forward is None:
        return None
    if issubclass(forward, BoundFunction):
        return "bound"
    return "eager" if issubclass(forward, EagerFunction) else None
