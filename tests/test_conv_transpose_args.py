"""Transposed convolution arguments: torch's exception types for bad input, and messages that
name the argument (the Triton path's own checks)."""

from __future__ import annotations

import pytest
import torch

import torchconv_ext
from torchconv_ext import functional as TF
from torchconv_ext import nn as tnn

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
