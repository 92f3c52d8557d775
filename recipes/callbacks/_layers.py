"""A layer's output for a batch, its receptive field, and which layer to show by default."""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass

import torch
from torch import nn

# Leaf modules whose output is an activation map (what a "feature" is in the lecture notes).
ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Mish,
)
# The default layer is the deepest activation (else convolution) whose receptive field spans at
# most this share of the input side: deep enough to respond to parts, shallow enough that a
# patch shows which part.
MAX_FIELD_SHARE = 0.6


class _Stop(Exception):
    pass


def layer_output(net: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The output of ``net``'s submodule ``layer`` (its first call) for the input ``x``; the
    rest of the network does not run."""
    module = net.get_submodule(layer)
    out: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        out.append(output)
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        net(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not out:
        raise ValueError(f"layer {layer!r} did not run in the forward pass")
    return out[0]


@dataclass(frozen=True)
class Field:
    """Receptive field of a unit along one axis: unit ``i`` sees input pixels
    ``[i·jump + offset, i·jump + offset + size)``."""

    size: int
    jump: int
    offset: int

    def box(self, i: int) -> tuple[int, int]:
        start = i * self.jump + self.offset
        return start, start + self.size


def _probe_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` in which every weight is positive and every pooling an average, so a
    unit's gradient reaches each input pixel it depends on (max pooling's gradient would reach
    only one pixel per window, a ReLU's none where it is off)."""
    with torch.inference_mode(False), torch.no_grad():  # (validate/test run in inference mode)
        probe = copy.deepcopy(net).float().cpu().eval()
        _make_positive(probe)
    return probe


def _make_positive(probe: nn.Module) -> None:
    for p in probe.parameters():
        p.requires_grad_(False)
    replacements = {}
    for name, m in probe.named_modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            m.weight.fill_(1.0 / m.weight[0].numel())
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
        elif isinstance(m, nn.MaxPool2d) and m.dilation in (1, (1, 1)):
            replacements[name] = nn.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode)
        elif isinstance(m, nn.AdaptiveMaxPool2d):
            replacements[name] = nn.AdaptiveAvgPool2d(m.output_size)
    for name, new in replacements.items():
        parent, _, attr = name.rpartition(".")
        setattr(probe.get_submodule(parent), attr, new)


def _support(probe: nn.Module, layer: str, channels: int, side: int, unit_offset: int = 0):
    """(rows [first, last] the centre unit (shifted by ``unit_offset``) sees, output side)."""
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.ones(1, channels, side, side, requires_grad=True)
        y = layer_output(probe, layer, x)
        if y.dim() != 4:
            return None, 0
        h, w = y.shape[-2:]
        i = min(h - 1, h // 2 + unit_offset)
        (grad,) = torch.autograd.grad(y[0, :, i, w // 2].sum(), x)
    rows = torch.nonzero(grad[0].abs().sum(dim=(0, 2)) > 0).flatten()
    if rows.numel() == 0:
        return None, h
    return (int(rows[0]), int(rows[-1]), i), h


def receptive_field(net: nn.Module, layer: str, channels: int, side: int) -> Field | None:
    """The receptive field of ``layer``'s units for square inputs, measured by gradients through a
    positive copy of ``net`` (so it works for any model built of the usual layers); ``None`` if
    it cannot be measured (a layer without spatial output, or normalisations that cancel)."""
    probe = _probe_copy(net)
    for size in (side, 2 * side, 4 * side):
        found, h = _support(probe, layer, channels, size)
        if found is None:
            return None
        first, last, i = found
        clipped = first == 0 or last == size - 1
        if clipped and size < 4 * side:
            continue
        if h > 1:
            other, _ = _support(probe, layer, channels, size, 1 if i + 1 < h else -1)
            step = other[2] - i
            jump = (other[0] - first) // step if other and step else size
        else:
            jump = size
        return Field(last - first + 1, max(jump, 1), first - i * jump)
    return None


_defaults: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_layer(net: nn.Module, channels: int, side: int) -> str:
    """The deepest activation module (or, in a network without such modules, convolution)
    whose receptive field spans at most ``MAX_FIELD_SHARE`` of the input side."""
    key = (channels, side)
    cached = _defaults.get(net, {})
    if key in cached:
        return cached[key]
    kinds = ACTIVATIONS if any(isinstance(m, ACTIVATIONS) for m in net.modules()) else nn.Conv2d
    candidates = [n for n, m in net.named_modules() if isinstance(m, kinds)]
    if not candidates:
        raise ValueError(f"{type(net).__name__} has no activation or Conv2d layer to show")
    probe = _probe_copy(net)
    chosen = candidates[0]
    for name in candidates:
        found, _ = _support(probe, name, channels, side)
        if found is None:
            continue
        if found[1] - found[0] + 1 > MAX_FIELD_SHARE * side:
            break
        chosen = name
    cached[key] = chosen
    _defaults[net] = cached
    return chosen
