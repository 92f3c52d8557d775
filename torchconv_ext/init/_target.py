"""What an initialiser writes into: a convolution layer or a bare weight tensor.

Both convolution layouts are read as one: ``(groups, C_out/groups, C_in/groups, *kernel)``.
A convolution's weight is stored ``(C_out, C_in/groups, *kernel)``; a transposed convolution's
``(C_in, C_out/groups, *kernel)`` — the same numbers with the two channel axes swapped.

Layers with several kernels get the same kernel in each: ``TiledConv*d`` and
``LocallyConnected*d`` (weight ``(*lead, C_out, C_in/groups, *kernel)``, one kernel per tile or
output position) and ``MaxoutConv*d`` (its child ``conv``, ``pieces`` consecutive output
channels per unit).

A layer's weight or bias is written where the layer computes from it: in place into a plain
parameter, or through a ``torch.nn.utils.parametrize`` parametrization (its ``right_inverse``)
when the layer then computes exactly the values written; anything else is refused before
anything is written.
"""

from __future__ import annotations

import copy
import numbers
import operator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import parametrize

from ..nn.local import _MultiKernelConv
from ..nn.maxout import _MaxoutConvNd

#: A convolution layer (torch's or ours, transposed or not) or a weight tensor.
Target = nn.Module | Tensor

#: The layers an initialiser accepts.
LAYERS = (
    "Conv1d/2d/3d, ConvTranspose1d/2d/3d (torch's or torchconv_ext.nn's), "
    "TiledConv1d/2d/3d, LocallyConnected1d/2d/3d, MaxoutConv1d/2d/3d"
)


def check_int(name: str, arg: str, value: object) -> int:
    """``value`` as an int (NumPy and 0-d tensor integers too); ``TypeError`` otherwise."""
    if isinstance(value, bool):  # an int to Python, but never meant as a count
        raise TypeError(f"{name}: {arg} must be an int, but got {arg}={value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: {arg} must be an int, but got {arg}={value!r}") from None


