"""Lazy convolution modules (``LazyConv1d`` ... ``LazyConvTranspose3d``): torch's constructors
and behaviour — ``in_channels`` from the first input, the same parameters drawn, the same
results — turning into our layer of their kind on that input; and what converts to them."""

from __future__ import annotations

import copy
import inspect
import io

import pytest
import torch
from torch import nn

import torchconv_ext
from torchconv_ext import nn as tnn

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]

# (lazy class, the layer it becomes, constructor arguments, input shape)
CASES = [
    ("LazyConv1d", "Conv1d", dict(out_channels=4, kernel_size=3, padding=1), (2, 3, 7)),
    ("LazyConv2d", "Conv2d", dict(out_channels=4, kernel_size=3, stride=2, groups=1), (2, 3, 6, 5)),
    ("LazyConv3d", "Conv3d", dict(out_channels=2, kernel_size=2, bias=False), (1, 2, 3, 4, 3)),
    ("LazyConvTranspose1d", "ConvTranspose1d", dict(out_channels=2, kernel_size=3, stride=2),
     (2, 3, 4)),
    ("LazyConvTranspose2d", "ConvTranspose2d",
     dict(out_channels=4, kernel_size=2, stride=2, groups=2, output_padding=1), (1, 4, 3, 3)),
    ("LazyConvTranspose3d", "ConvTranspose3d", dict(out_channels=2, kernel_size=2, padding=1),
     (1, 2, 3, 3, 2)),
]  # fmt: skip
IDS = [case[0] for case in CASES]


def _pair(name: str, kwargs: dict, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """torch's lazy layer and ours, built after the same seed, in float64."""
    torch.manual_seed(seed)
    theirs = getattr(nn, name)(**kwargs, dtype=torch.float64)
    torch.manual_seed(seed)
    ours = getattr(tnn, name)(**kwargs, dtype=torch.float64)
    return theirs, ours


@pytest.mark.parametrize(("name", "becomes", "kwargs", "shape"), CASES, ids=IDS)
def test_the_class_is_torch_s_lazy_class_and_our_layer(name, becomes, kwargs, shape):
    ours = getattr(tnn, name)
    assert issubclass(ours, getattr(nn, name)) and issubclass(ours, getattr(tnn, becomes))
    assert ours.cls_to_become is getattr(tnn, becomes)
    assert ours.replaces is getattr(nn, name)
    assert name in tnn.__all__
    # torch's constructor, then our keyword-only activation arguments.
    theirs_parameters = list(inspect.signature(getattr(nn, name)).parameters)
    assert list(inspect.signature(ours).parameters) == [
        *theirs_parameters,
        "activation",
        "activation_args",
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "becomes", "kwargs", "shape"), CASES, ids=IDS)
def test_the_first_input_sets_the_sizes_and_makes_it_ours(backend, name, becomes, kwargs, shape):
    theirs, ours = _pair(name, kwargs)
    assert ours.has_uninitialized_params()
    assert repr(ours) == repr(theirs)
    x = torch.randn(shape, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        torch.manual_seed(1)  # (the parameters are drawn on the first input)
        expected = theirs(x.clone().requires_grad_())
        torch.manual_seed(1)
        x_ours = x.clone().requires_grad_()
        got = ours(x_ours)
        assert type(ours) is getattr(tnn, becomes) and type(theirs) is getattr(nn, becomes)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        for (key, a), b in zip(theirs.state_dict().items(), ours.state_dict().values()):
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=key)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        # Later calls, gradients included, are our layer's.
        grad = torch.randn_like(got)
        got.backward(grad)
        x_theirs = x.clone().requires_grad_()
        theirs(x_theirs).backward(grad)
        torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-12, atol=1e-12)
        for (key, a), b in zip(theirs.named_parameters(), ours.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-12, atol=1e-12, msg=key)


def test_beyond_torch_the_lazy_layers_take_what_ours_take():
    x = torch.randn(2, 3, 7, 6)
    # TensorFlow's 'same' with a stride, and a fused activation.
    conv = tnn.LazyConv2d(4, 3, stride=2, padding="same", activation="relu")
    y = conv(x)
    assert y.shape == (2, 4, 4, 3) and type(conv) is tnn.Conv2d and conv.fused_activation == "relu"
    expected = nn.functional.conv2d(
        nn.functional.pad(x, (0, 1, 1, 1)), conv.weight, conv.bias, stride=2
    ).relu()
    torch.testing.assert_close(y, expected)
    # A PReLU's weight, per output channel, is known before in_channels is.
    prelu = tnn.LazyConv2d(4, 1, activation="prelu", activation_args={"weight": torch.rand(4)})
    assert prelu(x).shape == (2, 4, 7, 6) and "activation_weight" in dict(prelu.named_parameters())
    # Transposed: 'same' (output = input · stride), and output_size on the first call.
    up = tnn.LazyConvTranspose2d(2, 3, stride=2, padding="same")
    assert up(x).shape == (2, 2, 14, 12)
    sized = tnn.LazyConvTranspose2d(2, 3, stride=2, padding=1)
    assert sized(x, output_size=[14, 12]).shape == (2, 2, 14, 12)


def test_errors_are_torch_s():
    x = torch.randn(1, 3, 5, 5)
    for lazy in (nn.LazyConv2d(4, 3, groups=2), tnn.LazyConv2d(4, 3, groups=2)):
        with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
            lazy(x)
    messages = []
    for cls in (nn.LazyConv2d, tnn.LazyConv2d):
        with pytest.raises(ValueError) as refused:
            cls(4, 3, padding_mode="mirror")
        messages.append(str(refused.value))
    assert messages[0] == messages[1] and "padding_mode" in messages[1]


def test_a_state_dict_materialises_it_as_torch_s_does():
    torch.manual_seed(0)
    source = nn.Conv2d(3, 4, 3, padding=1)
    ours = tnn.LazyConv2d(4, 3, padding=1)
    ours.load_state_dict(source.state_dict())
    assert not ours.has_uninitialized_params()
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(ours(x), source(x))
    assert type(ours) is tnn.Conv2d


def test_an_unmaterialised_lazy_layer_copies_and_pickles():
    torch.manual_seed(0)
    ours = tnn.LazyConvTranspose2d(2, 2, stride=2, activation="silu")
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    copied = copy.deepcopy(ours)
    x = torch.randn(1, 3, 4, 4)
    for module in (loaded, copied):
        assert type(module) is tnn.LazyConvTranspose2d and module.has_uninitialized_params()
        assert module(x).shape == (1, 2, 8, 8)
        assert type(module) is tnn.ConvTranspose2d and module.fused_activation == "silu"


def test_convert_model_makes_torch_s_lazy_layers_ours():
    model = nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU(), nn.LazyConvTranspose2d(2, 2, stride=2))
    converted, report = torchconv_ext.convert_model_with_report(model)
    assert [type(converted[i]) for i in (0, 2)] == [tnn.LazyConv2d, tnn.LazyConvTranspose2d]
    assert "0: torch.nn.LazyConv2d -> torchconv_ext.nn.LazyConv2d" in str(report)
    converted(torch.randn(1, 3, 6, 6))
    assert [type(converted[i]) for i in (0, 2)] == [tnn.Conv2d, tnn.ConvTranspose2d]
    # Ours already: nothing to convert.
    again = torchconv_ext.convert_model_with_report(nn.Sequential(tnn.LazyConv1d(2, 1)))[1]
    assert not again.converted and len(again.already) == 1
