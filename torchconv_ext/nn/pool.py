"""Pooling layers: drop-in subclasses of torch's pooling modules running our kernels, and the
new ``SpatialPyramidPool``, ``GlobalAvgPool`` and ``GlobalMaxPool``.

The drop-ins keep torch's constructors and attributes (``padding='same'``/``'valid'`` is also
accepted, see :func:`torchconv_ext.functional.max_pool2d`), so
:func:`torchconv_ext.convert_model` converts torch's layers by switching their class.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .. import functional as F
from .._pool_args import check_levels, check_mode
from ._base import DropIn, Traced


class _MaxPool(DropIn):
    _functional = None  # set per class: our max_pool1d / 2d / 3d

    def forward(self, input: Tensor):
        return type(self)._functional(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )


class _AvgPool(DropIn):
    _functional = None  # set per class: our avg_pool1d / 2d / 3d

    def forward(self, input: Tensor) -> Tensor:
        return type(self)._functional(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            getattr(self, "divisor_override", None),
        )


class _AdaptiveMaxPool(DropIn):
    _functional = None

    def forward(self, input: Tensor):
        return type(self)._functional(input, self.output_size, self.return_indices)


class _AdaptiveAvgPool(DropIn):
    _functional = None

    def forward(self, input: Tensor) -> Tensor:
        return type(self)._functional(input, self.output_size)


class MaxPool1d(_MaxPool, nn.MaxPool1d):
    """Drop-in :class:`torch.nn.MaxPool1d` running :func:`torchconv_ext.functional.max_pool1d`."""

    replaces = nn.MaxPool1d
    _functional = staticmethod(F.max_pool1d)


class MaxPool2d(_MaxPool, nn.MaxPool2d):
    """Drop-in :class:`torch.nn.MaxPool2d` running :func:`torchconv_ext.functional.max_pool2d`."""

    replaces = nn.MaxPool2d
    _functional = staticmethod(F.max_pool2d)


class MaxPool3d(_MaxPool, nn.MaxPool3d):
    """Drop-in :class:`torch.nn.MaxPool3d` running :func:`torchconv_ext.functional.max_pool3d`."""

    replaces = nn.MaxPool3d
    _functional = staticmethod(F.max_pool3d)


class AvgPool1d(_AvgPool, nn.AvgPool1d):
    """Drop-in :class:`torch.nn.AvgPool1d` running :func:`torchconv_ext.functional.avg_pool1d`."""

    replaces = nn.AvgPool1d
    _functional = staticmethod(F.avg_pool1d)

    def __init__(
        self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True
    ) -> None:
        # torch turns every padding into a tuple here, so 'same' / 'valid' are kept aside.
        text = isinstance(padding, str)
        super().__init__(kernel_size, stride, 0 if text else padding, ceil_mode, count_include_pad)
        if text:
            self.padding = padding


class AvgPool2d(_AvgPool, nn.AvgPool2d):
    """Drop-in :class:`torch.nn.AvgPool2d` running :func:`torchconv_ext.functional.avg_pool2d`."""

    replaces = nn.AvgPool2d
    _functional = staticmethod(F.avg_pool2d)


class AvgPool3d(_AvgPool, nn.AvgPool3d):
    """Drop-in :class:`torch.nn.AvgPool3d` running :func:`torchconv_ext.functional.avg_pool3d`."""

    replaces = nn.AvgPool3d
    _functional = staticmethod(F.avg_pool3d)


class AdaptiveMaxPool1d(_AdaptiveMaxPool, nn.AdaptiveMaxPool1d):
    """Drop-in :class:`torch.nn.AdaptiveMaxPool1d` (our ``adaptive_max_pool1d``)."""

    replaces = nn.AdaptiveMaxPool1d
    _functional = staticmethod(F.adaptive_max_pool1d)


class AdaptiveMaxPool2d(_AdaptiveMaxPool, nn.AdaptiveMaxPool2d):
    """Drop-in :class:`torch.nn.AdaptiveMaxPool2d` (our ``adaptive_max_pool2d``)."""

    replaces = nn.AdaptiveMaxPool2d
    _functional = staticmethod(F.adaptive_max_pool2d)


class AdaptiveMaxPool3d(_AdaptiveMaxPool, nn.AdaptiveMaxPool3d):
    """Drop-in :class:`torch.nn.AdaptiveMaxPool3d` (our ``adaptive_max_pool3d``)."""

    replaces = nn.AdaptiveMaxPool3d
    _functional = staticmethod(F.adaptive_max_pool3d)


class AdaptiveAvgPool1d(_AdaptiveAvgPool, nn.AdaptiveAvgPool1d):
    """Drop-in :class:`torch.nn.AdaptiveAvgPool1d` (our ``adaptive_avg_pool1d``)."""

    replaces = nn.AdaptiveAvgPool1d
    _functional = staticmethod(F.adaptive_avg_pool1d)


class AdaptiveAvgPool2d(_AdaptiveAvgPool, nn.AdaptiveAvgPool2d):
    """Drop-in :class:`torch.nn.AdaptiveAvgPool2d` (our ``adaptive_avg_pool2d``)."""

    replaces = nn.AdaptiveAvgPool2d
    _functional = staticmethod(F.adaptive_avg_pool2d)


class AdaptiveAvgPool3d(_AdaptiveAvgPool, nn.AdaptiveAvgPool3d):
    """Drop-in :class:`torch.nn.AdaptiveAvgPool3d` (our ``adaptive_avg_pool3d``)."""

    replaces = nn.AdaptiveAvgPool3d
    _functional = staticmethod(F.adaptive_avg_pool3d)


class SpatialPyramidPool(Traced, nn.Module):
    """Spatial pyramid pooling: ``(N, C, *spatial)`` of any spatial size → ``(N, C·Σ l**d)``.

    See :func:`torchconv_ext.functional.spatial_pyramid_pool`. Typically placed between the
    last convolution and the first fully-connected layer, so that the network accepts inputs
    of any size.

    Args:
        levels: bins per spatial dimension of each pyramid level (default ``(1, 2, 4)``).
        mode: ``'max'`` (default) or ``'avg'``.
    """

    def __init__(self, levels: Sequence[int] = (1, 2, 4), mode: str = "max") -> None:
        super().__init__()
        check_mode("SpatialPyramidPool", mode)
        self.levels = check_levels("SpatialPyramidPool", levels)
        self.mode = mode

    def output_features(self, channels: int, spatial_dims: int = 2) -> int:
        """Length of the output vector for ``channels`` input channels."""
        return channels * sum(level**spatial_dims for level in self.levels)

    def forward(self, input: Tensor) -> Tensor:
        return F.spatial_pyramid_pool(input, self.levels, self.mode)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, mode={self.mode!r}"


class GlobalAvgPool(Traced, nn.Module):
    """Global average pooling: ``(N, C, *spatial)`` → ``(N, C)`` (1–3 spatial dims)."""

    def forward(self, input: Tensor) -> Tensor:
        return F.global_avg_pool(input)


class GlobalMaxPool(Traced, nn.Module):
    """Global max pooling: ``(N, C, *spatial)`` → ``(N, C)`` (1–3 spatial dims)."""

    def forward(self, input: Tensor) -> Tensor:
        return F.global_max_pool(input)
