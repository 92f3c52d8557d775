"""``Conv1d`` / ``Conv2d`` / ``Conv3d``: torch's modules running our convolution.

Same constructor, parameter names and ``state_dict`` as ``torch.nn``; ``padding_mode`` is
applied by our kernel, and ``padding='same'`` is accepted with stride > 1 (TensorFlow's rule).

Beyond torch, two keyword-only constructor arguments, ``activation`` and ``activation_args``
(default ``None``), fuse an activation into the convolution (see
:func:`torchconv_ext.functional.conv2d`; :meth:`set_activation` sets it later, as
``convert_model(fuse=True)`` does). A PReLU weight becomes the parameter ``activation_weight``;
without an activation a layer holds nothing torch's does not.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping

from torch import Tensor, nn

from .. import _activation
from .. import functional as F
from .._args import expand
from ._base import DropIn, extend_constructor


def _same_with_stride(cls: type, arguments: dict) -> dict:
    """torch refuses ``padding='same'`` with stride > 1; ours follows TensorFlow's rule."""
    padding = arguments.get("padding")
    strides = expand(arguments.get("stride", 1), cls._ndim)
    if not (isinstance(padding, str) and padding == "same") or strides is None:
        return {}  # torch's constructor takes (or refuses) these itself
    if all(s == 1 for s in strides):
        return {}
    arguments["stride"] = 1
    return {"stride": strides}


def _with_activation_arguments(cls: type) -> None:
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


class _ConvMixin(DropIn):
    _functional = None  # set per class: our conv1d / conv2d / conv3d
    _ndim: int
    # The fused activation (class defaults: none, so a plain layer holds no state of its own).
    activation: str | None = None
    activation_args: dict | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        extend_constructor(cls, _same_with_stride)
        _with_activation_arguments(cls)

    def set_activation(
        self, activation: str | None, activation_args: Mapping[str, object] | None = None
    ) -> None:
        """Fuse ``activation`` (``None``: none) with ``activation_args`` into this layer, as
        :func:`torchconv_ext.functional.conv2d` takes them. A PReLU ``weight`` is registered as
        the parameter ``activation_weight`` (a Parameter given is shared, a tensor is copied)."""
        act = _activation.parse_activation(activation, activation_args)
        for name in ("activation", "activation_args", "activation_weight"):
            if name in self.__dict__ or name in self._parameters:
                delattr(self, name)
        if act is None:
            return
        _activation.check_channels(act, self.out_channels)
        args = dict(activation_args or {})
        weight = args.pop("weight", None)
        self.activation, self.activation_args = activation, args
        if weight is not None:
            if not isinstance(weight, nn.Parameter):
                weight = nn.Parameter(weight.detach().clone())
            self.activation_weight = weight

    def _activation_args(self) -> dict | None:
        weight = self._parameters.get("activation_weight")
        return (
            self.activation_args if weight is None else {**self.activation_args, "weight": weight}
        )

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.activation is None:
            return text
        return f"{text}, activation={self.activation!r}" + (
            f", activation_args={self.activation_args}" if self.activation_args else ""
        )

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.activation is not None:
            return self._activated_forward(input, weight, bias)
        return type(self)._functional(
            input,
            weight,
            bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            padding_mode=self.padding_mode,
        )

    def _activated_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return type(self)._functional(
            input,
            weight,
            bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            padding_mode=self.padding_mode,
            activation=self.activation,
            activation_args=self._activation_args(),
        )


class Conv1d(_ConvMixin, nn.Conv1d):
    """Drop-in :class:`torch.nn.Conv1d` running :func:`torchconv_ext.functional.conv1d`."""

    replaces = nn.Conv1d
    _ndim = 1
    _functional = staticmethod(F.conv1d)


class Conv2d(_ConvMixin, nn.Conv2d):
    """Drop-in :class:`torch.nn.Conv2d` running :func:`torchconv_ext.functional.conv2d`."""

    replaces = nn.Conv2d
    _ndim = 2
    _functional = staticmethod(F.conv2d)


class Conv3d(_ConvMixin, nn.Conv3d):
    """Drop-in :class:`torch.nn.Conv3d` running :func:`torchconv_ext.functional.conv3d`."""

    replaces = nn.Conv3d
    _ndim = 3
    _functional = staticmethod(F.conv3d)
