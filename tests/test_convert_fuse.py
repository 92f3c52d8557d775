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
    kinds = [(type(m).__name__, getattr(m, "fused_activation", None)) for m in fused]
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
    assert fused[8].fused_activation_args == {"approximate": "tanh"}
    # A fused PReLU's weight lives on with the convolution (shared: fusing worked on a copy).
    assert torch.equal(fused[6].activation_weight, model[7].weight)
    assert "6.activation_weight" in fused.state_dict()
    text = str(report)
    assert "fused into 0: 1 (BatchNorm2d), 2 (ReLU)" in text
    assert "fused into 13: 14 (BatchNorm2d)" in text


@pytest.mark.parametrize("training", [False, True])
def test_what_replaces_a_fused_module_keeps_its_train_or_eval_mode(training):
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 3, 1), nn.ReLU()
    ).train(training)
    fused = convert_model(model, fuse=True)
    identities = [isinstance(m, nn.Identity) for m in fused]
    assert identities == [False, not training, not training, False, True]  # (eval folds the BN)
    assert [m.training for m in fused.modules()] == [training] * 6


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
    assert features[3].fused_activation is None
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
        assert converted[0][0].fused_activation is None
        assert list(converted.state_dict()) == list(model.state_dict())


def test_modules_with_hooks_and_parametrized_convs_are_not_fused():
    model = _randomise_batch_norms(_vgg_like()).eval()
    model[0][2].register_forward_hook(lambda *a: None)  # the first ReLU
    nn.utils.parametrizations.weight_norm(model[0][3])  # the second convolution
    fused = convert_model(model, fuse=True)
    features = fused[0]
    assert isinstance(features[1], nn.Identity) and type(features[2]) is nn.ReLU
    assert features[0].fused_activation is None
    assert type(features[4]) is nn.BatchNorm2d  # after the parametrized convolution
    assert features[7].fused_activation == "relu"


def test_inplace_fuses_the_model_itself():
    torch.manual_seed(0)
    model = _randomise_batch_norms(_alexnet_like().double()).eval()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    expected = model(x)
    assert convert_model(model, inplace=True, fuse=True) is model
    assert isinstance(model[1], nn.Identity) and model[0].fused_activation == "relu"
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
    assert conv.fused_activation is None and "fused_activation" not in conv.__dict__
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
    assert "fused_activation" not in plain.__dict__ and list(plain.state_dict()) == [
        "weight",
        "bias",
    ]


# --- models written as modules with attributes: the forward code says who consumes what ---------


class _BasicBlock(nn.Module):
    """torchvision's ResNet block: one ``self.relu`` called twice, a Sequential shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.downsample = nn.Sequential(conv, nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class _ResNet(nn.Module):
    """torchvision's ResNet structure: a stem whose ReLU module is called once, then blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(_BasicBlock(4, 4), _BasicBlock(4, 6, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(self.layer1(x)), 1))


class _ConvBnAct(nn.Module):
    """timm's and MONAI's way: a module per step, each called once."""

    def __init__(self, cin: int, cout: int, act: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class _TimmBasicBlock(nn.Module):
    """timm's ResNet block: an activation module per use, identities for the switched-off
    drop-block and anti-aliasing steps between the batch norm and the activation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.drop_block = nn.Identity()
        self.act1 = nn.ReLU(inplace=True)
        self.aa = nn.Identity()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x):
        shortcut = x
        x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        x = self.bn2(self.conv2(x))
        x += shortcut
        return self.act2(x)


class _Branching(nn.Module):
    """A forward that branches on values (``torch.fx`` cannot trace it): its children are read
    one by one."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _ConvBnAct(3, 4, nn.SiLU())
        self.body = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ReLU())

    def forward(self, x):
        x = self.stem(x)
        return self.body(x) if x.sum() > 0 else -self.body(x)


