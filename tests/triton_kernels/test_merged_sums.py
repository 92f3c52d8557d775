"""The forward and input gradient of groups with few channels, computed with groups merged:
several groups as one group of their block-diagonal weight (``conv_gemm.merged_sums``,
``merged_weight``; the kernels' ``OWN_IN``, ``OWN_OUT``). Against torch in float64,
NaN-poisoned, on every dimension, padding mode, stride and layout, with bias and activation,
every tap-loop config forced; and a non-finite value in one group — which, times the zeros of
the block-diagonal weight, makes NaN in the other groups' columns of its tile — leaves every
other group's result as torch's (the kernels sum such tiles again one group at a time)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import triton_kernels as K
from tests.triton_kernels.test_conv_gemm import _check, _layout, _poisoned
from triton_kernels import _gemm_common, conv_gemm
from triton_kernels._tuning import Config
from triton_kernels.conv_gemm import merged_sums, merged_weight

pytestmark = [
    pytest.mark.interpret,
    # (the interpreter's dense sums of merged tiles meet infinities times zeros: NaN, by design)
    pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning"),
]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_INF, _NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    "cg_in,cg_out,groups,expected",
    [
        (4, 4, 32, 16),  # ResNeXt-50 layer1
        (8, 8, 32, 1),  # ResNeXt-50 layer2: more than 4 channels per group
        (2, 4, 8, 8),
        (4, 1, 6, 1),  # 6 output channels merged: the input gradient would flatten
        (1, 4, 64, 16),
        (4, 2, 4, 1),
        (4, 4, 4, 4),
        (8, 9, 32, 1),  # more than 8 outputs per group
        (16, 4, 8, 1),  # 16 inputs per group: the tap loop already
    ],
)
def test_which_groups_merge_their_sums(cg_in, cg_out, groups, expected):
    assert merged_sums(cg_in, cg_out, groups) == expected


def test_the_merged_weight_is_block_diagonal_with_channels_innermost():
    w = torch.randn(16, 4, 3, 2, dtype=torch.float64)  # 4 groups of 4 each way, merged 4
    merged = merged_weight(w, 4)
    assert merged.shape == (16, 16, 3, 2)
    assert merged.stride(1) == 1 and merged.stride(3) == 16
    for o in range(16):
        own = o // 4
        torch.testing.assert_close(merged[o, own * 4 : own * 4 + 4], w[o], rtol=0, atol=0)
        others = torch.ones(16, dtype=torch.bool)
        others[own * 4 : own * 4 + 4] = False
        assert (merged[o, others] == 0).all()
    with pytest.raises(ValueError, match="do not merge"):
        merged_weight(torch.randn(36, 4, 3, 3), 4)  # 9 outputs per group


def _forward_reference(x, w, b, *, stride, padding, dilation, pad_mode, groups, activation):
    nd = x.dim() - 2
    pads = [p for p in reversed(padding) for _ in (0, 1)]
    xp = F.pad(x, pads, mode="constant" if pad_mode == "zeros" else pad_mode)
    y = _CONV[nd](xp, w, b, stride=stride, dilation=dilation, groups=groups)
    return {None: y, "relu": F.relu(y), "silu": F.silu(y)}[activation]


def _forward(x, w, b, ref_shape, layout, *, geometry, groups, activation=None, **weights):
    out = _poisoned(ref_shape, x.dtype, "cpu", layout)
    K.conv_forward(
        _layout(x, layout), _layout(w, layout), b, out, groups=groups, allow_tf32=False,
        activation=activation, **geometry, **weights,
    )  # fmt: skip
    return out


def _input_gradient(grad_out, w, x_shape, layout, *, stride, padding, dilation, groups, bias=None):
    grad_in = _poisoned(x_shape, grad_out.dtype, "cpu", layout)
    K.conv_backward_input(
        _layout(grad_out, layout), _layout(w, layout), grad_in, stride=stride, padding=padding,
        dilation=dilation, groups=groups, allow_tf32=False, bias=bias,
    )  # fmt: skip
    return grad_in


def _input_gradient_reference(grad_out, w, x_shape, *, stride, padding, dilation, groups, bias):
    x = torch.zeros(x_shape, dtype=torch.float64, requires_grad=True)
    y = _CONV[len(x_shape) - 2](x, w, None, stride, padding, dilation, groups)
    (grad,) = torch.autograd.grad(y, x, grad_out)
    return grad if bias is None else grad + bias.view(-1, *[1] * (len(x_shape) - 2))


# x shape, C_out, kernel, groups, stride, padding, dilation, pad_mode, bias, activation
_FORWARD = {
    "2d-4x4-relu": ((2, 16, 7, 6), 16, (3, 3), 4, (1, 1), (1, 1), (1, 1), "zeros", True, "relu"),
    "2d-2x4-strided-reflect": ((2, 16, 8, 7), 32, (3, 2), 8, (2, 1), (1, 1), (1, 1), "reflect",
                               False, None),
    "1d-2x2-circular-dilated": ((3, 32, 11), 32, (3,), 16, (1,), (2,), (2,), "circular", True,
                                "silu"),
    "3d-4x4-replicate": ((1, 16, 4, 5, 4), 16, (3, 2, 3), 4, (1, 2, 1), (1, 0, 1), (1, 1, 1),
                         "replicate", False, None),
    "2d-4x4-in-bounds": ((1, 64, 6, 5), 64, (3, 3), 16, (1, 1), (0, 0), (1, 1), "zeros", True,
                         None),
}  # fmt: skip


@pytest.mark.parametrize("layout", ["contig", "channels_last", "strided"])
@pytest.mark.parametrize(
    "x_shape,c_out,kernel,groups,stride,padding,dilation,pad_mode,bias,activation",
    list(_FORWARD.values()),
    ids=list(_FORWARD),
)
def test_merged_forward_matches_torch(
    ran, layout, x_shape, c_out, kernel, groups, stride, padding, dilation, pad_mode, bias,
    activation,
):  # fmt: skip
    g = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=g, dtype=torch.float64)
    w = torch.randn((c_out, x_shape[1] // groups, *kernel), generator=g, dtype=torch.float64)
    b = torch.randn(c_out, generator=g, dtype=torch.float64) if bias else None
    assert merged_sums(w.shape[1], c_out // groups, groups) > 1
    geometry = dict(stride=stride, padding=padding, dilation=dilation, pad_mode=pad_mode)
    ref = _forward_reference(x, w, b, groups=groups, activation=activation, **geometry)
    out = _forward(x, w, b, ref.shape, layout, geometry=geometry, groups=groups,
                   activation=activation)  # fmt: skip
    _check(out, ref)
    assert ran[0].startswith("conv_fwd_tap")  # the merged groups' tap loop, not flattened


# grad_out's shape comes from x shape, C_out, kernel, groups, stride, padding, dilation
_INPUT_GRADIENT = {
    "2d-4x4": ((2, 16, 7, 6), 16, (3, 3), 4, (1, 1), (1, 1), (1, 1), True),
    "2d-4x4-stride-2": ((2, 16, 8, 7), 16, (3, 3), 4, (2, 2), (1, 1), (1, 1), False),
    "1d-2x2-dilated-strided": ((3, 32, 13), 32, (3,), 16, (3,), (2,), (2,), True),
    "3d-4x4": ((1, 32, 3, 4, 4), 32, (3, 3, 2), 8, (1, 1, 2), (1, 1, 0), (1, 1, 1), False),
}


@pytest.mark.parametrize("layout", ["contig", "channels_last", "strided"])
@pytest.mark.parametrize(
    "x_shape,c_out,kernel,groups,stride,padding,dilation,bias",
    list(_INPUT_GRADIENT.values()),
    ids=list(_INPUT_GRADIENT),
)
def test_merged_input_gradient_matches_torch(
    ran, layout, x_shape, c_out, kernel, groups, stride, padding, dilation, bias
):
    g = torch.Generator().manual_seed(1)
    w = torch.randn((c_out, x_shape[1] // groups, *kernel), generator=g, dtype=torch.float64)
    b = torch.randn(x_shape[1], generator=g, dtype=torch.float64) if bias else None
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = _CONV[len(x_shape) - 2](torch.zeros(x_shape, dtype=torch.float64), w, None, **geometry)
    grad_out = torch.randn(y.shape, generator=g, dtype=torch.float64)
    ref = _input_gradient_reference(grad_out, w, x_shape, bias=b, **geometry)
    _check(_input_gradient(grad_out, w, x_shape, layout, bias=b, **geometry), ref)
    assert ran[0].startswith("conv_bwd_input_tap")


def _nan_equal(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """Equal to ``ref`` (to rounding), non-finite values included, position by position."""
    assert torch.equal(ours.isnan(), ref.isnan())
    assert torch.equal(ours.isinf(), ref.isinf())
    finite = ref.isfinite()
    torch.testing.assert_close(ours[finite], ref[finite], rtol=1e-10, atol=1e-10)
    assert torch.equal(ours[~finite & ~ref.isnan()], ref[~finite & ~ref.isnan()])


def test_a_non_finite_input_stays_in_its_group_in_the_forward():
    """An infinite and a NaN input each in one group: torch's results of every other group stay
    finite, and so do ours, though the merged tile's dense sum made them NaN first."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn((2, 16, 6, 5), generator=g, dtype=torch.float64)
    x[0, 5, 2, 3] = _INF  # group 1 of 4 (channels 4-7)
    x[1, 14, 0, 0] = _NAN  # group 3
    w = torch.randn((16, 4, 3, 3), generator=g, dtype=torch.float64)
    b = torch.randn(16, generator=g, dtype=torch.float64)
    geometry = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), pad_mode="zeros")
    ref = _forward_reference(x, w, b, groups=4, activation=None, **geometry)
    assert ref[:, :4].isfinite().all() and not ref.isfinite().all()
    out = _forward(x, w, b, ref.shape, "channels_last", geometry=geometry, groups=4)
    _nan_equal(out, ref)


