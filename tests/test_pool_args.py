"""Pooling arguments and inputs: torch's exception types for bad arguments, messages that name
the problem, integer, unbatched and empty inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
from tests.references.pool import significant_strides, special_batch
from torchconv_ext import functional as TF
from torchconv_ext import nn as TN

pytestmark = pytest.mark.usefixtures("single_thread")

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
    (lambda: TF.spatial_pyramid_pool(X, (1, 0)), ValueError, "levels must be positive"),
    (lambda: TF.spatial_pyramid_pool(X, (1, 2.5)), TypeError, "levels must hold ints"),
    (lambda: TF.spatial_pyramid_pool(X, (1,), "median"), ValueError, "mode must be 'max' or 'avg'"),
    (lambda: TF.spatial_pyramid_pool(X[0, 0], (1,)), RuntimeError, "batched"),
    (lambda: TF.spatial_pyramid_pool(X.long(), (1,)), NotImplementedError, "torch.int64"),
    (lambda: TF.global_avg_pool(torch.randn(2, 3)), RuntimeError, "1 to 3 spatial dims"),
    (lambda: TF.global_max_pool(torch.randn(2, 3, 0)), RuntimeError, "non-zero"),
    (lambda: TN.SpatialPyramidPool((1, -2)), ValueError, "levels must be positive"),
    (lambda: TN.SpatialPyramidPool(mode="sum"), ValueError, "mode"),
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
