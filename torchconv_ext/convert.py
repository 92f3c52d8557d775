"""``convert_model``: swap every supported ``torch.nn`` layer of a model for ours."""

from __future__ import annotations

import copy

from torch import nn

from . import nn as our_nn
from .nn._base import DropIn


def _replacements() -> dict[type[nn.Module], type[DropIn]]:
    classes = (getattr(our_nn, name) for name in our_nn.__all__)
    return {
        cls.replaces: cls for cls in classes if isinstance(cls, type) and issubclass(cls, DropIn)
    }


def convert_model(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Return ``model`` with every supported ``torch.nn`` layer replaced by ours.

    A layer is converted when its type is exactly a torch class we replace (a user subclass may
    override ``forward``, so it is left alone). Conversion switches the layer's class, so its
    parameters, buffers, hooks, device, dtype and train/eval mode stay as they are; everything
    else in the model is untouched. With ``inplace=False`` (default) a deep copy is converted
    and ``model`` itself is not changed.
    """
    if not inplace:
        model = copy.deepcopy(model)
    table = _replacements()
    for module in model.modules():
        ours = table.get(type(module))
        if ours is not None and ours.accepts(module):
            module.__class__ = ours
    return model
