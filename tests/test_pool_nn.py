"""Pooling modules: ``convert_model`` swaps each torch pooling layer, modules in a model,
TensorFlow-style padding, and our own modules (pyramid, global)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchconv_ext
from tests.references.pool import special_batch
from torchconv_ext import functional as TF
from torchconv_ext import nn as TN

TORCH_MODULES = [
    (nn.MaxPool1d(3, 2, 1), 1),
    (nn.MaxPool2d(3, 2, 1, ceil_mode=True), 2),
    (nn.MaxPool2d(2, return_indices=True), 2),
    (nn.MaxPool3d(2, dilation=(1, 2, 1)), 3),
    (nn.AvgPool1d(3, 2, 1, count_include_pad=False), 1),
    (nn.AvgPool2d(3, 2, 1, ceil_mode=True), 2),
    (nn.AvgPool2d(2, divisor_override=3), 2),
    (nn.AvgPool3d(2, ceil_mode=True), 3),
    (nn.AdaptiveAvgPool1d(3), 1),
    (nn.AdaptiveAvgPool2d((2, None)), 2),
    (nn.AdaptiveAvgPool3d(2), 3),
    (nn.AdaptiveMaxPool1d(3, return_indices=True), 1),
    (nn.AdaptiveMaxPool2d(4), 2),
    (nn.AdaptiveMaxPool3d((1, 2, 3)), 3),
]


@pytest.mark.parametrize("i", range(len(TORCH_MODULES)))
def test_convert_model_swaps_each_pooling_layer(i):
    module, nd = TORCH_MODULES[i]
    ours = torchconv_ext.convert_model(module)
    assert (
        type(ours).__name__ == type(module).__name__ and type(ours).__module__ == TN.pool.__name__
    )
    assert isinstance(ours, type(module)) and type(ours).replaces is type(module)
    assert repr(ours) == repr(module) and ours.state_dict().keys() == module.state_dict().keys()
    x = special_batch(nd)
    got, want = ours(x), module(x)
    for g, w in zip(
        got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)
    ):
        torch.testing.assert_close(g, w, equal_nan=True)


def test_modules_constructed_directly_and_in_a_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        nn.AvgPool2d(2, ceil_mode=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    converted = torchconv_ext.convert_model(model)
    assert [type(m).__module__ for m in converted[2:5]] == [TN.pool.__name__] * 3
    assert type(model[2]) is nn.MaxPool2d  # the original is left alone
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(converted(x), model(x))
    # TensorFlow-style padding through the modules
    assert TN.MaxPool2d(3, 2, padding="same")(x).shape == (2, 3, 5, 5)
    assert TN.AvgPool1d(4, 3, padding="same")(x[:, :, 0]).shape == (2, 3, 3)
    assert TN.AvgPool3d(2, padding="valid")(x[None]).shape == (1, 2, 1, 4, 4)


def test_new_modules():
    x = special_batch(2)
    spp = TN.SpatialPyramidPool((1, 2, 4), mode="avg")
    assert "levels=(1, 2, 4), mode='avg'" in repr(spp)
    assert spp.output_features(3) == 3 * 21 == spp(x).shape[1]
    torch.testing.assert_close(spp(x), TF.spatial_pyramid_pool(x, (1, 2, 4), "avg"), equal_nan=True)
    torch.testing.assert_close(TN.GlobalAvgPool()(x), x.mean((2, 3)), equal_nan=True)
    torch.testing.assert_close(
        TN.GlobalMaxPool()(x), F.adaptive_max_pool2d(x, 1).flatten(1), equal_nan=True
    )
    assert list(spp.parameters()) == [] and spp.state_dict() == {}


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_padding_pairs_pad_each_side(backend, ceil_mode):
    """``padding=((top, bottom), (left, right))``: max pooling of an input padded with -inf by
    those amounts, average pooling counting them (``count_include_pad``) or not; values and
    gradients in float64, indices into the unpadded input."""
    torch.manual_seed(0)
    pairs, pads = ((0, 1), (1, 0)), (1, 0, 0, 1)  # (F.pad's order: last dim first)
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    flat = torch.arange(56.0, dtype=torch.float64).view(1, 1, 7, 8)
    # window sizes: the input's elements in each, or also the padding's (clipped by ceil_mode)
    ones, whole = F.pad(torch.ones_like(x[:1, :1]), pads), torch.ones(1, 1, 8, 9).double()
    counted = lambda t: F.avg_pool2d(t, 3, 2, ceil_mode=ceil_mode, divisor_override=1)
    maxed = lambda t, value: F.max_pool2d(
        F.pad(t, pads, value=value), 3, 2, ceil_mode=ceil_mode, return_indices=True
    )
    summed = lambda t: F.avg_pool2d(F.pad(t, pads), 3, 2, ceil_mode=ceil_mode, divisor_override=1)
    cases = [
        (TN.MaxPool2d(3, 2, pairs, ceil_mode=ceil_mode), lambda t: maxed(t, -math.inf)[0]),
        (TN.AvgPool2d(3, 2, pairs, ceil_mode=ceil_mode), lambda t: summed(t) / counted(whole)),
        (
            TN.AvgPool2d(3, 2, pairs, ceil_mode=ceil_mode, count_include_pad=False),
            lambda t: summed(t) / counted(ones),
        ),
    ]
    for layer, reference in cases:
        with torchconv_ext.use_backend(backend):
            out, grad = _grad(layer, x)
        expected, expected_grad = _grad(reference, x)
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(grad, expected_grad)
    with torchconv_ext.use_backend(backend):
        _, indices = TF.max_pool2d(flat, 3, 2, pairs, ceil_mode=ceil_mode, return_indices=True)
    torch.testing.assert_close(indices, maxed(flat, -math.inf)[0].long())  # (x's own indices)


def _grad(call, x):
    x = x.clone().requires_grad_()
    out = call(x)
    (grad,) = torch.autograd.grad(
        out, x, torch.randn_like(out, generator=torch.Generator().manual_seed(1))
    )
    return out, grad


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_padding_pairs_gradcheck_and_gradgradcheck(backend):
    x = torch.randn(1, 1, 4, 3, dtype=torch.float64, requires_grad=True)
    calls = [
        lambda x: TF.max_pool2d(x, 3, 2, ((0, 1), (1, 0)), ceil_mode=True),
        lambda x: TF.avg_pool2d(x, 2, 1, ((0, 1), 1), ceil_mode=True, count_include_pad=False),
    ]
    with torchconv_ext.use_backend(backend):
        for call in calls:
            assert torch.autograd.gradcheck(call, (x,))
            assert torch.autograd.gradgradcheck(call, (x,))
