"""``convert_model`` on the layers users have: parametrized layers, subclasses (also those whose
own forward hands its input on to torch's), old-style weight norm, and the report of what was
converted and what was left."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize, prune
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

import torchconv_ext
from torchconv_ext import nn as tnn
from torchconv_ext.nn._base import DropIn


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


class OwnConv2d(nn.Conv2d):
    """Like Diffusers' LoRACompatibleConv: calls F.conv2d itself."""

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding) + 1


class CausalConv3d(nn.Conv3d):
    """Like the causal convolutions of Diffusers' video autoencoders (Wan's): pads time on one
    side (after the frames cached from the previous chunk), then torch's forward."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self._padding = (self.padding[2], self.padding[2], self.padding[1], self.padding[1],
                         2 * self.padding[0], 0)  # fmt: skip
        self.padding = (0, 0, 0)

    def forward(self, x, cache_x=None):
        padding = list(self._padding)
        if cache_x is not None:
            x = torch.cat([cache_x, x], dim=2)
            padding[4] -= cache_x.shape[2]
        return super().forward(F.pad(x, padding))


class CroppedConv1d(nn.Conv1d):
    """Calls torch's forward by its class's name."""

    def forward(self, x):
        return nn.Conv1d.forward(self, x[..., 1:])


class FloatUpsample(nn.Upsample):
    """Like Diffusers' WanUpsample: upsamples in float32."""

    def forward(self, x):
        return super().forward(x.float()).type_as(x)


class ChunkedMaxPool2d(nn.MaxPool2d):
    def forward(self, x):
        return torch.cat([super(ChunkedMaxPool2d, self).forward(c) for c in x.chunk(2)])


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


@pytest.mark.parametrize("cls", [OwnConv2d, StandardizedConv2d])
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


def test_pruned_layers_convert_without_inplace():
    """A pruned layer's weight is computed by its hook (not a graph leaf, which
    ``copy.deepcopy`` refuses): converted, its copy still prunes (mask × ``weight_orig``)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ConvTranspose2d(3, 2, 2, stride=2))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    prune.random_unstructured(model[1], "bias", amount=0.5)
    prune.l1_unstructured(model[1], "weight", amount=0.25)
    converted = torchconv_ext.convert_model(model)
    assert [type(m) for m in converted] == [tnn.Conv2d, tnn.ConvTranspose2d]
    x = torch.randn(1, 2, 6, 6)
    torch.testing.assert_close(converted(x), model(x))
    with torch.no_grad():
        converted[0].weight_orig.fill_(1.0)  # pruned entries stay zero
    converted(x)  # (the hook recomputes the weight)
    torch.testing.assert_close(converted[0].weight, model[0].weight_mask)
    prune.l1_unstructured(model[0], "weight", amount=0.5)  # twice: a PruningContainer
    torch.testing.assert_close(torchconv_ext.convert_model(model)(x), model(x))


def test_verbose_prints_what_was_converted_and_left(capsys):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), OwnConv2d(4, 4, 1), nn.MaxPool2d(2), nn.ReLU())
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


class OpNamespaces(torch.utils._python_dispatch.TorchDispatchMode):
    """The namespaces of the ops a computation calls (ours: ``torchconv_ext``)."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(func.namespace)
        return func(*args, **(kwargs or {}))


def _hands_on_cases():
    return [
        (ScaledConv2d(2, 3, 3), torch.randn(2, 2, 5, 6)),
        (CausalConv3d(2, 3), torch.randn(1, 2, 4, 5, 5)),
        (FloatUpsample(scale_factor=2), torch.randn(1, 2, 3, 3, dtype=torch.float64)),
        (ChunkedMaxPool2d(2), torch.randn(4, 2, 5, 5)),
        (CroppedConv1d(2, 3, 2), torch.randn(2, 2, 6)),
    ]


@pytest.mark.parametrize("case", range(5))
def test_a_subclass_handing_its_input_on_keeps_its_forward_around_ours(case):
    """A forward that hands its input on to torch's (``super().forward``) runs as it is, and the
    computation it reaches is ours; its class stays first in line."""
    theirs, x = _hands_on_cases()[case]
    theirs = theirs.double() if x.dtype == torch.float64 else theirs
    ours, report = torchconv_ext.convert_model_with_report(theirs)
    (entry,) = report.converted
    assert entry.after.startswith("torchconv_ext.nn.") and " under the forward of " in entry.after
    assert type(ours).__bases__[0] is type(theirs) and isinstance(ours, DropIn)
    assert type(ours).forward is type(theirs).forward
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(copy.deepcopy(ours)(x), theirs(x), rtol=1e-6, atol=1e-6)


@pytest.mark.interpret
@pytest.mark.parametrize("case", range(5))
def test_a_subclass_handing_its_input_on_runs_our_kernels(case):
    theirs, x = _hands_on_cases()[case]
    ours = torchconv_ext.convert_model(theirs)
    with torchconv_ext.use_backend("triton"), OpNamespaces() as ops:
        got = ours(x)
    assert "torchconv_ext" in ops.seen
    torch.testing.assert_close(got, theirs(x), rtol=1e-5, atol=1e-5)


def test_a_causal_convolution_keeps_its_cache_argument_and_gradients():
    torch.manual_seed(0)
    theirs = CausalConv3d(2, 3).double()
    ours = torchconv_ext.convert_model(theirs)
    x = torch.randn(1, 2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    cache = torch.randn(1, 2, 2, 4, 4, dtype=torch.float64)
    grads = []
    for module in (ours, theirs):
        out = module(x, cache_x=cache)
        grads.append([out, *torch.autograd.grad(out.sum(), [x, *module.parameters()])])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_nothing_is_fused_into_a_convolution_under_another_forward():
    """Its output is not the convolution's (ScaledConv2d doubles it): a batch norm after it is
    not folded."""
    model = nn.Sequential(ScaledConv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).double().eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
    fused, report = torchconv_ext.convert_model_with_report(model, fuse=True)
    assert type(fused[1]) is nn.BatchNorm2d
    (entry,) = report.fused
    assert (entry.name, entry.reason) == (
        "1",
        "the convolution 0 runs under the forward of ScaledConv2d",
    )
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "convert", [torchconv_ext.convert_model, torchconv_ext.convert_model_with_report]
)
def test_anything_but_a_module_is_refused_by_name(convert):
    with pytest.raises(
        TypeError, match=r"^convert_model: model must be a torch.nn.Module, got dict$"
    ):
        convert({"conv": nn.Conv2d(1, 1, 1)})