def test_a_non_finite_gradient_stays_in_its_group_in_the_input_gradient():
    g = torch.Generator().manual_seed(3)
    w = torch.randn((16, 4, 3, 3), generator=g, dtype=torch.float64)
    grad_out = torch.randn((2, 16, 4, 4), generator=g, dtype=torch.float64)
    grad_out[0, 2, 1, 1] = _INF  # group 0
    grad_out[1, 9, 3, 0] = _NAN  # group 2
    geometry = dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=4)
    x_shape = (2, 16, 8, 7)
    ref = _input_gradient_reference(grad_out, w, x_shape, bias=None, **geometry)
    assert ref[:, 4:8].isfinite().all() and not ref.isfinite().all()
    _nan_equal(_input_gradient(grad_out, w, x_shape, "channels_last", **geometry), ref)


def _tap_candidates(table):
    return [
        pytest.param(Config.of(w, s, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk), id=f"{bm}x{bn}x{bk}")
        for bm, bn, bk, s, w in table
    ]


@pytest.mark.parametrize(
    "config,thin",
    [(*p.values, False) for p in _tap_candidates(_gemm_common.TAP_TABLE)]
    + [(*p.values, True) for p in _tap_candidates(_gemm_common.NARROW_TAP_TABLE)],
    ids=[f"wide-{p.id}" for p in _tap_candidates(_gemm_common.TAP_TABLE)]
    + [f"narrow-{p.id}" for p in _tap_candidates(_gemm_common.NARROW_TAP_TABLE)],
)
def test_every_tap_loop_config_sums_each_group_alone_where_needed(ran, force, config, thin):
    """Every tap-loop candidate of the forward and the input gradient, forced, on merged groups
    of 16 channels (the narrow tables' candidates) or 64 (the wide table's) with non-finite
    values in one group: partial tiles, tiles spanning several groups, and tiles summed again
    one group at a time."""
    force([conv_gemm._FWD[False, thin], conv_gemm._BWD_INPUT[False, thin]], config)
    fwd = dict(stride=(1, 1), padding=(1, 0), dilation=(1, 1), pad_mode="zeros")
    bwd = dict(stride=(1, 1), padding=(1, 0), dilation=(1, 1))
    x_shape, groups = ((2, 16, 5, 4), 4) if thin else ((1, 64, 4, 3), 16)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(x_shape, generator=g, dtype=torch.float64)
    x[-1, 1, 2, 1] = _INF
    w = torch.randn((x_shape[1], 4, 3, 3), generator=g, dtype=torch.float64)
    b = torch.randn(x_shape[1], generator=g, dtype=torch.float64)
    ref = _forward_reference(x, w, b, groups=groups, activation=None, **fwd)
    _nan_equal(_forward(x, w, b, ref.shape, "channels_last", geometry=fwd, groups=groups), ref)
    grad_out = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    grad_out[0, -1, 0, 0] = _NAN
    ref_in = _input_gradient_reference(grad_out, w, x_shape, bias=b, groups=groups, **bwd)
    ours = _input_gradient(grad_out, w, x_shape, "channels_last", bias=b, groups=groups, **bwd)
    _nan_equal(ours, ref_in)
    suffix = "_narrow" if thin else ""
    assert ran == [f"conv_fwd_tap{suffix}", f"conv_bwd_input_tap{suffix}"]


