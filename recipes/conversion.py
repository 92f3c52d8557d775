"""Convert a model to torchconv_ext's layers and say what was converted, what was left, and why.

The report is built by one function, :func:`convert_with_report`, from public information only:
the class of every module before and after :func:`torchconv_ext.convert_model`, and the fact that
each ``torchconv_ext.nn`` layer subclasses the ``torch.nn`` layer of the same name.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from torch import nn

import torchconv_ext

# torch.nn's own modules for convolution, pooling and upsampling: what a CNN would want converted.
_TORCH_LAYER_MODULES = (
    "torch.nn.modules.conv",
    "torch.nn.modules.pooling",
    "torch.nn.modules.upsampling",
)


@dataclass
class ConversionReport:
    """What :func:`convert_with_report` did. ``converted``: ``(module name, torch class name)``;
    ``already``: modules that were torchconv_ext layers before; ``left``:
    ``(module name, class name, reason)`` for the convolution, pooling and upsampling layers that
    still run torch's code."""

    converted: list[tuple[str, str]] = field(default_factory=list)
    already: list[tuple[str, str]] = field(default_factory=list)
    left: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: str | None = None  # why nothing was converted (``--model.backend torch``)

    def format(self, max_lines: int = 12) -> str:
        if self.skipped:
            return f"torchconv_ext conversion: none ({self.skipped})"
        ours = len(self.converted) + len(self.already)
        head = (
            f"torchconv_ext conversion: {ours} layer{'s' * (ours != 1)} run torchconv_ext's "
            f"kernels, {len(self.left)} convolution/pooling/upsampling layer"
            f"{'s' * (len(self.left) != 1)} left on torch.nn"
        )
        lines = [head]
        if self.converted:
            counts = Counter(cls for _, cls in self.converted)
            lines.append("  converted: " + ", ".join(f"{c} ×{n}" for c, n in counts.items()))
        if self.already:
            counts = Counter(cls for _, cls in self.already)
            lines.append(
                "  already torchconv_ext: " + ", ".join(f"{c} ×{n}" for c, n in counts.items())
            )
        for name, cls, reason in self.left[:max_lines]:
            lines.append(f"  left: {name} ({cls}): {reason}")
        if len(self.left) > max_lines:
            lines.append(f"  ... and {len(self.left) - max_lines} more left on torch.nn")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _counterparts() -> dict[type, type]:
    """``torch.nn`` class → the ``torchconv_ext.nn`` class that replaces it (same name, a
    subclass of it)."""
    table = {}
    for name in torchconv_ext.nn.__all__:
        ours, theirs = getattr(torchconv_ext.nn, name), getattr(nn, name, None)
        if isinstance(theirs, type) and isinstance(ours, type) and issubclass(ours, theirs):
            table[theirs] = ours
    return table


def _is_ours(cls: type) -> bool:
    return cls.__module__.startswith("torchconv_ext.")


def _torch_layer_base(cls: type) -> type | None:
    """The first class in ``cls``'s MRO that is one of torch.nn's convolution, pooling or
    upsampling layers (``cls`` itself for a torch layer, its base for a user subclass)."""
    return next((c for c in cls.__mro__ if c.__module__ in _TORCH_LAYER_MODULES), None)


def convert_with_report(model: nn.Module) -> ConversionReport:
    """Convert ``model`` in place with :func:`torchconv_ext.convert_model` and report the
    outcome: each module that changed class to a ``torchconv_ext.nn`` layer, and each torch.nn
    convolution, pooling or upsampling layer left as it was, with the reason."""
    before = {name: type(m) for name, m in model.named_modules()}
    torchconv_ext.convert_model(model, inplace=True)
    table = _counterparts()
    report = ConversionReport()
    for name, module in model.named_modules():
        old, new = before[name], type(module)
        label = name or "(the model)"
        if new is not old and _is_ours(new):
            report.converted.append((label, old.__name__))
        elif _is_ours(old):
            if _torch_layer_base(old) is not None:
                report.already.append((label, old.__name__))
        elif (base := _torch_layer_base(old)) is not None:
            if base is not old:
                reason = (
                    f"a subclass of nn.{base.__name__}; convert_model replaces exact torch "
                    "classes only, since a subclass may change forward"
                )
            elif old not in table:
                reason = f"torchconv_ext has no {old.__name__}"
            elif getattr(module, "mode", "nearest") not in ("nearest", "nearest-exact"):
                reason = f"mode={module.mode!r}: torchconv_ext upsamples in nearest modes only"
            else:
                reason = "not accepted by convert_model"
            report.left.append((label, old.__name__, reason))
    return report
