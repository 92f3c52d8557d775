"""The AlexNet/VGG table and builder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchconv_ext
from recipes.flops import count_flops
from recipes.models import ARCHS, build_model

# Parameter counts of the reference networks at 1000 classes: torchvision's vgg*/vgg*_bn, and
# the 2012 two-GPU AlexNet (Krizhevsky et al.; Caffe's bvlc_alexnet).
REFERENCE_PARAMS = {
    ("vgg11", False): 132_863_336,
    ("vgg11", True): 132_868_840,
    ("vgg13", False): 133_047_848,
    ("vgg13", True): 133_053_736,
    ("vgg16", False): 138_357_544,
    ("vgg16", True): 138_365_992,
    ("vgg19", False): 143_667_240,
    ("vgg19", True): 143_678_248,
    ("alexnet", False): 60_965_224,
}


@pytest.mark.parametrize(("arch", "batch_norm"), sorted(REFERENCE_PARAMS))
def test_full_size_networks_match_the_references(arch, batch_norm):
    with torch.device("meta"):
        model = build_model(arch, 1000, batch_norm=batch_norm, backend="torch")
    if batch_norm:  # torchvision's *_bn keep the conv bias; ours drop it (BN cancels it)
        convs = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
        assert sum(p.numel() for p in model.parameters()) + convs == REFERENCE_PARAMS[arch, True]
    else:
        assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMS[arch, False]


def test_alexnet_2012_layout():
    with torch.device("meta"):
        model = build_model("alexnet", 1000, backend="torch")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert (convs[0].kernel_size, convs[0].stride) == ((11, 11), (4, 4))
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in model.features) == 2
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(3, 2)] * 3  # overlapping pooling


@pytest.mark.parametrize(
    ("arch", "size", "features_side"),
    [
        ("alexnet", 224, 6),
        ("alexnet32", 32, 4),
        ("vgg11", 32, 1),
        ("vgg19", 64, 2),
    ],
)
def test_forward_shapes(arch, size, features_side):
    model = build_model(arch, 7, in_channels=1, width=1 / 16, hidden=16)
    x = torch.randn(2, 1, size, size)
    assert model.features(x).shape[-2:] == (features_side, features_side)
    assert model(x).shape == (2, 7)


def test_state_dict_keys_follow_torchvision():
    model = build_model("vgg11", 10, batch_norm=True, width=1 / 16)
    keys = list(model.state_dict())
    assert keys[:6] == [
        "features.0.weight",
        "features.1.weight",
        "features.1.bias",
        "features.1.running_mean",
        "features.1.running_var",
        "features.1.num_batches_tracked",
    ]
    assert keys[-2:] == ["classifier.6.weight", "classifier.6.bias"]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_backends_build_the_same_network(arch):
    torch.manual_seed(0)
    ours = build_model(arch, 5, width=1 / 16, hidden=8, backend="torchconv_ext")
    torch.manual_seed(0)
    theirs = build_model(arch, 5, width=1 / 16, hidden=8, backend="torch")
    convs = [m for m in ours.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(isinstance(m, torchconv_ext.nn.Conv2d) for m in convs)
    assert not any(isinstance(m, torchconv_ext.nn.Conv2d) for m in theirs.modules())
    # Everything torchconv_ext.nn offers (pooling too, once it exists) is swapped in.
    ours_types = {type(m) for m in ours.modules()}
    for name in torchconv_ext.nn.__all__:
        replaced = getattr(getattr(torchconv_ext.nn, name), "replaces", None)
        assert replaced not in ours_types, f"{replaced.__name__} was not converted"
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 224 if arch == "alexnet" else 32, 224 if arch == "alexnet" else 32)
    torch.testing.assert_close(ours.double()(x.double()), theirs.double()(x.double()))


def test_width_multiplier_and_groups():
    model = build_model("alexnet32", 10, width=0.1, backend="torch")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    # 96·0.1, 256·0.1, 384·0.1 … rounded to multiples of the groups (2)
    assert [c.out_channels for c in convs] == [10, 26, 38, 38, 26]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"arch": "vgg12"},
            r"unknown model 'vgg12': expected one of 'alexnet', 'alexnet32', 'vgg11'",
        ),
        (
            {"backend": "cudnn"},
            r"unknown backend 'cudnn': expected one of 'torchconv_ext', 'torch'",
        ),
        ({"width": 0}, r"width must be positive"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**{"arch": "vgg11", "num_classes": 10, **kwargs})


def test_flops_of_both_layer_sets_match():
    torch.manual_seed(0)
    ours = build_model("vgg11", 10, in_channels=1, width=1 / 8, pool_size=1, hidden=0)
    theirs = build_model(
        "vgg11", 10, in_channels=1, width=1 / 8, pool_size=1, hidden=0, backend="torch"
    )
    x = torch.randn(1, 1, 32, 32)
    fwd = count_flops(ours, x, backward=False)
    train = count_flops(ours, x, backward=True)
    # conv FLOPs of the first layer alone: 2·(C_out·H·W)·(C_in·k·k) = 2·8·32·32·9
    assert fwd > 2 * 8 * 32 * 32 * 9
    assert fwd == count_flops(theirs, x, backward=False)
    assert train == count_flops(theirs, x, backward=True)
    assert 2.5 * fwd < train < 3 * fwd  # backward ≈ 2× forward, less the first layer's input grad
    with torch.inference_mode():  # as ThroughputMonitor calls it
        assert count_flops(ours, x, backward=True) == train
    assert all(p.grad is None for p in ours.parameters())


def test_flops_counted_through_our_registered_convolution():
    """A convolution only our op runs (TensorFlow's 'same' with stride 2) is counted by the FLOP
    formulas torchconv_ext registers, as torch counts the same convolution."""
    ours = nn.Sequential(torchconv_ext.nn.Conv2d(3, 8, 3, stride=2, padding="same"))
    theirs = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 8, 3, stride=2))
    x = torch.randn(1, 3, 10, 10)
    for backward in (False, True):
        n = count_flops(ours, x, backward=backward)
        # forward, plus the weight gradient (the input needs none): 2·(8·5·5)·(3·3·3) each
        assert n == count_flops(theirs, x, backward=backward) == 2 * 8 * 25 * 27 * (1 + backward)
