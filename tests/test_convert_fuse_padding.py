"""``convert_model(fuse=True)``: a zero-padding module whose output only a convolution reads is
folded into that convolution's padding (the kernel pads in its index arithmetic, with no padded
copy of the input); what it cannot fold is left, with the reason."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchconv_ext
from torchconv_ext import convert_model_with_report
from torchconv_ext import nn as tnn

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]


class _TensorFlowPorted(nn.Module):
    """Padding written as its own layer, as models ported from TensorFlow and Keras write it."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))  # Keras' "same" for a stride-2 3×3 on even sizes
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.pad_wide = nn.ZeroPad2d((1, 1, 2, 2))
        self.conv_padded = nn.Conv2d(4, 4, 3, padding=(0, 1), bias=False)  # adds to its own
        self.pad_1d = nn.ConstantPad1d((2, 0), 0.0)  # the last dim only
        self.conv_same = nn.Conv2d(4, 2, (3, 4), padding="same", dilation=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(self.pad(x))))
        x = self.conv_padded(self.pad_wide(x))
        return self.conv_same(self.pad_1d(x))


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = _TensorFlowPorted().double().eval()
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    return model


@pytest.mark.parametrize("example", [False, True], ids=["from the code", "from a run"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_padding_folds_into_the_convolution_after_it(backend, example):
    model = _model()
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    converted, report = convert_model_with_report(
        model, fuse=True, example_inputs=x if example else None
    )
    fused = {e.name: e.fused for e in report.fused}
    assert fused == {
        "conv": (("pad", "ZeroPad2d"), ("bn", "BatchNorm2d"), ("act", "ReLU")),
        "conv_padded": (("pad_wide", "ZeroPad2d"),),
        "conv_same": (("pad_1d", "ConstantPad1d"),),
    }
    assert "fused into conv: pad (ZeroPad2d), bn (BatchNorm2d), act (ReLU)" in str(report)
    for name in ("pad", "pad_wide", "pad_1d"):
        assert type(converted.get_submodule(name)) is nn.Identity
    assert converted.conv.padding == ((0, 1), (0, 1))
    assert converted.conv_padded.padding == (2, 2)  # (both sides alike: torch's form)
    assert converted.conv_same.padding == (1, (5, 3))  # 'same': (1, 3) with (0, 2) added
    assert list(converted.state_dict()) == [k for k in model.state_dict() if "bn." not in k]
    with torchconv_ext.use_backend(backend):
        got = converted(x)
    torch.testing.assert_close(got, model(x))


def test_a_sequential_folds_its_padding_and_the_module_keeps_torchs_pad_form():
    torch.manual_seed(0)
    model = nn.Sequential(nn.ZeroPad1d((3, 1)), nn.Conv1d(2, 3, 4, stride=2)).double()
    converted, report = convert_model_with_report(model, fuse=True)
    assert [(e.name, e.fused) for e in report.fused] == [("1", (("0", "ZeroPad1d"),))]
    conv = converted[1]
    assert isinstance(conv, tnn.Conv1d) and conv.padding == ((3, 1),)
    # what torch's own layer pads with (F.pad's form) says the same
    assert list(conv._reversed_padding_repeated_twice) == [3, 1]
    x = torch.randn(2, 2, 9, dtype=torch.float64)
    torch.testing.assert_close(converted(x), model(x))


class _Then(nn.Module):
    """``pad`` then ``conv``; and the padded value a second time when ``reread``."""

    def __init__(self, pad: nn.Module, conv: nn.Module, reread: bool = False) -> None:
        super().__init__()
        self.pad, self.conv, self.reread = pad, conv, reread

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = self.pad(x)
        out = self.conv(padded)
        return out + padded.mean() if self.reread else out


def _hooked(module: nn.Module) -> nn.Module:
    module.register_forward_pre_hook(lambda module, args: None)
    return module


LEFT = {
    "padding mode": (
        lambda: _Then(nn.ZeroPad2d(1), nn.Conv2d(2, 2, 3, padding_mode="reflect")),
        "the convolution conv pads with padding_mode='reflect'",
    ),
    "crop": (
        lambda: _Then(nn.ZeroPad2d((0, -1, 0, 0)), nn.Conv2d(2, 2, 3)),
        "crops (negative padding)",
    ),
    "channels padded": (
        lambda: _Then(nn.ZeroPad2d(1), nn.Conv1d(8, 2, 3)),  # (its channels padded to 8)
        "pads 2 dims, the convolution conv convolves 1",
    ),
    "same with a stride": (
        lambda: _Then(nn.ZeroPad2d(1), tnn.Conv2d(2, 2, 3, stride=2, padding="same")),
        "the convolution conv pads by its input's size (padding='same' with a stride)",
    ),
    "hooked convolution": (
        lambda: _Then(nn.ZeroPad2d(1), _hooked(nn.Conv2d(2, 2, 3))),
        "the convolution conv has hooks",
    ),
    "hooked pad": (lambda: _Then(_hooked(nn.ZeroPad2d(1)), nn.Conv2d(2, 2, 3)), "has hooks"),
}


@pytest.mark.parametrize("name", LEFT)
def test_padding_that_does_not_fold_is_left_with_the_reason(name):
    build, reason = LEFT[name]
    torch.manual_seed(0)
    model = build().double()
    converted, report = convert_model_with_report(model, fuse=True)
    assert [(e.name, e.reason) for e in report.fused] == [("pad", reason)]
    assert type(converted.pad) is type(model.pad)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    x = x[0] if isinstance(model.conv, nn.Conv1d) else x
    torch.testing.assert_close(converted(x), model(x))


def test_padding_read_elsewhere_or_not_zero_is_not_a_convolutions_padding():
    """A padded value something else reads too, and a pad of another constant, stay (nothing
    to say of them: they are not padding of the convolution alone)."""
    torch.manual_seed(0)
    for model in (
        _Then(nn.ZeroPad2d(1), nn.Conv2d(2, 2, 3), reread=True),
        _Then(nn.ConstantPad2d(1, 0.5), nn.Conv2d(2, 2, 3)),
        _Then(nn.ReflectionPad2d(1), nn.Conv2d(2, 2, 3)),
    ):
        model = model.double()
        converted, report = convert_model_with_report(model, fuse=True)
        assert report.fused == [] and type(converted.pad) is type(model.pad)
        x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
        torch.testing.assert_close(converted(x), model(x))


def test_a_pad_or_convolution_called_twice_is_left():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pad, self.conv = nn.ZeroPad2d(1), nn.Conv2d(2, 2, 3)

        def forward(self, x):
            return self.conv(self.pad(x))[..., 1:-1, 1:-1] + self.conv(x)

    torch.manual_seed(0)
    model = Twice().double()
    converted, report = convert_model_with_report(model, fuse=True)
    assert [(e.name, e.reason) for e in report.fused] == [
        ("pad", "the convolution conv is called 2 times in the forward")
    ]
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(converted(x), model(x))
