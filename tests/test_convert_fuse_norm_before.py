"""``convert_model(fuse=True)``: an eval-mode batch norm whose output only a convolution reads,
and which did not fold into a convolution before it, folds into that convolution's weight and
bias where every tap reads the normalised input (no zero padding, not transposed); outputs
unchanged (float64, both backends), and what is left is reported with the reason."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

import torchconv_ext
from torchconv_ext import convert_model_with_report
from torchconv_ext import nn as tnn

from .test_convert_fuse import BACKENDS, _randomise_batch_norms


class _PreNorm(nn.BatchNorm2d):
    """timm's ``BatchNormAct2d`` as MaxViT's blocks make it (``apply_act=False``): a batch-norm
    subclass whose forward is torch's batch norm, then an identity."""

    def __init__(self, num_features: int, act: nn.Module | None = None) -> None:
        super().__init__(num_features)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         False, 0.0, self.eps)  # fmt: skip
        return self.act(x)


class _MBConv(nn.Module):
    """MaxViT's MBConv block: its input normalised, then a 1×1 convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.pre_norm = _PreNorm(3)
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.norm1 = nn.BatchNorm2d(8)
        self.act = nn.GELU()
        self.conv_dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm2 = nn.BatchNorm2d(8)  # (folds into conv_dw before it: a padded conv after)
        self.conv2 = nn.Conv2d(8, 3, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(self.pre_norm(x))))
        return x + self.conv2(self.norm2(self.conv_dw(y)))


def _forms() -> nn.Sequential:
    """A batch norm after something that is no convolution (tanh), before each convolution
    that reads no zero padding: none ('valid'), reflected (dilated, grouped, bias-free),
    circular, TensorFlow's 'same' of a 1×1 with a stride (no padding), no affine parameters."""
    return nn.Sequential(
        nn.BatchNorm2d(3),
        nn.Conv2d(3, 4, 3, padding="valid"),
        nn.Tanh(),
        nn.BatchNorm2d(4),
        nn.Conv2d(
            4, 4, 3, padding=(1, 2), dilation=(1, 2), groups=2, bias=False, padding_mode="reflect"
        ),
        nn.Tanh(),
        nn.BatchNorm2d(4, affine=False),
        nn.Conv2d(4, 6, 3, padding=1, groups=2, padding_mode="circular"),
        nn.Tanh(),
        nn.BatchNorm2d(6),
        tnn.Conv2d(6, 4, 1, stride=2, padding="same"),
    )


def _randomised(model: nn.Module) -> nn.Module:
    """``model`` in float64 and eval mode, its batch norms far from the identity."""
    torch.manual_seed(0)
    return _randomise_batch_norms(model.double()).eval()


def _fusions(report) -> dict[str, list[str]]:
    return {e.name: [f"{name} ({kind})" for name, kind in e.fused] for e in report.fused}


CASES = {
    "maxvit-block": (
        _MBConv,
        (2, 3, 6, 6),
        {
            "conv1": ["pre_norm (_PreNorm before it)", "norm1 (BatchNorm2d)", "act (GELU)"],
            "conv_dw": ["norm2 (BatchNorm2d)"],
        },
    ),
    "forms": (
        _forms,
        (2, 3, 9, 10),
        {
            "1": ["0 (BatchNorm2d before it)"],
            "4": ["3 (BatchNorm2d before it)"],
            "7": ["6 (BatchNorm2d before it)"],
            "10": ["9 (BatchNorm2d before it)"],
        },
    ),
    "1d": (
        lambda: nn.Sequential(nn.BatchNorm1d(4), nn.Conv1d(4, 6, 3, stride=2, groups=2)),
        (2, 4, 9),
        {"1": ["0 (BatchNorm1d before it)"]},
    ),
    "3d": (
        lambda: nn.Sequential(nn.BatchNorm3d(3), nn.Conv3d(3, 2, 1)),
        (1, 3, 3, 4, 5),
        {"1": ["0 (BatchNorm3d before it)"]},
    ),
}


@pytest.mark.parametrize("example", [False, True], ids=["from the code", "from a run"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_a_batch_norm_folds_into_the_convolution_after_it(case, backend, example):
    build, shape, fusions = CASES[case]
    model = _randomised(build())
    x = torch.randn(*shape, dtype=torch.float64)
    expected = model(x)
    fused, report = convert_model_with_report(
        model, fuse=True, example_inputs=x if example else None
    )
    assert _fusions(report) == fusions
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    with torchconv_ext.use_backend(backend):
        got = fused(x)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_the_folded_parameters_keep_their_dtype_and_a_bias_free_convolution_gets_a_bias():
    torch.manual_seed(0)
    model = _randomised(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1, bias=False)))
    model = model.float()
    x = torch.randn(2, 3, 4, 4)
    fused = torchconv_ext.convert_model(model, fuse=True)
    conv = fused[1]
    assert conv.weight.dtype == conv.bias.dtype == torch.float32
    assert isinstance(conv.bias, nn.Parameter) and conv.bias.requires_grad
    torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)


