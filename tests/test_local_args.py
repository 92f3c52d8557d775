"""Bad arguments to the locally connected and tiled convolutions: torch's exception types and
messages that name the argument."""

from __future__ import annotations

import pytest
import torch

from torchconv_ext import functional as TF


def _x(*shape):
    return torch.randn(*shape)


@pytest.mark.parametrize(
    "call,error,match",
    [
        # weight rank: (*out_positions, C_out, C_in/groups, *kernel)
        (lambda: TF.conv2d_local(_x(1, 2, 4, 4), _x(4, 2, 3, 3)), RuntimeError, "6 dims"),
        (lambda: TF.conv1d_tiled(_x(1, 2, 4), _x(0, 4, 2, 3)), RuntimeError, "positive tiles"),
        # the weight must have one kernel per output position
        (lambda: TF.conv1d_local(_x(1, 2, 6), _x(3, 4, 2, 3)), RuntimeError, r"\[3\].*\[4\]"),
        (lambda: TF.conv2d_local(_x(2, 5, 5), _x(2, 2, 3, 2, 3, 3)), RuntimeError, "output"),
        # channels and groups
        (lambda: TF.conv1d_tiled(_x(1, 3, 6), _x(2, 4, 2, 3)), RuntimeError, "3 channels"),
        (lambda: TF.conv1d_tiled(_x(1, 4, 6), _x(2, 3, 2, 3), groups=2), RuntimeError, "C_out"),
        (lambda: TF.conv1d_tiled(_x(1, 2, 6), _x(2, 4, 2, 3), groups=0), RuntimeError, "groups"),
        # bias: (*lead, C_out)
        (lambda: TF.conv1d_tiled(_x(1, 2, 6), _x(2, 4, 2, 3), _x(4)), RuntimeError, r"\[2, 4\]"),
        # convolution's own checks, on one position's kernel
        (lambda: TF.conv1d_tiled(_x(1, 2, 6), _x(2, 4, 2, 3), stride=0), RuntimeError, "stride"),
        (lambda: TF.conv1d_tiled(_x(1, 2, 6), _x(2, 4, 2, 3), padding=-1), RuntimeError, "padding"),
        (
            lambda: TF.conv1d_tiled(_x(1, 2, 6), _x(2, 4, 2, 3), padding="full"),
            RuntimeError,
            "full",
        ),
        (lambda: TF.conv1d_tiled(_x(1, 2, 2), _x(2, 4, 2, 3)), RuntimeError, "Kernel size"),
        (
            lambda: TF.conv1d_tiled(_x(1, 2, 6), _x(2, 4, 2, 3), padding_mode="mirror"),
            ValueError,
            "padding_mode",
        ),
        (
            lambda: TF.conv1d_tiled(_x(1, 2, 3), _x(2, 4, 2, 3), padding=3, padding_mode="reflect"),
            RuntimeError,
            "reflect",
        ),
        (
            lambda: TF.conv1d_tiled(_x(1, 2, 6), _x(2, 4, 2, 3).double()),
            RuntimeError,
            "type",
        ),
        (lambda: TF.conv2d_tiled(_x(2, 6), _x(1, 1, 2, 2, 3, 3)), RuntimeError, "3D"),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_accepted_forms():
    """Ints or per-dim tuples, 'valid' and 'same' (with stride: TensorFlow's rule)."""
    x = _x(1, 2, 7, 6)
    assert TF.conv2d_tiled(x, _x(1, 1, 3, 2, 3, 3), padding=(1, 0)).shape == (1, 3, 7, 4)
    assert TF.conv2d_tiled(x, _x(2, 2, 3, 2, 2, 2), stride=2, padding="same").shape == (
        1, 3, 4, 3,
    )  # fmt: skip
    assert TF.conv2d_local(x, _x(5, 4, 3, 2, 3, 3), padding="valid").shape == (1, 3, 5, 4)
