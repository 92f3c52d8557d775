"""``convert_model`` on the layers users have: parametrized layers, subclasses, old-style weight
norm, and the report of what was converted and what was left."""

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

import torchconv_ext
from torchconv_ext import nn as tnn


class DepthwiseConv2d(nn.Conv2d):
    """Like Transformers' EfficientNetDepthwiseConv2d: only the constructor changes."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__(channels, channels, kernel_size, padding=1, groups=channels, bias=False)


class ScaledConv2d(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


class StandardizedConv2d(nn.Conv2d):
    def _conv_forward(self, x, weight, bias):
        return super()._conv_forward(x, weight - weight.mean(), bias)


def _outputs_match(model, converted, x):
    model.eval()
    converted.eval()
    torch.testing.assert_close(converted(x), model(x), atol=0, rtol=0)


def test_parametrized_layers_keep_parametrizations_state_and_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(
        weight_norm(nn.Conv1d(2, 4, 3, padding=1)),  # as in Encodec's encoder
        spectral_norm(nn.Conv1d(4, 4, 1)),
        weight_norm(nn.ConvTranspose1d(4, 2, 4, stride=2, padding=1)),
    )
    converted = torchconv_ext.convert_model(model)
    for ours, theirs in zip(converted, model):
        assert isinstance(ours, tnn.Conv1d | tnn.ConvTranspose1d)
        assert isinstance(ours, type(theirs).__bases__[0])
        assert parametrize.is_parametrized(ours, "weight")
    assert list(converted.state_dict()) == list(model.state_dict())
    _outputs_match(model, converted, torch.randn(2, 2, 8))
    # The parametrization still drives the weight: changing g changes the output.
    x = torch.randn(1, 2, 8)
    before = converted[0](x)
    with torch.no_grad():
        converted[0].parametrizations.weight.original0.mul_(2)
    bias = converted[0].bias.view(1, -1, 1)
    torch.testing.assert_close(converted[0](x), 2 * (before - bias) + bias)


def test_subclass_that_only_changes_init_is_converted_and_keeps_its_class():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), DepthwiseConv2d(4))
    converted = torchconv_ext.convert_model(model)
    layer = converted[1]
    assert isinstance(layer, DepthwiseConv2d) and isinstance(layer, tnn.Conv2d)
    assert type(layer).__name__ == "DepthwiseConv2d"
    _outputs_match(model, converted, torch.randn(2, 3, 6, 6))
    # A fresh instance of the converted class takes the subclass's own constructor arguments.
    assert type(layer)(6).groups == 6
    assert isinstance(copy.deepcopy(layer), DepthwiseConv2d)


@pytest.mark.parametrize("cls", [ScaledConv2d, StandardizedConv2d])
def test_subclass_that_changes_the_computation_is_left_and_reported(cls):
    model = nn.Sequential(cls(3, 4, 3))
    converted, report = torchconv_ext.convert_model_with_report(model)
    assert type(converted[0]) is cls
    assert report.converted == []
    [entry] = report.left
    assert entry.name == "0" and "overrides" in entry.reason


def test_old_style_weight_norm_converts_without_inplace():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = nn.Sequential(nn.utils.weight_norm(nn.Conv1d(2, 3, 3)))
    converted = torchconv_ext.convert_model(model)
    assert type(converted[0]) is tnn.Conv1d and type(model[0]) is nn.Conv1d
    x = torch.randn(1, 2, 6)
    torch.testing.assert_close(converted(x), model(x))
    # Still weight-normalised: the hook recomputes the weight from g and v.
    with torch.no_grad():
        converted[0].weight_g.mul_(3)
    torch.testing.assert_close(converted(x), 3 * model(x) - 2 * model[0].bias.view(1, -1, 1))


def test_verbose_prints_what_was_converted_and_left(capsys):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), ScaledConv2d(4, 4, 1), nn.MaxPool2d(2), nn.ReLU())
    torchconv_ext.convert_model(model, verbose=True)
    printed = capsys.readouterr().out
    assert "converted 2 layer(s), left 1" in printed
    assert "0: torch.nn.Conv2d -> torchconv_ext.nn.Conv2d" in printed
    assert "left 1:" in printed and "overrides forward" in printed
    assert "ReLU" not in printed


def test_lazy_layers_become_ours_once_their_first_input_sets_their_sizes():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.LazyConv1d(4, 3), nn.Unflatten(1, (1, 4)), nn.LazyConv2d(3, 2, padding=1),
        nn.LazyConvTranspose2d(2, 2, stride=2), nn.Unflatten(1, (1, 2)), nn.LazyConv3d(2, 1),
    )  # fmt: skip
    converted = torchconv_ext.convert_model(model)
    assert isinstance(converted[2], nn.LazyConv2d) and isinstance(converted[2], tnn.Conv2d)
    x = torch.randn(2, 3, 6)
    y = converted(x)
    assert [type(converted[i]) for i in (0, 2, 3, 5)] == [
        tnn.Conv1d,
        tnn.Conv2d,
        tnn.ConvTranspose2d,
        tnn.Conv3d,
    ]
    # Torch's layers with the weights the lazy ones drew compute the same.
    reference = nn.Sequential(
        nn.Conv1d(3, 4, 3), nn.Unflatten(1, (1, 4)), nn.Conv2d(1, 3, 2, padding=1),
        nn.ConvTranspose2d(3, 2, 2, stride=2), nn.Unflatten(1, (1, 2)), nn.Conv3d(1, 2, 1),
    )  # fmt: skip
    reference.load_state_dict(converted.state_dict())
    torch.testing.assert_close(y, reference(x), rtol=0, atol=0)


def test_a_lazy_subclass_becomes_a_subclass_of_ours():
    class LazyDepthwise(nn.LazyConv2d):
        cls_to_become = DepthwiseConv2d

        def __init__(self) -> None:
            super().__init__(4, 3, padding=1, bias=False)

    converted = torchconv_ext.convert_model(LazyDepthwise())
    converted(torch.randn(1, 4, 5, 5))
    assert isinstance(converted, DepthwiseConv2d) and isinstance(converted, tnn.Conv2d)


def test_a_converted_model_pickles_whole():
    """``torch.save(model)`` pickles classes by name: those conversion builds over a user's
    subclass (or a lazy layer) are rebuilt on loading."""
    import io

    torch.manual_seed(0)
    model = nn.Sequential(DepthwiseConv2d(3), nn.LazyConv2d(2, 1), nn.MaxPool2d(2))
    converted = torchconv_ext.convert_model(model)
    buffer = io.BytesIO()
    torch.save(converted, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert isinstance(loaded[0], DepthwiseConv2d) and isinstance(loaded[0], tnn.Conv2d)
    assert isinstance(loaded[1], nn.LazyConv2d) and isinstance(loaded[1], tnn.Conv2d)
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(loaded[0](x), converted[0](x), rtol=0, atol=0)
    loaded(x)
    assert type(loaded[1]) is tnn.Conv2d
    assert type(copy.deepcopy(converted[0])) is type(converted[0])
