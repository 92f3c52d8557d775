"""Real layer shapes, kept as data: the convolutions of networks people train.

Batch sizes are per-GPU training batches; the CPU runs shrink them (see :func:`scaled`). Every
layer records whether its input needs a gradient: a network's first layer does not, so its
backward computes the weight gradient only, as in training.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

#: Command-line names of networks whose plain slug would be awkward.
NET_KEYS: dict[str, str] = {"3D U-Net": "unet3d", "VGG-16": "vgg16", "ResNet-50": "resnet50"}


def _tuple(v: int | tuple[int, ...], dims: int) -> tuple[int, ...]:
    return (v,) * dims if isinstance(v, int) else tuple(v)


@dataclass(frozen=True)
class ConvLayer:
    """One convolution (or transposed convolution) layer at its training batch size."""

    net: str
    layer: str
    batch: int
    c_in: int
    c_out: int
    size: tuple[int, ...]
    kernel: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: int | tuple[int, ...] = 0
    dilation: int | tuple[int, ...] = 1
    groups: int = 1
    bias: bool = True
    transposed: bool = False
    output_padding: int | tuple[int, ...] = 0
    input_grad: bool = True

    @property
    def dims(self) -> int:
        return len(self.size)

    @property
    def name(self) -> str:
        """``net.layer`` in lower case, as typed on the command line (``resnet50.layer3.conv2``)."""
        key = NET_KEYS.get(self.net) or re.sub(r"[^a-z0-9]", "", self.net.lower())
        return f"{key}.{self.layer}"

    def arg(self, field: str) -> tuple[int, ...]:
        """``kernel``/``stride``/``padding``/``dilation``/``output_padding`` as one int per dim."""
        return _tuple(getattr(self, field), self.dims)

    @property
    def out_size(self) -> tuple[int, ...]:
        k, s, p, d = (self.arg(f) for f in ("kernel", "stride", "padding", "dilation"))
        if self.transposed:
            op = self.arg("output_padding")
            return tuple(
                (i - 1) * s_ - 2 * p_ + d_ * (k_ - 1) + op_ + 1
                for i, k_, s_, p_, d_, op_ in zip(self.size, k, s, p, d, op)
            )
        return tuple(
            (i + 2 * p_ - d_ * (k_ - 1) - 1) // s_ + 1
            for i, k_, s_, p_, d_ in zip(self.size, k, s, p, d)
        )

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.transposed:
            return (self.c_in, self.c_out // self.groups, *self.arg("kernel"))
        return (self.c_out, self.c_in // self.groups, *self.arg("kernel"))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, self.c_in, *self.size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.batch, self.c_out, *self.out_size)

    def flops(self, direction: str) -> int:
        """FLOPs (2 per multiply-add) of ``direction``: ``fwd``, ``bwd`` or ``both``.

        Backward = weight gradient (+ input gradient when the input needs one), each as many
        multiply-adds as the forward; bias gradients are sums and count as 0, as torch's
        ``FlopCounterMode`` counts them (which, unlike this, counts a grouped layer's weight
        gradient as if it were dense).
        """
        taps = math.prod(self.arg("kernel"))
        if self.transposed:  # every input element meets C_out/groups × taps weights
            fwd = (
                2
                * self.batch
                * self.c_in
                * math.prod(self.size)
                * (self.c_out // self.groups)
                * taps
            )
        else:
            fwd = (
                2
                * self.batch
                * self.c_out
                * math.prod(self.out_size)
                * (self.c_in // self.groups)
                * taps
            )
        bwd = fwd * (2 if self.input_grad else 1)
        return {"fwd": fwd, "bwd": bwd, "both": fwd + bwd}[direction]

    def bytes(self, direction: str, element_size: int) -> int:
        """Bytes read + written by ``direction``, each tensor counted once per pass."""
        x, w, y = (
            math.prod(self.input_shape),
            math.prod(self.weight_shape),
            math.prod(self.output_shape),
        )
        b = self.c_out if self.bias else 0
        fwd = x + w + b + y
        # reads grad_out, input, weight; writes grad_weight, grad_bias and maybe grad_input
        bwd = y + x + w + w + b + (x if self.input_grad else 0)
        return element_size * {"fwd": fwd, "bwd": bwd, "both": fwd + bwd}[direction]

    def shape_str(self) -> str:
        """A compact description: ``64x256x56x56 k3 s2 p1 g1 -> 128``."""
        k, s, p = self.arg("kernel"), self.arg("stride"), self.arg("padding")
        parts = ["x".join(map(str, self.input_shape)), "k" + "x".join(map(str, sorted(set(k))))]
        if set(s) != {1}:
            parts.append("s" + "x".join(map(str, sorted(set(s)))))
        if set(p) != {0}:
            parts.append("p" + "x".join(map(str, sorted(set(p)))))
        if self.groups > 1:
            parts.append(f"g{self.groups}")
        if self.transposed:
            parts.append("T")
        return " ".join(parts) + f" -> {self.c_out}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d.update(
            name=self.name, dims=self.dims, out_size=list(self.out_size), shape=self.shape_str()
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConvLayer:
        fields = {f: d[f] for f in cls.__dataclass_fields__ if f in d}
        for f in ("size", "kernel", "stride", "padding", "dilation", "output_padding"):
            if isinstance(fields.get(f), list):
                fields[f] = tuple(fields[f])
        return cls(**fields)


def _min_size(layer: ConvLayer) -> tuple[int, ...]:
    """The smallest input extent per dim that keeps a valid output of at least 2 positions."""
    if layer.transposed:
        return (1,) * layer.dims
    k, s, p, d = (layer.arg(f) for f in ("kernel", "stride", "padding", "dilation"))
    return tuple(max(1, d_ * (k_ - 1) + 1 - 2 * p_ + s_) for k_, s_, p_, d_ in zip(k, s, p, d))


def scaled(layer: ConvLayer, batch: int, max_fwd_flops: float | None) -> ConvLayer:
    """``layer`` at batch ``batch``, its spatial extent halved until the forward fits a budget.

    Channels, kernel, stride and padding stay: the layer keeps its character, only smaller.
    """
    out = replace(layer, batch=batch)
    if max_fwd_flops is None:
        return out
    floor = _min_size(out)
    while out.flops("fwd") > max_fwd_flops:
        size = tuple(max(f, i // 2) for i, f in zip(out.size, floor))
        if size == out.size:
            break
        out = replace(out, size=size)
    return out


def _c(net, layer, batch, c_in, c_out, size, k, s=1, p=0, **kw) -> ConvLayer:
    return ConvLayer(net, layer, batch, c_in, c_out, size, k, s, p, **kw)


# --- dense 2-D convolutions ------------------------------------------------------------------
# torchvision AlexNet at 224×224, batch 128.
ALEXNET = [
    _c("AlexNet", "conv1", 128, 3, 64, (224, 224), 11, 4, 2, input_grad=False),
    _c("AlexNet", "conv2", 128, 64, 192, (27, 27), 5, 1, 2),
    _c("AlexNet", "conv3", 128, 192, 384, (13, 13), 3, 1, 1),
    _c("AlexNet", "conv4", 128, 384, 256, (13, 13), 3, 1, 1),
    _c("AlexNet", "conv5", 128, 256, 256, (13, 13), 3, 1, 1),
]
# VGG-16 at 224×224, batch 64; conv3_3, conv4_3, conv5_2/3 repeat listed shapes.
VGG16 = [
    _c("VGG-16", "conv1_1", 64, 3, 64, (224, 224), 3, 1, 1, input_grad=False),
    _c("VGG-16", "conv1_2", 64, 64, 64, (224, 224), 3, 1, 1),
    _c("VGG-16", "conv2_1", 64, 64, 128, (112, 112), 3, 1, 1),
    _c("VGG-16", "conv2_2", 64, 128, 128, (112, 112), 3, 1, 1),
    _c("VGG-16", "conv3_1", 64, 128, 256, (56, 56), 3, 1, 1),
    _c("VGG-16", "conv3_2", 64, 256, 256, (56, 56), 3, 1, 1),
    _c("VGG-16", "conv4_1", 64, 256, 512, (28, 28), 3, 1, 1),
    _c("VGG-16", "conv4_2", 64, 512, 512, (28, 28), 3, 1, 1),
    _c("VGG-16", "conv5_1", 64, 512, 512, (14, 14), 3, 1, 1),
]
# ResNet-50 (torchvision v1.5: stride on the 3×3) at 224×224, batch 64; convs have no bias.
_R = dict(bias=False)
RESNET50 = [
    _c("ResNet-50", "conv1", 64, 3, 64, (224, 224), 7, 2, 3, input_grad=False, **_R),
    _c("ResNet-50", "layer1.conv1", 64, 64, 64, (56, 56), 1, **_R),
    _c("ResNet-50", "layer1.conv2", 64, 64, 64, (56, 56), 3, 1, 1, **_R),
    _c("ResNet-50", "layer1.conv3", 64, 64, 256, (56, 56), 1, **_R),
    _c("ResNet-50", "layer2.0.conv2", 64, 128, 128, (56, 56), 3, 2, 1, **_R),
    _c("ResNet-50", "layer2.0.downsample", 64, 256, 512, (56, 56), 1, 2, **_R),
    _c("ResNet-50", "layer2.conv1", 64, 512, 128, (28, 28), 1, **_R),
    _c("ResNet-50", "layer2.conv2", 64, 128, 128, (28, 28), 3, 1, 1, **_R),
    _c("ResNet-50", "layer3.conv1", 64, 1024, 256, (14, 14), 1, **_R),
    _c("ResNet-50", "layer3.conv2", 64, 256, 256, (14, 14), 3, 1, 1, **_R),
    _c("ResNet-50", "layer3.conv3", 64, 256, 1024, (14, 14), 1, **_R),
    _c("ResNet-50", "layer4.conv2", 64, 512, 512, (7, 7), 3, 1, 1, **_R),
    _c("ResNet-50", "layer4.conv3", 64, 512, 2048, (7, 7), 1, **_R),
]


# --- depthwise: MobileNetV2 (torchvision) at 224×224, batch 128 ------------------------------
def _dw(layer: str, c: int, size: int, s: int) -> ConvLayer:
    return _c("MobileNetV2", layer, 128, c, c, (size, size), 3, s, 1, groups=c, bias=False)


MOBILENETV2 = [
    _dw("features.1.dw", 32, 112, 1),
    _dw("features.2.dw", 96, 112, 2),
    _dw("features.3.dw", 144, 56, 1),
    _dw("features.4.dw", 144, 56, 2),
    _dw("features.5.dw", 192, 28, 1),
    _dw("features.8.dw", 384, 14, 1),
    _dw("features.12.dw", 576, 14, 1),
    _dw("features.14.dw", 576, 14, 2),
    _dw("features.15.dw", 960, 7, 1),
]


# --- 3-D: a 3D U-Net (nnU-Net-style full-resolution net: 128³ patches, batch 2) ---------------
def _u3(layer: str, c_in: int, c_out: int, size: int, s: int = 1, **kw) -> ConvLayer:
    return _c("3D U-Net", layer, 2, c_in, c_out, (size,) * 3, 3, s, 1, **kw)


UNET3D = [
    _u3("enc1.conv1", 1, 32, 128, input_grad=False),
    _u3("enc1.conv2", 32, 32, 128),
    _u3("enc2.conv1", 32, 64, 128, 2),
    _u3("enc2.conv2", 64, 64, 64),
    _u3("enc3.conv2", 128, 128, 32),
    _u3("enc4.conv2", 256, 256, 16),
    _u3("bottleneck.conv2", 320, 320, 8),
    _u3("dec1.conv1", 64, 32, 128),
]

# --- transposed: U-Net / DCGAN decoders --------------------------------------------------------
# 2-D U-Net (padded convs, 256×256 input, batch 8): 2×2 stride-2 up-convolutions.
UNET_DECODER = [
    _c("U-Net", "up1", 8, 1024, 512, (16, 16), 2, 2, transposed=True),
    _c("U-Net", "up2", 8, 512, 256, (32, 32), 2, 2, transposed=True),
    _c("U-Net", "up3", 8, 256, 128, (64, 64), 2, 2, transposed=True),
    _c("U-Net", "up4", 8, 128, 64, (128, 128), 2, 2, transposed=True),
]
# DCGAN generator (nz=100, ngf=64, 64×64 images, batch 128): 4×4 kernels, no bias.
_G = dict(transposed=True, bias=False)
DCGAN_DECODER = [
    _c("DCGAN", "gen.0", 128, 100, 512, (1, 1), 4, 1, 0, input_grad=False, **_G),
    _c("DCGAN", "gen.3", 128, 512, 256, (4, 4), 4, 2, 1, **_G),
    _c("DCGAN", "gen.6", 128, 256, 128, (8, 8), 4, 2, 1, **_G),
    _c("DCGAN", "gen.9", 128, 128, 64, (16, 16), 4, 2, 1, **_G),
    _c("DCGAN", "gen.12", 128, 64, 3, (32, 32), 4, 2, 1, **_G),
]
# The 3D U-Net's up-convolution at full resolution.
UNET3D_DECODER = [
    _c("3D U-Net", "dec1.up", 2, 64, 32, (64, 64, 64), 2, 2, transposed=True),
]

#: The layers of each convolution suite.
SUITE_LAYERS: dict[str, list[ConvLayer]] = {
    "conv": ALEXNET + VGG16 + RESNET50,
    "depthwise": MOBILENETV2,
    "conv3d": UNET3D,
    "transposed": UNET_DECODER + DCGAN_DECODER + UNET3D_DECODER,
}
