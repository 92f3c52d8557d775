"""What an initialiser writes into: a convolution layer or a bare weight tensor.

Both convolution layouts are read as one: ``(groups, C_out/groups, C_in/groups, *kernel)``.
A convolution's weight is stored ``(C_out, C_in/groups, *kernel)``; a transposed convolution's
``(C_in, C_out/groups, *kernel)`` — the same numbers with the two channel axes swapped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

#: A convolution layer (torch's or ours, transposed or not) or a weight tensor.
Target = nn.Module | Tensor


@dataclass(frozen=True)
class Conv:
    """The weight to fill, read as ``(groups, C_out/groups, C_in/groups, *kernel)``."""

    weight: Tensor
    bias: Tensor | None
    groups: int
    transposed: bool

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(self.weight.shape[2:])

    @property
    def out_per_group(self) -> int:
        if self.transposed:
            return self.weight.shape[1]
        return self.weight.shape[0] // self.groups

    @property
    def in_per_group(self) -> int:
        if self.transposed:
            return self.weight.shape[0] // self.groups
        return self.weight.shape[1]

    @torch.no_grad()
    def write(self, grouped: Tensor) -> Tensor:
        """Copy ``(groups, C_out/groups, C_in/groups, *kernel)`` values into the weight."""
        g, o, i = grouped.shape[:3]
        if self.transposed:
            grouped = grouped.transpose(1, 2).reshape(g * i, o, *self.kernel_size)
        else:
            grouped = grouped.reshape(g * o, i, *self.kernel_size)
        return self.weight.copy_(grouped)


def resolve(target: Target, groups: int | None, name: str) -> Conv:
    """``target`` (a layer or a weight) as a :class:`Conv`; ``name`` is the calling function.

    ``groups`` is for a bare weight (default 1); a layer brings its own.
    """
    if isinstance(target, _ConvNd):
        if groups is not None and groups != target.groups:
            raise ValueError(
                f"{name}: groups={groups} given for a layer with groups={target.groups}; "
                "leave groups out when passing a layer"
            )
        return Conv(target.weight, target.bias, target.groups, target.transposed)
    if isinstance(target, nn.Module):
        raise TypeError(
            f"{name}: expected a convolution layer (Conv1d/2d/3d, ConvTranspose1d/2d/3d) or a "
            f"weight tensor, but got {type(target).__name__}"
        )
    if not isinstance(target, Tensor):
        raise TypeError(
            f"{name}: expected a convolution layer or a weight tensor, but got "
            f"{type(target).__name__}"
        )
    if target.dim() not in (3, 4, 5):
        raise ValueError(
            f"{name}: expected a weight of 3 to 5 dims (C_out, C_in/groups, *kernel) for a "
            f"1D to 3D convolution, but got a weight of size {list(target.shape)}"
        )
    if not target.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point weight, but got {target.dtype}")
    groups = 1 if groups is None else groups
    if not isinstance(groups, int) or isinstance(groups, bool) or groups <= 0:
        raise ValueError(f"{name}: groups must be a positive int, but got groups={groups!r}")
    if target.shape[0] % groups != 0:
        raise ValueError(
            f"{name}: groups={groups} does not divide the weight's C_out={target.shape[0]}"
        )
    return Conv(target, None, groups, transposed=False)
