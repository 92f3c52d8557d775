"""Convolution arguments: torch's exception types for bad input, and messages that name the
argument (the Triton path's own checks)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchconv_ext
from torchconv_ext import functional as TF
from torchconv_ext import nn as tnn

X = torch.randn(1, 3, 5, 5)
W = torch.randn(4, 3, 3, 3)

BAD = {
    "input rank": (lambda: TF.conv2d(torch.randn(5, 5), W), RuntimeError, "Expected 3D"),
    "weight rank": (lambda: TF.conv2d(X, torch.randn(4, 3, 3)), RuntimeError, "weight"),
    "channels": (lambda: TF.conv2d(torch.randn(1, 2, 5, 5), W), RuntimeError, "to have 3 channels"),
    "groups divide": (
        lambda: TF.conv2d(X, torch.randn(4, 2, 3, 3), groups=2),
        RuntimeError,
        "channels",
    ),
    "groups out": (
        lambda: TF.conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 1, 3, 3), groups=2),
        RuntimeError,
        "divisible",
    ),
    "groups zero": (lambda: TF.conv2d(X, W, groups=0), RuntimeError, "groups"),
    "stride": (lambda: TF.conv2d(X, W, stride=0), RuntimeError, "stride"),
    "stride len": (lambda: TF.conv2d(X, W, stride=(1, 1, 1)), RuntimeError, "stride"),
    "dilation": (lambda: TF.conv2d(X, W, dilation=(1, 0)), RuntimeError, "dilation"),
    "negative padding": (lambda: TF.conv2d(X, W, padding=-1), RuntimeError, "negative padding"),
    "padding string": (lambda: TF.conv2d(X, W, padding="full"), RuntimeError, "'valid', 'same'"),
    "kernel too big": (lambda: TF.conv2d(torch.randn(1, 3, 2, 2), W), RuntimeError, "Kernel size"),
    "reflect too big": (
        lambda: TF.conv2d(X, W, padding=5, padding_mode="reflect"),
        RuntimeError,
        "reflect",
    ),
    "circular too big": (
        lambda: TF.conv2d(X, W, padding=6, padding_mode="circular"),
        RuntimeError,
        "circular",
    ),
    "same reflect small": (
        lambda: TF.conv2d(
            torch.randn(1, 3, 2, 2), torch.randn(4, 3, 5, 5), padding="same", padding_mode="reflect"
        ),
        RuntimeError,
        "reflect",
    ),
    "padding mode": (lambda: TF.conv2d(X, W, padding_mode="mirror"), ValueError, "padding_mode"),
    "dtype": (lambda: TF.conv2d(X.double(), W), RuntimeError, "type"),
    "bias dtype": (lambda: TF.conv2d(X, W, torch.randn(4).double()), RuntimeError, "bias type"),
    "bias shape": (lambda: TF.conv2d(X, W, torch.randn(5)), RuntimeError, "bias"),
    "device": (lambda: TF.conv2d(X, W.to("meta")), RuntimeError, "same device"),
    "module mode": (lambda: tnn.Conv2d(3, 4, 3, padding_mode="mirror"), ValueError, "padding_mode"),
}


# torch's own CPU op (the fallback) accepts a meta weight beside a CPU input; ours refuses it.
_OURS_ONLY = {"device"}
_BAD_CASES = [pytest.param(n, "triton", marks=pytest.mark.interpret, id=f"triton-{n}") for n in BAD]
_BAD_CASES += [pytest.param(n, "torch", id=f"torch-{n}") for n in BAD if n not in _OURS_ONLY]


@pytest.mark.parametrize("name,backend", _BAD_CASES)
def test_bad_input_raises_like_torch(name, backend):
    """Our checks (the Triton path) name the argument; the fallback is torch's op for the
    arguments torch accepts, so there torch's own check raises, with the same type."""
    fn, exc, fragment = BAD[name]
    with (
        torchconv_ext.use_backend(backend),
        pytest.raises(exc, match=fragment if backend == "triton" else None),
    ):
        fn()


def test_errors_match_torch_types():
    """Where torch rejects the same call, it raises the same exception type."""
    torch_calls = {
        "input rank": lambda: nn.functional.conv2d(torch.randn(5, 5), W),
        "channels": lambda: nn.functional.conv2d(torch.randn(1, 2, 5, 5), W),
        "stride": lambda: nn.functional.conv2d(X, W, stride=0),
        "negative padding": lambda: nn.functional.conv2d(X, W, padding=-1),
        "kernel too big": lambda: nn.functional.conv2d(torch.randn(1, 3, 2, 2), W),
        "dtype": lambda: nn.functional.conv2d(X.double(), W),
        "module mode": lambda: nn.Conv2d(3, 4, 3, padding_mode="mirror"),
    }
    for name, call in torch_calls.items():
        with pytest.raises(Exception) as theirs:
            call()
        assert BAD[name][1] is type(theirs.value), name
