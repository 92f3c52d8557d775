"""A fused activation on a convolution module: the keyword-only constructor arguments
``activation`` and ``activation_args`` (default ``None``), :meth:`Activated.set_activation`
(as ``convert_model(fuse=True)`` sets it later), read back as the attributes
``fused_activation`` and ``fused_activation_args``, a PReLU weight as the parameter
``activation_weight``. Without an activation a layer holds nothing torch's does not."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping

import torch
from torch import nn

from .. import _activation


def with_activation_arguments(cls: type) -> None:
    """Give ``cls``'s constructor the keyword-only ``activation`` / ``activation_args``."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, activation=None, activation_args=None, **kwargs):
        init(self, *args, **kwargs)
        if activation is not None or activation_args is not None:
            self.set_activation(activation, activation_args)

    signature = inspect.signature(init)
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None)
        for name in ("activation", "activation_args")
    ]
    __init__.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])
    cls.__init__ = __init__


class Activated:
    """Mixin for the convolution modules that take a fused activation; their forward passes
    ``activation`` and :meth:`_activation_args` to the functional op when one is set."""

    # The fused activation (class defaults: none, so a plain layer holds no state of its own).
    # Not ``activation``: a subclass's or a converted layer's own attribute of that name (a
    # submodule, a tag) stays theirs, and is never read as an activation to fuse.
    fused_activation: str | None = None
    fused_activation_args: dict | None = None
    #: A PReLU weight's values as given, which ``reset_parameters`` restores (``None`` where
    #: they were given on the meta device: unknown).
    _activation_weight_init: torch.Tensor | None = None

    def set_activation(
        self, activation: str | None, activation_args: Mapping[str, object] | None = None
    ) -> None:
        """Fuse ``activation`` (``None``: none) with ``activation_args`` into this layer, as
        :func:`torchconv_ext.functional.conv2d` takes them. A PReLU ``weight`` is registered as
        the parameter ``activation_weight`` (a Parameter given is shared, a tensor is copied)."""
        act = _activation.parse_activation(activation, activation_args)
        if act is not None:  # (checked before anything changes: a refused call changes nothing)
            _activation.check_channels(act, self.out_channels)
        for name in (
            "fused_activation",
            "fused_activation_args",
            "activation_weight",
            "_activation_weight_init",
        ):
            if name in self.__dict__ or name in self._parameters:
                delattr(self, name)
        if act is None:
            return
        args = dict(activation_args or {})
        weight = args.pop("weight", None)
        self.fused_activation, self.fused_activation_args = activation, args
        if weight is not None:
            if not weight.is_meta:
                self._activation_weight_init = weight.detach().to("cpu", copy=True)
            if not isinstance(weight, nn.Parameter):
                weight = nn.Parameter(weight.detach().clone())
            self.activation_weight = weight

    def reset_parameters(self) -> None:
        """torch's layer's reset, and a PReLU weight's values as given again (as torch's
        ``nn.PReLU`` resets to its ``init``): deferred initialisation (``to_empty`` after the
        meta device, then ``reset_parameters``) gets them back."""
        super().reset_parameters()
        weight = self._parameters.get("activation_weight")
        if weight is None:
            return
        if self._activation_weight_init is None:
            raise RuntimeError(
                f"{type(self).__name__}.reset_parameters: the PReLU weight (activation_weight) "
                "was given on the meta device, so its values are unknown: give "
                "activation_args={'weight': ...} a tensor with values, or load them "
                "(load_state_dict) instead of resetting"
            )
        with torch.no_grad():
            weight.copy_(self._activation_weight_init)

    def _activation_args(self) -> dict | None:
        # (the attribute, not the parameter: a parametrization, pruning or weight norm of it
        # computes it, as torch's PReLU reads its own ``weight``)
        weight = getattr(self, "activation_weight", None)
        return (
            self.fused_activation_args
            if weight is None
            else {**self.fused_activation_args, "weight": weight}
        )

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.fused_activation is None:
            return text
        return f"{text}, activation={self.fused_activation!r}" + (
            f", activation_args={self.fused_activation_args}" if self.fused_activation_args else ""
        )
