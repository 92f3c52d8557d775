"""Maxout layers (beyond torch): ``Maxout`` and ``MaxoutConv{1,2,3}d``.

``MaxoutConv*d`` is a convolution with ``out_channels · pieces`` output channels (the child
``conv``) and a maxout over them, computed as one op: on the Triton backend the max is taken in
the convolution kernel's epilogue, so the ``out_channels · pieces`` channels are never written
(``functional.maxout.maxout_conv``).
"""

from __future__ import annotations

from torch import Tensor, nn

from .. import functional as F
from .._args import IntOrTuple, Padding
from .._maxout_args import check_pieces
from ..functional.maxout import maxout_conv
from ._base import Traced
from .conv import Conv1d, Conv2d, Conv3d


class Maxout(Traced, nn.Module):
    """Maxout over ``dim``: output channel ``c`` is the max of input channels ``c·pieces + k``
    (:func:`torchconv_ext.functional.maxout`). For unbatched inputs pass the channel dim
    (``dim=0``), as for :class:`torch.nn.Softmax`."""

    def __init__(self, pieces: int, dim: int = 1) -> None:
        super().__init__()
        self.pieces = check_pieces("Maxout", pieces, ValueError)
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return F.maxout(input, self.pieces, self.dim)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}, dim={self.dim}"


class _MaxoutConvNd(Traced, nn.Module):
    _conv: type[nn.Module]
    _ndim: int

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        pieces: int,
        stride: IntOrTuple = 1,
        padding: str | Padding = 0,
        dilation: IntOrTuple = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.pieces = check_pieces(name, pieces, ValueError)
        if groups > 0 and out_channels % groups:
            # Each unit's pieces must come from one group of the convolution.
            raise ValueError(
                f"{name}: out_channels ({out_channels}) must be divisible by groups ({groups})"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.conv = type(self)._conv(
            in_channels, out_channels * pieces, kernel_size, stride, padding, dilation, groups,
            bias, padding_mode, device, dtype,
        )  # fmt: skip

    def forward(self, input: Tensor) -> Tensor:
        conv = self.conv
        if conv.fused_activation is not None or conv._forward_hooks or conv._forward_pre_hooks:
            # The child's own forward must run (its activation, its hooks): the composition.
            # The channel dim counted from the end serves batched and unbatched inputs alike.
            return F.maxout(conv(input), self.pieces, dim=-(self._ndim + 1))
        return maxout_conv(
            type(self).__name__, self._ndim, input, conv.weight, conv.bias, self.pieces,
            conv.stride, conv.padding, conv.dilation, conv.groups, conv.padding_mode,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, pieces={self.pieces}"


class MaxoutConv1d(_MaxoutConvNd):
    """1-D convolution to ``out_channels · pieces`` channels, then maxout; see
    :class:`MaxoutConv2d`."""

    _conv, _ndim = Conv1d, 1


class MaxoutConv2d(_MaxoutConvNd):
    """A maxout convolutional layer (Goodfellow et al., 2013): a 2-D convolution to
    ``out_channels · pieces`` channels, then the max over each unit's ``pieces`` consecutive
    channels.

    Takes :class:`torch.nn.Conv2d`'s arguments (``out_channels``: after the maxout) plus
    ``pieces``; the convolution is the child ``conv`` (parameters ``conv.weight``,
    ``conv.bias``), so the state dict is that of the convolution.
    """

    _conv, _ndim = Conv2d, 2


class MaxoutConv3d(_MaxoutConvNd):
    """3-D convolution to ``out_channels · pieces`` channels, then maxout; see
    :class:`MaxoutConv2d`."""

    _conv, _ndim = Conv3d, 3


__all__ = ["Maxout", "MaxoutConv1d", "MaxoutConv2d", "MaxoutConv3d"]
