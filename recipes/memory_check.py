"""A network too large for this machine's memory, refused before it is built.

On Linux an allocation past the machine's memory is not an error the run could report: the
kernel's out-of-memory killer ends the process (or another one) mid-build. So a shipped network
is first built on the meta device (sizes only, nothing allocated), and one whose parameters
alone would not fit in the machine's memory is refused by the options that size it. (Only
then: a network that fits but leaves too little for its gradients, optimizer state and
activations is not refused, since what those take depends on the run.)
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from ._checks import RecipeValueError


def physical_memory() -> int | None:
    """This machine's memory in bytes (``None`` where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_network_fits(build: Callable[[], nn.Module], options: str) -> None:
    """Refuse, naming ``options`` (what sizes the network), a network that ``build()`` makes
    whose parameters need more than this machine's memory. ``build`` runs on the meta device:
    nothing is allocated."""
    memory = physical_memory()
    if memory is None:
        return
    with torch.device("meta"):
        params = list(build().parameters())
    count = sum(p.numel() for p in params)
    need = sum(p.numel() * p.element_size() for p in params)
    if need <= memory:
        return
    raise RecipeValueError(
        f"{options}: the network has {count:,} parameters ({need / 2**30:,.1f} GiB), more than "
        f"this machine's {memory / 2**30:,.1f} GiB of memory; a smaller network needs less"
    )
