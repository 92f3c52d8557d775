"""Any model, not just ours: ``--model.arch`` takes an import path, the recipe converts the
model to torchconv_ext's layers and reports what it converted, what it left, and why."""

from __future__ import annotations

import pytest
import torch
from recipes_testutils import CONFIGS, DIGITS, run_cli
from torch import nn

import torchconv_ext
from recipes.conversion import convert_with_report
from recipes.module import ImageClassifier
from recipes.resnet import ResNet

RESNET = CONFIGS / "resnet8_digits.yaml"
FAST = ("--trainer.fast_dev_run", "1")


class MyConv(nn.Conv2d):
    """A user's subclass that changes no computation: converted, and still a MyConv."""


class ScaledConv(nn.Conv2d):
    """A user's subclass computing in its own forward (not through torch's): left alone."""

    def forward(self, x):
        return nn.functional.conv2d(x, self.weight, self.bias) * 2


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.custom = MyConv(4, 4, 3, padding=1)
        self.scaled = ScaledConv(4, 4, 1)
        self.pool = nn.MaxPool2d(2)
        self.lp = nn.LPPool2d(2, 2)
        self.smooth = nn.Upsample(scale_factor=2, mode="bilinear")
        self.sharp = nn.Upsample(scale_factor=2, mode="nearest")
        self.ours = torchconv_ext.nn.AvgPool2d(2)
        self.head = nn.Linear(4, 2)


def test_conversion_report_says_what_was_left_and_why():
    model = Mixed()
    summary = convert_with_report(model)
    report = summary.report
    assert [e.name for e in report.converted] == ["conv", "custom", "pool", "sharp"]
    assert [e.name for e in report.already] == ["ours"]
    left = {e.name: (e.before, e.reason) for e in report.left}
    assert left.keys() == {"scaled", "lp", "smooth"}
    assert "overrides forward" in left["scaled"][1]
    assert left["lp"] == ("torch.nn.LPPool2d", "torchconv_ext has no LPPool2d")
    assert left["smooth"][1] == "mode='bilinear': torchconv_ext replaces nearest upsampling only"
    # the report matches what convert_model did
    assert type(model.conv) is torchconv_ext.nn.Conv2d and type(model.scaled) is ScaledConv
    assert isinstance(model.custom, MyConv) and isinstance(model.custom, torchconv_ext.nn.Conv2d)
    assert type(model.smooth) is nn.Upsample and type(model.sharp) is torchconv_ext.nn.Upsample
    text = summary.format()
    assert text.splitlines()[0] == (
        "torchconv_ext conversion: 5 layers run torchconv_ext's kernels, "
        "3 convolution/pooling/upsampling layers left on torch.nn"
    )
    assert "  converted: torch.nn.Conv2d ×1, " in text
    assert "  left: lp (torch.nn.LPPool2d): torchconv_ext has no LPPool2d" in text


def test_any_model_by_import_path_is_converted(tmp_path, capsys):
    cli = run_cli(
        "fit",
        "--config",
        str(RESNET),
        "--model.arch_kwargs",
        "{width: 4}",
        *FAST,
        tmp_path=tmp_path,
    )
    net = cli.model.net
    assert isinstance(net, ResNet) and net.fc.out_features == 10
    assert net.stem[0].in_channels == 1  # in_channels and num_classes came from the data
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 9 and all(type(m) is torchconv_ext.nn.Conv2d for m in convs)
    assert type(net.pool) is torchconv_ext.nn.AdaptiveAvgPool2d
    out = capsys.readouterr().out
    assert "torchconv_ext conversion: 10 layers run torchconv_ext's kernels, 0 " in out
    assert "converted: torch.nn.Conv2d ×9, torch.nn.AdaptiveAvgPool2d ×1" in out
    assert cli.trainer.state.finished


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("recipes.resnet.resnet8", {"width": 4}),  # a builder function
        ("recipes.resnet:resnet8", {"width": 4}),  # (the entry-point spelling)
        ("recipes.resnet.ResNet", {"depth": 8, "width": 4}),  # a class
    ],
)
def test_class_paths_and_builders(arch, kwargs):
    model = ImageClassifier(arch, 10, 1, arch_kwargs=kwargs)
    assert isinstance(model.net, ResNet) and len(model.net.layer1) == 1
    assert type(model.net.stem[0]) is torchconv_ext.nn.Conv2d


def test_backends_give_the_same_imported_network():
    torch.manual_seed(0)
    ours = ImageClassifier("recipes.resnet.resnet8", 10, 1, arch_kwargs={"width": 4})
    torch.manual_seed(0)
    theirs = ImageClassifier(
        "recipes.resnet.resnet8", 10, 1, arch_kwargs={"width": 4}, backend="torch"
    )
    assert theirs.conversion_report.format() == "torchconv_ext conversion: none (backend 'torch')"
    assert not any(type(m).__module__.startswith("torchconv_ext") for m in theirs.modules())
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    ours.double().eval(), theirs.double().eval()
    torch.testing.assert_close(ours(x), theirs(x))


def test_builder_taking_kwargs_gets_the_class_count():
    """torchvision's builders take ``**kwargs`` and pass them on: the class count goes along."""
    model = ImageClassifier("recipes_testutils.kwargs_builder", 7, 3, backend="torch")
    assert model.net.fc.out_features == 7 and model.net.stem[0].in_channels == 3


def test_shipped_network_options_are_ignored_for_an_imported_model(tmp_path):
    with pytest.warns(
        UserWarning,
        match=r"model.batch_norm, model.width, model.pool_size, model.hidden, model.dropout apply to the shipped AlexNet/VGG networks only",
    ):
        cli = run_cli(
            "fit",
            "--config",
            str(DIGITS),
            "--model.arch",
            "recipes.resnet.resnet8",
            "--model.arch_kwargs",
            "{width: 4}",
            *FAST,
            tmp_path=tmp_path,
        )
    assert isinstance(cli.model.net, ResNet)


@pytest.mark.parametrize(
    ("arch", "kwargs", "message"),
    [
        ("nomodule.Net", None, "cannot import 'nomodule' for model 'nomodule.Net'"),
        ("recipes.resnet.ResNet50", None, "module 'recipes.resnet' has no 'ResNet50'"),
        ("recipes.resnet.__doc__", None, "is not a class or a function"),
        ("recipes.resnet.resnet8", {"in_channels": 3}, "takes 3 channels but the images have 1"),
        ("recipes.resnet.resnet8", {"num_classes": 5}, "has 5 outputs but the data has 10 classes"),
        ("recipes.resnet.resnet8", {"depth": 5}, "cannot build model 'recipes.resnet.resnet8'"),
    ],
)
def test_bad_model_paths_say_what_is_wrong(arch, kwargs, message):
    with pytest.raises(ValueError, match="^" + message if arch.startswith("nomodule") else message):
        ImageClassifier(arch, 10, 1, arch_kwargs=kwargs)
