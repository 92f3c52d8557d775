"""Pooling arguments and inputs: torch's exception types for bad arguments, messages that name
the problem, integer, unbatched and empty inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
from tests.references.pool import significant_strides, special_batch
from torchconv_ext import functional as TF
from torchconv_ext import nn as TN

X = torch.randn(2, 3, 6, 6)

# --------------------------------------------------------------------------------------------
# Bad arguments: torch's exception types, messages that name the problem
# --------------------------------------------------------------------------------------------

# (ours, torch's equivalent or None, message fragment)
BAD_LIKE_TORCH = [
    (lambda: TF.max_pool2d(X, 2, 2, 2), lambda: F.max_pool2d(X, 2, 2, 2), "at most half of kernel"),
    (lambda: TF.avg_pool2d(X, 3, 1, 2), lambda: F.avg_pool2d(X, 3, 1, 2), "at most half of kernel"),
    (lambda: TF.max_pool1d(X[0], 3, 1, 2), lambda: F.max_pool1d(X[0], 3, 1, 2), "at most half"),
    (lambda: TF.max_pool2d(X, -1), lambda: F.max_pool2d(X, -1), "kernel_size must be greater"),
    (
        lambda: TF.avg_pool3d(X[None], 2, 0),
        lambda: F.avg_pool3d(X[None], 2, 0),
        "stride must be greater",
    ),
    (lambda: TF.max_pool2d(X, 2, 2, -1), lambda: F.max_pool2d(X, 2, 2, -1), "non-negative"),
    (
        lambda: TF.max_pool2d(X, 2, 2, 0, 0),
        lambda: F.max_pool2d(X, 2, 2, 0, 0),
        "dilation must be greater",
    ),
    (lambda: TF.max_pool2d(X, 7), lambda: F.max_pool2d(X, 7), "too small"),
    (lambda: TF.avg_pool1d(X[0], 7), lambda: F.avg_pool1d(X[0], 7), "too small"),
    (
        lambda: TF.max_pool3d(X[None], 3, 1, 0, 4),
        lambda: F.max_pool3d(X[None], 3, 1, 0, 4),
        "too small",
    ),
    (lambda: TF.max_pool2d(X, (2, 2, 2)), lambda: F.max_pool2d(X, (2, 2, 2)), "kernel_size must"),
    (lambda: TF.avg_pool2d(X, 2, (1, 1, 1)), lambda: F.avg_pool2d(X, 2, (1, 1, 1)), "stride must"),
    (
        lambda: TF.max_pool2d(torch.randn(6, 6), 2),
        lambda: F.max_pool2d(torch.randn(6, 6), 2),
        "Expected 3D",
    ),
    (
        lambda: TF.max_pool1d(torch.randn(6), 2),
        lambda: F.max_pool1d(torch.randn(6), 2),
        "Expected 2D",
    ),
    (lambda: TF.avg_pool3d(X[0], 2), lambda: F.avg_pool3d(X[0], 2), "Expected 4D"),
    (
        lambda: TF.avg_pool3d(torch.randn(1, 2, 5, 3, 6), (4, 4, 3), 1, (1, 2, 0)),
        lambda: F.avg_pool3d(torch.randn(1, 2, 5, 3, 6), (4, 4, 3), 1, (1, 2, 0)),
        "smaller than kernel size",
    ),
    (
        lambda: TF.avg_pool2d(X, 2, divisor_override=0),
        lambda: F.avg_pool2d(X, 2, divisor_override=0),
        "divisor",
    ),
    (
        lambda: TF.max_pool2d(torch.randn(2, 0, 6, 6), 2),
        lambda: F.max_pool2d(torch.randn(2, 0, 6, 6), 2),
        "non-zero",
    ),
    (
        lambda: TF.adaptive_avg_pool2d(X, (-1, 2)),
        lambda: F.adaptive_avg_pool2d(X, (-1, 2)),
        "greater than or equal to 0",
    ),
    (
        lambda: TF.adaptive_max_pool2d(torch.randn(2, 3, 0, 6), 2),
        lambda: F.adaptive_max_pool2d(torch.randn(2, 3, 0, 6), 2),
        "non-zero",
    ),
    (
        lambda: TF.adaptive_avg_pool2d(X, (2, 2, 2)),
        lambda: F.adaptive_avg_pool2d(X, (2, 2, 2)),
        "output_size must",
    ),
    (
        lambda: TF.adaptive_max_pool3d(X[0], 2),
        lambda: F.adaptive_max_pool3d(X[0], 2),
        "Expected 4D",
    ),
]

BAD_BEYOND_TORCH = [
    (lambda: TF.max_pool2d(X, 2, padding="full"), ValueError, "invalid padding string 'full'"),
    (lambda: TF.spatial_pyramid_pool(X, ()), ValueError, "non-empty sequence"),
    (
        lambda: TF.spatial_pyramid_pool(X, (1, 0)),
        ValueError,
        "^spatial_pyramid_pool: levels must be positive",
    ),
    (lambda: TF.spatial_pyramid_pool(X, (1, 2.5)), TypeError, "levels must hold ints"),
    (lambda: TF.spatial_pyramid_pool(X, (1,), "median"), ValueError, "mode must be 'max' or 'avg'"),
    (lambda: TF.spatial_pyramid_pool(X[0, 0], (1,)), RuntimeError, "batched"),
    (lambda: TF.spatial_pyramid_pool(X.long(), (1,)), NotImplementedError, "torch.int64"),
    (lambda: TF.global_avg_pool(torch.randn(2, 3)), RuntimeError, "1 to 3 spatial dims"),
    (lambda: TF.global_max_pool(torch.randn(2, 3, 0)), RuntimeError, "non-zero"),
    (
        lambda: TN.SpatialPyramidPool((1, -2)),
        ValueError,
        "^SpatialPyramidPool: levels must be positive",
    ),
    (lambda: TN.SpatialPyramidPool(mode="sum"), ValueError, "mode"),
    (
        lambda: TF.max_pool2d(X, 3, 2, ((0, 2), 1)),
        RuntimeError,
        r"at most half of kernel size, but got padding=\(\(0, 2\), 1\)",
    ),
    (lambda: TF.avg_pool2d(X, 3, 2, ((0, -1), 1)), RuntimeError, "pad must be non-negative"),
    (lambda: TF.max_pool2d(X, 3, 2, ((0, 1, 1), 1)), TypeError, r"\(before, after\) pair"),
    (lambda: TF.avg_pool2d(X, 3, 2, ((0, 1), 1, 1)), RuntimeError, "a tuple of 2 entries"),
]


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize("case", range(len(BAD_LIKE_TORCH)))
def test_bad_arguments_raise_like_torch(case, backend):
    """Same exception type as torch; our own checks (Triton path) also name the problem. On the
    fallback, arguments torch accepts go to torch's op, whose own check raises."""
    ours, theirs, fragment = BAD_LIKE_TORCH[case]
    with pytest.raises(Exception) as want:
        theirs()
    with (
        torchconv_ext.use_backend(backend),
        pytest.raises(want.type, match=fragment if backend == "triton" else None),
    ):
        ours()


