"""Locally connected and tiled convolution layers (beyond torch): ``LocallyConnected{1,2,3}d``
and ``TiledConv{1,2,3}d``.

Both hold a weight with several kernels — one per output position, or ``tiles`` per dim used in
rotation — and take a convolution's arguments. They are initialised as ``torch.nn.Conv*d`` is:
every kernel and the bias uniform in ``±1/sqrt(C_in/groups · prod(kernel_size))``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import functional as F
from .._args import IntOrTuple, Padding, expand, expand_pairs
from .._conv_args import check_padding_mode
from .._local_args import module_output_size
from ._base import Traced


def _expand(name: str, value: IntOrTuple, nd: int, low: int, arg: str) -> tuple[int, ...]:
    values = expand(value, nd)
    if values is None or min(values) < low:
        raise ValueError(
            f"{name}: {arg} must be an int or {nd} ints, each at least {low}, but got {arg}={value}"
        )
    return values


def _padding(name: str, padding: str | Padding, nd: int) -> str | tuple:
    """A module's ``padding``: ``'valid'``/``'same'``, or per spatial dim an int (both sides)
    or a ``(before, after)`` pair (where the sides differ), ``ValueError`` otherwise."""
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError(
                f"{name}: invalid padding string {padding!r}, should be one of {{'valid', 'same'}}"
            )
        return padding
    pairs = expand_pairs(padding, nd)
    if pairs is None or min(pairs[0] + pairs[1]) < 0:
        raise ValueError(
            f"{name}: padding must be 'valid', 'same', an int or {nd} entries, each an int or a "
            f"(before, after) pair, all at least 0, but got padding={padding}"
        )
    return tuple(b if b == a else (b, a) for b, a in zip(*pairs))


class _MultiKernelConv(Traced, nn.Module):
    """A convolution with several kernels: ``weight (*lead, C_out, C_in/groups, *kernel)``,
    ``bias (*lead, C_out)``; subclasses choose ``lead`` and the functional op."""

    _ndim: int
    _functional = None  # set per class

    def _setup(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        lead: tuple[int, ...],
        stride: IntOrTuple,
        padding: str | Padding,
        dilation: IntOrTuple,
        groups: int,
        bias: bool,
        padding_mode: str,
        device,
        dtype,
    ) -> None:
        name, nd = type(self).__name__, self._ndim
        if groups <= 0:
            raise ValueError(f"{name}: groups must be a positive integer, but got {groups}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                f"divisible by groups ({groups})"
            )
        check_padding_mode(padding_mode)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _expand(name, kernel_size, nd, 1, "kernel_size")
        self.stride = _expand(name, stride, nd, 1, "stride")
        self.dilation = _expand(name, dilation, nd, 1, "dilation")
        self.padding = _padding(name, padding, nd)
        self.padding_mode = padding_mode
        factory = {"device": device, "dtype": dtype}
        shape = (*lead, out_channels, in_channels // groups, *self.kernel_size)
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(*lead, out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``torch.nn.Conv*d``'s initialisation, for every kernel: ``kaiming_uniform_(a=√5)`` on
        one kernel is uniform in ``±1/sqrt(fan_in)``, and so is the bias."""
        fan_in = self.in_channels // self.groups * math.prod(self.kernel_size)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:
        return type(self)._functional(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            padding_mode=self.padding_mode,
        )

    def _extra(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        s += f", stride={self.stride}, padding={self.padding}"
        if self.dilation != (1,) * self._ndim:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s


class _LocallyConnectedNd(_MultiKernelConv):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        input_size: IntOrTuple,
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
        name, nd = type(self).__name__, self._ndim
        kernel = _expand(name, kernel_size, nd, 1, "kernel_size")
        strides = _expand(name, stride, nd, 1, "stride")
        dilations = _expand(name, dilation, nd, 1, "dilation")
        pads = _padding(name, padding, nd)
        out = module_output_size(name, input_size, kernel, strides, pads, dilations)
        self.input_size, self.output_size = expand(input_size, nd), out
        self._setup(
            in_channels, out_channels, kernel_size, out, stride, padding, dilation, groups,
            bias, padding_mode, device, dtype,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return self._extra() + f", input_size={self.input_size}"


class _TiledConvNd(_MultiKernelConv):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        tiles: IntOrTuple,
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
        self.tiles = _expand(type(self).__name__, tiles, self._ndim, 1, "tiles")
        self._setup(
            in_channels, out_channels, kernel_size, self.tiles, stride, padding, dilation,
            groups, bias, padding_mode, device, dtype,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return self._extra() + f", tiles={self.tiles}"


class LocallyConnected1d(_LocallyConnectedNd):
    """Locally connected 1-D layer: :func:`torchconv_ext.functional.conv1d_local` with a weight
    ``(L_out, C_out, C_in/groups, k)`` for inputs of length ``input_size``."""

    _ndim = 1
    _functional = staticmethod(F.conv1d_local)


class LocallyConnected2d(_LocallyConnectedNd):
    """Locally connected (unshared) 2-D layer: a convolution whose every output position has
    its own kernel, :func:`torchconv_ext.functional.conv2d_local`.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype: as for :class:`torch.nn.Conv2d` (``padding='same'``
            works with any stride).
        input_size: the spatial size ``(H, W)`` of the inputs, which fixes the output
            positions. Parameters: ``weight (H_out, W_out, C_out, C_in/groups, kH, kW)`` and
            ``bias (H_out, W_out, C_out)``.
    """

    _ndim = 2
    _functional = staticmethod(F.conv2d_local)


class LocallyConnected3d(_LocallyConnectedNd):
    """Locally connected 3-D layer; see :class:`LocallyConnected2d`."""

    _ndim = 3
    _functional = staticmethod(F.conv3d_local)


class TiledConv1d(_TiledConvNd):
    """Tiled 1-D convolution: :func:`torchconv_ext.functional.conv1d_tiled` with a weight
    ``(tiles, C_out, C_in/groups, k)``."""

    _ndim = 1
    _functional = staticmethod(F.conv1d_tiled)


class TiledConv2d(_TiledConvNd):
    """Tiled 2-D convolution (Goodfellow et al., ch. 9): ``tiles`` kernels per dim used in
    rotation across output positions, :func:`torchconv_ext.functional.conv2d_tiled`.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype: as for :class:`torch.nn.Conv2d`.
        tiles: kernels per spatial dim ``(tH, tW)``; position ``(i, j)`` uses kernel
            ``(i mod tH, j mod tW)``. Parameters: ``weight (tH, tW, C_out, C_in/groups, kH,
            kW)`` and ``bias (tH, tW, C_out)``. Any input size works.
    """

    _ndim = 2
    _functional = staticmethod(F.conv2d_tiled)


class TiledConv3d(_TiledConvNd):
    """Tiled 3-D convolution; see :class:`TiledConv2d`."""

    _ndim = 3
    _functional = staticmethod(F.conv3d_tiled)


__all__ = [
    "LocallyConnected1d",
    "LocallyConnected2d",
    "LocallyConnected3d",
    "TiledConv1d",
    "TiledConv2d",
    "TiledConv3d",
]
