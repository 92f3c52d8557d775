"""Locally connected / tiled convolution launchers (interpreter on CPU): the int64-offset path
and a launch into strided outputs, against the float64 definition."""

from __future__ import annotations

import pytest
import torch

import triton_kernels.conv_local as kernels
from tests.references.local import local_inputs, reference_local

pytestmark = pytest.mark.interpret


def _args(padding=(1,)):
    return dict(stride=(2,), padding=padding, dilation=(1,), groups=2, allow_tf32=False)


def test_int64_offsets_and_strided_outputs(monkeypatch, triton_device):
    """The int64 path (chosen for tensors past 2**31 elements) gives the definition's results,
    written through the strides of non-contiguous outputs."""
    monkeypatch.setattr(kernels, "needs_int64", lambda *tensors: True)
    x, w, b = (t.detach().to(triton_device) for t in local_inputs(1, 2, 4, 4, (7,), (3,), (2,), 2))
    ref = reference_local(x, w, b, 2, 1, 1, 2, "reflect")  # (2, 4, 4)
    y = torch.full((2, 4, 8), float("nan"), dtype=x.dtype, device=x.device)[..., ::2]
    kernels.local_conv_forward(x, w, b, y, pad_mode="reflect", **_args())
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=1e-10)

    x.requires_grad_(), w.requires_grad_()
    gy = torch.randn_like(ref)
    ref_gx, ref_gw = torch.autograd.grad(reference_local(x, w, None, 2, 1, 1, 2), [x, w], gy)
    gx = torch.full((2, 7, 4), float("nan"), dtype=x.dtype, device=x.device).transpose(1, 2)
    kernels.local_conv_backward_input(gy, w.detach(), gx, **_args())
    torch.testing.assert_close(gx, ref_gx, atol=1e-12, rtol=1e-10)
    gw = torch.full_like(w, float("nan")).detach()
    kernels.local_conv_backward_weight(x.detach(), gy, gw, pad_mode="zeros", **_args())
    torch.testing.assert_close(gw, ref_gw, atol=1e-12, rtol=1e-10)


def test_launchers_fold_tiles_and_groups_past_65535_into_one_axis(monkeypatch):
    """70 000 groups of a tiled convolution on tensors of a few elements each: every
    launcher's grid is one axis holding all of them (nothing is launched)."""
    from triton_kernels._tuning import Tuner

    grids = []
    monkeypatch.setattr(
        Tuner, "launch", lambda self, key, grid, *a: grids.append(grid(self.configs[0]))
    )
    groups = 70_000
    x, y = torch.empty(1, groups, 1, 2), torch.empty(1, groups, 1, 2)
    w = torch.empty(1, 2, groups, 1, 1, 1)  # (1, 2) tiles, one channel in and out per group
    geo = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=groups, allow_tf32=False)
    kernels.local_conv_forward(x, w, None, y, pad_mode="zeros", **geo)
    kernels.local_conv_backward_input(y, w, x, **geo)
    kernels.local_conv_backward_weight(x, y, w, pad_mode="zeros", **geo)
    assert len(grids) == 3
    assert all(len(grid) == 1 and grid[0] >= 2 * groups for grid in grids), grids


def test_every_tile_of_every_group_and_tile_is_computed(triton_device):
    """More row and column tiles than one sweep of ``grouped_tile`` takes, over several groups
    and tiles: each program's (tile, group, row tile, column tile) is its own, as the results
    show against the definition, forward and both gradients."""
    torch.manual_seed(0)
    args = dict(stride=(1,), padding=(1,), dilation=(1,), groups=3, allow_tf32=False)
    # 8·20 rows per tile and 20 output channels per group: under the interpreter's 16×16
    # tiles, 10 row tiles (past one sweep of 8) and 2 column tiles
    inputs = local_inputs(1, 8, 6, 60, (40,), (3,), (2,), 3, bias=False)
    x, w = (t.detach().to(triton_device) for t in inputs[:2])
    ref = reference_local(x, w, None, 1, 1, 1, 3)
    y = torch.full_like(ref, float("nan"))
    kernels.local_conv_forward(x, w, None, y, pad_mode="zeros", **args)
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=1e-10)
    gy = torch.randn_like(ref)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    ref_gx, ref_gw = torch.autograd.grad(reference_local(xr, wr, None, 1, 1, 1, 3), [xr, wr], gy)
    gx = torch.full_like(x, float("nan"))
    kernels.local_conv_backward_input(gy, w, gx, **args)
    torch.testing.assert_close(gx, ref_gx, atol=1e-12, rtol=1e-10)
    gw = torch.full_like(w, float("nan"))
    kernels.local_conv_backward_weight(x, gy, gw, pad_mode="zeros", **args)
    torch.testing.assert_close(gw, ref_gw, atol=1e-12, rtol=1e-10)


def test_an_input_gradient_of_2_31_positions_bounds_its_rows_in_64_bits(monkeypatch):
    """The input gradient bounds its rows by N · positions: past 2**31 that product must be
    computed in 64 bits (in 32 it wraps negative and masks every row off). Its first program is
    launched with a batch size that large, over a real first image (nothing past it is read or
    written)."""
    from triton_kernels import _tuning

    real_launch = _tuning.launch
    positions = 64
    tile = {}

    def first_program_of_a_huge_batch(kernel, grid, args, kwargs):
        tile.update(rows=kwargs["BLOCK_M"], columns=kwargs["BLOCK_N"])
        assert tile["rows"] <= positions and tile["columns"] >= 2  # (image 0, every channel)
        args = (*args[:3], 2**31 // positions + 1, *args[4:])
        real_launch(kernel, (1,), args, {**kwargs, "USE_INT64": True})

    monkeypatch.setattr(_tuning, "launch", first_program_of_a_huge_batch)
    x, w, _ = local_inputs(1, 1, 2, 3, (positions,), (3,), (1,), 1, bias=False)
    geometry = dict(stride=(1,), padding=(1,), dilation=(1,), groups=1)
    gy = torch.randn(1, 3, positions, dtype=torch.float64)
    (expected,) = torch.autograd.grad(reference_local(x, w, None, 1, 1, 1, 1), x, gy)
    gx = torch.full_like(x, float("nan")).detach()
    kernels.local_conv_backward_input(gy, w.detach(), gx, allow_tf32=False, **geometry)
    torch.testing.assert_close(gx[..., : tile["rows"]], expected[..., : tile["rows"]])
