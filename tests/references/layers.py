"""Layers side by side: one module applying several to the same input (export and trace tests)."""

from __future__ import annotations

from torch import nn


class SideBySide(nn.Module):
    """Every layer applied to the same input; all outputs, flattened into one tuple."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        outputs = []
        for layer in self.layers:
            y = layer(x)
            outputs += list(y) if isinstance(y, tuple) else [y]
        return tuple(outputs)
