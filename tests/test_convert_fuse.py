"""``convert_model(fuse=True)``: eval-mode batch norm folded into the convolution before it, the
activation after it fused into the convolution, outputs unchanged (float64, both backends)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchconv_ext
from torchconv_ext import convert_model, convert_model_with_report
from torchconv_ext import nn as tnn

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]


def _randomise_batch_norms(model: nn.Module) -> nn.Module:
    """Running statistics and affine parameters far from the identity, so a fold that got any of
    them wrong shows."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            if m.affine:
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.5, 0.5)
    return model


def _every_pattern() -> nn.Sequential:
    """Conv → BN → activation in every combination this fuses, 1×1, 3×3 and depthwise."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False),  # depthwise
        nn.BatchNorm2d(4, affine=False),
        nn.LeakyReLU(0.2),
        nn.Conv2d(4, 5, 1),  # 1×1, no batch norm
        nn.PReLU(5, init=0.3),
        nn.Conv2d(5, 4, 3, padding=1, padding_mode="reflect"),
        nn.BatchNorm2d(4),
        nn.GELU(approximate="tanh"),
        nn.Conv2d(4, 4, 1),
        nn.ELU(0.5),
        nn.Conv2d(4, 3, 3, padding=1, bias=False),
        nn.BatchNorm2d(3),  # batch norm without an activation
        nn.Conv2d(3, 3, 1),
        nn.SiLU(),
        nn.Conv2d(3, 2, 1),
        nn.PReLU(),  # one weight
    )


def _vgg_like() -> nn.Module:
    return nn.Sequential(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(4),
            nn.ReLU(inplace=True),
            nn.Conv2d(4, 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(4),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding=1, bias=False),
            nn.BatchNorm2d(6),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        ),
        nn.Flatten(),
        nn.Linear(6, 3),
    )


def _alexnet_like() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 5, stride=2, padding=2),
        nn.ReLU(inplace=True),
        nn.LocalResponseNorm(3),
        nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(4, 6, 3, padding=1, groups=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(6, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3),
    )


MODELS = {"every-pattern": _every_pattern, "vgg-like": _vgg_like, "alexnet-like": _alexnet_like}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_fused_model_matches_eval_model(name, backend):
    torch.manual_seed(0)
    model = _randomise_batch_norms(MODELS[name]().double()).eval()
    x = torch.randn(2, 3, 8, 7, dtype=torch.float64)
    expected = model(x)
    fused, report = convert_model_with_report(model, fuse=True)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert not any(isinstance(m, (nn.ReLU, nn.PReLU, nn.GELU)) for m in fused.modules())
    assert all(not e.reason for e in report.fused) and report.fused
    with torchconv_ext.use_backend(backend):
        got = fused(x)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    # The original is untouched (fusing worked on a copy).
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) or name == "alexnet-like"
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_what_fuses_and_what_replaces_it():
    torch.manual_seed(0)
    model = _randomise_batch_norms(_every_pattern().double()).eval()
    fused, report = convert_model_with_report(model, fuse=True)
    kinds = [(type(m).__name__, getattr(m, "activation", None)) for m in fused]
    assert kinds == [
        ("Conv2d", "relu"), ("Identity", None), ("Identity", None),
        ("Conv2d", "leaky_relu"), ("Identity", None), ("Identity", None),
        ("Conv2d", "prelu"), ("Identity", None),
        ("Conv2d", "gelu"), ("Identity", None), ("Identity", None),
        ("Conv2d", "elu"), ("Identity", None),
        ("Conv2d", None), ("Identity", None),
        ("Conv2d", "silu"), ("Identity", None),
        ("Conv2d", "prelu"), ("Identity", None),
    ]  # fmt: skip
    assert isinstance(fused[0], tnn.Conv2d)
    assert fused[3].bias is not None  # a folded batch norm gives a bias-free conv its shift
    assert fused[8].activation_args == {"approximate": "tanh"}
    # A fused PReLU's weight lives on with the convolution (shared: fusing worked on a copy).
    assert torch.equal(fused[6].activation_weight, model[7].weight)
    assert "6.activation_weight" in fused.state_dict()
    text = str(report)
    assert "fused into 0: 1 (BatchNorm2d), 2 (ReLU)" in text
    assert "fused into 13: 14 (BatchNorm2d)" in text


def test_training_mode_batch_norm_is_never_folded():
    torch.manual_seed(0)
    model = _randomise_batch_norms(_vgg_like().double()).eval()
    model[0][4].train()  # the second batch norm only
    x = torch.randn(2, 3, 8, 7, dtype=torch.float64)
    fused, report = convert_model_with_report(model, fuse=True)
    features = fused[0]
    assert isinstance(features[1], nn.Identity) and isinstance(features[2], nn.Identity)
    assert type(features[4]) is nn.BatchNorm2d and features[4].training
    assert type(features[5]) is nn.ReLU  # it follows the batch norm, not the convolution
    assert features[3].activation is None
    assert [e.reason for e in report.fused if e.reason] == ["batch norm in training mode"]
    assert "not fused 0.4: batch norm in training mode" in str(report)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-9, atol=1e-9)
    # A model in training mode keeps all its batch norms.
    trained, _ = convert_model_with_report(_vgg_like().double().train(), fuse=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in trained.modules()) == 3


def test_fuse_is_off_by_default():
    model = _randomise_batch_norms(_vgg_like()).eval()
    for converted in (convert_model(model), convert_model_with_report(model)[0]):
        assert [type(m).__name__ for m in converted[0]][:3] == ["Conv2d", "BatchNorm2d", "ReLU"]
        assert converted[0][0].activation is None
        assert list(converted.state_dict()) == list(model.state_dict())


def test_modules_with_hooks_and_parametrized_convs_are_not_fused():
    model = _randomise_batch_norms(_vgg_like()).eval()
    model[0][2].register_forward_hook(lambda *a: None)  # the first ReLU
    nn.utils.parametrizations.weight_norm(model[0][3])  # the second convolution
    fused = convert_model(model, fuse=True)
    features = fused[0]
    assert isinstance(features[1], nn.Identity) and type(features[2]) is nn.ReLU
    assert features[0].activation is None
    assert type(features[4]) is nn.BatchNorm2d  # after the parametrized convolution
    assert features[7].activation == "relu"


def test_inplace_fuses_the_model_itself():
    torch.manual_seed(0)
    model = _randomise_batch_norms(_alexnet_like().double()).eval()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    expected = model(x)
    assert convert_model(model, inplace=True, fuse=True) is model
    assert isinstance(model[1], nn.Identity) and model[0].activation == "relu"
    torch.testing.assert_close(model(x), expected, rtol=1e-9, atol=1e-9)


def test_recipe_vgg_with_batch_norm():
    """The recipes' VGG-11-BN (an eighth of the width), fused, computes what it computed."""
    from recipes.models import build_model

    torch.manual_seed(0)
    model = build_model("vgg11", 10, batch_norm=True, width=0.125, pool_size=1, hidden=0)
    model = _randomise_batch_norms(model.double()).eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    fused, report = convert_model_with_report(model, fuse=True)
    assert len([e for e in report.fused if not e.reason]) == 8
    torch.testing.assert_close(fused(x), model(x), rtol=1e-9, atol=1e-9)