def check_real(name: str, arg: str, value: object) -> float:
    """``value`` as a float (NumPy scalars and 0-d tensors too); ``TypeError`` otherwise."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()  # a 0-d tensor or array: its Python number
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: {arg} must be a real number, but got {arg}={value!r}")
    return float(value)


@dataclass(frozen=True)
class Conv:
    """The weight to fill, read as ``(groups, C_out/groups, C_in/groups, *kernel)``.

    ``lead`` is the number of leading kernel-index axes (tiles or positions) and ``pieces`` the
    consecutive output channels per maxout unit; ``layer`` holds ``weight`` and ``bias`` (None
    for a bare weight tensor).
    """

    weight: Tensor
    bias: Tensor | None
    groups: int
    transposed: bool
    layer: nn.Module | None = None
    lead: int = 0
    pieces: int = 1
    name: str = ""  # the calling function, for errors

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(self.weight.shape[self.lead + 2 :])

    @property
    def out_per_group(self) -> int:
        """Stored output channels per group (``pieces`` per maxout unit)."""
        first, second = self.weight.shape[self.lead : self.lead + 2]
        return second if self.transposed else first // self.groups

    @property
    def in_per_group(self) -> int:
        first, second = self.weight.shape[self.lead : self.lead + 2]
        return first // self.groups if self.transposed else second

    def write(
        self, grouped: Tensor, bias: Tensor | None = None, *, write_bias: bool = True
    ) -> Tensor:
        """Write ``(groups, C_out/groups, C_in/groups, *kernel)`` values into the weight (the
        same in every tile or position) and, for a layer with a bias and ``write_bias``,
        ``bias`` ``(C_out,)`` (zeros if None). Returns the weight."""
        g, o, i = grouped.shape[:3]
        if self.transposed:
            kernel = grouped.transpose(1, 2).reshape(g * i, o, *self.kernel_size)
        else:
            kernel = grouped.reshape(g * o, i, *self.kernel_size)
        weight = kernel.to(self.weight).expand(self.weight.shape)
        if self.layer is None:
            with torch.no_grad():
                return self.weight.copy_(weight)
        values = {"weight": weight}
        if self.bias is not None and write_bias:
            b = torch.zeros(self.bias.shape[-1]) if bias is None else bias
            values["bias"] = b.to(self.bias).expand(self.bias.shape)
        holder = self.layer
        for attr, value in values.items():  # every check before any write
            _check_writable(self.name, holder, attr, value)
        with torch.no_grad():
            for attr, value in values.items():
                if parametrize.is_parametrized(holder, attr):
                    # A fresh tensor: right_inverse's result may become the stored original.
                    setattr(holder, attr, value.clone(memory_format=torch.contiguous_format))
                else:
                    getattr(holder, attr).copy_(value)
        return holder.weight


def _check_writable(name: str, layer: nn.Module, attr: str, value: Tensor) -> None:
    """Raise unless writing ``value`` makes ``layer`` compute exactly ``value`` as ``attr``."""
    where = f"{name}: the {type(layer).__name__}'s {attr}"
    if parametrize.is_parametrized(layer, attr):
        # Try it on a copy: right_inverse may not exist, or not invert (spectral_norm).
        trial = copy.deepcopy(layer.parametrizations[attr])
        got = None
        if all(hasattr(p, "right_inverse") for p in trial):
            with torch.no_grad():
                trial.right_inverse(value.clone(memory_format=torch.contiguous_format))
                got = trial()
        if got is None or not (got.is_meta or _close(got, value)):
            raise ValueError(
                f"{where} is computed by a parametrization "
                f"({', '.join(type(p).__name__ for p in trial)}) that cannot take the values "
                "to write; initialise the layer before parametrizing it, or remove the "
                "parametrization first (torch.nn.utils.parametrize.remove_parametrizations)"
            )
        return
    names = dict(layer.named_parameters(recurse=False)) | dict(layer.named_buffers(recurse=False))
    if attr not in names:
        # e.g. torch.nn.utils.weight_norm's hook recomputes it from weight_g and weight_v.
        raise ValueError(
            f"{where} is not a parameter of the layer but recomputed from others (a hook such "
            "as the deprecated torch.nn.utils.weight_norm or spectral_norm); use "
            "torch.nn.utils.parametrizations.weight_norm, or initialise before applying it"
        )


def _close(got: Tensor, want: Tensor) -> bool:
    """Equal up to a few rounding errors of the dtype (a round trip through g·v/‖v‖)."""
    tol = 16 * torch.finfo(want.dtype).eps
    scale = float(want.abs().max()) if want.numel() else 0.0
    return got.shape == want.shape and torch.allclose(got, want, rtol=tol, atol=tol * scale)


def resolve(target: Target, groups: int | None, name: str) -> Conv:
    """``target`` (a layer or a weight) as a :class:`Conv`; ``name`` is the calling function.

    ``groups`` is for a bare weight (default 1); a layer brings its own.
    """
    if isinstance(target, nn.Module):
        return _resolve_layer(target, groups, name)
    if not isinstance(target, Tensor):
        raise TypeError(
            f"{name}: expected a convolution layer or a weight tensor, but got "
            f"{type(target).__name__}"
        )
    if target.dim() not in (3, 4, 5):
        raise ValueError(
            f"{name}: expected a weight of 3 to 5 dims (C_out, C_in/groups, *kernel) for a "
            f"1D to 3D convolution, but got a weight of size {list(target.shape)}; pass the "
            "layer for a tiled or locally connected one"
        )
    if not target.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point weight, but got {target.dtype}")
    groups = 1 if groups is None else check_int(name, "groups", groups)
    if groups <= 0:
        raise ValueError(f"{name}: groups must be positive, but got groups={groups}")
    if target.shape[0] % groups != 0:
        raise ValueError(
            f"{name}: groups={groups} does not divide the weight's C_out={target.shape[0]}"
        )
    return Conv(target, None, groups, transposed=False)


def _resolve_layer(layer: nn.Module, groups: int | None, name: str) -> Conv:
    pieces = 1
    if isinstance(layer, _MaxoutConvNd):
        pieces, layer = layer.pieces, layer.conv
    if not isinstance(layer, _ConvNd | _MultiKernelConv):
        raise TypeError(
            f"{name}: expected a convolution layer ({LAYERS}) or a weight tensor, but got "
            f"{type(layer).__name__}"
        )
    weight = layer.weight
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise ValueError(
            f"{name}: the {type(layer).__name__} is lazy and not initialised yet; run it once "
            "on a batch (a dry forward) to give it its weight, then initialise it"
        )
    if groups is not None and groups != layer.groups:
        raise ValueError(
            f"{name}: groups={groups} given for a layer with groups={layer.groups}; "
            "leave groups out when passing a layer"
        )
    transposed = isinstance(layer, _ConvNd) and layer.transposed
    lead = weight.dim() - 2 - len(layer.kernel_size)
    return Conv(weight, layer.bias, layer.groups, transposed, layer, lead, pieces, name)
