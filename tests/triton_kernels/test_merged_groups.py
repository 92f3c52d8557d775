"""The weight gradient of groups with few channels, computed with groups merged: several groups
as one dense group on the tap loop, of which each group keeps its own diagonal block
(``conv_gemm.merged_groups``, the kernel's ``OWN_IN``, ``OWN_OUT``). Against torch in float64,
NaN-poisoned, on every dimension, padding mode and layout, with the bias gradient and split-K
partials, every tap-loop config forced; and a non-finite input in one group leaves every other
group's gradient as torch's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import triton_kernels as K
from tests.triton_kernels.test_conv_gemm import _check, _layout, _poisoned
from triton_kernels import _common, _gemm_common, conv_gemm
from triton_kernels._tuning import Config
from triton_kernels.conv_gemm import merged_groups

pytestmark = pytest.mark.interpret

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@pytest.mark.parametrize(
    "cg_in,cg_out,groups,expected",
    [
        (4, 4, 32, 16),  # ResNeXt-50 layer1: 16 groups of 4 make 64 channels
        (2, 2, 32, 32),
        (3, 4, 12, 12),  # (the largest divisor of 12 within 64 / 4 = 16 channels)
        (4, 1, 6, 6),
        (8, 8, 32, 8),  # ResNeXt-50 layer2
        (8, 9, 32, 1),  # more than 8 outputs per group: the flattened loop
        (16, 4, 8, 1),  # 16 inputs per group: the tap loop already
        (3, 3, 2, 1),  # 2 merged groups would still flatten (6 inputs)
        (4, 4, 7, 7),
        (1, 4, 64, 16),
    ],
)
def test_which_groups_merge(cg_in, cg_out, groups, expected):
    assert merged_groups(cg_in, cg_out, groups) == expected


def test_only_tensor_core_products_merge(monkeypatch):
    """Merging trades tensor-core work for issued instructions: not where products run on CUDA
    cores (fp32 without TF32, fp64). The interpreter merges every dtype (the tests' float64)."""
    assert conv_gemm.merges_groups(torch.float64, False)
    monkeypatch.setattr(conv_gemm, "INTERPRET", False)
    monkeypatch.setattr(_common, "INTERPRET", False)
    assert conv_gemm.merges_groups(torch.bfloat16, False)
    assert conv_gemm.merges_groups(torch.float16, False)
    assert conv_gemm.merges_groups(torch.float32, True)  # TF32
    assert not conv_gemm.merges_groups(torch.float32, False)
    assert not conv_gemm.merges_groups(torch.float64, True)


def _gradients(x, c_out, kernel, groups, *, stride, padding, dilation, pad_mode, bias):
    """torch's weight (and bias) gradient of ``conv(pad(x), w)``, and ``grad_out``."""
    nd = x.dim() - 2
    g = torch.Generator().manual_seed(1)
    w = torch.randn((c_out, x.shape[1] // groups, *kernel), generator=g, dtype=torch.float64)
    w.requires_grad_()
    pads = [p for p in reversed(padding) for _ in (0, 1)]
    xp = F.pad(x, pads, mode="constant" if pad_mode == "zeros" else pad_mode)
    y = _CONV[nd](xp, w, None, stride=stride, dilation=dilation, groups=groups)
    grad_out = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (ref_w,) = torch.autograd.grad(y, w, grad_out)
    ref_b = grad_out.sum([0, *range(2, y.dim())]) if bias else None
    return w.detach(), grad_out, ref_w, ref_b


def _launch(x, grad_out, w_shape, groups, layout, *, bias, **geometry):
    grad_w = _poisoned(w_shape, x.dtype, "cpu", layout)
    grad_b = torch.full((w_shape[0],), float("nan"), dtype=x.dtype) if bias else None
    K.conv_backward_weight(
        _layout(x, layout), _layout(grad_out, layout), grad_w, groups=groups, allow_tf32=False,
        grad_bias=grad_b, **geometry,
    )  # fmt: skip
    return grad_w, grad_b


# x shape, C_out, kernel, groups, stride, padding, dilation, pad_mode, bias
_CASES = {
    "2d-4x4": ((2, 16, 7, 6), 16, (3, 3), 4, (1, 1), (1, 1), (1, 1), "zeros", True),
    "2d-2x2-strided-reflect": ((2, 16, 8, 7), 16, (3, 2), 8, (2, 1), (1, 1), (1, 1), "reflect",
                               False),
    "1d-2x1-circular-dilated": ((3, 32, 11), 16, (3,), 16, (1,), (2,), (2,), "circular", True),
    "3d-4x3-replicate": ((1, 16, 4, 5, 4), 12, (3, 2, 3), 4, (1, 2, 1), (1, 0, 1), (1, 1, 1),
                         "replicate", False),
}  # fmt: skip


@pytest.mark.parametrize("layout", ["contig", "channels_last", "strided"])
@pytest.mark.parametrize(
    "x_shape,c_out,kernel,groups,stride,padding,dilation,pad_mode,bias",
    list(_CASES.values()),
    ids=list(_CASES),
)
def test_merged_weight_gradient_matches_torch(
    ran, layout, x_shape, c_out, kernel, groups, stride, padding, dilation, pad_mode, bias
):
    x = torch.randn(x_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w, grad_out, ref_w, ref_b = _gradients(
        x, c_out, kernel, groups, stride=stride, padding=padding, dilation=dilation,
        pad_mode=pad_mode, bias=bias,
    )  # fmt: skip
    assert merged_groups(x.shape[1] // groups, c_out // groups, groups) > 1
    geometry = dict(stride=stride, padding=padding, dilation=dilation, pad_mode=pad_mode)
    grad_w, grad_b = _launch(x, grad_out, w.shape, groups, layout, bias=bias, **geometry)
    _check(grad_w, ref_w)
    if bias:
        _check(grad_b, ref_b)
    assert ran == ["conv_bwd_weight_tap_narrow"]  # the merged groups' tap loop, not flattened


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["fp64", "fp16"])
def test_merged_split_k_partials_are_correct_and_repeatable(monkeypatch, dtype):
    monkeypatch.setattr(_gemm_common, "SPLIT_MIN_POSITIONS", 8)
    x = torch.randn((2, 16, 7, 6), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    geometry = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), pad_mode="zeros")
    w, grad_out, ref_w, ref_b = _gradients(x, 16, (3, 3), 4, bias=True, **geometry)
    lowp = None
    if dtype == torch.float16:
        wl = w.to(dtype).requires_grad_()
        y = F.conv2d(x.to(dtype), wl, None, padding=1, groups=4)
        lowp = torch.autograd.grad(y, wl, grad_out.to(dtype))[0]
    xl, gl = x.to(dtype), grad_out.to(dtype)
    runs = [_launch(xl, gl, w.shape, 4, "channels_last", bias=True, **geometry) for _ in range(2)]
    _check(runs[0][0], ref_w, lowp)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_a_non_finite_input_stays_in_its_group():
    """The dense gradient's off-diagonal blocks mix groups: an infinite input channel of one
    group makes NaN there, which must not reach any other group's gradient."""
    x = torch.randn((2, 16, 5, 5), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x[0, 5, 2, 3] = float("inf")  # group 1 of 4 (channels 4-7)
    geometry = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), pad_mode="zeros")
    w, grad_out, ref_w, _ = _gradients(x, 16, (3, 3), 4, bias=False, **geometry)
    grad_w, _ = _launch(x, grad_out, w.shape, 4, "contig", bias=False, **geometry)
    others = torch.ones(16, dtype=torch.bool)
    others[4:8] = False
    assert ref_w[others].isfinite().all()
    torch.testing.assert_close(grad_w[others], ref_w[others], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_w[~others], ref_w[~others], equal_nan=True)


def test_merged_groups_run_through_the_public_api(triton_device):
    """A grouped convolution's weight gradient through ``torchconv_ext`` (the op's operands and
    memory formats, the tape's replays on the third call)."""
    import torchconv_ext
    import torchconv_ext.functional as TF

    x = torch.randn((2, 16, 6, 5), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    w = torch.randn((16, 4, 3, 3), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    b = torch.randn(16, dtype=torch.float64)
    xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
    F.conv2d(xr, wr, br, padding=1, groups=4).square().sum().backward()
    for _ in range(3):
        xt, wt, bt = (t.to(triton_device, copy=True).requires_grad_() for t in (x, w, b))
        with torchconv_ext.use_backend("triton"):
            TF.conv2d(xt, wt, bt, padding=1, groups=4).square().sum().backward()
        _check(wt.grad.cpu(), wr.grad)
        _check(bt.grad.cpu(), br.grad)
        _check(xt.grad.cpu(), xr.grad)


def test_merged_groups_twice_differentiable(ran):
    """gradcheck and gradgradcheck (float64, random projections) of a grouped convolution whose
    weight gradient merges groups (4 groups of 4 inputs and 2 outputs), with a bias."""
    import torchconv_ext
    import torchconv_ext.functional as TF

    g = torch.Generator().manual_seed(8)
    x, w, b = (
        torch.randn(s, generator=g, dtype=torch.float64).requires_grad_()
        for s in ((1, 16, 4, 3), (8, 4, 2, 2), (8,))
    )
    assert merged_groups(4, 2, 4) == 4

    def conv(x, w, b):
        return TF.conv2d(x, w, b, padding=1, groups=4)

    with torchconv_ext.use_backend("triton"):
        assert torch.autograd.gradcheck(conv, (x, w, b), fast_mode=True)
        assert torch.autograd.gradgradcheck(conv, (x, w, b), fast_mode=True)
    assert "conv_bwd_weight_tap_narrow" in ran  # the merged weight gradient ran


def test_merged_and_flattened_loops_agree(monkeypatch):
    """With merging off, the flattened loop computes the same gradient (to rounding)."""
    x = torch.randn((2, 16, 6, 7), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    geometry = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), pad_mode="zeros")
    w, grad_out, ref_w, _ = _gradients(x, 8, (3, 3), 8, bias=False, **geometry)
    merged, _ = _launch(x, grad_out, w.shape, 8, "channels_last", bias=False, **geometry)
    monkeypatch.setattr(conv_gemm, "merged_groups", lambda *args: 1)
    flat, _ = _launch(x, grad_out, w.shape, 8, "channels_last", bias=False, **geometry)
    _check(merged, ref_w)
    _check(flat, ref_w)
    torch.testing.assert_close(merged, flat, rtol=1e-12, atol=1e-12)


def _weight_candidates(table):
    return [
        pytest.param(
            Config.of(w, s, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=_gemm_common.WEIGHT_BLOCK_K),
            id=f"{bm}x{bn}",
        )
        for bm, bn, _, s, w in table
    ]


@pytest.mark.parametrize(
    "config",
    _weight_candidates(_gemm_common.TAP_TABLE)
    + _weight_candidates(_gemm_common.NARROW_WEIGHT_TABLE),
)
def test_every_tap_loop_config_stores_the_own_blocks(ran, force, config):
    """Every grad-weight candidate of the tap loop, forced, on merged groups of 16 (narrow
    tables) and 64 channels (wide): partial tiles, and tiles spanning several groups' blocks."""
    force([conv_gemm._BWD_WEIGHT[False, thin] for thin in (False, True)], config)
    geometry = dict(stride=(1, 1), padding=(1, 0), dilation=(1, 1), pad_mode="zeros")
    for x_shape, groups in (((2, 16, 5, 4), 4), ((1, 64, 4, 3), 16)):
        x = torch.randn(x_shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        w, grad_out, ref_w, ref_b = _gradients(x, x_shape[1], (3, 3), groups, bias=True, **geometry)
        grad_w, grad_b = _launch(x, grad_out, w.shape, groups, "channels_last", bias=True,
                                 **geometry)  # fmt: skip
        _check(grad_w, ref_w)
        _check(grad_b, ref_b)
    assert ran == ["conv_bwd_weight_tap_narrow", "conv_bwd_weight_tap"]
