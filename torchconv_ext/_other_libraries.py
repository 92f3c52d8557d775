"""Other libraries' layers that compute what one of ours computes, given other attribute values
or a weight computed from their parameters.

Such a layer subclasses a torch layer but overrides ``forward``, so ``convert_model`` cannot tell
what it computes and would leave it. The few listed here are known: timm's TensorFlow "SAME"
layers pad the input by TensorFlow's rule for its own size, then run torch's layer with no
padding — what our layers compute with ``padding='same'``; timm's weight-standardised
convolutions (BiT's ``StdConv2d``, the NFNets' ``ScaledStdConv2d``, and their "SAME" forms) and
Transformers' (its BiT's ``WeightStandardizedConv2d``) convolve with their weight standardised
per output channel on every call. Classes are named by
their module and qualified name, so nothing here imports the other library; ``convert_model``
checks each known class once against its own forward on a small instance before converting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

#: The attribute values a known layer's module takes when it converts.
Settings = dict[str, object]


@dataclass(frozen=True)
class KnownLayer:
    """How ours computes what a known class computes: the attribute values its modules take,
    the weight they convolve with where it is computed from their parameters on every call
    (``None``: their weight as it is), and a small instance of the class to check that on."""

    settings: Callable[[nn.Module], Settings]
    example: Callable[[type], nn.Module]
    weight: Callable[[nn.Module], Tensor] | None = None


def _tf_same_conv(module: nn.Module) -> Settings:
    """timm's ``Conv2dSame`` zero-pads (whatever its ``padding`` and ``padding_mode`` say), then
    runs ``F.conv2d`` without padding."""
    return {"padding": "same", "padding_mode": "zeros"}


def _tf_same_max_pool(module: nn.Module) -> Settings:
    """timm's ``MaxPool2dSame`` pads with -inf (by the rule with its dilation), then runs
    ``F.max_pool2d`` without padding and returns the values alone, whatever
    ``return_indices`` says."""
    return {"padding": "same", "return_indices": False}


def _tf_same_avg_pool(module: nn.Module) -> Settings:
    """timm's ``AvgPool2dSame`` zero-pads, then runs ``F.avg_pool2d`` without padding, so the
    padding counts: every window, which lies wholly in the padded input (also with
    ``ceil_mode``: by TensorFlow's rule no window starts past it), divides by the kernel's
    size, whatever ``count_include_pad`` says. Ours never counts 'same' padding unless told."""
    height, width = module.kernel_size
    return {"padding": "same", "divisor_override": height * width}


def _same_if_dynamic(module: nn.Module) -> Settings:
    """timm's ``*Same`` standardised convolutions pad by TensorFlow's rule where their
    ``same_pad`` says so (a stride or an even kernel), else by their numeric ``padding``."""
    return {"padding": "same"} if module.same_pad else {}


def _same_if_padded(module: nn.Module) -> Settings:
    """Transformers' ``WeightStandardizedConv2d`` (BiT, and the hybrid ViT and DPT on it) pads
    by TensorFlow's rule with its ``pad`` module where it has one, as timm's ``*Same`` do."""
    return {"padding": "same"} if module.pad is not None else {}


def _standardized_weight(module: nn.Module) -> Tensor:
    """timm's weight standardisation: each output channel's weights less their mean, over
    their (biased) standard deviation with ``eps``, times ``gain · scale`` where the layer has
    a gain (the NFNets' scaled form) — computed as timm computes it, with ``F.batch_norm``."""
    gain = getattr(module, "gain", None)
    return F.batch_norm(
        module.weight.reshape(1, module.out_channels, -1),
        None,
        None,
        weight=None if gain is None else (gain * module.scale).view(-1),
        training=True,
        momentum=0.0,
        eps=module.eps,
    ).reshape_as(module.weight)


def _small_conv(cls: type) -> nn.Module:
    return cls(4, 6, 3, stride=2)


def _small_pool(cls: type) -> nn.Module:
    return cls(3, 2)


def _no_settings(module: nn.Module) -> Settings:
    return {}


_TIMM_LAYERS = {
    "conv2d_same.Conv2dSame": KnownLayer(_tf_same_conv, _small_conv),
    "pool2d_same.MaxPool2dSame": KnownLayer(_tf_same_max_pool, _small_pool),
    "pool2d_same.AvgPool2dSame": KnownLayer(_tf_same_avg_pool, _small_pool),
    "std_conv.StdConv2d": KnownLayer(_no_settings, _small_conv, _standardized_weight),
    "std_conv.StdConv2dSame": KnownLayer(_same_if_dynamic, _small_conv, _standardized_weight),
    "std_conv.ScaledStdConv2d": KnownLayer(_no_settings, _small_conv, _standardized_weight),
    "std_conv.ScaledStdConv2dSame": KnownLayer(_same_if_dynamic, _small_conv, _standardized_weight),
}

#: Known classes by ``module.qualname`` (timm ≥ 0.9 keeps its layers in ``timm.layers``, older
#: releases in ``timm.models.layers``).
_KNOWN: dict[str, KnownLayer] = {
    **{
        f"{package}.{name}": layer
        for package in ("timm.layers", "timm.models.layers")
        for name, layer in _TIMM_LAYERS.items()
    },
    "transformers.models.bit.modeling_bit.WeightStandardizedConv2d": KnownLayer(
        _same_if_padded, _small_conv, _standardized_weight
    ),
}


def known_layer(cls: type) -> tuple[type, KnownLayer] | None:
    """The nearest known class ``cls`` is or derives from, and how ours computes it."""
    for c in cls.__mro__:
        layer = _KNOWN.get(f"{c.__module__}.{c.__qualname__}")
        if layer is not None:
            return c, layer
    return None
