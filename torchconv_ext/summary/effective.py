"""The effective receptive field (Luo et al., 2016, "Understanding the effective receptive field
in deep convolutional neural networks").

Luo et al. measure how much each input pixel moves one output unit: the gradient of the centre
unit of a feature map with respect to the input, on real weights and random inputs. It is
concentrated (roughly Gaussian) in a small part of the theoretical receptive field. We report
``|∂ Σ_c y[c, centre] / ∂x|`` summed over the batch and the input channels, normalised to a
peak of 1, and as its size the bounding box (per spatial axis) of the pixels where it reaches
``threshold`` of the peak. This needs real compute: it runs the model once, forward and
backward, on the device and dtype of its own parameters, in eval mode (batch norm uses its
running statistics; the mode is restored), and leaves no gradients on the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._trace import ModuleCall, tensors
from .fields import Field


@dataclass(frozen=True)
class EffectiveField:
    """The effective receptive field of the centre unit of layer ``layer``'s output.

    ``gradient``: the normalised gradient map over the input's spatial axes (float64, CPU);
    ``size``: per axis, the extent of the pixels where it is at least ``threshold``;
    ``field``: the layer's theoretical receptive field, for comparison.
    """

    layer: str
    size: tuple[int, ...]
    threshold: float
    gradient: Tensor
    field: Field | None


def final_map_call(calls: Sequence[ModuleCall], input_dim: int) -> ModuleCall | None:
    """The module call (the model's own included) that returned last a map shaped like the
    input with more than one unit: the final feature map (a residual block's sum, not the last
    layer inside the block; not a globally pooled 1×1 map)."""
    return next(
        (
            c
            for c in reversed(calls)
            if len(c.output_shape) == input_dim and math.prod(c.output_shape[2:]) > 1
        ),
        None,
    )


def effective_field(
    model: nn.Module,
    input_size: Sequence[int],
    call: ModuleCall,
    threshold: float,
    seed: int,
) -> EffectiveField:
    """Measure the effective receptive field of ``call``'s centre output unit."""
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    if device.type == "meta":
        raise ValueError(
            "summary: effective=True needs the model's weights, but its parameters are on the "
            "meta device"
        )
    generator = torch.Generator(device).manual_seed(seed)
    x = torch.randn(
        tuple(input_size), generator=generator, device=device, dtype=dtype, requires_grad=True
    )
    y = _output_of(model, call, x)
    nd = len(input_size) - 2
    centre = tuple((s - 1) // 2 for s in y.shape[y.dim() - nd :])
    seed_grad = torch.zeros_like(y)
    seed_grad[(..., *centre)] = 1
    (grad,) = torch.autograd.grad(y, x, seed_grad)
    magnitude = grad.abs().sum(dim=tuple(range(x.dim() - nd))).to("cpu", torch.float64)
    peak = magnitude.max()
    normalised = magnitude / peak if peak > 0 else magnitude
    above = normalised >= threshold if peak > 0 else torch.zeros_like(normalised, dtype=torch.bool)
    return EffectiveField(call.name or "(model)", _extent(above), threshold, normalised, call.field)


def _output_of(model: nn.Module, call: ModuleCall, x: Tensor) -> Tensor:
    """Run ``model`` on ``x`` in eval mode and return the output of ``call``."""
    seen: list[Tensor] = []
    count = 0

    def hook(module, args, output):
        nonlocal count
        if count == call.index:
            seen.append(tensors(output)[0])
        count += 1

    modes = {m: m.training for m in model.modules()}
    handle = call.module.register_forward_hook(hook)
    try:
        model.eval()
        with torch.enable_grad():
            model(x)
    finally:
        handle.remove()
        for m, training in modes.items():
            m.training = training
    return seen[0]


def _extent(mask: Tensor) -> tuple[int, ...]:
    """Per axis, ``last − first + 1`` of the positions where ``mask`` holds anywhere (0 if none)."""
    sizes = []
    for axis in range(mask.dim()):
        others = tuple(a for a in range(mask.dim()) if a != axis)
        hits = (mask.any(dim=others) if others else mask).nonzero().flatten()
        sizes.append(int(hits[-1] - hits[0] + 1) if len(hits) else 0)
    return tuple(sizes)
