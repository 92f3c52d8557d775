"""AlexNet and VGG from one config table and one builder.

Every network is ``features`` (convolutions, optional batch norm, ReLU, max pooling) →
``avgpool`` (adaptive average pooling to ``pool_size``²) → ``classifier`` (two hidden
fully-connected layers with dropout, then the output layer). Module names and ``state_dict`` keys
follow torchvision's ``alexnet``/``vgg*`` layout. The networks are built from ``torch.nn`` layers;
:func:`build_model` converts them with :func:`torchconv_ext.convert_model` when asked, so every
layer torchconv_ext supports runs our kernels and the rest stays as it is.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

import torchconv_ext

from ._checks import RecipeValueError, check_choice

BACKENDS = ("torchconv_ext", "torch")


@dataclass(frozen=True)
class Conv:
    """A convolution + (batch norm) + ReLU; ``out`` is the channel count at width 1."""

    out: int
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    groups: int = 1


@dataclass(frozen=True)
class Pool:
    """Max pooling."""

    kernel: int = 2
    stride: int = 2
    padding: int = 0


@dataclass(frozen=True)
class LRN:
    """Local response normalisation with the 2012 paper's constants."""


@dataclass(frozen=True)
class Arch:
    features: tuple[Conv | Pool | LRN, ...]
    pool_size: int  # default adaptive-average-pool output side
    hidden: int  # default width of the two hidden fully-connected layers


def _vgg(*stages: tuple[int, int]) -> tuple[Conv | Pool, ...]:
    """VGG's features: per stage, ``repeat`` 3×3 convolutions of ``channels``, then 2×2 pooling."""
    return tuple(
        layer for channels, repeat in stages for layer in (*(Conv(channels),) * repeat, Pool())
    )


