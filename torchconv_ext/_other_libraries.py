"""Other libraries' layers that compute what one of ours computes with other attribute values.

Such a layer subclasses a torch layer but overrides ``forward``, so ``convert_model`` cannot tell
what it computes and would leave it. The few listed here are known exactly: timm's TensorFlow
"SAME" layers pad the input by TensorFlow's rule for its own size, then run torch's layer with
no padding — what our layers compute with ``padding='same'``. Classes are named by their module
and qualified name, so nothing here imports the other library.
"""

from __future__ import annotations

#: The attribute values a known layer's converted module takes, or why it cannot convert.
Settings = dict[str, object] | str

_TIMM_LAYERS: dict[str, Settings] = {
    # Zero-pads by TensorFlow's rule for the input's size (ignoring the module's padding and
    # padding_mode), then F.conv2d without padding.
    "conv2d_same.Conv2dSame": {"padding": "same", "padding_mode": "zeros"},
    # Pads with -inf by TensorFlow's rule (with its dilation), then F.max_pool2d without
    # padding, returning the values alone whatever return_indices says.
    "pool2d_same.MaxPool2dSame": {"padding": "same", "return_indices": False},
    "pool2d_same.AvgPool2dSame": (
        "it counts TensorFlow's 'same' zero padding in every window's divisor; "
        "torchconv_ext's padding='same' never counts padding"
    ),
}

#: Known classes by ``module.qualname`` (timm ≥ 0.9 keeps its layers in ``timm.layers``, older
#: releases in ``timm.models.layers``).
_KNOWN: dict[str, Settings] = {
    f"{package}.{name}": settings
    for package in ("timm.layers", "timm.models.layers")
    for name, settings in _TIMM_LAYERS.items()
}


def known_layer(cls: type) -> tuple[type, Settings] | None:
    """The nearest known class ``cls`` is or derives from, and what its modules take."""
    for c in cls.__mro__:
        settings = _KNOWN.get(f"{c.__module__}.{c.__qualname__}")
        if settings is not None:
            return c, settings
    return None
