"""A small ResNet for 32×32 images, written with ``torch.nn`` layers only — an example of a model
that is not ours: the recipe converts it with :func:`torchconv_ext.convert_model`, like any
model given by import path (``--model.arch recipes.resnet.resnet8``).

The layout is the CIFAR ResNet of He et al. (2016, section 4.2): a 3×3 stem, three stages of
basic blocks at ``width``, 2·``width`` and 4·``width`` channels (the last two start with a
stride-2 convolution), global average pooling and one linear layer; depth = 6·blocks + 2.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm; a 1×1 strided projection when the shape changes."""

    def __init__(self, channels_in: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or channels_in != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet-(6·``blocks``+2).

    Args:
        depth: 8, 14, 20, 32, 44, 56, 110 … (6·blocks + 2).
        num_classes: outputs.
        in_channels: image channels (1 for greyscale).
        width: channels of the first stage.
    """

    def __init__(
        self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, width: int = 16
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6·n + 2 with n ≥ 1 (8, 14, 20, …), got {depth}")
        blocks = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages, channels = [], width
        for i, out in enumerate((width, 2 * width, 4 * width)):
            layers = []
            for b in range(blocks):
                layers.append(BasicBlock(channels, out, stride=2 if i and not b else 1))
                channels = out
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet8(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> ResNet:
    """ResNet-8: one basic block per stage (torch.hub-style builder)."""
    return ResNet(8, num_classes, in_channels, width)


def resnet20(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> ResNet:
    """ResNet-20: three basic blocks per stage (torch.hub-style builder)."""
    return ResNet(20, num_classes, in_channels, width)
