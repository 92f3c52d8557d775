"""convert_model on other libraries' layers known to compute what ours compute with other
attribute values or a computed weight: timm's TensorFlow "SAME" layers, and timm's and
Transformers' weight-standardised convolutions.

timm and Transformers are not test dependencies: the classes below are theirs (timm's
``layers/conv2d_same.py``, ``pool2d_same.py``, ``std_conv.py``, ``padding.py``; Transformers'
``models/bit/modeling_bit.py``; Apache-2.0, shortened), named as they name them, which is all
``convert_model`` reads. ``benchmarks/real_models.py`` runs their own models.
"""

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchconv_ext
from tests.test_convert import CausalConv3d, OpNamespaces
from torchconv_ext import nn as tnn


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def _pad_same(x, kernel_size, stride, dilation=(1, 1), value=0.0):
    ih, iw = x.size()[-2:]
    pad_h = _same_padding(ih, kernel_size[0], stride[0], dilation[0])
    pad_w = _same_padding(iw, kernel_size[1], stride[1], dilation[1])
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=value)


class Conv2dSame(nn.Conv2d):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True):  # fmt: skip
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)

    def forward(self, x):
        x = _pad_same(x, self.weight.shape[-2:], self.stride, self.dilation)
        return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)


class MaxPool2dSame(nn.MaxPool2d):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        pair = nn.modules.utils._pair
        super().__init__(pair(kernel_size), pair(stride), (0, 0), pair(dilation), ceil_mode)

    def forward(self, x):
        x = _pad_same(x, self.kernel_size, self.stride, self.dilation, value=-float("inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride, (0, 0), self.dilation, self.ceil_mode)


class AvgPool2dSame(nn.AvgPool2d):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):  # fmt: skip
        pair = nn.modules.utils._pair
        super().__init__(pair(kernel_size), pair(stride), (0, 0), ceil_mode, count_include_pad)

    def forward(self, x):
        x = _pad_same(x, self.kernel_size, self.stride)
        return F.avg_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad
        )


def _standardized(conv: nn.Conv2d, gain: torch.Tensor | None = None) -> torch.Tensor:
    return F.batch_norm(
        conv.weight.reshape(1, conv.out_channels, -1), None, None,
        weight=gain, training=True, momentum=0.0, eps=conv.eps,
    ).reshape_as(conv.weight)  # fmt: skip


class StdConv2d(nn.Conv2d):
    def __init__(self, in_channel, out_channels, kernel_size, stride=1, padding=None, dilation=1,
                 groups=1, bias=False, eps=1e-6):  # fmt: skip
        if padding is None:
            padding = ((stride - 1) + dilation * (kernel_size - 1)) // 2
        super().__init__(in_channel, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias)  # fmt: skip
        self.eps = eps

    def forward(self, x):
        weight = _standardized(self)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ScaledStdConv2d(nn.Conv2d):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, dilation=1,
                 groups=1, bias=True, gamma=1.0, eps=1e-6, gain_init=1.0):  # fmt: skip
        if padding is None:
            padding = ((stride - 1) + dilation * (kernel_size - 1)) // 2
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias)  # fmt: skip
        self.scale = gamma * self.weight[0].numel() ** -0.5
        self.eps = eps
        self.gain = nn.Parameter(torch.full((self.out_channels, 1, 1, 1), gain_init))

    def forward(self, x):
        weight = _standardized(self, (self.gain * self.scale).view(-1))
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _is_static_pad(kernel_size, stride, dilation):
    return stride == 1 and (dilation * (kernel_size - 1)) % 2 == 0


class StdConv2dSame(StdConv2d):
    """timm's derives from nn.Conv2d itself; what it computes is this."""

    def __init__(self, in_channel, out_channels, kernel_size, stride=1, padding="SAME",
                 dilation=1, groups=1, bias=False, eps=1e-6):  # fmt: skip
        self.same_pad = not _is_static_pad(kernel_size, stride, dilation)
        padding = 0 if self.same_pad else ((stride - 1) + dilation * (kernel_size - 1)) // 2
        super().__init__(in_channel, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, eps)  # fmt: skip

    def forward(self, x):
        if self.same_pad:
            x = _pad_same(x, self.kernel_size, self.stride, self.dilation)
        return super().forward(x)


class ScaledStdConv2dSame(ScaledStdConv2d):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="SAME",
                 dilation=1, groups=1, bias=True, gamma=1.0, eps=1e-6, gain_init=1.0):  # fmt: skip
        self.same_pad = not _is_static_pad(kernel_size, stride, dilation)
        padding = 0 if self.same_pad else ((stride - 1) + dilation * (kernel_size - 1)) // 2
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, gamma, eps, gain_init)  # fmt: skip

    def forward(self, x):
        if self.same_pad:
            x = _pad_same(x, self.kernel_size, self.stride, self.dilation)
        return super().forward(x)


