"""``convert_model(fuse=True)``: fold eval-mode batch norm into the convolution before it, and
fuse the activation after it into the convolution's epilogue.

Recognised structure: consecutive children of an ``nn.Sequential`` (at any depth of the model)

    Conv{1,2,3}d  →  [BatchNorm{1,2,3}d, in eval mode]  →  [activation]

where the convolution is one of ours by then (``convert_model`` converted it; a parametrized
one, or one with an activation already, is not fused), the batch norm tracks running statistics
over the convolution's output channels, and the activation is ``nn.ReLU``, ``nn.LeakyReLU``,
``nn.PReLU`` (one weight, or one per output channel), ``nn.ELU``, ``nn.GELU`` or ``nn.SiLU``.
Each absorbed module is replaced by ``nn.Identity`` (as ``torch.ao.quantization.fuse_modules``
does), so the indices and ``state_dict`` keys of the other layers stay; a fused PReLU's weight
moves to the convolution as ``activation_weight``. Modules with hooks are never fused (the hook
would stop seeing its module run). Layers defined as attributes of a custom module (``self.conv``,
``self.bn`` called in ``forward``) are not recognised: only a ``Sequential`` says which module
consumes which output.

Batch norm in training mode is never folded (its statistics change with every batch). A folded
model computes what the original computes in eval mode; switching it back to ``train()`` does
not bring the batch norm back, so ``fuse=True`` is for inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from .nn.conv import _ConvMixin

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class FusionEntry:
    """A convolution (``name``) and the modules fused into it, each ``(name, class name)``;
    or, with a ``reason``, a module that followed a convolution and was not fused."""

    name: str
    fused: tuple[tuple[str, str], ...] = ()
    reason: str = ""


def _activation_of(module: nn.Module, out_channels: int) -> tuple[str, dict | None] | None:
    """``(activation, activation_args)`` of an activation module we fuse, else ``None``."""
    kind = type(module)
    if kind is nn.ReLU:
        return "relu", None
    if kind is nn.LeakyReLU:
        return "leaky_relu", {"negative_slope": module.negative_slope}
    if kind is nn.PReLU and module.num_parameters in (1, out_channels):
        return "prelu", {"weight": module.weight}
    if kind is nn.ELU:
        return "elu", {"alpha": module.alpha}
    if kind is nn.GELU:
        return "gelu", {"approximate": module.approximate}
    if kind is nn.SiLU:
        return "silu", None
    return None


def _has_hooks(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def _batch_norm_refusal(bn: nn.Module, conv: _ConvMixin) -> str:
    """Why ``bn`` cannot be folded into ``conv`` (``""``: it can)."""
    if bn.training:
        return "batch norm in training mode"
    if bn.running_mean is None or bn.running_var is None:
        return "batch norm without running statistics"
    if bn.num_features != conv.out_channels:
        return f"batch norm over {bn.num_features} channels, convolution has {conv.out_channels}"
    if _has_hooks(bn):
        return "the batch norm has hooks"
    return ""


@torch.no_grad()
def fold_batch_norm(conv: nn.Module, bn: nn.Module) -> None:
    """``conv``'s weight and bias replaced by those of ``bn(conv(x))`` in eval mode:
    ``w·s`` and ``(b - mean)·s + beta`` with ``s = gamma / sqrt(var + eps)``, computed in
    float64 and rounded once to the parameters' dtype."""
    weight = conv.weight
    var, mean = bn.running_var.double(), bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    folded = weight.double() * scale.view(-1, *[1] * (weight.dim() - 1))
    conv.weight = nn.Parameter(folded.to(weight.dtype), requires_grad=weight.requires_grad)
    conv.bias = nn.Parameter(shift.to(weight.dtype), requires_grad=weight.requires_grad)


def _is_fusable_conv(module: nn.Module) -> bool:
    return (
        isinstance(module, _ConvMixin)
        and module.activation is None
        and not parametrize.is_parametrized(module)
        and not _has_hooks(module)
    )


def fuse_sequentials(model: nn.Module) -> list[FusionEntry]:
    """Fuse every recognised pattern (module docstring) of ``model``'s ``Sequential``s in place;
    return what was fused, and what followed a convolution but was not fused, with why."""
    entries: list[FusionEntry] = []
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        i = 0
        while i < len(names):
            conv_name, conv = names[i], seq._modules[names[i]]
            i += 1
            if not _is_fusable_conv(conv):
                continue
            fused: list[tuple[str, str]] = []
            path = f"{prefix}.{{}}" if prefix else "{}"
            if i < len(names) and isinstance(seq._modules[names[i]], _BATCH_NORMS):
                bn = seq._modules[names[i]]
                reason = _batch_norm_refusal(bn, conv)
                if reason:
                    entries.append(FusionEntry(path.format(names[i]), reason=reason))
                    continue  # what follows a batch norm left in place is not the conv's output
                fold_batch_norm(conv, bn)
                fused.append((path.format(names[i]), type(bn).__name__))
                seq._modules[names[i]] = nn.Identity()
                i += 1
            if i < len(names):
                module = seq._modules[names[i]]
                found = _activation_of(module, conv.out_channels)
                if found is not None and not _has_hooks(module):
                    conv.set_activation(*found)
                    fused.append((path.format(names[i]), type(module).__name__))
                    seq._modules[names[i]] = nn.Identity()
                    i += 1
            if fused:
                entries.append(FusionEntry(path.format(conv_name), tuple(fused)))
    return entries