@pytest.mark.parametrize("case", range(len(BAD_BEYOND_TORCH)))
def test_bad_arguments_beyond_torch(case):
    call, kind, fragment = BAD_BEYOND_TORCH[case]
    with pytest.raises(kind, match=fragment):
        call()


# --------------------------------------------------------------------------------------------
# Integer, unbatched and empty inputs
# --------------------------------------------------------------------------------------------


def test_integer_inputs_behave_like_torch():
    x = torch.randint(0, 9, (2, 3, 6, 6))
    assert torch.equal(TF.max_pool2d(x, 3, 2, 1), F.max_pool2d(x, 3, 2, 1))
    assert torch.equal(TF.avg_pool2d(x, 2), F.avg_pool2d(x, 2))
    with pytest.raises(NotImplementedError):
        TF.adaptive_max_pool2d(x, 2)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_unbatched_and_empty_batch(backend):
    calls = [
        (lambda f: f.max_pool2d, (3, 2, 1)),
        (lambda f: f.avg_pool1d, (3, 2, 1, True)),
        (lambda f: f.adaptive_avg_pool2d, ((2, 3),)),
        (lambda f: f.adaptive_max_pool3d, (2,)),
    ]
    for pick, args in calls:
        ours, theirs = pick(TF), pick(F)
        nd = int(theirs.__name__.rstrip("d")[-1])
        unbatched = special_batch(nd)[0].requires_grad_()
        transposed = (
            unbatched.detach().transpose(-1, -2).contiguous().transpose(-1, -2).requires_grad_()
        )
        for x in (unbatched, transposed, special_batch(nd)[:0].requires_grad_()):
            with torchconv_ext.use_backend(backend):
                got = ours(x, *args)
            want = theirs(x, *args)
            torch.testing.assert_close(got, want, equal_nan=True)
            assert significant_strides(got) == significant_strides(want)
            gy = torch.randn_like(want)
            with torchconv_ext.use_backend(backend):
                (g,) = torch.autograd.grad(got, x, gy)
            torch.testing.assert_close(g, torch.autograd.grad(want, x, gy)[0])