class DynamicPad2d(nn.Module):
    def __init__(self, kernel_size, stride, dilation):
        super().__init__()
        pair = nn.modules.utils._pair
        self.kernel_size, self.stride, self.dilation = (
            pair(kernel_size),
            pair(stride),
            pair(dilation),
        )

    def forward(self, x):
        return _pad_same(x, self.kernel_size, self.stride, self.dilation)


class WeightStandardizedConv2d(nn.Conv2d):
    """Transformers' (``models/bit/modeling_bit.py``)."""

    def __init__(self, in_channel, out_channels, kernel_size, stride=1, padding="SAME",
                 dilation=1, groups=1, bias=False, eps=1e-6):  # fmt: skip
        dynamic = not _is_static_pad(kernel_size, stride, dilation)
        padding = 0 if dynamic else ((stride - 1) + dilation * (kernel_size - 1)) // 2
        super().__init__(in_channel, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias)  # fmt: skip
        self.pad = DynamicPad2d(kernel_size, stride, dilation) if dynamic else None
        self.eps = eps

    def forward(self, x):
        if self.pad is not None:
            x = self.pad(x)
        weight = _standardized(self)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


for _cls, _module in [
    (Conv2dSame, "timm.layers.conv2d_same"),
    (MaxPool2dSame, "timm.layers.pool2d_same"),
    (AvgPool2dSame, "timm.layers.pool2d_same"),
    (StdConv2d, "timm.layers.std_conv"),
    (ScaledStdConv2d, "timm.layers.std_conv"),
    (StdConv2dSame, "timm.layers.std_conv"),
    (ScaledStdConv2dSame, "timm.layers.std_conv"),
    (WeightStandardizedConv2d, "transformers.models.bit.modeling_bit"),
]:
    _cls.__module__ = _module


class OldTimmConv2dSame(Conv2dSame):
    """timm before 0.9 kept its layers in ``timm.models.layers``."""


OldTimmConv2dSame.__module__ = "timm.models.layers.conv2d_same"
OldTimmConv2dSame.__qualname__ = "Conv2dSame"


class InitOnly(Conv2dSame):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tag = "kept"


class OwnForward(Conv2dSame):
    def forward(self, x):
        return super().forward(x) * 2


def _grads(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().requires_grad_()
    out = module(x)
    out.backward(
        torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(0))
    )
    return [out, x.grad, *(p.grad for p in module.parameters())]


