"""Transposed convolution arguments: torch's exception types for bad input, and messages that
name the argument (the Triton path's own checks)."""

from __future__ import annotations

import pytest
import torch

import torchconv_ext
from torchconv_ext import functional as TF
from torchconv_ext import nn as tnn


def _padded_by(padding):
    return TF.conv_transpose2d(torch.randn(1, 2, 3, 3), torch.randn(2, 2, 3, 3), padding=padding)


BAD = {
    "output_padding": (
        lambda: TF.conv_transpose2d(
            torch.randn(1, 2, 3, 3), torch.randn(2, 2, 3, 3), stride=2, output_padding=2
        ),
        RuntimeError,
        "output padding",
    ),
    "groups": (
        lambda: TF.conv_transpose2d(torch.randn(1, 3, 3, 3), torch.randn(3, 2, 3, 3), groups=2),
        RuntimeError,
        "divisible",
    ),
    "channels": (
        lambda: TF.conv_transpose2d(torch.randn(1, 3, 3, 3), torch.randn(4, 2, 3, 3)),
        RuntimeError,
        "channels",
    ),
    "rank": (
        lambda: TF.conv_transpose2d(torch.randn(3, 3), torch.randn(3, 2, 3, 3)),
        RuntimeError,
        "Expected 3D",
    ),
    "weight rank": (
        lambda: TF.conv_transpose2d(torch.randn(1, 3, 3, 3), torch.randn(3, 2, 3)),
        RuntimeError,
        "weight",
    ),
    "too small": (
        lambda: TF.conv_transpose1d(torch.randn(1, 2, 1), torch.randn(2, 2, 1), padding=1),
        RuntimeError,
        "too small",
    ),
    "same+output_padding": (
        lambda: TF.conv_transpose1d(
            torch.randn(1, 2, 3), torch.randn(2, 2, 3), stride=2, padding="same", output_padding=1
        ),
        ValueError,
        "output_padding",
    ),
    "output_size": (
        lambda: tnn.ConvTranspose2d(2, 2, 3, stride=2)(
            torch.randn(1, 2, 4, 4), output_size=[20, 20]
        ),
        ValueError,
        "output size",
    ),
    "negative pair": (
        lambda: _padded_by(((0, -1), 1)),
        RuntimeError,
        r"negative padding is not supported, but got padding=\(\(0, -1\), 1\)",
    ),
    "pair of three": (
        lambda: _padded_by(((0, 1, 1), 1)),
        TypeError,
        r"one \(before, after\) pair of ints per spatial dimension",
    ),
    "pairs count": (
        lambda: _padded_by(((0, 1), (0, 1), 1)),
        RuntimeError,
        "a list of 2 values",
    ),
    "pairs crop it all": (
        lambda: TF.conv_transpose1d(torch.randn(1, 2, 2), torch.randn(2, 2, 3), padding=((3, 1),)),
        RuntimeError,
        r"calculated output size \[0\] is too small",
    ),
    "pairs output_size": (
        lambda: tnn.ConvTranspose1d(2, 2, 3, stride=2, padding=((0, 3),))(
            torch.randn(1, 2, 4), output_size=[8]
        ),
        ValueError,
        r"valid sizes range from \[6\] to \[7\]",
    ),
    "mode": (
        lambda: tnn.ConvTranspose2d(2, 2, 3, padding_mode="reflect")(torch.randn(1, 2, 4, 4)),
        ValueError,
        "zeros",
    ),
}


@pytest.mark.parametrize("name", BAD)
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_bad_input(name, backend):
    """Our checks name the argument (Triton path); on the fallback torch's own op checks the
    arguments torch accepts, raising the same exception type."""
    fn, exc, fragment = BAD[name]
    with (
        torchconv_ext.use_backend(backend),
        pytest.raises(exc, match=fragment if backend == "triton" else None),
    ):
        fn()
