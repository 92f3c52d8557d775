"""Other libraries' layers that compute what one of ours computes with other attribute values.

Such a layer subclasses a torch layer but overrides ``forward``, so ``convert_model`` cannot tell
what it computes and would leave it. The few listed here are known exactly: timm's TensorFlow
"SAME" layers pad the input by TensorFlow's rule for its own size, then run torch's layer with
no padding — what our layers compute with ``padding='same'``. Classes are named by their module
and qualified name, so nothing here imports the other library.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

#: The attribute values a known layer's module takes when it converts.
Settings = dict[str, object]


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


_TIMM_LAYERS = {
    "conv2d_same.Conv2dSame": _tf_same_conv,
    "pool2d_same.MaxPool2dSame": _tf_same_max_pool,
    "pool2d_same.AvgPool2dSame": _tf_same_avg_pool,
}

#: Known classes by ``module.qualname`` (timm ≥ 0.9 keeps its layers in ``timm.layers``, older
#: releases in ``timm.models.layers``).
_KNOWN: dict[str, Callable[[nn.Module], Settings]] = {
    f"{package}.{name}": settings
    for package in ("timm.layers", "timm.models.layers")
    for name, settings in _TIMM_LAYERS.items()
}


def known_layer(cls: type) -> tuple[type, Callable[[nn.Module], Settings]] | None:
    """The nearest known class ``cls`` is or derives from, and the settings of its modules."""
    for c in cls.__mro__:
        settings = _KNOWN.get(f"{c.__module__}.{c.__qualname__}")
        if settings is not None:
            return c, settings
    return None
