"""Maxout numerics, both backends, against its float64 definition (``references.local``):
values, winners (ties keep the first piece, a NaN wins) and the gradient, in every layout."""

from __future__ import annotations

import pytest
import torch

import torchconv_ext
from tests.references.maxout import reference_maxout
from torchconv_ext import functional as TF

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]

# (shape, pieces, dim, layout)
CASES = [
    ((2, 12, 3, 4), 3, 1, "contiguous"),
    ((2, 12, 3, 4), 4, 1, "channels_last"),
    ((2, 6, 4, 3), 2, 2, "channels_last"),  # another dim of a channels-last tensor: a copy
    ((3, 2, 5, 4, 2), 2, 1, "channels_last"),
    ((4, 10), 5, -1, "contiguous"),
    ((6, 3, 5), 2, 0, "strided"),  # unbatched, channels first
    ((2, 4, 7), 1, 1, "contiguous"),  # one piece: the identity
    ((0, 4, 3), 2, 1, "contiguous"),  # empty
]


def _input(shape, layout, dtype=torch.float64, seed=0):
    """Integers and NaNs, so ties and NaNs are common."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-2, 3, shape, generator=gen).to(torch.float64)
    x[torch.rand(shape, generator=gen) < 0.1] = float("nan")
    x = x.to(dtype)
    if layout == "channels_last":
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
    elif layout == "strided":
        x = x.repeat_interleave(2, dim=-1)[..., ::2]
    return x.requires_grad_()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-p{c[1]}-d{c[2]}-{c[3]}")
def test_matches_definition(case, backend):
    shape, pieces, dim, layout = case
    x = _input(shape, layout)
    with torchconv_ext.use_backend(backend):
        y = TF.maxout(x, pieces, dim)
        gy = torch.randn_like(y)
        (gx,) = torch.autograd.grad(y, x, gy)
    ref, _ = reference_maxout(x, pieces, dim)
    (gref,) = torch.autograd.grad(ref, x, gy)
    torch.testing.assert_close(y, ref, equal_nan=True, atol=0, rtol=0)
    torch.testing.assert_close(gx, gref, atol=0, rtol=0)
    channels_last = layout == "channels_last" and dim == 1
    fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
    assert y.is_contiguous(memory_format=fmt if channels_last else torch.contiguous_format)
    assert gx.is_contiguous(memory_format=fmt if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("backend", BACKENDS)
def test_winners_ties_first_nan_wins(backend):
    nan = float("nan")
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0, nan, 1.0, nan, 5.0, 2.0, 2.0, 2.0, 2.0]])
    with torchconv_ext.use_backend(backend):
        values, indices = torch.ops.torchconv_ext.maxout_fwd(x, 4, 1)
    torch.testing.assert_close(values, torch.tensor([[3.0, nan, 2.0]]), equal_nan=True)
    assert indices.tolist() == [[1, 0, 0]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_is_exact(dtype, backend):
    """Maxout only compares: every dtype gives exactly the definition's values."""
    x = _input((2, 8, 3, 2), "channels_last", dtype).detach()
    with torchconv_ext.use_backend(backend):
        y = TF.maxout(x, 4)
    ref, _ = reference_maxout(x, 4, 1)
    assert y.dtype == dtype
    torch.testing.assert_close(y, ref, equal_nan=True, atol=0, rtol=0)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda x: TF.maxout(x, 4), RuntimeError, "divisible by pieces=4"),
        (lambda x: TF.maxout(x, 0), RuntimeError, "positive"),
        (lambda x: TF.maxout(x, 2.0), TypeError, "int"),
        (lambda x: TF.maxout(x, 2, dim=3), IndexError, "out of range"),
        (
            lambda x: TF.maxout(x, 2, dim=1.0),
            TypeError,
            "maxout: dim must be an int, but got float",
        ),
        (lambda x: TF.maxout(x.long(), 2), RuntimeError, "floating-point"),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.randn(2, 6, 3))
