"""``ConvTranspose1d`` / ``2d`` / ``3d``: torch's modules running our transposed convolution.

Same constructor, parameters and ``state_dict`` as ``torch.nn``; ``forward(input,
output_size=None)`` honours ``output_size`` like torch. Beyond torch, ``padding='same'``
(output = input·stride) and ``padding='valid'`` are accepted.
"""

from __future__ import annotations

from torch import Tensor, nn

from .. import functional as F
from ._base import DropIn, extend_constructor


def _padding_string(cls: type, arguments: dict) -> dict:
    """torch would store ``'same'`` as a tuple of letters; keep the string for our forward."""
    padding = arguments.get("padding", 0)
    if not isinstance(padding, str):
        return {}
    arguments["padding"] = 0
    return {"padding": padding}


class _ConvTransposeMixin(DropIn):
    _functional = None  # set per class: our conv_transpose1d / 2d / 3d
    _ndim: int

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        extend_constructor(cls, _padding_string)

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError(f"Only `zeros` padding mode is supported for {type(self).__name__}")
        if isinstance(self.padding, str):
            if output_size is not None:
                raise ValueError(
                    f"{type(self).__name__}: output_size cannot be combined with "
                    f"padding={self.padding!r}, which fixes the output size"
                )
            output_padding = 0
        else:
            output_padding = self._output_padding(
                input,
                output_size,
                self.stride,
                self.padding,
                self.kernel_size,
                self._ndim,
                self.dilation,
            )
        return type(self)._functional(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            output_padding,
            self.groups,
            self.dilation,
        )


class ConvTranspose1d(_ConvTransposeMixin, nn.ConvTranspose1d):
    """Drop-in :class:`torch.nn.ConvTranspose1d` running our ``conv_transpose1d``."""

    replaces = nn.ConvTranspose1d
    _ndim = 1
    _functional = staticmethod(F.conv_transpose1d)


class ConvTranspose2d(_ConvTransposeMixin, nn.ConvTranspose2d):
    """Drop-in :class:`torch.nn.ConvTranspose2d` running our ``conv_transpose2d``."""

    replaces = nn.ConvTranspose2d
    _ndim = 2
    _functional = staticmethod(F.conv_transpose2d)


class ConvTranspose3d(_ConvTransposeMixin, nn.ConvTranspose3d):
    """Drop-in :class:`torch.nn.ConvTranspose3d` running our ``conv_transpose3d``."""

    replaces = nn.ConvTranspose3d
    _ndim = 3
    _functional = staticmethod(F.conv_transpose3d)
