"""Triton kernels and their launchers for convolutional-network layers.

Imports torch (tensors) and triton only. Launchers take preallocated outputs and write every
element; set ``TRITON_INTERPRET=1`` before importing this package to run them on CPU tensors.
"""

from ._common import INTERPRET
from .conv import conv_backward_input, conv_backward_weight, conv_forward
from .pool import (
    adaptive_pool_backward,
    adaptive_pool_forward,
    pool_backward,
    pool_forward,
    pyramid_pool_backward,
    pyramid_pool_forward,
)
from .upsample import upsample_nearest_backward, upsample_nearest_forward

__all__ = ["INTERPRET", "conv_backward_input", "conv_backward_weight", "conv_forward"]
__all__ += ["upsample_nearest_backward", "upsample_nearest_forward"]
__all__ += [
    "adaptive_pool_backward",
    "adaptive_pool_forward",
    "pool_backward",
    "pool_forward",
    "pyramid_pool_backward",
    "pyramid_pool_forward",
]
