"""Independent float64 references for convolution tests (torch's own ops only), and the small
CNN the module and registration tests convert."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
F_PAD_MODE = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "circular": "circular",
}


def tf_same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding, written from its documentation."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def reference_conv(x, w, b, stride, padding, dilation, groups, padding_mode="zeros"):
    """What torch computes (nn.ConvNd's recipe: F.pad for padding modes), plus TF 'same'."""
    nd = w.dim() - 2
    stride = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    dilation = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    if padding == "same":
        pairs = [
            tf_same_pads(s, k, st, d)
            for s, k, st, d in zip(x.shape[-nd:], w.shape[2:], stride, dilation)
        ]
    elif padding == "valid":
        pairs = [(0, 0)] * nd
    else:
        p = (padding,) * nd if isinstance(padding, int) else tuple(padding)
        pairs = [(q, q) for q in p]
    flat = [v for pair in reversed(pairs) for v in pair]
    if any(flat):
        x = F.pad(x, flat, mode=F_PAD_MODE[padding_mode])
    return TORCH_CONV[nd](x, w, b, stride, 0, dilation, groups)


class SmallCNN(nn.Module):
    """Every torch conv flavour a model mixes (1-d and 2-d, grouped, 1×1, strided, circular
    padding) beside layers convert_model must leave alone (BatchNorm, Linear)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1)])
        self.heads = nn.ModuleDict(
            {"a": nn.Sequential(nn.Conv2d(8, 4, 3, stride=2, padding_mode="circular", padding=1))}
        )
        self.seq1d = nn.Conv1d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = torch.relu(b(x))
        x = self.heads["a"](x)
        x = self.seq1d(x.flatten(2)).mean(-1)
        return self.fc(x)
