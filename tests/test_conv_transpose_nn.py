"""Transposed convolution modules: ``output_size``, 'same' / 'valid' padding, ``convert_model``."""

from __future__ import annotations

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