def _check_same_as_theirs(theirs: nn.Module, x: torch.Tensor) -> nn.Module:
    theirs = theirs.double()
    ours, report = torchconv_ext.convert_model_with_report(theirs)
    assert len(report.converted) == 1 and not report.left, str(report)
    our_class = next(c for c in (tnn.Conv2d, tnn.MaxPool2d, tnn.AvgPool2d) if c.replaces in
                     type(theirs).__mro__)  # fmt: skip
    assert isinstance(ours, our_class) and isinstance(ours, type(theirs))
    assert type(ours).forward is not type(theirs).forward  # our computation
    for a, b in zip(_grads(ours, x), _grads(theirs, x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    return ours


@pytest.mark.parametrize(
    "kernel, stride, dilation, groups",
    [(1, 2, 1, 1), (2, 1, 1, 1), (3, 2, 1, 2), (4, 3, 1, 1), (3, 2, 2, 1), (5, 1, 2, 4)],
)
def test_timm_conv2d_same_converts_to_ours_with_padding_same(kernel, stride, dilation, groups):
    for height, width in [(7, 8), (9, 5)]:
        x = torch.randn(2, 4, height, width, dtype=torch.float64)
        _check_same_as_theirs(Conv2dSame(4, 8, kernel, stride, 0, dilation, groups), x)


@pytest.mark.parametrize("kernel, stride, dilation", [(3, 2, 1), (2, 2, 1), (3, 1, 2), (4, 3, 1)])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_timm_max_pool2d_same_converts_to_ours_with_padding_same(
    kernel, stride, dilation, ceil_mode
):
    for height, width in [(7, 8), (9, 5)]:
        x = torch.randn(2, 3, height, width, dtype=torch.float64)
        _check_same_as_theirs(MaxPool2dSame(kernel, stride, 0, dilation, ceil_mode), x)


@pytest.mark.parametrize(
    "cls",
    [StdConv2d, ScaledStdConv2d, StdConv2dSame, ScaledStdConv2dSame, WeightStandardizedConv2d],
)
@pytest.mark.parametrize("kernel, stride, groups", [(3, 1, 1), (3, 2, 2), (1, 1, 1), (4, 2, 1)])
def test_timm_weight_standardised_convolutions_convert_computing_their_weight(
    cls, kernel, stride, groups
):
    """BiT's StdConv2d and the NFNets' ScaledStdConv2d (timm's), and Transformers' BiT's
    WeightStandardizedConv2d, standardise their weight on every call: ours computes it as they
    do and convolves with it; gradients reach the weight and gain."""
    for height, width in [(7, 8), (9, 5)]:
        x = torch.randn(2, 4, height, width, dtype=torch.float64)
        theirs = cls(4, 6, kernel, stride, groups=groups)
        if hasattr(theirs, "gain"):
            with torch.no_grad():
                theirs.gain.uniform_(0.5, 2)
        ours = _check_same_as_theirs(theirs, x)
        same = getattr(theirs, "same_pad", False) or getattr(theirs, "pad", None) is not None
        assert ours.padding == ("same" if same else theirs.padding)
        torch.testing.assert_close(copy.deepcopy(ours)(x), theirs(x), rtol=1e-12, atol=1e-12)


def test_a_batch_norm_is_not_folded_into_a_computed_weight():
    model = nn.Sequential(StdConv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    fused, report = torchconv_ext.convert_model_with_report(model, fuse=True)
    assert type(fused[1]) is nn.BatchNorm2d
    (entry,) = report.fused
    assert entry.reason == "the convolution 0 uses a weight it computes on every call"
    torch.testing.assert_close(fused(x), model(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_an_activation_fuses_into_a_computed_weight(backend):
    """The NFNets' convolutions feed activations: those fuse into the epilogue of the
    convolution of the computed weight."""
    torch.manual_seed(0)
    model = nn.Sequential(StdConv2d(3, 4, 3), nn.SiLU()).double().eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    fused, report = torchconv_ext.convert_model_with_report(model, fuse=True)
    assert [(e.name, e.fused, e.reason) for e in report.fused] == [("0", (("1", "SiLU"),), "")]
    assert fused[0].fused_activation == "silu" and type(fused[1]) is nn.Identity
    with torchconv_ext.use_backend(backend):
        got = fused(x)
    torch.testing.assert_close(got, model(x), rtol=1e-12, atol=1e-12)


def test_a_known_class_computing_otherwise_is_left():
    """Each known class is checked once, on a small instance, against its own forward: another
    version of the library computing otherwise is left (here: torch's symmetric padding)."""

    class Conv2dSame(nn.Conv2d):
        def forward(self, x):
            k = self.kernel_size[0]
            return F.conv2d(x, self.weight, self.bias, self.stride, k // 2, self.dilation)

    Conv2dSame.__module__, Conv2dSame.__qualname__ = "timm.layers.conv2d_same", "Conv2dSame"
    _, report = torchconv_ext.convert_model_with_report(Conv2dSame(4, 6, 3, stride=2))
    (entry,) = report.left
    assert entry.reason == (
        "torchconv_ext knows timm.layers.conv2d_same.Conv2dSame as computing otherwise "
        "(another version of its library?)"
    )

    class StdConv2d(nn.Conv2d):  # a constructor the check cannot call
        def __init__(self, in_channels, out_channels, kernel_size, *, eps):
            super().__init__(in_channels, out_channels, kernel_size)
            self.eps = eps

        def forward(self, x):
            return super().forward(x)

    StdConv2d.__module__, StdConv2d.__qualname__ = "timm.layers.std_conv", "StdConv2d"
    _, report = torchconv_ext.convert_model_with_report(StdConv2d(4, 6, 3, eps=1e-5))
    (entry,) = report.left
    assert entry.reason.startswith(
        "torchconv_ext knows timm.layers.std_conv.StdConv2d as computing otherwise (another "
        "version of its library?): TypeError: "
    )


def test_what_the_known_layers_ignore_is_set_to_what_they_compute():
    """timm's layers pad with zeros (-inf) whatever padding_mode says and return no indices
    whatever return_indices says: the converted modules take those values."""
    conv = Conv2dSame(2, 3, 3, 2)
    conv.padding_mode = "reflect"
    pool = MaxPool2dSame(3, 2)
    pool.return_indices = True
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64)
    for theirs in (conv, pool):
        ours = _check_same_as_theirs(theirs, x)
        assert ours.padding == "same"
    assert conv.padding_mode == "reflect" and ours.return_indices is False


def test_the_report_names_the_values_taken():
    _, report = torchconv_ext.convert_model_with_report(Conv2dSame(2, 3, 3, 2))
    (entry,) = report.converted
    assert entry.before == "timm.layers.conv2d_same.Conv2dSame"
    assert entry.after == (
        "torchconv_ext.nn.Conv2d as timm.layers.conv2d_same.Conv2dSame, padding='same'"
    )


def test_older_timm_module_path_and_init_only_subclasses_convert():
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    _check_same_as_theirs(OldTimmConv2dSame(2, 3, 3, 2), x)
    ours = _check_same_as_theirs(InitOnly(2, 3, 3, 2), x)
    assert ours.tag == "kept"


def test_a_subclass_overriding_forward_again_is_left():
    _, report = torchconv_ext.convert_model_with_report(OwnForward(2, 3, 3, 2))
    (entry,) = report.left
    assert entry.reason == "its class overrides forward"


@pytest.mark.parametrize("kernel, stride", [(3, 2), (2, 2), (3, 1), (4, 3)])
@pytest.mark.parametrize("ceil_mode, count_include_pad", [(False, True), (True, False)])
def test_timm_avg_pool2d_same_converts_to_ours_dividing_by_the_kernel_size(
    kernel, stride, ceil_mode, count_include_pad
):
    """timm's AvgPool2dSame pads with zeros first, so the padding counts in every divisor,
    whatever count_include_pad says; ours with 'same' never counts padding (TensorFlow's rule)
    unless divisor_override says what to divide by."""
    for height, width in [(7, 8), (9, 5)]:
        x = torch.randn(2, 3, height, width, dtype=torch.float64)
        theirs = AvgPool2dSame(kernel, stride, 0, ceil_mode, count_include_pad)
        ours = _check_same_as_theirs(theirs, x)
        assert ours.padding == "same" and ours.divisor_override == kernel * kernel


def test_converted_known_layers_copy_and_fuse():
    model = nn.Sequential(
        Conv2dSame(3, 4, 3, 2),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        MaxPool2dSame(3, 2),
        AvgPool2dSame(2, 2),
    )
    model = model.double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(2, 3, 11, 10, dtype=torch.float64)
    expected = model(x)
    fused, report = torchconv_ext.convert_model_with_report(model, fuse=True)
    assert [e.name for e in report.fused] == ["0"], str(report)
    assert isinstance(fused[1], nn.Identity) and isinstance(fused[2], nn.Identity)
    for converted in (fused, copy.deepcopy(fused)):
        assert converted[0].padding == "same"
        torch.testing.assert_close(converted(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.interpret
def test_known_layers_on_the_triton_kernels():
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    with torchconv_ext.use_backend("triton"):
        for theirs in itertools.chain(
            [Conv2dSame(2, 3, 3, 2), Conv2dSame(2, 2, 2, 1, groups=2)],
            [MaxPool2dSame(3, 2), MaxPool2dSame(2, 2, ceil_mode=True), AvgPool2dSame(3, 2)],
            [ScaledStdConv2d(2, 3, 3, 2), StdConv2dSame(2, 3, 3, 2)],
        ):
            ours = _check_same_as_theirs(theirs, x)
            with OpNamespaces() as ops:
                ours(x)
            assert "torchconv_ext" in ops.seen


@pytest.mark.parametrize("case", range(3))
def test_converted_layers_compile_whole(case):
    """torch.compile(fullgraph=True) reads a converted known layer's forward (a computed
    weight too) and a forward kept around ours, forward and backward."""
    theirs, x = [
        (Conv2dSame(2, 3, 3, 2), torch.randn(1, 2, 7, 6)),
        (ScaledStdConv2d(2, 3, 3, 2), torch.randn(1, 2, 7, 6)),
        (CausalConv3d(2, 3), torch.randn(1, 2, 4, 5, 5)),
    ][case]
    compiled = torch.compile(
        torchconv_ext.convert_model(theirs), backend="aot_eager", fullgraph=True
    )
    results = []
    for module in (compiled, theirs):
        x.grad = None
        out = module(x.requires_grad_())
        out.sum().backward()
        results.append((out.detach(), x.grad))
    torch.testing.assert_close(*results)


@pytest.mark.parametrize("cls", [Conv2dSame, StdConv2d, WeightStandardizedConv2d])
def test_the_known_layer_check_leaves_the_global_generator_as_it_was(cls):
    """The first conversion of a known class checks it on a small instance of its own, whose
    initialisation draws random numbers: not from the user's generator, so a converted model
    draws the numbers (dropout masks, shuffles) the unconverted one would."""
    from torchconv_ext import convert

    convert._known_layer_check.cache_clear()  # (checked afresh, as in a new process)
    model = nn.Sequential(cls(4, 6, 3))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    converted = torchconv_ext.convert_model(model)
    assert type(converted[0]) is not cls  # (converted: the check ran and passed)
    assert torch.equal(torch.get_rng_state(), state)
