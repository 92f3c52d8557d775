"""Convert a model to torchconv_ext's layers and say, in a few console lines, what was converted,
what was left and why: :func:`torchconv_ext.convert_model_with_report`'s report, summarised."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from torch import nn

import torchconv_ext


@dataclass
class ConversionSummary:
    """The library's report for one model, or why nothing was converted (``skipped``)."""

    report: torchconv_ext.ConversionReport | None = None
    skipped: str | None = None  # e.g. ``--model.backend torch``

    def format(self, max_lines: int = 12) -> str:
        if self.report is None:
            return f"torchconv_ext conversion: none ({self.skipped})"
        converted, already, left = self.report.converted, self.report.already, self.report.left
        ours = len(converted) + len(already)
        lines = [
            f"torchconv_ext conversion: {ours} layer{'s' * (ours != 1)} run torchconv_ext's "
            f"kernels, {len(left)} convolution/pooling/upsampling layer"
            f"{'s' * (len(left) != 1)} left on torch.nn"
        ]
        for label, entries in (("converted", converted), ("already torchconv_ext", already)):
            if entries:
                counts = Counter(e.before for e in entries)
                lines.append(f"  {label}: " + ", ".join(f"{c} ×{n}" for c, n in counts.items()))
        for e in left[:max_lines]:
            lines.append(f"  left: {e.name or '(the model)'} ({e.before}): {e.reason}")
        if len(left) > max_lines:
            lines.append(f"  ... and {len(left) - max_lines} more left on torch.nn")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def convert_with_report(model: nn.Module) -> ConversionSummary:
    """Convert ``model`` in place with torchconv_ext's layers; the summary says what happened."""
    _, report = torchconv_ext.convert_model_with_report(model, inplace=True)
    return ConversionSummary(report)
