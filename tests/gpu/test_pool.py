"""GPU-only pooling checks: real shapes, reduced precision, determinism where torch is not
deterministic, > 2**31 elements."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.references.pool import backward_twice, in_layout, significant_strides
from torchconv_ext import functional as TF

pytestmark = pytest.mark.gpu

GPU_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gpu_matches_torch(dtype, layout):
    """Real shapes against torch in float64 on the GPU: max values and indices exactly,
    averages and gradients to the dtype's rounding."""
    torch.manual_seed(0)
    x = torch.randn(8, 64, 55, 57, device="cuda").to(dtype)
    x[0, 0, :3, :3] = float("nan")
    x[1, 1] = float("-inf")
    x64 = x.double().requires_grad_()
    x = in_layout(x, layout).requires_grad_()
    tol = dict(rtol=GPU_TOL[dtype], atol=GPU_TOL[dtype], equal_nan=True)
    pyramid = (1, 2, 4)
    cases = [  # (ours, torch) on a tensor
        (
            lambda t: TF.max_pool2d(t, 3, 2, ceil_mode=True, return_indices=True),
            lambda t: F.max_pool2d(t, 3, 2, ceil_mode=True, return_indices=True),
        ),
        (
            lambda t: TF.max_pool2d(t, 2, 2, return_indices=True),
            lambda t: F.max_pool2d(t, 2, 2, return_indices=True),
        ),
        (
            lambda t: TF.adaptive_max_pool2d(t, (6, 7), return_indices=True),
            lambda t: F.adaptive_max_pool2d(t, (6, 7), return_indices=True),
        ),
        (
            lambda t: TF.avg_pool2d(t, 3, 2, 1, count_include_pad=False),
            lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False),
        ),
        (lambda t: TF.adaptive_avg_pool2d(t, 7), lambda t: F.adaptive_avg_pool2d(t, 7)),
        (lambda t: TF.adaptive_avg_pool2d(t, 1), lambda t: F.adaptive_avg_pool2d(t, 1)),
        (
            lambda t: TF.spatial_pyramid_pool(t, pyramid),
            lambda t: torch.cat([F.adaptive_max_pool2d(t, lv).flatten(1) for lv in pyramid], 1),
        ),
    ]
    for ours, theirs in cases:
        got, want, layout_ref = ours(x), theirs(x64), theirs(x)
        got, want, layout_ref = (
            v if isinstance(v, tuple) else (v,) for v in (got, want, layout_ref)
        )
        if len(want) == 2:  # max: a copy of an input element and its index, exactly
            torch.testing.assert_close(got[0].double(), want[0], rtol=0, atol=0, equal_nan=True)
            assert torch.equal(got[1], want[1])
        else:
            torch.testing.assert_close(got[0].double(), want[0], **tol)
        assert significant_strides(got[0]) == significant_strides(layout_ref[0])
        gy = torch.randn(want[0].shape, device="cuda").to(dtype)
        (g,) = torch.autograd.grad(got[0], x, gy)
        (g64,) = torch.autograd.grad(want[0], x64, gy.double())
        torch.testing.assert_close(g.double(), g64, **tol)
    torch.testing.assert_close(TF.global_avg_pool(x).double(), x64.mean((2, 3)), **tol)


def test_gpu_deterministic_where_torch_is_not():
    x = torch.randn(16, 32, 28, 28, device="cuda", requires_grad=True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = backward_twice(x, "auto")
        assert torch.equal(first, second)
        with pytest.raises(RuntimeError, match="deterministic"):
            F.adaptive_max_pool2d(x, (4, 3)).sum().backward()
    finally:
        torch.use_deterministic_algorithms(previous)


def test_gpu_beyond_int32_offsets():
    """> 2**31 elements: the kernels switch to int64 offsets."""
    free, _ = torch.cuda.mem_get_info()
    if free < 12 * 2**30:
        pytest.skip("needs 12 GiB of free GPU memory")
    x = torch.randn(1, 2, 2**30 + 7, device="cuda", dtype=torch.float16)
    y, idx = TF.max_pool1d(x, 4, 4, return_indices=True)
    tail = x[..., -(2**12 + 3) :]
    want, want_idx = F.max_pool1d(tail[..., 3:], 4, 4, return_indices=True)
    assert torch.equal(y[..., -want.shape[-1] :], want)
    assert torch.equal(idx[..., -want.shape[-1] :] - (x.shape[-1] - tail.shape[-1] + 3), want_idx)
    g = torch.autograd.grad(TF.avg_pool1d(x.requires_grad_(), 2).float().sum(), x)[0]
    assert g.dtype == torch.float16 and bool((g[..., -4:] == 0.5).all())
