"""``Upsample`` / ``UpsamplingNearest2d``: torch's modules running our nearest upsampling.

Same constructors and attributes as ``torch.nn``. :func:`torchconv_ext.convert_model` swaps an
``nn.Upsample`` only when its mode is ``'nearest'`` or ``'nearest-exact'``; other modes are left
to torch (an instance of ours with such a mode simply calls torch's interpolation).
"""

from __future__ import annotations

from torch import Tensor, nn

from .. import functional as F
from .._upsample_args import NEAREST_MODES
from ._base import DropIn


class Upsample(DropIn, nn.Upsample):
    """Drop-in :class:`torch.nn.Upsample`; nearest modes run :func:`torchconv_ext.functional.interpolate`."""

    replaces = nn.Upsample

    @classmethod
    def refusal(cls, module: nn.Module) -> str:
        """Only nearest modes are converted: the others would run torch's code anyway."""
        mode = getattr(module, "mode", None)
        if mode in NEAREST_MODES:
            return ""
        return f"mode={mode!r}: torchconv_ext replaces nearest upsampling only"

    def forward(self, input: Tensor) -> Tensor:
        return F.interpolate(
            input,
            self.size,
            self.scale_factor,
            self.mode,
            self.align_corners,
            recompute_scale_factor=self.recompute_scale_factor,
        )


class UpsamplingNearest2d(Upsample, nn.UpsamplingNearest2d):
    """Drop-in :class:`torch.nn.UpsamplingNearest2d` running our nearest upsampling."""

    replaces = nn.UpsamplingNearest2d


__all__ = ["Upsample", "UpsamplingNearest2d"]
