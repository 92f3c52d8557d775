"""Triton kernels and their launchers for convolutional-network layers (torchconv_ext's).

Imports torch (tensors) and triton only — never ``torch.nn``, ``torch.autograd`` or
``torchconv_ext``. Set ``TRITON_INTERPRET=1`` before importing this package to run the kernels on
CPU tensors (Triton's interpreter).

The launcher contract, for every launcher exported here:

* Arguments are validated upstream (by ``torchconv_ext``): launchers trust shapes, dtypes and
  geometry, and check only that the launch can run on these tensors' device. They launch on
  the current device (as Triton does): callers make it the tensors' device first.
* Outputs are preallocated by the caller, in the layout the caller wants, and the launcher
  writes every element of them (tests poison outputs with NaN to prove it).
* ``padding`` is the padding before each spatial dim; the padding after is implied by the
  output's size (so TensorFlow-style asymmetric ``'same'`` needs nothing more).
* Tensors are read through their strides (any layout; no copies, but the padded copy narrow
  convolutions read as windows: ``conv_window``); 1–3 spatial dims.
* What a launcher does depends only on its tensors' shapes, strides, dtypes, devices and
  address alignment and on its other arguments (never on tensor values or global state), and
  it launches through ``_plan.launch`` and returns nothing: launcher tapes (``_tape``) replay
  a problem's recorded ops and launches on that promise, and check what they can of it.
* Convolution grad-input kernels see zero padding only: for the other padding modes the caller
  asks for the gradient of the padded input (``padding`` 0) and folds it back onto its sources
  (``torchconv_ext._padding.fold_padding_grad``).

Besides the launchers: the layout rules callers follow (``prefers_channels_last``,
``reads_channels_inner_weight``, ``reads_merged``, ``reads_nchw``, ``reads_windows``,
``stores_nchw``, ``sums_bias``, ``windows``; ``activation_grad_launchable``: the layouts
``activation_grad_from_output`` takes), ``window_weight`` and ``merged_weight`` (a weight in
the windows' layout, or the block-diagonal weight of merged groups, which a caller may keep
while the weight does not change and pass back as ``windowed_weight`` or ``merged_weight``),
the tape helpers (``taped``, ``recording``, ``replayed_whole``), and ``current_stream`` (the
stream launches go to now, as Triton reads it).

The name ``triton_kernels`` is also used by Triton's own ``triton-kernels`` distribution (used by
vLLM); the two cannot be installed side by side, and importing either one when the other is
installed fails with a message naming both.
"""

from __future__ import annotations

import importlib.metadata as _metadata


def _refuse_if_shadowed() -> None:
    try:
        other = _metadata.distribution("triton-kernels")
    except _metadata.PackageNotFoundError:
        return
    raise ImportError(
        f"two packages named 'triton_kernels' are installed: torchconv_ext's kernel package "
        f"({__file__}) and Triton's 'triton-kernels' distribution (version {other.version}, "
        "used by vLLM). They share one import name and cannot be used together: uninstall "
        "'triton-kernels', or use torchconv_ext in an environment without it"
    )


_refuse_if_shadowed()

# ruff: noqa: E402  (the guard above runs before anything else is imported)
from ._common import INTERPRET
from ._plan import current_stream
from ._tape import recording, replayed_whole, taped
from .activation_grad import activation_grad_from_input, activation_grad_from_output
from .activation_grad import launchable as activation_grad_launchable
from .conv import (
    conv_backward_input,
    conv_backward_weight,
    conv_forward,
    prefers_channels_last,
    reads_channels_inner_weight,
    reads_merged,
    reads_nchw,
    reads_windows,
    stores_nchw,
    sums_bias,
    windows,
)
from .conv_gemm import merged_weight
from .conv_local import local_conv_backward_input, local_conv_backward_weight, local_conv_forward
from .conv_window import window_weight
from .maxout import maxout_backward, maxout_forward
from .pool import (
    adaptive_pool_backward,
    adaptive_pool_forward,
    pool_backward,
    pool_forward,
    pyramid_pool_backward,
    pyramid_pool_forward,
)
from .upsample import upsample_nearest_backward, upsample_nearest_forward

# Every launcher replays its recorded work for a problem it has seen (``_tape``).
activation_grad_from_output = taped(activation_grad_from_output)
activation_grad_from_input = taped(activation_grad_from_input)
conv_forward = taped(conv_forward)
conv_backward_input = taped(conv_backward_input)
conv_backward_weight = taped(conv_backward_weight)
local_conv_forward = taped(local_conv_forward)
local_conv_backward_input = taped(local_conv_backward_input)
local_conv_backward_weight = taped(local_conv_backward_weight)
maxout_forward = taped(maxout_forward)
maxout_backward = taped(maxout_backward)
pool_forward = taped(pool_forward)
pool_backward = taped(pool_backward)
adaptive_pool_forward = taped(adaptive_pool_forward)
adaptive_pool_backward = taped(adaptive_pool_backward)
pyramid_pool_forward = taped(pyramid_pool_forward)
pyramid_pool_backward = taped(pyramid_pool_backward)
upsample_nearest_forward = taped(upsample_nearest_forward)
upsample_nearest_backward = taped(upsample_nearest_backward)

#: Marks this package as torchconv_ext's (Triton's ``triton-kernels`` has the same name).
IS_TORCHCONV_EXT_KERNELS = True


def __getattr__(name: str):
    # Code written for Triton's ``triton-kernels`` that imports this package by mistake gets a
    # message that says why, not a bare AttributeError.
    raise AttributeError(
        f"module 'triton_kernels' has no attribute {name!r}: this 'triton_kernels' is "
        "torchconv_ext's kernel package, not Triton's 'triton-kernels' distribution (used by "
        "vLLM), which installs the same top-level name"
    )


__all__ = ["INTERPRET", "IS_TORCHCONV_EXT_KERNELS", "current_stream", "recording", "replayed_whole"]
__all__ += ["taped"]
__all__ += ["conv_backward_input", "conv_backward_weight", "conv_forward", "prefers_channels_last"]
__all__ += ["reads_nchw", "reads_windows", "stores_nchw", "sums_bias", "window_weight", "windows"]
__all__ += ["merged_weight", "reads_channels_inner_weight", "reads_merged"]
__all__ += ["local_conv_backward_input", "local_conv_backward_weight", "local_conv_forward"]
__all__ += ["maxout_backward", "maxout_forward"]
__all__ += [
    "activation_grad_from_input",
    "activation_grad_from_output",
    "activation_grad_launchable",
]
__all__ += ["upsample_nearest_backward", "upsample_nearest_forward"]
__all__ += [
    "adaptive_pool_backward",
    "adaptive_pool_forward",
    "pool_backward",
    "pool_forward",
    "pyramid_pool_backward",
    "pyramid_pool_forward",
]
