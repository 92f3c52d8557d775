"""``Conv1d`` / ``Conv2d`` / ``Conv3d``: torch's modules running our convolution.

Same constructor, parameter names and ``state_dict`` as ``torch.nn``; ``padding_mode`` is
applied by our kernel, ``padding='same'`` is accepted with stride > 1 (TensorFlow's rule), and
each spatial dim's padding may be a ``(before, after)`` pair (``padding=((0, 1), (0, 1))``:
one row at the bottom, one column at the right, as ``nn.ZeroPad2d((0, 1, 0, 1))`` before the
layer, without its copy).

Beyond torch, two keyword-only constructor arguments, ``activation`` and ``activation_args``
(default ``None``), fuse an activation into the convolution (see
:func:`torchconv_ext.functional.conv2d` and ``nn._activated``; ``set_activation`` sets it later,
as ``convert_model(fuse=True)`` does; ``fused_activation`` reads it). A PReLU weight becomes
the parameter ``activation_weight``; without an activation a layer holds nothing torch's does
not.
"""

from __future__ import annotations

from torch import Tensor, nn

from .. import functional as F
from .._args import expand, has_pairs
from ._activated import Activated, with_activation_arguments
from ._base import DropIn, extend_constructor

_PADDING_MODES = ("reflect", "replicate", "circular")


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


def _cropped(input: Tensor, pairs: list[tuple[int, int]]) -> Tensor:
    """``input`` without the elements that negative ``(before, after)`` pairs crop from its
    last ``len(pairs)`` dims (a view; ``F.pad`` refuses a crop past the size, and so does
    :func:`torch.Tensor.narrow` here)."""
    for i, (before, after) in enumerate(pairs):
        if before < 0 or after < 0:  # (input.dim() only here: an FX trace records each call)
            dim, crop = input.dim() - len(pairs) + i, max(-before, 0)
            input = input.narrow(dim, crop, input.shape[dim] - crop - max(-after, 0))
    return input


class _ConvMixin(Activated, DropIn):
    _functional = None  # set per class: our conv1d / conv2d / conv3d
    _ndim: int

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "replaces" in cls.__dict__:  # (ours: a user's subclass keeps its own constructor)
            extend_constructor(cls, _same_with_stride)
            with_activation_arguments(cls)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.fused_activation is not None:
            return self._activated_forward(input, weight, bias)
        input, padding = self._applied_padding(input, weight, bias)
        return type(self)._functional(
            input,
            weight,
            bias,
            self.stride,
            padding,
            self.dilation,
            self.groups,
            padding_mode=self.padding_mode,
        )

    def _applied_padding(self, input: Tensor, weight: Tensor, bias: Tensor | None):
        """The input and padding of torch's layer. In a padding mode other than zeros it pads
        with ``F.pad`` by ``_reversed_padding_repeated_twice``, set in ``__init__`` (for
        ``'same'`` and ``'valid'`` too): a later change of ``padding`` or ``dilation`` is not
        seen there, and code that sets the list itself (for an asymmetric padding) is. A
        negative entry crops, as ``F.pad``'s does: the input is cropped (a view) and padded by
        the rest. Returns ``(input, padding)``."""
        padding = self.padding
        if self.padding_mode == "zeros" or has_pairs(padding):
            return input, padding  # (our pairs are read where they are)
        if isinstance(padding, str) and any(s != 1 for s in self.stride):
            return input, padding  # TensorFlow's 'same' with a stride: beyond torch, as it is
        r = self._reversed_padding_repeated_twice
        if len(r) != 2 * self._ndim or self.padding_mode not in _PADDING_MODES:
            # A list F.pad may refuse (or read for fewer dims): torch's layer decides, on meta
            # tensors, and what it takes without padding the channels, ours computes.
            meta = [None if t is None else t.to("meta") for t in (input, weight, bias)]
            self.replaces._conv_forward(self, *meta)
            if len(r) > 2 * self._ndim:  # (torch's layer padded the channels: not ours to do)
                raise NotImplementedError(
                    f"{type(self).__name__}: _reversed_padding_repeated_twice={list(r)} pads "
                    "more than the spatial dims"
                )
        pairs = [(r[2 * i], r[2 * i + 1]) for i in reversed(range(len(r) // 2))]
        pairs = [(0, 0)] * (self._ndim - len(pairs)) + pairs  # (F.pad pads the last dims)
        input = _cropped(input, pairs)
        pairs = [(max(before, 0), max(after, 0)) for before, after in pairs]
        return input, tuple(
            before if before == after else (before, after) for before, after in pairs
        )

    def _activated_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        input, padding = self._applied_padding(input, weight, bias)
        return type(self)._functional(
            input,
            weight,
            bias,
            self.stride,
            padding,
            self.dilation,
            self.groups,
            padding_mode=self.padding_mode,
            activation=self.fused_activation,
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


# Lazy layers: ``in_channels`` from the first input, as torch's; like torch's, each is also a
# (non-lazy) layer of its kind, and turns into one once its first input has set its sizes.


class LazyConv1d(Conv1d, nn.LazyConv1d):
    """Drop-in :class:`torch.nn.LazyConv1d`: becomes our :class:`Conv1d` on its first input."""

    replaces = nn.LazyConv1d
    cls_to_become = Conv1d


class LazyConv2d(Conv2d, nn.LazyConv2d):
    """Drop-in :class:`torch.nn.LazyConv2d`: becomes our :class:`Conv2d` on its first input."""

    replaces = nn.LazyConv2d
    cls_to_become = Conv2d


class LazyConv3d(Conv3d, nn.LazyConv3d):
    """Drop-in :class:`torch.nn.LazyConv3d`: becomes our :class:`Conv3d` on its first input."""

    replaces = nn.LazyConv3d
    cls_to_become = Conv3d