# The 2012 AlexNet is the paper's two-GPU layout: conv2/4/5 see only their own half of the
# channels (groups=2), local response normalisation after conv1/conv2, overlapping 3×3/2 pooling.
# The 32×32 variant keeps that structure with 5×5 stride-1 stem and padded pooling: 32→16→8→4.
ARCHS: dict[str, Arch] = {
    "alexnet": Arch(
        (
            Conv(96, 11, 4, 2),
            LRN(),
            Pool(3, 2),
            Conv(256, 5, 1, 2, groups=2),
            LRN(),
            Pool(3, 2),
            Conv(384),
            Conv(384, groups=2),
            Conv(256, groups=2),
            Pool(3, 2),
        ),
        pool_size=6,
        hidden=4096,
    ),
    "alexnet32": Arch(
        (
            Conv(96, 5, 1, 2),
            LRN(),
            Pool(3, 2, 1),
            Conv(256, 5, 1, 2, groups=2),
            LRN(),
            Pool(3, 2, 1),
            Conv(384),
            Conv(384, groups=2),
            Conv(256, groups=2),
            Pool(3, 2, 1),
        ),
        pool_size=4,
        hidden=1024,
    ),
    "vgg11": Arch(_vgg((64, 1), (128, 1), (256, 2), (512, 2), (512, 2)), 7, 4096),
    "vgg13": Arch(_vgg((64, 2), (128, 2), (256, 2), (512, 2), (512, 2)), 7, 4096),
    "vgg16": Arch(_vgg((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), 7, 4096),
    "vgg19": Arch(_vgg((64, 2), (128, 2), (256, 4), (512, 4), (512, 4)), 7, 4096),
}


# For signatures: the CLI lists the choices in --help and rejects others while parsing.
ArchName = Literal[tuple(ARCHS)]
BackendName = Literal[BACKENDS]


class ConvNet(nn.Module):
    """``features`` → ``avgpool`` → flatten → ``classifier`` (torchvision's module names)."""

    def __init__(self, features: nn.Sequential, avgpool: nn.Module, classifier: nn.Sequential):
        super().__init__()
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _init_weights(model: nn.Module) -> None:
    """torchvision's initialisation for these nets (deep VGG without BN does not train from
    torch's default one)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build_model(
    arch: str,
    num_classes: int,
    *,
    in_channels: int = 3,
    batch_norm: bool = False,
    width: float = 1.0,
    pool_size: int | None = None,
    hidden: int | None = None,
    dropout: float = 0.5,
    backend: str = "torchconv_ext",
) -> ConvNet:
    """Build ``arch`` (a key of :data:`ARCHS`) for ``num_classes`` classes.

    Args:
        arch: ``"alexnet"`` (2012 layout, 224×224 input), ``"alexnet32"`` (32×32 variant),
            ``"vgg11"``, ``"vgg13"``, ``"vgg16"`` or ``"vgg19"``.
        num_classes: outputs of the last layer.
        in_channels: input image channels (1 for greyscale).
        batch_norm: a ``BatchNorm2d`` after every convolution (VGG-*-BN; conv bias dropped).
        width: multiplies every convolution's channel count (rounded to a multiple of the
            groups); ``0.125`` is an eighth-width network.
        pool_size: side of the adaptive average pooling output (default: the arch's, 6 or 7
            for 224×224 inputs, 4 for ``alexnet32``); use 1 for a 32×32 VGG.
        hidden: width of the two hidden fully-connected layers (default: the arch's);
            0 leaves a single linear layer after the pooling.
        dropout: dropout probability before each hidden layer's successor.
        backend: ``"torchconv_ext"`` converts the model to our layers, ``"torch"`` keeps
            ``torch.nn``'s; the parameters and ``state_dict`` are the same either way.
    """
    spec = ARCHS[check_choice("model", arch, ARCHS)]
    check_choice("backend", backend, BACKENDS)
    if width <= 0:
        raise RecipeValueError(f"width must be positive, got {width}")
    if pool_size is not None and pool_size < 1:
        raise RecipeValueError(f"pool_size must be a positive integer, got {pool_size}")
    if hidden is not None and hidden < 0:
        raise RecipeValueError(f"hidden must be 0 (no hidden layers) or positive, got {hidden}")
    if not 0 <= dropout <= 1:
        raise RecipeValueError(f"dropout must be a probability in [0, 1], got {dropout}")
    multiple = math.lcm(*(layer.groups for layer in spec.features if isinstance(layer, Conv)))

    layers: list[nn.Module] = []
    channels = in_channels
    for layer in spec.features:
        if isinstance(layer, Conv):
            out = max(multiple, round(layer.out * width / multiple) * multiple)
            layers.append(
                nn.Conv2d(
                    channels,
                    out,
                    layer.kernel,
                    layer.stride,
                    layer.padding,
                    groups=layer.groups,
                    bias=not batch_norm,
                )
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            channels = out
        elif isinstance(layer, Pool):
            layers.append(nn.MaxPool2d(layer.kernel, layer.stride, layer.padding))
        else:
            layers.append(nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0))

    side = spec.pool_size if pool_size is None else pool_size
    width_fc = spec.hidden if hidden is None else hidden
    flat = channels * side * side
    if width_fc:
        head = [
            nn.Linear(flat, width_fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(width_fc, width_fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(width_fc, num_classes),
        ]
    else:
        head = [nn.Linear(flat, num_classes)]
    model = ConvNet(nn.Sequential(*layers), nn.AdaptiveAvgPool2d(side), nn.Sequential(*head))
    _init_weights(model)
    if backend == "torchconv_ext":
        torchconv_ext.convert_model(model, inplace=True)
    return model


def import_builder(path: str) -> Callable[..., nn.Module]:
    """The class or builder function at ``path`` (``package.module.Name`` or
    ``package.module:name``), imported; a readable error if it cannot be."""
    module_name, sep, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not sep or not module_name or not attr:
        raise RecipeValueError(
            f"unknown model {path!r}: expected one of {', '.join(map(repr, ARCHS))}, or the import "
            "path of an nn.Module class or of a function that builds one (torch.hub style), such "
            "as 'recipes.resnet.resnet8'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RecipeValueError(f"cannot import {module_name!r} for model {path!r}: {e}") from e
    try:
        builder = getattr(module, attr)
    except AttributeError as e:
        raise RecipeValueError(f"module {module_name!r} has no {attr!r} (model {path!r})") from e
    if not callable(builder):
        raise RecipeValueError(f"model {path!r} is not a class or a function")
    return builder


def _accepts(builder: Callable, name: str) -> bool:
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _accepts_kwargs(builder: Callable) -> bool:
    try:
        params = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def build_imported(
    path: str, num_classes: int, in_channels: int, kwargs: dict[str, Any] | None = None
) -> nn.Module:
    """Build the model at the import path ``path`` (see :func:`import_builder`) with
    ``kwargs``, passing ``num_classes`` and ``in_channels`` (or timm's ``in_chans``) when it takes
    them, and check that its first convolution and last linear layer fit the data."""
    builder = import_builder(path)
    kwargs = dict(kwargs or {})
    if _accepts(builder, "num_classes") or _accepts_kwargs(builder):
        kwargs.setdefault("num_classes", num_classes)
    for name in ("in_channels", "in_chans"):
        if _accepts(builder, name):
            kwargs.setdefault(name, in_channels)
            break
    try:
        model = builder(**kwargs)
    except TypeError as e:
        raise RecipeValueError(f"cannot build model {path!r} with {kwargs}: {e}") from e
    if not isinstance(model, nn.Module):
        raise RecipeValueError(
            f"model {path!r} returned a {type(model).__name__}, not an nn.Module"
        )
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if convs and convs[0].in_channels != in_channels:
        raise RecipeValueError(
            f"the first convolution of {path!r} takes {convs[0].in_channels} channels but the "
            f"images have {in_channels}: give the builder's channel argument in --model.arch_kwargs"
        )
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears and linears[-1].out_features != num_classes:
        raise RecipeValueError(
            f"the last linear layer of {path!r} has {linears[-1].out_features} outputs but the data "
            f"has {num_classes} classes: give the builder's class-count argument in "
            "--model.arch_kwargs"
        )
    return model