# --------------------------------------------------------------------------------------------
# Argument forms torch takes: NumPy integers, and TypeError for anything but ints
# --------------------------------------------------------------------------------------------

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]
n1, n2 = np.int32(1), np.int64(2)

# (ours, torch's equivalent)
NUMPY = {
    "max": (
        lambda x: TF.max_pool2d(x, (n2, n2), n1, n1, (n1, n1), return_indices=True),
        lambda x: F.max_pool2d(x, 2, 1, 1, 1, return_indices=True),
    ),
    "max same": (
        lambda x: TF.max_pool2d(x, n2, n2, "same"),
        lambda x: F.max_pool2d(F.pad(x, [0, 0, 0, 1], value=float("-inf")), 2, 2),
    ),
    "avg": (
        lambda x: TF.avg_pool2d(x, n2, n1, n1, divisor_override=n2),
        lambda x: F.avg_pool2d(x, 2, 1, 1, divisor_override=2),
    ),
    "avg 1d": (lambda x: TF.avg_pool1d(x[0], n2, n1, n1), lambda x: F.avg_pool1d(x[0], 2, 1, 1)),
    "adaptive": (
        lambda x: TF.adaptive_max_pool2d(x, (n2, n1)),
        lambda x: F.adaptive_max_pool2d(x, (2, 1)),
    ),
    "pyramid": (
        lambda x: TF.spatial_pyramid_pool(x, (n1, n2), "avg"),
        lambda x: torch.cat([F.adaptive_avg_pool2d(x, s).flatten(1) for s in (1, 2)], 1),
    ),
    "module": (lambda x: TN.MaxPool2d(n2, n1, n1)(x), lambda x: F.max_pool2d(x, 2, 1, 1)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NUMPY)
def test_numpy_integers_accepted(name, backend):
    ours, theirs = NUMPY[name]
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        got = ours(x)
    torch.testing.assert_close(got, theirs(x))


NOT_INTS = [
    lambda f, **kw: f.max_pool2d(X, 2.0, **kw),
    lambda f, **kw: f.max_pool2d(X, 2, (1, 1.0), **kw),
    lambda f, **kw: f.max_pool2d(X, 2, 1, dilation=1.0, **kw),
    lambda f, **kw: f.avg_pool2d(X, 2, 1.0, **kw),
    lambda f, **kw: f.avg_pool2d(X, 2, divisor_override=2.0, **kw),
    lambda f, **kw: f.avg_pool1d(X[0], True, **kw),
    # flags other than bools (torch's parser takes bools only: 'no' would read as true)
    lambda f, **kw: f.max_pool2d(X, 2, ceil_mode=1, **kw),
    lambda f, **kw: f.avg_pool2d(X, 2, ceil_mode="yes", **kw),
    lambda f, **kw: f.avg_pool2d(X, 2, count_include_pad="no", **kw),
    lambda f, **kw: f.adaptive_avg_pool2d(X, None),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(NOT_INTS)))
def test_non_integers_raise_type_error_like_torch(case, backend):
    call = NOT_INTS[case]
    with pytest.raises(TypeError):
        call(F)
    for kw in ({}, {"padding": "same"}):  # torch's arguments, and ours beyond torch
        with torchconv_ext.use_backend(backend), pytest.raises(TypeError):
            call(TF, **kw)
    with pytest.raises(TypeError):
        F.adaptive_max_pool2d(X, (2.0, 2))
    with torchconv_ext.use_backend(backend), pytest.raises(TypeError):
        TF.adaptive_max_pool2d(X, (2.0, 2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_strings_for_integer_inputs(backend):
    """'valid' is torch's padding 0; our 'same' computes floating point only."""
    x = torch.randint(0, 9, (2, 3, 6, 5))
    with torchconv_ext.use_backend(backend):
        assert torch.equal(TF.max_pool2d(x, 2, 1, "valid"), F.max_pool2d(x, 2, 1))
        with pytest.raises(NotImplementedError, match="floating-point"):
            TF.max_pool2d(x, 2, 1, "same")
        with pytest.raises(NotImplementedError, match="floating-point"):
            TF.avg_pool2d(x, 2, 1, ((0, 1), 1))
        with pytest.raises(ValueError, match="invalid padding string"):
            TF.avg_pool2d(x, 2, 1, "full")
