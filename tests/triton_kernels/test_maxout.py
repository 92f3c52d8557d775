"""Maxout launchers (interpreter on CPU): both tile orientations and the int64-offset path,
against the definition."""

from __future__ import annotations

import pytest
import torch

import triton_kernels.maxout as kernels
from tests.references.maxout import reference_maxout

pytestmark = pytest.mark.interpret


@pytest.mark.parametrize("int64", [False, True])
def test_both_tile_orientations(int64, monkeypatch, triton_device):
    """Channels inner (channels-last-like strides) and positions inner, through strided views."""
    if int64:
        monkeypatch.setattr(kernels, "needs_int64", lambda *tensors: True)
    x = torch.randn(3, 12, 5, dtype=torch.float64, device=triton_device)
    ref, ref_idx = reference_maxout(x.cpu(), 3, 1)
    for channels_inner in (False, True):
        shape = (3, 5, 4) if channels_inner else (3, 4, 5)
        out = torch.full(shape, float("nan"), dtype=x.dtype, device=x.device)
        idx = torch.full(shape, -1, dtype=torch.int64, device=x.device)
        if channels_inner:
            out, idx = out.transpose(1, 2), idx.transpose(1, 2)
        kernels.maxout_forward(x, out, idx, pieces=3)
        torch.testing.assert_close(out.cpu(), ref, atol=0, rtol=0)
        assert torch.equal(idx.cpu(), ref_idx)
        gy = torch.randn(3, 4, 5, dtype=x.dtype, device=x.device)
        gi = torch.full_like(x, float("nan"))
        kernels.maxout_backward(gy, idx, gi, pieces=3)
        expected = torch.zeros_like(x).unflatten(1, (4, 3))
        expected.scatter_(2, idx.unsqueeze(2), gy.unsqueeze(2))
        torch.testing.assert_close(gi, expected.flatten(1, 2), atol=0, rtol=0)
