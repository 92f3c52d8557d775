"""GPU-only checks of locally connected / tiled convolution: real shapes, reduced precision
against the float64 definition, bitwise-repeatable gradients."""

from __future__ import annotations

import pytest
import torch

from tests.references.local import local_inputs, output_size, reference_local
from torchconv_ext import functional as TF

pytestmark = pytest.mark.gpu

# Error allowed relative to the result's largest magnitude (fp32 without TF32).
GPU_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}

# (op, N, C_in, C_out, size, kernel, tiles or "local", stride, padding, groups, padding_mode)
CASES = [
    (TF.conv2d_local, 32, 64, 64, (14, 14), (3, 3), "local", 1, 1, 1, "zeros"),
    (TF.conv2d_tiled, 16, 32, 64, (28, 28), (3, 3), (2, 2), 2, "same", 2, "reflect"),
    (TF.conv1d_local, 8, 16, 32, (100,), (5,), "local", 2, 2, 1, "circular"),
    (TF.conv3d_tiled, 4, 16, 16, (8, 10, 10), (3, 3, 3), (2, 1, 3), 1, 1, 1, "replicate"),
]


def _close(got, want, dtype):
    scale = want.abs().max().item()
    torch.testing.assert_close(got.double(), want, atol=GPU_TOL[dtype] * scale, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0].__name__}-{c[6]}")
def test_gpu_matches_definition(case, dtype):
    op, n, ci, co, size, k, tiles, s, p, g, mode = case
    nd = len(size)
    lead = output_size(size, k, s, p, 1) if tiles == "local" else tiles
    x64, w64, b64 = (t.detach().cuda() for t in local_inputs(nd, n, ci, co, size, k, lead, g))
    x, w, b = (t.to(dtype).requires_grad_() for t in (x64, w64, b64))
    x64, w64, b64 = (t.to(dtype).double().requires_grad_() for t in (x64, w64, b64))
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        y = op(x, w, b, s, p, 1, g, padding_mode=mode)
        ref = reference_local(x64, w64, b64, s, p, 1, g, mode)
        _close(y, ref, dtype)
        gy = torch.randn_like(ref).to(dtype)
        grads = torch.autograd.grad(y, [x, w, b], gy)
        refs = torch.autograd.grad(ref, [x64, w64, b64], gy.double())
        for got, want in zip(grads, refs):
            _close(got, want, dtype)
    finally:
        torch.backends.cudnn.allow_tf32 = previous


def test_gpu_weight_gradient_is_bitwise_repeatable():
    x, w, b = (t.detach().cuda() for t in local_inputs(2, 16, 32, 32, (16, 16), (3, 3), (2, 2), 1))
    w.requires_grad_()
    gy = torch.randn(16, 32, 16, 16, device="cuda", dtype=x.dtype)
    first, second = (
        torch.autograd.grad(TF.conv2d_tiled(x, w, b, padding=1), w, gy)[0] for _ in range(2)
    )
    assert torch.equal(first, second)
