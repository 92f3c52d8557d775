"""Drop-in ``torch.nn`` layers: subclasses of torch's with identical constructors and state."""

from .conv import Conv1d, Conv2d, Conv3d, LazyConv1d, LazyConv2d, LazyConv3d
from .conv_transpose import (
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    LazyConvTranspose1d,
    LazyConvTranspose2d,
    LazyConvTranspose3d,
)
from .local import (
    LocallyConnected1d,
    LocallyConnected2d,
    LocallyConnected3d,
    TiledConv1d,
    TiledConv2d,
    TiledConv3d,
)
from .maxout import Maxout, MaxoutConv1d, MaxoutConv2d, MaxoutConv3d
from .pool import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    GlobalAvgPool,
    GlobalMaxPool,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    SpatialPyramidPool,
)
from .upsample import Upsample, UpsamplingNearest2d

__all__ = ["Conv1d", "Conv2d", "Conv3d"]
__all__ += ["ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]
__all__ += ["LazyConv1d", "LazyConv2d", "LazyConv3d"]
__all__ += ["LazyConvTranspose1d", "LazyConvTranspose2d", "LazyConvTranspose3d"]
__all__ += ["Upsample", "UpsamplingNearest2d"]
__all__ += ["LocallyConnected1d", "LocallyConnected2d", "LocallyConnected3d"]
__all__ += ["TiledConv1d", "TiledConv2d", "TiledConv3d"]
__all__ += ["Maxout", "MaxoutConv1d", "MaxoutConv2d", "MaxoutConv3d"]
__all__ += [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "SpatialPyramidPool",
]