def _fuse_and_compare(model: nn.Module, backend: str = "torch", *, example: bool = False):
    """``model`` (float64, batch norms randomised, eval) fused (``example``: with the input as
    ``example_inputs``): its output unchanged; the fused model and the report."""
    torch.manual_seed(0)
    model = _randomise_batch_norms(model.double()).eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    expected = model(x)
    fused, report = convert_model_with_report(
        model, fuse=True, example_inputs=x if example else None
    )
    with torchconv_ext.use_backend(backend):
        torch.testing.assert_close(fused(x), expected, rtol=1e-9, atol=1e-9)
    return fused, report


def _fusions(report) -> dict[str, list[str]]:
    return {e.name: [name for name, _ in e.fused] for e in report.fused if not e.reason}


def _refusals(report) -> dict[str, str]:
    return {e.name: e.reason for e in report.fused if e.reason}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_resnet_folds_every_batch_norm_and_fuses_the_relus_called_once(backend):
    fused, report = _fuse_and_compare(_ResNet(), backend)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert _fusions(report) == {
        "conv1": ["bn1", "relu"],
        "layer1.0.conv1": ["layer1.0.bn1"],
        "layer1.0.conv2": ["layer1.0.bn2"],
        "layer1.1.conv1": ["layer1.1.bn1"],
        "layer1.1.conv2": ["layer1.1.bn2"],
        "layer1.1.downsample.0": ["layer1.1.downsample.1"],
    }
    # Each block's ReLU module runs after its first convolution and after the sum: left.
    assert _refusals(report) == {
        "layer1.0.relu": "called 2 times in the forward",
        "layer1.1.relu": "called 2 times in the forward",
    }
    assert type(fused.layer1[0].relu) is nn.ReLU and fused.conv1.fused_activation == "relu"
    assert isinstance(fused.layer1[1], _BasicBlock)  # the model keeps its classes and forward
    assert "not fused layer1.0.relu: called 2 times in the forward" in str(report)


def test_modules_called_once_fuse_wherever_they_are_defined():
    model = nn.Sequential(_ConvBnAct(3, 4, nn.ReLU()), _ConvBnAct(4, 5, nn.GELU()))
    fused, report = _fuse_and_compare(model)
    assert _fusions(report) == {"0.conv": ["0.bn", "0.act"], "1.conv": ["1.bn", "1.act"]}
    assert [fused[i].conv.fused_activation for i in (0, 1)] == ["relu", "gelu"]
    assert all(isinstance(fused[i].bn, nn.Identity) for i in (0, 1))
    assert list(fused.state_dict()) == [k for k in fused.state_dict() if ".bn." not in k]


def test_identities_between_the_steps_pass_them_on():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), _TimmBasicBlock(4))
    fused, report = _fuse_and_compare(model)
    assert _fusions(report) == {"1.conv1": ["1.bn1", "1.act1"], "1.conv2": ["1.bn2"]}
    assert type(fused[1].act2) is nn.ReLU  # it follows the sum
    # A Sequential read as one (its forward does not trace) passes identities over as well.
    seq = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Identity(), nn.BatchNorm2d(4), nn.Identity(),
                        nn.ReLU(), _Untraceable())  # fmt: skip
    fused, report = _fuse_and_compare(seq)
    assert _fusions(report) == {"0": ["2", "4"]} and fused[0].fused_activation == "relu"


def test_a_forward_that_cannot_be_traced_is_read_child_by_child():
    fused, report = _fuse_and_compare(_Branching())
    assert _fusions(report) == {
        "stem.conv": ["stem.bn", "stem.act"],
        "body.0": ["body.1", "body.2"],
    }


