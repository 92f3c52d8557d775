"""Nearest upsampling arguments: torch's exceptions for bad input, output sizes, the scales the
kernels use, the output memory format, and the ``output_size_rounding='round'`` option."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
from tests.references.upsample import layout
from torchconv_ext import functional as TF
from torchconv_ext._memory import upsample_output_format as output_memory_format
from torchconv_ext._upsample_args import source_scales, upsample_geometry

X1, X2, X3 = torch.randn(1, 2, 4), torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4, 4)

# (description, input, kwargs, whether our message is torch's word for word)
BAD = [
    ("size and scale", X2, dict(size=3, scale_factor=2), True),
    ("neither", X2, dict(), True),
    ("zero size", X2, dict(size=0), True),
    ("negative size", X2, dict(size=(2, -1)), True),
    ("zero size 1d", X1, dict(size=0), True),
    ("zero size 3d", X3, dict(size=(1, 0, 1)), True),
    ("zero scale", X2, dict(scale_factor=0), True),
    ("negative scale", X2, dict(scale_factor=-2), True),
    ("scale too small", X3, dict(scale_factor=0.1), True),
    ("nan scale", X2, dict(scale_factor=float("nan")), True),
    ("inf scale", X2, dict(scale_factor=float("inf")), True),
    ("huge scale", X2, dict(scale_factor=1e30), True),
    (
        "nan scale recomputed",
        X1,
        dict(scale_factor=float("nan"), recompute_scale_factor=True),
        False,
    ),
    (
        "inf scale recomputed",
        X1,
        dict(scale_factor=float("inf"), recompute_scale_factor=True),
        False,
    ),
    ("scale length", X2, dict(scale_factor=(2, 2, 2)), True),
    ("size length", X2, dict(size=(2, 2, 2)), True),
    ("float size in tuple", X2, dict(size=(2.0, 2)), True),
    ("float size", X2, dict(size=2.5), False),
    ("tensor scale", X2, dict(scale_factor=torch.tensor(2.0)), False),
    ("align_corners", X2, dict(scale_factor=2, align_corners=False), True),
    (
        "align_corners exact",
        X2,
        dict(scale_factor=2, align_corners=True, mode="nearest-exact"),
        True,
    ),
    ("antialias", X2, dict(scale_factor=2, antialias=True), True),
    ("recompute with size", X2, dict(size=3, recompute_scale_factor=True), True),
    ("rank 2", torch.randn(2, 3), dict(scale_factor=2), True),
    ("rank 6", torch.randn(1, 1, 2, 2, 2, 2), dict(scale_factor=2), True),
    ("rank 6 exact", torch.randn(1, 1, 2, 2, 2, 2), dict(size=3, mode="nearest-exact"), True),
    ("empty channels", torch.randn(2, 0, 4, 4), dict(scale_factor=2), True),
    ("empty spatial", torch.randn(2, 2, 0, 4), dict(scale_factor=2), True),
    ("int64 input", torch.arange(16).view(1, 1, 4, 4), dict(scale_factor=2), False),
    ("bool input", torch.ones(1, 1, 4, 4, dtype=torch.bool), dict(scale_factor=2), False),
    ("complex input", torch.ones(1, 1, 4, dtype=torch.complex64), dict(scale_factor=2), False),
]


@pytest.mark.parametrize("desc,x,kwargs,same_message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_like_torch(desc, x, kwargs, same_message):
    with pytest.raises(Exception) as theirs:
        F.interpolate(x, **kwargs)
    with pytest.raises(Exception) as ours:
        TF.interpolate(x, **kwargs)
    assert type(ours.value) is type(theirs.value), (ours.value, theirs.value)
    if same_message:
        assert str(ours.value) == str(theirs.value)
    else:
        assert str(ours.value)


def test_bad_input_messages_name_the_problem():
    with pytest.raises(NotImplementedError, match=r"torch\.int64"):
        TF.interpolate(torch.arange(16).view(1, 1, 4, 4), scale_factor=2)
    with pytest.raises(TypeError, match="expected size to be one of int"):
        TF.interpolate(X2, size=2.5)
    with pytest.raises(TypeError, match="expected size to be one of int"):
        TF.interpolate(X2, size=torch.tensor([3, 3]))  # (one size per dim: a tuple)
    with pytest.raises(TypeError, match="expected scale_factor to be a float"):
        TF.interpolate(X2, scale_factor=torch.tensor(2.0))
    with pytest.raises(ValueError, match="output_size_rounding must be 'floor' or 'round'"):
        TF.interpolate(X2, scale_factor=2, output_size_rounding="ceil")
    with pytest.raises(ValueError, match="only supported for the modes 'nearest'"):
        TF.interpolate(X2, scale_factor=2, mode="bilinear", output_size_rounding="round")


def test_accepted_size_and_scale_types():
    """Integer tensors / NumPy integers as sizes, ints as scale factors, as torch accepts."""
    for kwargs in (
        dict(size=torch.tensor(3)),
        dict(size=np.int64(3)),
        dict(size=[3, 5]),
        dict(scale_factor=[2, 1]),
        dict(scale_factor=(1.5, 0.5)),
    ):
        assert torch.equal(TF.interpolate(X2, **kwargs), F.interpolate(X2, **kwargs)), kwargs


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_empty_batch_is_allowed(backend):
    x = torch.randn(0, 2, 3, 4, requires_grad=True)
    with torchconv_ext.use_backend(backend):
        y = TF.interpolate(x, scale_factor=2)
        assert y.shape == F.interpolate(x, scale_factor=2).shape
        (grad,) = torch.autograd.grad(y.sum(), x)
        assert grad.shape == x.shape


@pytest.mark.parametrize("recompute", [None, False, True])
def test_output_size_matches_torch(recompute):
    for n in (1, 3, 7, 10, 33):
        for s in (0.3, 0.5, 1.0, 1.05, 1.5, 2.0, 2.5, 3.0000001, 4.7):
            if int(n * s) < 1:
                continue
            x = torch.randn(1, 1, n)
            g = upsample_geometry(x, None, s, "nearest", None, recompute, False)
            assert list(g.output_size) == list(
                F.interpolate(x, scale_factor=s, recompute_scale_factor=recompute).shape[2:]
            )
            assert g.scales == ((0.0,) if recompute else (s,))


def test_source_scales_are_atens_float32_values():
    f32 = np.float32
    assert source_scales([10], [20], [2.0]) == (0.5,)
    assert source_scales([10], [20], [2.05]) == (float(f32(1.0 / 2.05)),)
    assert source_scales([7], [3], [0.0]) == (float(f32(7) / f32(3)),)
    assert source_scales([3, 5], [7, 9], [0.0, 1.9]) == (
        float(f32(3) / f32(7)),
        float(f32(1.0 / 1.9)),
    )


# Layouts whose suggested memory format is ambiguous or non-obvious.
ODD_LAYOUTS = [
    ("channels_last", torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)),
    ("C=1 channels_last", torch.randn(2, 1, 4, 5).contiguous(memory_format=torch.channels_last)),
    ("HW=1 channels_last", torch.randn(2, 3, 1, 1).contiguous(memory_format=torch.channels_last)),
    ("N=1 channels_last", torch.randn(1, 3, 4, 5).contiguous(memory_format=torch.channels_last)),
    (
        "sliced channels_last",
        torch.randn(2, 6, 8, 5).contiguous(memory_format=torch.channels_last)[:, :3, ::2],
    ),
    ("transposed", torch.randn(2, 3, 4, 5).transpose(2, 3)),
    ("NHWC permute", torch.randn(2, 4, 5, 3).permute(0, 3, 1, 2)),
    ("expanded", torch.randn(1, 3, 1, 5).expand(2, 3, 4, 5)),
    (
        "channels_last_3d",
        torch.randn(2, 3, 4, 5, 3).contiguous(memory_format=torch.channels_last_3d),
    ),
    (
        "C=1 channels_last_3d",
        torch.randn(2, 1, 2, 3, 4).contiguous(memory_format=torch.channels_last_3d),
    ),
    ("1d transposed", torch.randn(2, 4, 3).transpose(1, 2)),
]


@pytest.mark.parametrize("desc,x", ODD_LAYOUTS, ids=[d for d, _ in ODD_LAYOUTS])
def test_output_memory_format_is_atens(desc, x):
    """Same layout (strides) as torch's output, forward and backward, on every backend."""
    torch_out = F.interpolate(x, scale_factor=2)
    fmt = output_memory_format(x)
    assert torch.empty(torch_out.shape, memory_format=fmt).stride() == torch_out.stride()
    assert TF.interpolate(x, scale_factor=2).stride() == torch_out.stride()
    grad = torch.ops.aten.upsample_nearest2d_backward if x.dim() == 4 else None
    if grad is not None:
        go = layout(torch_out, "contiguous").contiguous(memory_format=fmt)
        theirs = grad(go, list(torch_out.shape[2:]), list(x.shape), 2.0, 2.0)
        ours = torch.ops.torchconv_ext.upsample_nearest_bwd(go, list(x.shape), [2.0, 2.0], False)
        assert ours.stride() == theirs.stride()


def test_round_option_sizes():
    """round(in * scale), halves to even, as OpenCV's resize and scikit-image's rescale."""
    cases = {(5, 1.5): 8, (3, 1.5): 4, (7, 0.5): 4, (9, 0.5): 4, (10, 0.26): 3, (4, 2.0): 8}
    for (n, s), expected in cases.items():
        x = torch.randn(1, 1, n)
        g = upsample_geometry(x, None, s, "nearest", None, None, False, "round")
        assert g.output_size == (expected,) == (round(n * s),)
        assert g.scales == (s,)
        assert math.floor(n * s) == F.interpolate(x, scale_factor=s).shape[-1]
    # With an explicit size the option has nothing to round.
    g = upsample_geometry(X2, (3, 5), None, "nearest", None, None, False, "round")
    assert g.output_size == (3, 5)
