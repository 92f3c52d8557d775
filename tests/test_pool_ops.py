"""Registered pooling ops: opcheck, gradcheck, double backward, ``torch.compile``, and
deterministic, bitwise-repeatable backward passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchconv_ext
from tests.references.pool import backward_twice, in_layout
from torchconv_ext import functional as TF
from torchconv_ext import nn as TN


def _op_samples(layout):
    x = in_layout(torch.randn(2, 3, 5, 6, dtype=torch.float64), layout)
    geo = (
        ["max", [3, 2], [2, 1], [1, 0], [1, 1], [1, 2], True, True, 0],
        ["avg", [3, 2], [2, 1], [1, 0], [1, 1], [1, 1], True, False, 0],
    )
    return x, geo


def _opcheck_all(backend, layout, modes=("max", "avg"), test_utils=None):
    ops = torch.ops.torchconv_ext
    check = lambda op, args: torch.library.opcheck(
        op, args, **({"test_utils": test_utils} if test_utils else {})
    )
    x, geos = _op_samples(layout)
    with torchconv_ext.use_backend(backend):
        for geo in (g for g in geos if g[0] in modes):
            y, idx = ops.pool_fwd(x, *geo)
            check(ops.pool_fwd, (x, *geo))
            check(ops.pool_bwd, (torch.randn_like(y), x, idx, *geo))
        for mode in modes:
            y, idx = ops.adaptive_pool_fwd(x, mode, [3, 4])
            check(ops.adaptive_pool_fwd, (x, mode, [3, 4]))
            check(ops.adaptive_pool_bwd, (torch.randn_like(y), x, idx, mode))
            y, idx = ops.pyramid_pool_fwd(x, mode, [1, 2])
            check(ops.pyramid_pool_fwd, (x, mode, [1, 2]))
            check(ops.pyramid_pool_bwd, (torch.randn_like(y), x, idx, mode, [1, 2]))


def test_opcheck_fallback():
    _opcheck_all("torch", "channels_last")
    for layout in ("contiguous", "strided"):  # the fakes' strides for the other layouts
        _opcheck_all("torch", layout, test_utils="test_faketensor")


@pytest.mark.interpret
def test_opcheck_triton():
    # Max pooling (output and indices); the fakes are shared with the fallback's checks.
    _opcheck_all("triton", "channels_last", ("max",))


def _distinct(shape, layout="contiguous"):
    """Well-separated values, so finite differences never swap a maximum."""
    n = torch.Size(shape).numel()
    x = (
        torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(torch.float64).view(shape)
        / n
    )
    return in_layout(x, layout).requires_grad_()


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_gradcheck(backend):
    fast = backend == "triton"  # the interpreter: random projections, not full Jacobians
    x = _distinct((1, 2, 5, 4), "channels_last")
    x1, x3 = _distinct((2, 2, 7)), _distinct((1, 1, 3, 4, 3))
    fns = [
        (lambda t: TF.max_pool2d(t, 3, 2, 1, 2, ceil_mode=True), x),
        (lambda t: TF.avg_pool2d(t, 2, 1, "same", divisor_override=3), x),
        (lambda t: TF.adaptive_avg_pool3d(t, (2, 3, 2)), x3),
        (lambda t: TF.spatial_pyramid_pool(t, (1, 3), "max"), x1),
        (lambda t: TF.global_max_pool(t) + TF.global_avg_pool(t), x3),
        # The Triton backward is compared with torch's elsewhere; these run on the fallback only.
        (lambda t: TF.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False), x),
        (lambda t: TF.max_pool1d(t, 2, 2, "same"), x1),
        (lambda t: TF.adaptive_max_pool2d(t, (2, 3)), x),
        (lambda t: TF.spatial_pyramid_pool(t, (1, 2, 3), "avg"), x),
    ]
    with torchconv_ext.use_backend(backend):
        for fn, inp in fns[:5] if fast else fns:
            assert torch.autograd.gradcheck(fn, (inp,), fast_mode=fast)


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    model = torchconv_ext.convert_model(
        nn.Sequential(
            nn.MaxPool2d(3, 2, 1, ceil_mode=True),
            nn.AvgPool2d(2, 1, padding=1, count_include_pad=False),
            nn.AdaptiveMaxPool2d((3, 2)),
            TN.SpatialPyramidPool((1, 2), "avg"),
        )
    )
    x = torch.randn(2, 3, 9, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    compiled = torch.compile(model, fullgraph=True)
    y_c = compiled(x)
    (g_c,) = torch.autograd.grad(y_c.sum(), x)
    y_e = model(x)
    (g_e,) = torch.autograd.grad(y_e.sum(), x)
    torch.testing.assert_close(y_c, y_e)
    torch.testing.assert_close(g_c, g_e)


# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_deterministic_algorithms_and_bitwise_repeat(backend):
    x = torch.randint(0, 3, (2, 3, 5, 6)).to(torch.float32).requires_grad_()  # many ties
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = backward_twice(x, backend)
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(first, second)
