"""The GEMM kernels' launch side: every candidate config computes the right result, and grids
of any size fit one axis.

Under the interpreter each tuner holds one small config; here each GPU candidate is forced in
turn, so whichever config a GPU's tuner keeps after pruning is known to be correct (masks,
partial tiles and the grouped tile order at every block shape), in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

import triton_kernels as K
from tests.triton_kernels.test_conv_gemm import _check, _layout, _poisoned
from triton_kernels import _gemm_common, conv_1x1, conv_gemm
from triton_kernels._indexing import grouped_tile
from triton_kernels._tuning import Config, Tuner

pytestmark = pytest.mark.interpret


def _candidates(table, block_k=None):
    return [
        pytest.param(Config.of(w, s, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk), id=f"{bm}x{bn}x{bk}")
        for bm, bn, bk, s, w in table
        if block_k is None or bk == block_k
    ]


def _inputs(x_shape, c_out, kernel, groups=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=g, dtype=torch.float64)
    w = torch.randn((c_out, x_shape[1] // groups, *kernel), generator=g, dtype=torch.float64)
    b = torch.randn(c_out, generator=g, dtype=torch.float64)
    return x, w, b


def _run_all_three(x, w, b, *, stride, padding, groups=1, weight_only=False):
    """Forward, input gradient (with a transposed-convolution bias) and weight gradient (alone,
    and with the bias gradient) through the dispatching launchers, each against torch
    (``weight_only``: the weight gradient's two launches alone)."""
    nd = x.dim() - 2
    geo = dict(stride=stride, padding=padding, dilation=(1,) * nd, groups=groups,
               allow_tf32=False)  # fmt: skip
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    ref = conv(xr, wr, b, stride=stride, padding=padding, groups=groups)
    gy = torch.randn_like(ref)
    ref_gx, ref_gw = torch.autograd.grad(ref, (xr, wr), gy)
    bias_in = torch.randn(x.shape[1], dtype=torch.float64)

    if not weight_only:
        out = _poisoned(ref.shape, torch.float64, "cpu", "channels_last")
        K.conv_forward(_layout(x, "channels_last"), _layout(w, "channels_last"), b, out,
                       pad_mode="zeros", **geo)  # fmt: skip
        _check(out, ref.detach())
        grad_in = _poisoned(x.shape, torch.float64, "cpu", "contig")
        K.conv_backward_input(_layout(gy, "channels_last"), _layout(w, "channels_last"),
                              grad_in, bias=bias_in, **geo)  # fmt: skip
        _check(grad_in, ref_gx + bias_in.view(-1, *[1] * nd))
    grad_w = _poisoned(w.shape, torch.float64, "cpu", "channels_last")
    K.conv_backward_weight(_layout(x, "channels_last"), _layout(gy, "channels_last"), grad_w,
                           pad_mode="zeros", **geo)  # fmt: skip
    _check(grad_w, ref_gw)
    # ... and with the bias gradient summed beside it (by the first column tile of each row tile)
    with_bias = _poisoned(w.shape, torch.float64, "cpu", "channels_last")
    grad_b = torch.full(b.shape, float("nan"), dtype=torch.float64)
    K.conv_backward_weight(_layout(x, "channels_last"), _layout(gy, "channels_last"), with_bias,
                           grad_bias=grad_b, pad_mode="zeros", **geo)  # fmt: skip
    assert torch.equal(with_bias, grad_w)
    _check(grad_b, gy.sum([0, *range(2, gy.dim())]))


def _weight_config(config: Config) -> Config:
    """``config``'s tile with grad-weight's fixed reduction chunk."""
    return Config.of(
        config.num_warps, config.num_stages, BLOCK_M=config["BLOCK_M"],
        BLOCK_N=config["BLOCK_N"], BLOCK_K=_gemm_common.WEIGHT_BLOCK_K,
    )  # fmt: skip


def _force_loop(force, flat: bool, config: Config, weight_config: Config) -> None:
    """Every tuner of one loop (tap or flattened), narrow groups or not, runs these configs."""
    for thin in (False, True):
        force([conv_gemm._FWD[flat, thin], conv_gemm._BWD_INPUT[flat, thin]], config)
        force([conv_gemm._BWD_WEIGHT[flat, thin]], weight_config)


@pytest.mark.parametrize(
    "config", _candidates(_gemm_common.TAP_TABLE) + _candidates(_gemm_common.NARROW_TAP_TABLE)
)
def test_every_tap_loop_config(force, config):
    _force_loop(force, False, config, _weight_config(config))
    x, w, b = _inputs((2, 20, 9, 7), 18, (3, 3))
    _run_all_three(x, w, b, stride=(2, 1), padding=(1, 1))


@pytest.mark.parametrize(
    "config", _candidates(_gemm_common.FLAT_TABLE) + _candidates(_gemm_common.NARROW_FLAT_TABLE)
)
def test_every_flattened_loop_config(ran, force, config):
    """Groups of 3 input channels (one group of so few would read windows instead:
    ``conv_window``), with 18 and 5 output channels per group: the input gradient's reduction
    (the output channels) is flattened only below 16."""
    _force_loop(force, True, config, _weight_config(config))
    for c_out, stride in ((36, (1, 2)), (10, (1, 2)), (10, (1, 1))):  # (stride 1: one phase)
        x, w, b = _inputs((2, 6, 9, 8), c_out, (3, 3), groups=2)
        _run_all_three(x, w, b, stride=stride, padding=(1, 0), groups=2)
    flattened = {
        "conv_fwd_flat_narrow",
        "conv_bwd_input_flat_narrow",
        "conv_bwd_weight_flat_narrow",
    }
    assert flattened <= set(ran)


@pytest.mark.parametrize("weight_config", _candidates(_gemm_common.NARROW_WEIGHT_TABLE))
@pytest.mark.parametrize("flat", [False, True], ids=["tap", "flat"])
def test_every_narrow_grad_weight_config(ran, force, flat, weight_config):
    """Grad-weight tiles of 16 and 32 columns, on channels that leave partial tiles."""
    config = Config.of(4, 1, BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)
    _force_loop(force, flat, config, weight_config)
    x, w, b = _inputs((2, 6 if flat else 40, 9, 8), 36, (3, 3), groups=2)
    _run_all_three(x, w, b, stride=(1, 2), padding=(1, 0), groups=2, weight_only=True)
    assert f"conv_bwd_weight_{'flat' if flat else 'tap'}_narrow" in ran


@pytest.mark.parametrize(
    "config,weight_config",
    [
        pytest.param(c.values[0], w.values[0], id=f"{c.id}+{w.id}")
        for table, weight_table in (
            (_gemm_common.GEMM_TABLE, _gemm_common.GEMM_WEIGHT_TABLE),
            (_gemm_common.NARROW_GEMM_TABLE, _gemm_common.NARROW_WEIGHT_TABLE),
        )
        for c, w in zip(_candidates(table), _candidates(weight_table))
    ],
)
def test_every_pointwise_gemm_config(force, config, weight_config):
    force(conv_1x1._GEMM.values(), config)
    force(conv_1x1._BWD_WEIGHT.values(), weight_config)
    x, w, b = _inputs((3, 20, 9, 11), 18, (1, 1))  # 297 rows: partial tiles of every BLOCK_M
    _run_all_three(x, w, b, stride=(1, 1), padding=(0, 0))


# --- grids ------------------------------------------------------------------------------------


@triton.jit
def _tile_order_kernel(out_ptr, TILES_M, TILES_N, GROUP_M: tl.constexpr):
    batch, tile_m, tile_n = grouped_tile(tl.program_id(0), TILES_M, TILES_N, GROUP_M)
    pid = tl.program_id(0)
    tl.store(out_ptr + 3 * pid, batch)
    tl.store(out_ptr + 3 * pid + 1, tile_m)
    tl.store(out_ptr + 3 * pid + 2, tile_n)


@pytest.mark.parametrize(
    "tiles_m,tiles_n,batches,group_m", [(5, 3, 4, 2), (8, 1, 1, 8), (3, 7, 2, 8)]
)
def test_grouped_tile_order_visits_every_tile_once(tiles_m, tiles_n, batches, group_m):
    (programs,) = _gemm_common.flat_grid(tiles_m, tiles_n, batches)
    out = torch.full((programs, 3), -1, dtype=torch.int32)
    _tile_order_kernel[(programs,)](out, tiles_m, tiles_n, GROUP_M=group_m)
    seen = {tuple(row) for row in out.tolist()}
    expected = {(b, m, n) for b in range(batches) for m in range(tiles_m) for n in range(tiles_n)}
    assert seen == expected and len(seen) == programs
    # Within a batch, consecutive programs walk GROUP_M row tiles before the next column.
    first = out[: min(group_m, tiles_m), :]
    assert first[:, 2].eq(0).all() and first[:, 1].tolist() == list(range(len(first)))


def test_flat_grid_holds_what_axes_1_and_2_cannot():
    assert _gemm_common.flat_grid(3, 2, 70_000) == (420_000,)
    with pytest.raises(ValueError, match="too large for one launch"):
        _gemm_common.flat_grid(2**16, 2**8, 2**8)


def _grids(monkeypatch, launch):
    """The grids the launchers ask for, for the tuner's own config (nothing is launched)."""
    grids = []

    def capture(self, key, grid, args, constexprs):
        grids.append((self.name, grid(self.configs[0])))

    monkeypatch.setattr(Tuner, "launch", capture)
    launch()
    return grids


@pytest.mark.parametrize(
    "groups,c_in,c_out,variants",
    [
        (1, 40, 32, ["conv_fwd_tap_narrow", "conv_bwd_input_tap", "conv_bwd_weight_tap"]),
        (1, 32, 40, ["conv_fwd_tap", "conv_bwd_input_tap_narrow", "conv_bwd_weight_tap_narrow"]),
        (1, 40, 48, ["conv_fwd_tap", "conv_bwd_input_tap", "conv_bwd_weight_tap"]),
        (8, 64, 256, ["conv_fwd_flat_narrow", "conv_bwd_input_tap_narrow",
                      "conv_bwd_weight_flat"]),
        (32, 64, 512, ["conv_fwd_flat_narrow", "conv_bwd_input_tap_narrow",
                       "conv_bwd_weight_flat_narrow"]),
        # 8 output channels per group or fewer: every GEMM merges groups (16 here)
        (32, 128, 128, ["conv_fwd_tap", "conv_bwd_input_tap", "conv_bwd_weight_tap"]),
        (1, 4, 64, ["conv_fwd_flat", "conv_bwd_input_tap_narrow", "conv_bwd_weight_flat"]),
    ],
)  # fmt: skip
def test_narrow_groups_take_the_narrow_tables(monkeypatch, groups, c_in, c_out, variants):
    """A tile's columns over at most 32 channels of a group take 16- and 32-wide tiles: the
    forward's output channels, the input gradient's input channels, the weight gradient's input
    channels per tap (or flattened taps × channels: 9 × 2 here, not 9 × 8). The dilation keeps
    narrow inputs off the windows (``conv_window``). Groups of few output channels merge
    (``conv_gemm.merged_groups``, ``merged_sums``)."""
    x = torch.empty(1, c_in, 5, 5)
    w = torch.empty(c_out, c_in // groups, 3, 3)
    y = torch.empty(1, c_out, 3, 3)
    geo = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=groups, allow_tf32=False)
    if c_in < 16:
        x, geo["dilation"] = torch.empty(1, c_in, 7, 7), (2, 2)
        y = torch.empty(1, c_out, 3, 3)
    grids = _grids(monkeypatch, lambda: K.conv_forward(x, w, None, y, pad_mode="zeros", **geo))
    grids += _grids(monkeypatch, lambda: K.conv_backward_input(y, w, x, **geo))
    grids += _grids(monkeypatch, lambda: K.conv_backward_weight(x, y, w, pad_mode="zeros", **geo))
    assert [name for name, _ in grids] == variants


def test_narrow_pointwise_convolutions_take_the_narrow_tables(monkeypatch):
    """The 1×1 GEMM as the implicit GEMM: narrow forward columns (32 output channels), wide
    grad-input and grad-weight columns (40 input channels)."""
    x, w, y = torch.empty(1, 40, 4, 4), torch.empty(32, 40, 1, 1), torch.empty(1, 32, 4, 4)
    geo = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, allow_tf32=False)
    grids = _grids(monkeypatch, lambda: K.conv_forward(x, w, None, y, pad_mode="zeros", **geo))
    grids += _grids(monkeypatch, lambda: K.conv_backward_input(y, w, x, **geo))
    grids += _grids(monkeypatch, lambda: K.conv_backward_weight(x, y, w, pad_mode="zeros", **geo))
    assert [name for name, _ in grids] == ["conv1x1_narrow", "conv1x1", "conv1x1_bwd_weight"]


