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


@pytest.mark.parametrize(
    ("x_shape", "channels_inner"), [((17, 12, 130), False), ((2, 210, 40), True)]
)
def test_several_tiles_along_both_axes_of_the_flat_grid(x_shape, channels_inner, triton_device):
    x = torch.randn(x_shape, dtype=torch.float64, device=triton_device)
    ref, ref_idx = reference_maxout(x.cpu(), 3, 1)
    a, c, b = ref.shape
    out = torch.full((a, b, c) if channels_inner else (a, c, b), float("nan"), dtype=x.dtype)
    out = out.to(x.device).transpose(1, 2) if channels_inner else out.to(x.device)
    idx = torch.full_like(out, -1, dtype=torch.int64)
    kernels.maxout_forward(x, out, idx, pieces=3)
    torch.testing.assert_close(out.cpu(), ref, atol=0, rtol=0)
    assert torch.equal(idx.cpu(), ref_idx)


def test_positions_past_65535_tiles_fit_one_grid_axis(monkeypatch):
    """Triton's second and third grid axes hold 65535 programs: the launch is one flat axis
    (its grid checked, nothing launched)."""
    grids = []

    class Recording:
        def __getitem__(self, grid):
            grids.append(grid)
            return lambda *args, **kwargs: None

    monkeypatch.setattr(kernels, "_maxout_fwd_kernel", Recording())
    b = 65536 * 128 + 1  # more inner tiles than an axis after the first holds
    x = torch.zeros(1, 4, 1).expand(1, 4, b)
    out, idx = torch.zeros(1, 2, 1).expand(1, 2, b), torch.zeros(1, 2, 1, dtype=torch.int64)
    kernels.maxout_forward(x, out, idx.expand(1, 2, b), pieces=2)
    assert len(grids) == 1 and len(grids[0]) == 1 and grids[0][0] > 65535, grids
