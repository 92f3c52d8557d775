"""Drop-in replacements for ``torch.nn.functional``: same names, signatures and results."""

from .conv import conv1d, conv2d, conv3d
from .conv_transpose import conv_transpose1d, conv_transpose2d, conv_transpose3d
from .local import (
    conv1d_local,
    conv1d_tiled,
    conv2d_local,
    conv2d_tiled,
    conv3d_local,
    conv3d_tiled,
)
from .maxout import maxout
from .pool import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    global_avg_pool,
    global_max_pool,
    max_pool1d,
    max_pool2d,
    max_pool3d,
    spatial_pyramid_pool,
)
from .upsample import interpolate, upsample_nearest

__all__ = ["conv1d", "conv2d", "conv3d"]
__all__ += ["conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]
__all__ += ["conv1d_local", "conv2d_local", "conv3d_local"]
__all__ += ["conv1d_tiled", "conv2d_tiled", "conv3d_tiled"]
__all__ += ["interpolate", "upsample_nearest"]
__all__ += ["maxout"]
__all__ += [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "global_avg_pool",
    "global_max_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "spatial_pyramid_pool",
]