def test_merged_and_unmerged_sums_agree(monkeypatch):
    """With merging off, the flattened loops compute the same results (to rounding)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn((2, 32, 6, 7), generator=g, dtype=torch.float64)
    w = torch.randn((32, 4, 3, 3), generator=g, dtype=torch.float64)
    fwd = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), pad_mode="zeros")
    bwd = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=8)
    ref = _forward_reference(x, w, None, groups=8, activation=None, **fwd)
    grad_out = torch.randn(ref.shape, generator=g, dtype=torch.float64)

    def both():
        out = _forward(x, w, None, ref.shape, "channels_last", geometry=fwd, groups=8)
        return out, _input_gradient(grad_out, w, x.shape, "channels_last", **bwd)

    merged = both()
    monkeypatch.setattr(conv_gemm, "merged_sums", lambda *args: 1)
    flat = both()
    for a, b in zip(merged, flat, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_the_launchers_check_merged_weight():
    x, w, y = torch.randn(1, 16, 5, 5), torch.randn(16, 4, 3, 3), torch.empty(1, 16, 5, 5)
    geometry = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), allow_tf32=False)
    K.conv_forward(x, w, None, y, groups=4, pad_mode="zeros", merged_weight=merged_weight(w, 4),
                   **geometry)  # fmt: skip
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1, groups=4), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"merged_weight.*shape"):
        K.conv_forward(x, w, None, y, groups=4, pad_mode="zeros",
                       merged_weight=torch.zeros(16, 8, 3, 3), **geometry)  # fmt: skip
    w36 = torch.randn(36, 4, 3, 3)  # 9 outputs per group: no merge
    with pytest.raises(ValueError, match="merged_weight is for convolutions whose groups merge"):
        K.conv_backward_input(torch.randn(1, 36, 5, 5), w36, x.clone(), groups=4,
                              merged_weight=merged_weight(w, 4), **geometry)  # fmt: skip
    with pytest.raises(ValueError, match="fused maxout"):
        K.conv_forward(x, torch.randn(32, 4, 3, 3), None, y, groups=4, pad_mode="zeros",
                       pieces=2, winner=torch.empty(1, 16, 5, 5, dtype=torch.int64),
                       merged_weight=merged_weight(w, 4), **geometry)  # fmt: skip


def test_merged_sums_twice_differentiable(ran):
    """gradcheck and gradgradcheck (float64, random projections) through the public API of a
    grouped convolution whose forward and input gradient merge groups (4 of 4 each way)."""
    import torchconv_ext
    import torchconv_ext.functional as TF

    g = torch.Generator().manual_seed(6)
    x, w, b = (
        torch.randn(s, generator=g, dtype=torch.float64).requires_grad_()
        for s in ((1, 16, 4, 3), (16, 4, 2, 2), (16,))
    )
    assert merged_sums(4, 4, 4) == 4

    def conv(x, w, b):
        return TF.conv2d(x, w, b, padding=1, groups=4)

    with torchconv_ext.use_backend("triton"):
        assert torch.autograd.gradcheck(conv, (x, w, b), fast_mode=True)
        assert torch.autograd.gradgradcheck(conv, (x, w, b), fast_mode=True)
    assert "conv_fwd_tap_narrow" in ran and "conv_bwd_input_tap_narrow" in ran