class _Twice(nn.Module):
    """The batch norm, or the convolution, called a second time on another value."""

    def __init__(self, again: str) -> None:
        super().__init__()
        self.bn, self.conv, self.again = nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1), again

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.bn(x))
        return out + getattr(self, self.again)(x.flip(-1))


def _hooked(module: nn.Module) -> nn.Module:
    module.register_forward_pre_hook(lambda module, args: None)
    return module


def _parametrized(conv: nn.Module) -> nn.Module:
    class Doubled(nn.Module):
        def forward(self, weight):
            return 2 * weight

    parametrize.register_parametrization(conv, "weight", Doubled())
    return conv


def _then(conv: nn.Module, bn: nn.Module | None = None) -> nn.Module:
    return nn.Sequential(bn if bn is not None else nn.BatchNorm2d(2), conv)


PADS_ZEROS = "pads with zeros (a tap on the padding reads 0, not the batch norm's shift)"
LEFT = {
    "zero padding": (lambda: _then(nn.Conv2d(2, 2, 3, padding=(0, 1))), "0", PADS_ZEROS),
    "same 3x3": (lambda: _then(nn.Conv2d(2, 2, 3, padding="same")), "0", PADS_ZEROS),
    "padding pairs": (lambda: _then(tnn.Conv2d(2, 2, 3, padding=((0, 1), 0))), "0", PADS_ZEROS),
    "transposed": (
        lambda: _then(nn.ConvTranspose2d(2, 2, 3, stride=2)),
        "0",
        "is transposed (its output's edges sum fewer taps than its middle)",
    ),
    "hooked convolution": (lambda: _then(_hooked(nn.Conv2d(2, 2, 1))), "0", "has hooks"),
    "parametrized convolution": (
        lambda: _then(_parametrized(nn.Conv2d(2, 2, 1))),
        "0",
        "is parametrized",
    ),
    "batch norm's activation": (
        lambda: _then(nn.Conv2d(2, 2, 1), _PreNorm(2, nn.ReLU())),
        "0",
        "its activation (act (ReLU)) comes before the convolution",
    ),
    "batch norm called twice": (lambda: _Twice("bn"), "bn", "called 2 times in the forward"),
    "convolution called twice": (
        lambda: _Twice("conv"),
        "bn",
        "the convolution conv is called 2 times in the forward",
    ),
}


@pytest.mark.parametrize("example", [False, True], ids=["from the code", "from a run"])
@pytest.mark.parametrize("name", LEFT)
def test_a_batch_norm_that_does_not_fold_is_left_with_the_reason(name, example):
    build, bn_name, reason = LEFT[name]
    model = _randomised(build())
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    converted, report = convert_model_with_report(
        model, fuse=True, example_inputs=x if example else None
    )
    if reason.startswith(("pads", "is", "has")):
        reason = f"the convolution 1 after it {reason}"
    assert [(e.name, e.reason) for e in report.fused] == [(bn_name, reason)]
    assert type(converted.get_submodule(bn_name)) is type(model.get_submodule(bn_name))
    torch.testing.assert_close(converted(x), model(x), rtol=1e-9, atol=1e-9)


def test_a_training_mode_batch_norm_is_never_folded():
    model = _randomised(_then(nn.Conv2d(2, 2, 1))).train()
    converted, report = convert_model_with_report(model, fuse=True)
    assert [(e.name, e.reason) for e in report.fused] == [("0", "batch norm in training mode")]
    assert isinstance(converted[0], nn.BatchNorm2d)


class _AfterParametrized(nn.Module):
    """A batch norm between a parametrized convolution (no fold into its computed weight) and a
    1×1 convolution, which takes it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _parametrized(nn.Conv2d(2, 3, 3, padding=1))
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.bn(self.conv1(x)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_norm_not_folded_before_folds_after_and_is_reported_once(backend):
    model = _randomised(_AfterParametrized())
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    converted, report = convert_model_with_report(model, fuse=True)
    assert _fusions(report) == {"conv2": ["bn (BatchNorm2d before it)"]}
    assert "not fused" not in str(report)
    with torchconv_ext.use_backend(backend):
        got = converted(x)
    torch.testing.assert_close(got, model(x), rtol=1e-9, atol=1e-9)


def test_a_batch_norm_between_two_convolutions_folds_into_the_first():
    """Folding into the convolution before is exact whatever either pads with: it comes first."""
    model = _randomised(nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1)))
    converted, report = convert_model_with_report(model, fuse=True)
    assert _fusions(report) == {"0": ["1 (BatchNorm2d)"]}
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(converted(x), model(x), rtol=1e-9, atol=1e-9)
