"""Transposed convolution modules: ``output_size``, 'same' / 'valid' padding, ``convert_model``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchconv_ext
from torchconv_ext import nn as tnn


def test_nn_module_output_size_and_convert():
    torch.manual_seed(0)
    ref = nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1)
    model = torchconv_ext.convert_model(nn.Sequential(ref))
    assert type(model[0]) is tnn.ConvTranspose2d and isinstance(model[0], nn.ConvTranspose2d)
    x = torch.randn(1, 4, 5, 6)
    for size in (None, [10, 12], [11, 13]):
        torch.testing.assert_close(model[0](x, output_size=size), ref(x, output_size=size))
    same = tnn.ConvTranspose3d(2, 2, 3, stride=2, padding="same")
    assert same(torch.randn(1, 2, 2, 3, 4)).shape == (1, 2, 4, 6, 8)
    assert tnn.ConvTranspose1d(2, 2, 3, stride=2, padding="valid")(torch.randn(2, 5)).shape == (
        2,
        11,
    )


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_padding_pairs_crop_each_side(backend):
    """``padding=((top, bottom), (left, right))``: torch's full transposed convolution cropped
    by those amounts (``output_padding`` and ``output_size`` lower the end's crop), with torch's
    parameters, ``state_dict`` and ``repr``; values and gradients in float64."""
    torch.manual_seed(0)
    ref = nn.ConvTranspose2d(3, 4, (3, 4), stride=2, dilation=(1, 2)).double()
    ours = tnn.ConvTranspose2d(3, 4, (3, 4), 2, ((2, 0), (1, 3)), output_padding=1, dilation=(1, 2))
    ours.load_state_dict(ref.state_dict())
    ours = ours.double()
    assert "padding=((2, 0), (1, 3))" in repr(ours)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    # the full output is 11 × 13; output_padding 1 extends the bottom by a row
    for size, crop in (
        (None, (2, -1, 1, 2)),
        ([9, 9], (2, 0, 1, 3)),
        ([2, 4, 10, 9], (2, -1, 1, 3)),
    ):
        with torchconv_ext.use_backend(backend):
            out, grads = _grads(lambda x: ours(x, output_size=size), ours, x)
        expected, expected_grads = _grads(lambda x: _cropped(ref, x, *crop), ref, x)
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(grads, expected_grads)


def _cropped(layer, x, top, bottom, left, right):
    """``layer``'s full output less ``top`` rows… at each side (a negative amount extends it:
    rows of bias alone, as torch's ``output_padding`` adds)."""
    full = torch.nn.functional.conv_transpose2d(
        x, layer.weight, None, layer.stride, 0, 0, layer.groups, layer.dilation
    )
    cropped = torch.nn.functional.pad(full, (-left, -right, -top, -bottom))
    return cropped + layer.bias.view(-1, 1, 1)


def _grads(call, model, x):
    x = x.clone().requires_grad_()
    model.zero_grad()
    out = call(x)
    out.backward(torch.randn_like(out, generator=torch.Generator().manual_seed(1)))
    return out, [x.grad, *(p.grad for p in model.parameters())]


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_padding_pairs_gradcheck_and_gradgradcheck(backend):
    x = torch.randn(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)  # (tiny: the
    w = torch.randn(1, 1, 3, 2, dtype=torch.float64, requires_grad=True)  # interpreter runs
    b = torch.randn(1, dtype=torch.float64, requires_grad=True)  # every perturbation)
    call = lambda x, w, b: torchconv_ext.functional.conv_transpose2d(
        x, w, b, 2, ((2, 0), (0, 1)), output_padding=1
    )
    with torchconv_ext.use_backend(backend):
        assert torch.autograd.gradcheck(call, (x, w, b))
        assert torch.autograd.gradgradcheck(call, (x, w, b))
