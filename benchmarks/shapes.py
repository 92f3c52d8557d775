"""Real layer shapes, kept as data: the layers of networks people train.

Three kinds of layer share one interface (:class:`Layer`): convolutions (:class:`ConvLayer`, and
the locally connected and tiled :class:`LocalLayer`; compute-bound: FLOPs), pooling (:class:`PoolLayer`) and nearest upsampling
(:class:`UpsampleLayer`), both memory-bound (bytes). Batch sizes are per-GPU training batches; the
CPU and ``--quick`` runs shrink them (:func:`scaled`). Every layer records whether its input needs
a gradient: a network's first layer does not, so its backward computes the weight gradient only,
as in training.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

#: Command-line names of networks whose plain slug would be awkward.
NET_KEYS: dict[str, str] = {"3D U-Net": "unet3d", "VGG-16": "vgg16", "ResNet-50": "resnet50"}

#: Byte counts of the pooling ops that save int64 indices for the backward.
INDEX_BYTES = 8


def _tuple(v: int | tuple[int, ...], dims: int) -> tuple[int, ...]:
    return (v,) * dims if isinstance(v, int) else tuple(v)


@dataclass(frozen=True)
class Layer:
    """One layer at its training batch: ``batch × c_in × size`` in, see the subclasses for the rest.

    ``work()`` is what :func:`scaled` keeps under a budget: forward FLOPs for compute-bound
    layers, forward bytes (at 4 bytes per element) for memory-bound ones.
    """

    net: str
    layer: str
    batch: int
    c_in: int
    size: tuple[int, ...]
    input_grad: bool = field(default=True, kw_only=True)

    KIND: ClassVar[str] = ""
    COMPUTE_BOUND: ClassVar[bool] = False

    @property
    def dims(self) -> int:
        return len(self.size)

    @property
    def name(self) -> str:
        """``net.layer`` in lower case, as typed on the command line (``resnet50.layer3.conv2``)."""
        key = NET_KEYS.get(self.net) or re.sub(r"[^a-z0-9]", "", self.net.lower())
        return f"{key}.{self.layer}"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, self.c_in, *self.size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def flops(self, direction: str) -> int | None:
        """FLOPs (2 per multiply-add) of ``direction``; ``None`` for memory-bound layers."""
        return None

    def bytes(self, direction: str, element_size: int) -> int:
        """Bytes read + written by ``direction``, each tensor counted once per pass."""
        raise NotImplementedError

    def work(self) -> float:
        """The forward's cost that :func:`scaled` keeps under a budget."""
        return self.flops("fwd") if self.COMPUTE_BOUND else self.bytes("fwd", 4)

    def min_size(self) -> tuple[int, ...]:
        """The smallest input extent per dim that keeps a valid output (of at least 2 positions)."""
        return (1,) * self.dims

    def shape_str(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d.update(
            kind=self.KIND,
            name=self.name,
            dims=self.dims,
            out_shape=list(self.output_shape),
            shape=self.shape_str(),
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layer:
        """The layer a :meth:`to_dict` (or a case dict) describes."""
        kind = LAYER_KINDS[d.get("kind", "conv")] if cls is Layer else cls
        values = {f.name: d[f.name] for f in fields(kind) if f.name in d}
        for key, v in values.items():
            if isinstance(v, list):
                values[key] = tuple(v)
        return kind(**values)


# --- convolution -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvLayer(Layer):
    """One convolution (or transposed convolution) layer at its training batch size."""

    c_out: int
    kernel: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: int | tuple[int, ...] = 0
    dilation: int | tuple[int, ...] = 1
    groups: int = 1
    bias: bool = True
    transposed: bool = False
    output_padding: int | tuple[int, ...] = 0
    #: An activation after the bias (``torch.nn.functional``'s name): ours fuses it into the
    #: convolution (``activation=``), torch runs it after cuDNN's convolution.
    activation: str | None = None

    KIND: ClassVar[str] = "conv"
    COMPUTE_BOUND: ClassVar[bool] = True

    @property
    def op(self) -> str:
        """``conv2d``, ``conv_transpose3d``, …: the functional op this layer runs."""
        return f"conv{'_transpose' if self.transposed else ''}{self.dims}d"

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
    def bias_shape(self) -> tuple[int, ...]:
        return (self.c_out,)

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
            positions, reduction = math.prod(self.size), self.c_out // self.groups
            fwd = 2 * self.batch * self.c_in * positions * reduction * taps
        else:
            positions, reduction = math.prod(self.out_size), self.c_in // self.groups
            fwd = 2 * self.batch * self.c_out * positions * reduction * taps
        bwd = fwd * (2 if self.input_grad else 1)
        return {"infer": fwd, "fwd": fwd, "bwd": bwd, "both": fwd + bwd}[direction]

    def bytes(self, direction: str, element_size: int) -> int:
        x, w, y = (
            math.prod(self.input_shape),
            math.prod(self.weight_shape),
            math.prod(self.output_shape),
        )
        b = math.prod(self.bias_shape) if self.bias else 0
        fwd = x + w + b + y
        # reads grad_out, input, weight; writes grad_weight, grad_bias and maybe grad_input
        bwd = y + x + w + w + b + (x if self.input_grad else 0)
        return element_size * {"infer": fwd, "fwd": fwd, "bwd": bwd, "both": fwd + bwd}[direction]

    def min_size(self) -> tuple[int, ...]:
        if self.transposed:
            return (1,) * self.dims
        k, s, p, d = (self.arg(f) for f in ("kernel", "stride", "padding", "dilation"))
        return tuple(max(1, d_ * (k_ - 1) + 1 - 2 * p_ + s_) for k_, s_, p_, d_ in zip(k, s, p, d))

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
        if self.activation:
            return " ".join(parts) + f" -> {self.c_out} +{self.activation}"
        return " ".join(parts) + f" -> {self.c_out}"


@dataclass(frozen=True)
class LocalLayer(ConvLayer):
    """A locally connected (``tiles`` None: a kernel per output position) or tiled convolution
    (``tiles`` kernels per dim, output position ``o`` using kernel ``o mod tiles``): a
    convolution's multiply-adds, with a weight ``(*lead, C_out, C_in/groups, *kernel)`` and a
    bias ``(*lead, C_out)``, ``lead`` the tiles or the output size."""

    tiles: int | tuple[int, ...] | None = None

    KIND: ClassVar[str] = "local"

    @property
    def op(self) -> str:
        return f"conv{self.dims}d_{'local' if self.tiles is None else 'tiled'}"

    @property
    def lead(self) -> tuple[int, ...]:
        """The tiles per dim (the output size for a locally connected layer)."""
        return self.out_size if self.tiles is None else _tuple(self.tiles, self.dims)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (*self.lead, self.c_out, self.c_in // self.groups, *self.arg("kernel"))

    @property
    def bias_shape(self) -> tuple[int, ...]:
        return (*self.lead, self.c_out)

    def shape_str(self) -> str:
        """``128x16x63x63 k9 -> 16 local``, ``… -> 64 tiles 2``."""
        lead = "local" if self.tiles is None else "tiles " + "x".join(map(str, self.lead))
        return f"{super().shape_str()} {lead}"


# --- pooling ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolLayer(Layer):
    """A pooling layer: ``op`` is a functional op of torchconv_ext (``max_pool2d``,
    ``avg_pool2d``, ``global_avg_pool``, ``spatial_pyramid_pool``)."""

    op: str
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    levels: tuple[int, ...] = ()
    mode: str = "max"

    KIND: ClassVar[str] = "pool"

    @property
    def saves_indices(self) -> bool:
        """Max pooling keeps an int64 index per output for the backward."""
        return self.op.startswith("max") or (
            self.op == "spatial_pyramid_pool" and self.mode == "max"
        )

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.op == "global_avg_pool":
            return (self.batch, self.c_in)
        if self.op == "spatial_pyramid_pool":
            return (self.batch, self.c_in * sum(lv**self.dims for lv in self.levels))
        k, s, p = self.kernel, self.stride, self.padding
        return (self.batch, self.c_in, *((i + 2 * p - k) // s + 1 for i in self.size))

    def bytes(self, direction: str, element_size: int) -> int:
        x, y = math.prod(self.input_shape), math.prod(self.output_shape)
        per_out = element_size + (INDEX_BYTES if self.saves_indices else 0)
        fwd = x * element_size + y * per_out
        bwd = y * per_out + x * element_size  # grad_out (+ indices) read, grad_in written
        return {"infer": fwd, "fwd": fwd, "bwd": bwd, "both": fwd + bwd}[direction]

    def min_size(self) -> tuple[int, ...]:
        if self.op == "global_avg_pool":
            return (1,) * self.dims
        if self.op == "spatial_pyramid_pool":
            return (max(self.levels),) * self.dims
        return (max(1, self.kernel + self.stride - 2 * self.padding),) * self.dims

    def shape_str(self) -> str:
        """``64x64x112x112 max k3 s2 p1``, ``64x512x14x14 pyramid max 1,2,4``, …"""
        parts = ["x".join(map(str, self.input_shape))]
        if self.op == "spatial_pyramid_pool":
            parts += [f"pyramid {self.mode}", ",".join(map(str, self.levels))]
        elif self.op == "global_avg_pool":
            parts.append("global avg")
        else:
            parts += [self.op.split("_")[0], f"k{self.kernel}", f"s{self.stride}"]
            if self.padding:
                parts.append(f"p{self.padding}")
        return " ".join(parts)


# --- nearest upsampling ----------------------------------------------------------------------
@dataclass(frozen=True)
class UpsampleLayer(Layer):
    """Nearest upsampling by ``scale`` in every spatial dim (``interpolate(mode="nearest")``)."""

    scale: float = 2.0

    KIND: ClassVar[str] = "upsample"

    @property
    def op(self) -> str:
        return "interpolate"

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.batch, self.c_in, *(math.floor(i * self.scale) for i in self.size))

    def bytes(self, direction: str, element_size: int) -> int:
        moved = (math.prod(self.input_shape) + math.prod(self.output_shape)) * element_size
        return {"infer": moved, "fwd": moved, "bwd": moved, "both": 2 * moved}[direction]

    def shape_str(self) -> str:
        return "x".join(map(str, self.input_shape)) + f" nearest x{self.scale:g}"


LAYER_KINDS: dict[str, type[Layer]] = {
    k.KIND: k for k in (ConvLayer, LocalLayer, PoolLayer, UpsampleLayer)
}


def scaled(layer: Layer, batch: int, max_work: float | None) -> Layer:
    """``layer`` at batch ``batch``, its spatial extent halved until its work fits a budget.

    Channels, kernel, stride and padding stay: the layer keeps its character, only smaller.
    """
    out = replace(layer, batch=batch)
    if max_work is None:
        return out
    floor = out.min_size()
    while out.work() > max_work:
        size = tuple(max(f, i // 2) for i, f in zip(out.size, floor))
        if size == out.size:
            break
        out = replace(out, size=size)
    return out


def _c(net, layer, batch, c_in, c_out, size, k, s=1, p=0, input_grad=True, **kw) -> ConvLayer:
    return ConvLayer(net, layer, batch, c_in, size, c_out, k, s, p, input_grad=input_grad, **kw)


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


# --- grouped: ResNeXt-50 32x4d (torchvision) at 224×224, batch 64: each stage's grouped 3×3,
# 32 groups of 4, 8, 16 and 32 channels ---------------------------------------------------------
def _gx(layer: str, c: int, size: int, s: int = 1) -> ConvLayer:
    return _c("ResNeXt-50", layer, 64, c, c, (size, size), 3, s, 1, groups=32, bias=False)


RESNEXT50 = [
    _gx("layer1.conv2", 128, 56),
    _gx("layer2.0.conv2", 256, 56, 2),
    _gx("layer2.conv2", 256, 28),
    _gx("layer3.conv2", 512, 14),
    _gx("layer4.conv2", 1024, 7),
]


# --- fused epilogues: convolution + bias + activation, ours in one kernel, torch's conv then
# its activation (ReLU's and ReLU6's backward read the output; hard swish's and Mish's
# recompute the pre-activation with a forward convolution)
FUSED = [
    _c("AlexNet", "conv3+relu", 128, 192, 384, (13, 13), 3, 1, 1, activation="relu"),
    _c("VGG-16", "conv3_2+relu", 64, 256, 256, (56, 56), 3, 1, 1, activation="relu"),
    _c("ResNet-50", "layer3.conv1+relu", 64, 1024, 256, (14, 14), 1, activation="relu"),
    _c("MobileNetV2", "features.4.dw+relu6", 128, 144, 144, (56, 56), 3, 1, 1, groups=144,
       activation="relu6"),
    _c("MobileNetV3-L", "features.7.expand+hardswish", 128, 80, 480, (14, 14), 1,
       activation="hardswish"),
    _c("YOLOv4", "csp3.conv+mish", 32, 128, 128, (76, 76), 3, 1, 1, activation="mish"),
]  # fmt: skip


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


# --- locally connected and tiled: DeepFace's locally connected L4-L6 (Taigman et al., 2014:
# 152×152 faces, batch 128), and tiled 3×3 convolutions (2×2 tiles, as the tiled CNNs of Le et
# al., 2010) at VGG-16's conv2/conv3 widths, batch 64 --------------------------------------------
LOCAL = [
    LocalLayer("DeepFace", "l4", 128, 16, (63, 63), 16, 9),
    LocalLayer("DeepFace", "l5", 128, 16, (55, 55), 16, 7, 2),
    LocalLayer("DeepFace", "l6", 128, 16, (25, 25), 16, 5),
    LocalLayer("Tiled CNN", "conv2", 64, 64, (112, 112), 128, 3, 1, 1, tiles=2),
    LocalLayer("Tiled CNN", "conv3", 64, 128, (56, 56), 256, 3, 1, 1, tiles=2),
]

# --- pooling: AlexNet, VGG-16, ResNet-50 (batches as their convolutions) ---------------------
POOLS = [
    PoolLayer("AlexNet", "pool1", 128, 64, (55, 55), "max_pool2d", 3, 2),
    PoolLayer("VGG-16", "pool2", 64, 128, (112, 112), "max_pool2d", 2, 2),
    # rows of 28 elements: 16-byte aligned only through the launcher's alignment hint
    PoolLayer("VGG-16", "pool4", 64, 512, (28, 28), "max_pool2d", 2, 2),
    PoolLayer("ResNet-50", "maxpool", 64, 64, (112, 112), "max_pool2d", 3, 2, 1),
    PoolLayer("ResNet-50", "avgpool", 64, 2048, (7, 7), "global_avg_pool"),
    # pyramid pooling (SPP-net) of a VGG-16 conv5 map: levels 1, 2, 4
    PoolLayer("VGG-16", "conv5.spp", 64, 512, (14, 14), "spatial_pyramid_pool", levels=(1, 2, 4)),
]

# --- nearest ×2 upsampling: U-Net and 3D U-Net decoders, an FPN top-down path ----------------
UPSAMPLES = [
    UpsampleLayer("U-Net", "up4", 8, 1024, (32, 32)),
    UpsampleLayer("U-Net", "up3", 8, 512, (64, 64)),
    UpsampleLayer("U-Net", "up2", 8, 256, (128, 128)),
    UpsampleLayer("U-Net", "up1", 8, 128, (256, 256)),
    UpsampleLayer("3D U-Net", "up3", 2, 256, (16, 16, 16)),
    UpsampleLayer("3D U-Net", "up2", 2, 128, (32, 32, 32)),
    UpsampleLayer("3D U-Net", "up1", 2, 64, (64, 64, 64)),
    # Mask R-CNN's FPN on an 800×1088 image, batch 8
    UpsampleLayer("FPN", "p5_p4", 8, 256, (25, 34)),
    UpsampleLayer("FPN", "p4_p3", 8, 256, (50, 68)),
    UpsampleLayer("FPN", "p3_p2", 8, 256, (100, 136)),
    # a non-integer factor: the generic (not the fast integer) path
    UpsampleLayer("Resize", "x1.5", 8, 256, (64, 64), scale=1.5),
]

#: The layers of each suite.
SUITE_LAYERS: dict[str, list[Layer]] = {
    "conv": ALEXNET + VGG16 + RESNET50,
    "depthwise": MOBILENETV2,
    "grouped": RESNEXT50,
    "conv3d": UNET3D,
    "fused": FUSED,
    "local": LOCAL,
    "transposed": UNET_DECODER + DCGAN_DECODER + UNET3D_DECODER,
    "pool": POOLS,
    "upsample": UPSAMPLES,
}