class _Reuses(nn.Module):
    """Outputs and modules used more than once: nothing may change."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.twice = nn.Conv2d(3, 3, 1)  # called twice, its output then normalised
        self.bn_after_twice = nn.BatchNorm2d(3)
        self.conv_a, self.conv_b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)
        self.shared_bn = nn.BatchNorm2d(3)  # after both conv_a and conv_b

    def forward(self, x):
        y = self.conv(x)
        x = self.bn(y) + y  # the convolution's output has a second consumer
        x = self.bn_after_twice(self.twice(self.twice(x)))
        return self.shared_bn(self.conv_a(x)) + self.shared_bn(self.conv_b(x))


def test_outputs_and_modules_used_more_than_once_are_left():
    fused, report = _fuse_and_compare(_Reuses())
    assert _fusions(report) == {}
    assert _refusals(report) == {
        "bn_after_twice": "the convolution twice is called 2 times in the forward",
        "shared_bn": "called 2 times in the forward",
    }
    assert type(fused.bn) is nn.BatchNorm2d and fused.conv.fused_activation is None


class _Skip(nn.Module):
    def __init__(self, block: nn.Module, inner: nn.Module) -> None:
        super().__init__()
        self.block, self.inner = block, inner

    def forward(self, x):
        y = self.block(x)
        return y + self.inner(y)


class _Aliased(nn.Module):
    """Like MONAI's DynUNet: blocks registered in a list, and reached by the forward through a
    second, nested structure holding the same blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_ConvBnAct(3, 3, nn.LeakyReLU(0.1)) for _ in range(2)])
        self.path = _Skip(self.blocks[0], self.blocks[1])

    def forward(self, x):
        return self.path(x)


def test_a_module_registered_under_two_names_inside_the_trace_is_fused_under_both():
    fused, report = _fuse_and_compare(_Aliased())
    assert _fusions(report) == {
        f"blocks.{i}.conv": [f"blocks.{i}.bn", f"blocks.{i}.act"] for i in range(2)
    }
    assert fused.blocks[0] is fused.path.block  # still one module under two names
    assert type(fused.path.block.bn) is nn.Identity and type(fused.path.inner.act) is nn.Identity


class _AliasedOutsideTrace(nn.Module):
    """A ReLU of one traced child, called also by another child: the first child's trace does
    not see the second call (the root's forward of two inputs is not read)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = _ConvBnAct(3, 3, nn.LeakyReLU(0.1))
        self.second = nn.Sequential(nn.Conv2d(3, 3, 1), self.first.act)

    def forward(self, x, scale: float = 1.0):
        return self.second(self.first(x) * scale)


class _SharedAfterBoth(nn.Module):
    """MONAI's UnetBasicBlock: one activation module after each convolution's batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1)
        self.norm1, self.norm2 = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
        self.lrelu = nn.LeakyReLU(0.01)

    def forward(self, x):
        return self.lrelu(self.norm2(self.conv2(self.lrelu(self.norm1(self.conv1(x))))))


