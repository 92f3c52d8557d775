"""GPU-only maxout checks: a real channels-last shape with ties and NaNs, every dtype exact."""

from __future__ import annotations

import pytest
import torch

from tests.references.maxout import reference_maxout
from torchconv_ext import functional as TF

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_maxout_exact(dtype):
    torch.manual_seed(0)
    x = torch.randint(-3, 4, (16, 96, 28, 28), device="cuda").to(dtype)
    x[0, :5] = float("nan")
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    y = TF.maxout(x, 3)
    ref, _ = reference_maxout(x.detach(), 3, 1)
    torch.testing.assert_close(y, ref, atol=0, rtol=0, equal_nan=True)
    assert y.is_contiguous(memory_format=torch.channels_last)
    gy = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, x, gy)
    (g_ref,) = torch.autograd.grad(reference_maxout(x, 3, 1)[0], x, gy)
    torch.testing.assert_close(g, g_ref, atol=0, rtol=0)