# --- the modules' own activation arguments ----------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_module_activation_arguments(backend):
    torch.manual_seed(0)
    conv = tnn.Conv2d(3, 4, 3, activation="elu", activation_args={"alpha": 0.5}).double()
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        y = conv(x)
    z = nn.functional.conv2d(x, conv.weight, conv.bias)
    torch.testing.assert_close(y, nn.functional.elu(z, 0.5))
    assert "activation='elu'" in repr(conv)
    conv.set_activation(None)
    assert conv.activation is None and "activation" not in conv.__dict__
    torch.testing.assert_close(conv(x), z)


def test_module_prelu_weight_is_a_parameter():
    conv = tnn.Conv1d(
        2, 3, 1, activation="prelu", activation_args={"weight": torch.full((3,), 0.1)}
    )
    assert isinstance(conv.activation_weight, nn.Parameter)
    assert "activation_weight" in dict(conv.named_parameters())
    conv(torch.randn(1, 2, 4)).sum().backward()
    assert conv.activation_weight.grad is not None
    with pytest.raises(ValueError, match="out_channels=3"):
        tnn.Conv1d(2, 3, 1, activation="prelu", activation_args={"weight": torch.ones(2)})
    with pytest.raises(ValueError, match="activation must be"):
        tnn.Conv1d(2, 3, 1, activation="tanh")
    plain = tnn.Conv3d(2, 3, 1)
    assert "activation" not in plain.__dict__ and list(plain.state_dict()) == ["weight", "bias"]