@pytest.mark.parametrize("example", [False, True], ids=["from the code", "from a run"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_shared_activation_after_every_convolution_fuses_into_each(backend, example):
    """Each of its calls alone consumes a convolution's output (through the batch norm folded
    into it): it fuses into both, and is replaced once."""
    fused, report = _fuse_and_compare(_SharedAfterBoth(), backend, example=example)
    assert _fusions(report) == {"conv1": ["norm1", "lrelu"], "conv2": ["norm2", "lrelu"]}
    assert _refusals(report) == {} and type(fused.lrelu) is nn.Identity
    assert fused.conv1.fused_activation == fused.conv2.fused_activation == "leaky_relu"


class _SharedAndAliasedOutsideTrace(nn.Module):
    """A shared activation after both convolutions of a traced child, called also by another
    child (the root's forward of two inputs is not read)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = _SharedAfterBoth()
        self.second = nn.Sequential(nn.Conv2d(3, 3, 1), self.first.lrelu)

    def forward(self, x, scale: float = 1.0):
        return self.second(self.first(x) * scale)


def test_a_shared_activation_registered_again_outside_the_trace_is_left():
    fused, report = _fuse_and_compare(_SharedAndAliasedOutsideTrace())
    assert _fusions(report) == {"first.conv1": ["first.norm1"], "first.conv2": ["first.norm2"]}
    assert _refusals(report) == {
        "first.lrelu": "registered more than once in the model",
        "second.1": "registered more than once in the model",
    }
    assert type(fused.first.lrelu) is nn.LeakyReLU and fused.second[1] is fused.first.lrelu


class _SharedOnceElsewhere(_SharedAfterBoth):
    def forward(self, x):
        return self.lrelu(self.norm2(self.conv2(self.lrelu(self.norm1(self.conv1(x))))) + x)


def test_a_shared_activation_called_also_on_other_values_is_reported_once():
    fused, report = _fuse_and_compare(_SharedOnceElsewhere())
    assert _fusions(report) == {"conv1": ["norm1"], "conv2": ["norm2"]}
    assert [(e.name, e.reason) for e in report.fused if e.reason] == [
        ("lrelu", "called 2 times in the forward")
    ]


def test_a_module_registered_again_outside_the_trace_is_left():
    fused, report = _fuse_and_compare(_AliasedOutsideTrace())
    assert _fusions(report) == {"first.conv": ["first.bn"]}
    assert _refusals(report) == {
        "first.act": "registered more than once in the model",
        "second.1": "registered more than once in the model",
    }
    assert type(fused.first.act) is nn.LeakyReLU and fused.second[1] is fused.first.act


class _FunctionalActivation(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return nn.functional.relu(self.bn(self.conv(x)))


def test_an_activation_in_the_forward_code_stays_after_the_folded_batch_norm():
    fused, report = _fuse_and_compare(_FunctionalActivation())
    assert _fusions(report) == {"conv": ["bn"]} and fused.conv.fused_activation is None


class _TimmBatchNormAct2d(nn.BatchNorm2d):
    """timm's ``BatchNormAct2d`` (``timm.layers.norm_act``): a batch norm subclass whose forward
    checks the input, calls torch's batch norm, then its drop and activation modules."""

    def __init__(self, num_features: int, act: nn.Module | None = None) -> None:
        super().__init__(num_features)
        self.drop = nn.Identity()
        self.act = nn.Identity() if act is None else act

    def forward(self, x):
        torch._assert(x.ndim == 4, f"expected 4D input (got {x.ndim}D input)")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        stats = not self.training or self.track_running_stats
        x = nn.functional.batch_norm(
            x, self.running_mean if stats else None, self.running_var if stats else None,
            self.weight, self.bias, bn_training, factor, self.eps,
        )  # fmt: skip
        return self.act(self.drop(x))


class _TimmGELU(nn.Module):
    """timm's ``GELU`` activation class (not torch's): a call of ``F.gelu``."""

    def forward(self, input):
        return nn.functional.gelu(input)


class _ConvNormAct(nn.Module):
    """timm's ``ConvNormAct``: a convolution and its ``BatchNormAct2d``."""

    def __init__(self, cin: int, cout: int, bn: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = bn

    def forward(self, x):
        return self.bn(self.conv(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_norm_subclass_computing_a_batch_norm_and_an_activation_folds_and_fuses(backend):
    model = nn.Sequential(
        _ConvNormAct(3, 4, _TimmBatchNormAct2d(4, nn.SiLU(inplace=True))),
        _ConvNormAct(4, 4, _TimmBatchNormAct2d(4, _TimmGELU())),  # an activation function
        _ConvNormAct(4, 4, _TimmBatchNormAct2d(4)),  # no activation: the next module fuses
        nn.ReLU(),
    )
    fused, report = _fuse_and_compare(model, backend)
    assert _fusions(report) == {"0.conv": ["0.bn"], "1.conv": ["1.bn"], "2.conv": ["2.bn", "3"]}
    described = {name: kind for e in report.fused for name, kind in e.fused}
    assert described["0.bn"] == "_TimmBatchNormAct2d with act (SiLU)"
    assert described["1.bn"] == "_TimmBatchNormAct2d with act (_TimmGELU)"
    assert [fused[i].conv.fused_activation for i in range(3)] == ["silu", "gelu", "relu"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())


class _HfGELU(nn.Module):
    """Transformers' ``GELUActivation``: the function kept as an attribute, then called."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.functional.gelu

    def forward(self, input):
        return self.act(input)


class _HandWrittenSiLU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)  # (the value used twice: not one activation call)


@pytest.mark.parametrize("example", [False, True], ids=["traced", "recorded"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_another_librarys_activation_module_fuses(backend, example):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), _HfGELU(),
        nn.Conv2d(4, 4, 1), _TimmGELU(),
        nn.Conv2d(4, 4, 1), _HandWrittenSiLU(),
    )  # fmt: skip
    fused, report = _fuse_and_compare(model, backend, example=example)
    assert _fusions(report) == {"0": ["1", "2"], "3": ["4"]}
    assert [fused[0].fused_activation, fused[3].fused_activation, fused[5].fused_activation] == [
        "gelu",
        "gelu",
        None,
    ]
    described = {name: kind for e in report.fused for name, kind in e.fused}
    assert described["2"] == "_HfGELU"


class _NormThen(nn.BatchNorm2d):
    """A batch norm subclass whose forward ends in an activation function call."""

    def __init__(self, num_features: int, then) -> None:
        super().__init__(num_features)
        self.then = then

    def forward(self, x):
        y = nn.functional.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.1, self.eps
        )
        return self.then(y)


@pytest.mark.parametrize(
    "then, kind",
    [
        (lambda y: nn.functional.relu(y, inplace=True), "relu"),
        (torch.sigmoid, "sigmoid"),
        (lambda y: y.sigmoid(), "sigmoid"),
        (lambda y: nn.functional.leaky_relu(y, 0.2), "leaky_relu"),
        (lambda y: nn.functional.elu(y, alpha=0.5), "elu"),
        (nn.functional.hardswish, "hardswish"),
        (lambda y: nn.functional.gelu(y, approximate="tanh"), "gelu"),
    ],
    ids=["relu-inplace", "torch.sigmoid", "method", "leaky-positional", "elu", "hardswish", "gelu"],
)
def test_an_activation_called_in_a_batch_norm_subclass_fuses_with_its_arguments(then, kind):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _NormThen(4, then))
    fused, report = _fuse_and_compare(model)
    assert _fusions(report) == {"0": ["1"]} and fused[0].fused_activation == kind


class _NormThenMore(nn.BatchNorm2d):
    def forward(self, x):
        y = nn.functional.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )
        return y + x  # more than a batch norm


class _NormAndSize(_NormThen):
    def forward(self, x):
        return super().forward(x), x.shape[1]  # a tuple


class _TorchForward(nn.BatchNorm2d):
    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(super().forward(x))  # torch's forward: its input check does not trace


def test_a_batch_norm_subclass_computing_anything_else_is_left():
    hooked = _TimmBatchNormAct2d(4, nn.ReLU())
    hooked.act.register_forward_hook(lambda *args: None)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), _NormThenMore(4),
        nn.Conv2d(4, 4, 1), _TorchForward(4),
        nn.Conv2d(4, 4, 1), _TimmBatchNormAct2d(4, nn.Tanh()),  # an activation we do not fuse
        nn.Conv2d(4, 4, 1), hooked,
    )  # fmt: skip
    fused, report = _fuse_and_compare(model)
    assert _fusions(report) == {}
    more = "computes more than a batch norm and an activation"
    assert _refusals(report) == {
        "1": f"_NormThenMore {more}",
        "3": "_TorchForward's forward is not read: it does not trace with torch.fx (TraceError: "
        "symbolically traced variables cannot be used as inputs to control flow)",
        "5": f"_TimmBatchNormAct2d {more}",
        "7": f"_TimmBatchNormAct2d {more}",
    }
    from torchconv_ext._fuse_steps import batch_norm_step

    tupled = _NormAndSize(4, nn.functional.relu).eval()
    assert batch_norm_step(tupled, 4) == f"_NormAndSize {more}"
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _TimmBatchNormAct2d(4, nn.ReLU())).train()
    assert _refusals(convert_model_with_report(model, fuse=True)[1]) == {
        "1": "batch norm in training mode"
    }


class _Untraceable(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_a_forward_of_several_inputs_is_not_read():
    """Its trace could take another path than a call: ``skip`` is a proxy there, never
    ``None``, and the trace would say the convolution's output goes to the batch norm alone."""

    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x, skip=None):
            y = self.conv(x)
            return self.bn(y) + y if skip is None else self.bn(y)

    fused, report = _fuse_and_compare(Skip())
    assert type(fused.bn) is nn.BatchNorm2d
    assert _refusals(report) == {
        "conv": "what consumes its output is not read (Skip's forward takes more than one "
        "argument): example_inputs= records it from a run"
    }


def test_the_convolutions_of_a_forward_not_read_are_reported():
    """A forward that branches on values does not trace: what its convolutions feed is not
    known, which the report says of each (nothing is said of a Sequential's, read in order)."""

    class Branching(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
            self.tail = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), nn.Conv2d(3, 3, 1))

        def forward(self, x):
            y = self.bn(self.conv(x))
            return self.tail(y if y.sum() > 0 else -y)

    fused, report = _fuse_and_compare(Branching())
    assert _fusions(report) == {"tail.0": ["tail.1"]}
    assert _refusals(report) == {
        "conv": "what consumes its output is not read (Branching's forward does not trace with "
        "torch.fx (TraceError: symbolically traced variables cannot be used as inputs to "
        "control flow)): example_inputs= records it from a run"
    }
    fused, report = _fuse_and_compare(Branching(), example=True)
    assert _fusions(report) == {"conv": ["bn"], "tail.0": ["tail.1"]}


def test_a_sequential_subclass_with_a_forward_of_its_own_is_not_read_in_order():
    """Its children are not a chain when its own forward (not traced: two arguments, or a
    branch on values) feeds the convolution's output to a skip connection too."""

    class Block(nn.Sequential):
        def forward(self, x, scale=1.0):
            y = self[0](x)
            return self[2](self[1](y)) + scale * y

    class Branching(nn.Sequential):
        def forward(self, x):
            y = self[0](x)
            return self[2](self[1](y)) + y if y.sum() > -1e9 else y

    for block in (Block, Branching):
        model = block(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
        fused, report = _fuse_and_compare(model)
        assert _fusions(report) == {}
        assert list(_refusals(report)) == ["0"]
        assert type(fused[1]) is nn.BatchNorm2d and type(fused[2]) is nn.ReLU
    fused, report = _fuse_and_compare(Branching(*model), example=True)
    assert _fusions(report) == {}  # (the run shows the convolution's second consumer)


def test_the_report_says_why_nothing_is_fused_into_a_convolution():
    from torch.nn.utils.parametrizations import weight_norm

    hooked = nn.Conv2d(4, 4, 1)
    hooked.register_forward_hook(lambda *args: None)
    model = nn.Sequential(
        tnn.Conv2d(3, 4, 3, activation="relu"), nn.BatchNorm2d(4),
        weight_norm(nn.Conv2d(4, 4, 1)), nn.BatchNorm2d(4),
        hooked, nn.BatchNorm2d(4),
    )  # fmt: skip
    fused, report = _fuse_and_compare(model)
    assert _fusions(report) == {}
    assert _refusals(report) == {
        "1": "the convolution 0 has an activation already",
        "3": "the convolution 2 is parametrized",
        "5": "the convolution 4 has hooks",
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_activation_fuses_into_a_parametrized_convolution(backend):
    """Its weight is computed on every call, so no batch norm folds into it; but the epilogue
    does not touch the weight: the activation after it fuses, its parametrization stays."""
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    model = nn.Sequential(weight_norm(nn.Conv2d(3, 4, 3)), nn.PReLU(4, init=0.2)).double()
    fused, report = convert_model_with_report(model, fuse=True)
    assert _fusions(report) == {"0": ["1"]} and _refusals(report) == {}
    assert nn.utils.parametrize.is_parametrized(fused[0], "weight")
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        got = fused(x)
    torch.testing.assert_close(got, model(x))


def test_a_lazy_convolution_before_its_first_input_is_not_fused():
    model = nn.Sequential(nn.LazyConv2d(4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    fused, report = convert_model_with_report(model, inplace=True, fuse=True)
    assert type(fused[1]) is nn.BatchNorm2d
    assert _refusals(report) == {"1": "the convolution 0 has no weight before its first input"}
    fused(torch.randn(1, 3, 5, 5))
    assert type(fused[0]) is tnn.Conv2d  # ours once its sizes are known


class _SqueezeExcitation(nn.Module):
    """torchvision's: average, 1×1 convolution, ReLU, 1×1 convolution, hard sigmoid, scale."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(channels, squeezed, 1), nn.Conv2d(squeezed, channels, 1)
        self.activation, self.scale_activation = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x):
        scale = self.fc1(self.avgpool(x))
        scale = self.scale_activation(self.fc2(self.activation(scale)))
        return scale * x


class _InvertedResidual(nn.Module):
    """MobileNetV3's block: expand (ReLU6 here, as MobileNetV2's), depthwise with hard swish,
    squeeze-excite, project; and a YOLO-style Mish stem."""

    def __init__(self, channels: int = 4, expanded: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.Mish())  # fmt: skip
        self.expand = nn.Sequential(nn.Conv2d(channels, expanded, 1, bias=False),
                                    nn.BatchNorm2d(expanded), nn.ReLU6(inplace=True))  # fmt: skip
        self.depthwise = nn.Sequential(
            nn.Conv2d(expanded, expanded, 3, padding=1, groups=expanded, bias=False),
            nn.BatchNorm2d(expanded), nn.Hardswish(),
        )  # fmt: skip
        self.se = _SqueezeExcitation(expanded, 2)
        self.project = nn.Sequential(nn.Conv2d(expanded, channels, 1, bias=False),
                                     nn.BatchNorm2d(channels))  # fmt: skip
        self.gate = nn.Conv2d(channels, 1, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        x = self.stem(x)
        y = x + self.project(self.se(self.depthwise(self.expand(x))))
        return y * self.sigmoid(self.gate(y))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mobile_activations_fuse(backend):
    fused, report = _fuse_and_compare(_InvertedResidual(), backend)
    assert _fusions(report) == {
        "stem.0": ["stem.1", "stem.2"],
        "expand.0": ["expand.1", "expand.2"],
        "depthwise.0": ["depthwise.1", "depthwise.2"],
        "se.fc1": ["se.activation"],
        "se.fc2": ["se.scale_activation"],
        "project.0": ["project.1"],
        "gate": ["sigmoid"],
    }
    activations = [fused.stem[0], fused.expand[0], fused.depthwise[0], fused.se.fc2, fused.gate]
    assert [m.fused_activation for m in activations] == [
        "mish", "relu6", "hardswish", "hardsigmoid", "sigmoid"
    ]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_transposed_convolution_folds_its_batch_norm(backend):
    """DCGAN's generator block, grouped too: the batch norm's scale goes to each output
    channel's column of the (C_in, C_out / groups, *kernel) weight, the ReLU into the
    epilogue."""
    model = nn.Sequential(
        nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(4),
        nn.ReLU(), nn.ConvTranspose2d(4, 6, 3, groups=2), nn.BatchNorm2d(6),
    )  # fmt: skip
    fused, report = _fuse_and_compare(model, backend)
    assert _fusions(report) == {"0": ["1", "2"], "3": ["4"]}
    assert fused[0].fused_activation == "relu" and fused[0].bias is not None


# --- random graphs: whatever fuses, the model computes what it computed -------------------------


class _Program(nn.Module):
    """A random forward over 4-channel maps: each step applies a module (convolutions in each
    padding mode, batch norms and activations; some called more than once, some registered
    twice, some inside a Sequential), adds two earlier values (in place, sometimes), applies
    ReLU in code, or concatenates two convolutions of an earlier value's halves (as MixNet
    does; then often a batch norm), to earlier values. It returns the sum of the values no step
    reads (so that a value one step alone reads has one consumer: a chain)."""

    def __init__(self, rng) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.steps = nn.ModuleDict()

        def mode() -> str:
            return rng.choice(["zeros", "reflect", "circular"])

        makers = [
            lambda: nn.Conv2d(4, 4, rng.choice([1, 3]), padding="same"),
            lambda: nn.Conv2d(4, 4, 3, padding=1, groups=rng.choice([1, 2]), padding_mode=mode()),
            lambda: nn.BatchNorm2d(4),
            lambda: rng.choice([nn.ReLU, nn.SiLU, nn.Hardswish, nn.Identity])(),
            lambda: nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
            # (the batch norm folds into the convolution after it unless that one pads with zeros)
            lambda: nn.Sequential(
                nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1, padding_mode=mode()), nn.SiLU()
            ),
        ]
        self.program: list[tuple[str, str, tuple[int, ...]]] = []
        parts: set[str] = set()  # the concatenated convolutions
        for i in range(rng.randint(3, 9)):
            last = len(self.program)  # value 0 is the stem's output
            kind = rng.choice(["module"] * 5 + ["add", "add_", "relu", "cat"])
            if kind == "cat":
                halves = [f"m{i}a", f"m{i}b"]
                earlier = sorted(parts)
                for name in halves:
                    self.steps[name] = nn.Conv2d(2, 2, rng.choice([1, 3]), padding="same")
                    parts.add(name)
                if earlier and rng.random() < 0.2:  # an earlier part called again
                    halves[1] = rng.choice(earlier)
                self.program.append(("cat", ",".join(halves), (rng.randint(0, last),)))
                if rng.random() < 0.7:
                    self.steps[f"m{i}n"] = nn.BatchNorm2d(4)
                    self.program.append(("module", f"m{i}n", (last + 1,)))
                continue
            if kind != "module":
                picked = (rng.randint(0, last), rng.randint(0, last))
                self.program.append((kind, "", picked if kind.startswith("add") else picked[:1]))
                continue
            whole = [n for n in self.steps if n not in parts]  # (the parts read 2 channels)
            if whole and rng.random() < 0.35:  # a module called again
                name = rng.choice(whole)
            else:
                name = f"m{i}"
                self.steps[name] = rng.choice(makers)()
                if rng.random() < 0.1:  # registered twice
                    self.steps[f"alias{i}"] = self.steps[name]
            self.program.append(("module", name, (rng.choice([last, last, rng.randint(0, last)]),)))
        read = {i for _, _, picked in self.program for i in picked}
        self.outputs = [i for i in range(len(self.program) + 1) if i not in read]

    def forward(self, x):
        values = [self.stem(x)]
        for kind, name, picked in self.program:
            args = [values[i] for i in picked]
            if kind == "module":
                values.append(self.steps[name](args[0]))
            elif kind == "cat":
                halves = args[0].split(2, 1)
                convs = [self.steps[part] for part in name.split(",")]
                values.append(torch.cat([conv(halves[k]) for k, conv in enumerate(convs)], 1))
            elif kind == "add":
                values.append(args[0] + args[1])
            elif kind == "add_":  # (on a copy: an earlier value must not change under it)
                values.append(args[0].clone().add_(args[1]))
            else:
                values.append(nn.functional.relu(args[0]))
        return sum(values[i] for i in self.outputs)


@pytest.mark.parametrize("example", [False, True], ids=["traced", "recorded"])
def test_random_graphs_compute_what_they_computed(example):
    import random

    rng = random.Random(0)
    fused_any = folded_before = over_parts = 0
    for _ in range(60):
        model = _Program(rng)
        fused, report = _fuse_and_compare(model, example=example)
        fused_any += bool(_fusions(report))
        kinds = [kind for e in report.fused for _, kind in e.fused]
        folded_before += any(kind.endswith("before it") for kind in kinds)
        over_parts += any("over the concatenation" in kind for kind in kinds)
    # (the graphs fuse, batch norms before convolutions and after concatenations too)
    assert fused_any >= 10 and folded_before >= 10 and over_parts >= 8, (
        fused_any,
        folded_before,
        over_parts,
    )


def test_the_recipes_resnet_fuses_every_block():
    """The recipes' CIFAR ResNet (a ReLU module per use): every batch norm folds and every
    ReLU fuses, but those after a block's sum (the sum, not a convolution, feeds them)."""
    from recipes.resnet import resnet8

    model = resnet8(num_classes=3)
    fused, report = _fuse_and_compare(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert not _refusals(report)
    relus = [name for name, m in fused.named_modules() if type(m) is nn.ReLU]
    assert relus and all(name.endswith("relu2") for name in relus)
