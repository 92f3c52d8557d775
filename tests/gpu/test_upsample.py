"""GPU-only upsampling checks: against torch's CUDA kernels (which apply the same float32 rule),
backward vs the reference, large shapes, bf16, > 2**31 elements."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.references.upsample import (
    MODES,
    layout,
    random_geometries,
    reference,
    torch_geometry,
    torch_index,
)
from torchconv_ext import functional as TF

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_gpu_matches_torch_cuda(dtype):
    """Bitwise equal to torch's CUDA kernels (the same float32 rule), strides included."""
    torch.manual_seed(0)
    for nd, shape in ((1, (4, 64, 300)), (2, (4, 64, 37, 50)), (3, (2, 16, 9, 17, 12))):
        for lay in ("contiguous", "channels_last", "strided"):
            x = layout(torch.randn(shape, dtype=dtype, device="cuda"), lay)
            geometries = [dict(scale_factor=2), dict(scale_factor=4), dict(size=shape[2:])]
            for _, o, s, _exact in random_geometries(8, seed=nd, max_size=60):
                if s > 0 and min(int(n * s) for n in shape[2:]) >= 1:
                    geometries.append(dict(scale_factor=s))
                elif s == 0:
                    geometries.append(dict(size=o))
            for kwargs in geometries:
                for mode in MODES:
                    ours = TF.interpolate(x, mode=mode, **kwargs)
                    theirs = F.interpolate(x, mode=mode, **kwargs)
                    assert torch.equal(ours, theirs) and ours.stride() == theirs.stride(), kwargs


def test_gpu_backward_vs_reference():
    torch.manual_seed(0)
    x = layout(torch.randn(2, 32, 13, 17, dtype=torch.float64), "channels_last")
    for kwargs in (dict(scale_factor=2), dict(scale_factor=(2.3, 0.7)), dict(size=(40, 31))):
        for mode, exact in MODES.items():
            xc = x.cuda().requires_grad_()
            y = TF.interpolate(xc, mode=mode, **kwargs)
            go = torch.randn_like(y)
            (g,) = torch.autograd.grad(y, xc, go)
            xr = x.clone().requires_grad_()
            expected = reference(xr, *torch_geometry(x, **kwargs), exact)
            assert torch.equal(y.cpu(), expected)
            (g_ref,) = torch.autograd.grad(expected, xr, go.cpu())
            torch.testing.assert_close(g.cpu(), g_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", [2.0, 2.0001])
def test_gpu_past_int32_offsets(scale):
    """Outputs past 2**31 elements (uint8 keeps them near 2 GiB): int64 offsets, both paths."""
    x = torch.randint(0, 255, (1, 1, 2**15, 2**14), dtype=torch.uint8, device="cuda")
    y = TF.interpolate(x, scale_factor=scale)
    assert y.numel() >= 2**31
    rows = torch.tensor([0, 1, 12345, y.shape[2] - 2, y.shape[2] - 1])
    src_h = torch_index(x.shape[2], y.shape[2], scale, False)[rows]
    src_w = torch_index(x.shape[3], y.shape[3], scale, False)
    expected = x[0, 0].cpu()[src_h][:, src_w]
    assert torch.equal(y[0, 0, rows.cuda()].cpu(), expected)