def test_launchers_fold_groups_and_phases_past_65535_into_one_axis(monkeypatch):
    """70 000 groups (or 20 000 groups × 4 stride phases) on tensors of a few elements each:
    every launcher's grid is one axis holding all of them."""
    groups = 70_000
    x = torch.empty(1, 2 * groups, 1, 3)
    w = torch.empty(9 * groups, 2, 1, 2)  # (9 outputs per group: no groups merge)
    y = torch.empty(1, 9 * groups, 1, 2)
    geo = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=groups, allow_tf32=False)
    grids = _grids(monkeypatch, lambda: K.conv_forward(x, w, None, y, pad_mode="zeros", **geo))
    grids += _grids(monkeypatch, lambda: K.conv_backward_input(y, w, x, **geo))
    grids += _grids(monkeypatch, lambda: K.conv_backward_weight(x, y, w, pad_mode="zeros", **geo))
    w1 = torch.empty(groups, 2, 1, 1)
    grids += _grids(
        monkeypatch, lambda: K.conv_forward(x, w1, None, x[:, :groups], pad_mode="zeros", **geo)
    )
    phases = dict(geo, stride=(2, 2), groups=20_000)
    # (an odd width: each program one phase, ``conv_gemm.paired_width``)
    xp, wp = torch.empty(1, 40_000, 2, 3), torch.empty(9 * 20_000, 2, 1, 1)
    yp = torch.empty(1, 9 * 20_000, 1, 2)
    grids += _grids(monkeypatch, lambda: K.conv_backward_input(yp, wp, xp, **phases))
    names = [name for name, _ in grids]
    assert names == ["conv_fwd_flat_narrow", "conv_bwd_input_flat_narrow",
                     "conv_bwd_weight_flat_narrow", "conv1x1_narrow", "conv_bwd_input_flat_narrow"]  # fmt: skip
    for name, grid in grids:
        assert len(grid) == 1, name
    assert grids[-1][1][0] >= 20_000 * 4
    assert all(grid[0] >= groups for _, grid in grids[:-1])


# --- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [(1, 1), (3, 3)], ids=["1x1", "3x3"])
def test_the_launchers_refuse_a_bias_of_another_length(kernel):
    """The kernels read a bias by channel without a bound: one per output channel (the input
    gradient's: one per input channel), else an error before anything is read."""
    x, w, b = _inputs((1, 6, 4, 4), 5, kernel)
    y = torch.empty(1, 5, *(4 - k + 1 for k in kernel), dtype=torch.float64)
    geo = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, allow_tf32=False)
    with pytest.raises(ValueError, match=r"conv_forward: expected bias of shape \(5,\)"):
        K.conv_forward(x, w, b[:4], y, pad_mode="zeros", **geo)
    with pytest.raises(ValueError, match=r"conv_backward_input: expected bias of shape \(6,\)"):
        K.conv_backward_input(y, w, x, bias=b, **geo)
    with pytest.raises(ValueError, match=r"expected grad_bias of shape \(5,\).*got \(6,\)"):
        K.conv_backward_weight(x, y, w, pad_mode="zeros", grad_bias=x.new_empty(6), **geo)
