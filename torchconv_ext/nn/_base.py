"""What every module shares: no TorchScript (:class:`Traced`); and what every drop-in module
shares: the link to the ``torch.nn`` class it replaces (:class:`DropIn`)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn


class Traced:
    """Mixin for every module of ours: ``torch.jit.script`` refuses it with a message that says
    what does record it. Its forward is Python that TorchScript cannot compile (kernel choice,
    Triton launches); ``torch.jit.trace``, ``torch.export`` and ``torch.onnx.export`` run it and
    record torch's ops (or, under ``torch.export``, ours)."""

    def __prepare_scriptable__(self) -> nn.Module:  # torch.jit.script calls it first
        raise RuntimeError(
            f"{type(self).__module__}.{type(self).__qualname__} cannot be compiled by "
            "torch.jit.script: its forward chooses and launches kernels in Python. Record the "
            "model with torch.jit.trace or torch.onnx.export (torch's own ops), or with "
            "torch.export (torchconv_ext's ops, for torch.compile and AOTInductor)"
        )


class DropIn(Traced):
    """Mixin for a subclass of a ``torch.nn`` layer that runs our kernels.

    Subclasses set ``replaces`` to the torch class; they add no state of their own, so
    :func:`torchconv_ext.convert_model` can convert a torch module by switching its class (its
    parameters, buffers, hooks and mode stay exactly as they are).
    """

    replaces: type[nn.Module]

    @classmethod
    def accepts(cls, module: nn.Module) -> bool:
        """Whether ``module`` (an instance of ``replaces``) can be converted."""
        return not cls.refusal(module)

    @classmethod
    def refusal(cls, module: nn.Module) -> str:
        """Why ``module`` is not converted (``""`` when it is)."""
        return ""


Arguments = dict[str, Any]


def extend_constructor(cls: type, adjust: Callable[[type, Arguments], Arguments]) -> None:
    """Give ``cls`` torch's constructor (same signature) with argument values torch refuses.

    ``adjust(cls, arguments)`` may rewrite the bound arguments before torch's ``__init__`` runs
    and returns the attributes to set afterwards (e.g. a stride torch would not accept with
    ``padding='same'``).
    """
    torch_init = cls.replaces.__init__

    @functools.wraps(torch_init)
    def __init__(self, *args, **kwargs):
        bound = inspect.signature(torch_init).bind(self, *args, **kwargs)
        after = adjust(cls, bound.arguments)
        torch_init(*bound.args, **bound.kwargs)
        for name, value in after.items():
            setattr(self, name, value)

    cls.__init__ = __init__
