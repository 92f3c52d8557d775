"""The bias gradient the weight-gradient launchers sum with the weight's (``grad_bias``), against
torch in float64, on every path ``conv_backward_weight`` takes.

The GEMMs (implicit, 1×1, the stems' windows) sum it in the first column tile of each row tile
from the chunks of ``grad_out`` they load for the weight's; depthwise convolutions reduce it
separately. Either way the weight gradient is bitwise the one computed without a bias, split-K
partials included, and every output is NaN-poisoned before the launch.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import triton_kernels as K
from tests.triton_kernels.test_conv_gemm import _check, _layout, _poisoned
from triton_kernels import _gemm_common, conv_gemm

pytestmark = pytest.mark.interpret

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _weight_and_bias_gradients(x, c_out, kernel, *, stride, padding, groups, layout, device,
                               dtype=torch.float64):  # fmt: skip
    """``(grad_w, grad_b, ref_w, ref_b, grad_w_alone)``: the launch's two gradients, torch's, and
    the weight gradient launched without a bias."""
    nd = x.dim() - 2
    g = torch.Generator().manual_seed(1)
    w = torch.randn((c_out, x.shape[1] // groups, *kernel), generator=g, dtype=torch.float64)
    wr = w.clone().requires_grad_()
    y = _CONV[nd](x, wr, None, stride=stride, padding=padding, groups=groups)
    grad_out = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (ref_w,) = torch.autograd.grad(y, wr, grad_out)
    ref_b = grad_out.sum([0, *range(2, grad_out.dim())])

    geo = dict(stride=stride, padding=padding, dilation=(1,) * nd, groups=groups,
               pad_mode="zeros", allow_tf32=False)  # fmt: skip
    xl = _layout(x.to(device, dtype), layout)
    gl = _layout(grad_out.to(device, dtype), layout)
    grad_w = _poisoned(w.shape, dtype, device, layout)
    grad_b = torch.full((c_out,), float("nan"), dtype=dtype, device=device)
    K.conv_backward_weight(xl, gl, grad_w, grad_bias=grad_b, **geo)
    alone = _poisoned(w.shape, dtype, device, layout)
    K.conv_backward_weight(xl, gl, alone, **geo)
    return grad_w, grad_b, ref_w, ref_b, alone


# name: (x shape, c_out, kernel, stride, padding, groups, the weight-gradient kernel it runs)
_NARROW = "conv_bwd_weight_tap_narrow"
_PATHS = {
    "tap": ((2, 20, 7, 6), 18, (3, 3), (1, 1), (1, 1), 1, _NARROW),
    "tap-wide": ((2, 40, 5, 6), 70, (3, 3), (2, 1), (1, 0), 1, "conv_bwd_weight_tap"),
    "flat-grouped": ((2, 6, 7, 6), 8, (3, 3), (1, 1), (1, 1), 2, "conv_bwd_weight_flat_narrow"),
    "pointwise": ((2, 20, 9), 24, (1,), (1,), (0,), 1, "conv1x1_bwd_weight_narrow"),
    "stem-windows": ((1, 3, 9, 8), 8, (3, 3), (1, 1), (1, 1), 1, _NARROW),
    "3d-windows": ((2, 3, 4, 5, 4), 5, (3, 3, 3), (1, 1, 1), (1, 1, 1), 1, _NARROW),
    "depthwise": ((2, 4, 7, 6), 8, (3, 3), (1, 1), (1, 1), 4, None),
}


@pytest.mark.parametrize("layout", ["contig", "channels_last"])
@pytest.mark.parametrize(
    "x_shape,c_out,kernel,stride,padding,groups,kernel_name",
    list(_PATHS.values()),
    ids=list(_PATHS),
)
def test_bias_gradient_on_every_path(
    ran, triton_device, layout, x_shape, c_out, kernel, stride, padding, groups, kernel_name
):
    x = torch.randn(x_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grad_w, grad_b, ref_w, ref_b, alone = _weight_and_bias_gradients(
        x, c_out, kernel, stride=stride, padding=padding, groups=groups, layout=layout,
        device=triton_device,
    )  # fmt: skip
    _check(grad_w, ref_w)
    _check(grad_b, ref_b)
    assert torch.equal(grad_w, alone)  # the bias's sums leave the weight's untouched
    if kernel_name is not None:
        assert ran == [kernel_name] * 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("pointwise", [False, True], ids=["implicit", "1x1"])
def test_split_k_sums_the_bias_partials_too(monkeypatch, triton_device, dtype, pointwise):
    """Several reduction splits: each writes its partial bias gradient to the fp32 (fp64)
    workspace beside the weight's, summed once; two runs are bitwise equal."""
    monkeypatch.setattr(_gemm_common, "SPLIT_MIN_POSITIONS", 8)
    x = torch.randn((2, 5, 6, 5), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kernel, padding = ((1, 1), (0, 0)) if pointwise else ((3, 3), (1, 1))
    assert _gemm_common.choose_split(1, 2 * 6 * 5) > 1
    geometry = dict(stride=(1, 1), padding=padding, groups=1, layout="channels_last")
    runs = [
        _weight_and_bias_gradients(x, 6, kernel, **geometry, device=triton_device, dtype=dtype)
        for _ in range(2)
    ]
    grad_w, grad_b, ref_w, ref_b, alone = runs[0]
    assert not grad_b.isnan().any() and grad_b.dtype == dtype
    tolerance = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-2}[dtype]
    torch.testing.assert_close(grad_b.double().cpu(), ref_b, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(grad_w.double().cpu(), ref_w, rtol=tolerance, atol=tolerance)
    assert torch.equal(grad_w, alone)
    assert torch.equal(runs[1][1], grad_b) and torch.equal(runs[1][0], grad_w)


def test_no_input_channels_still_give_the_bias_gradient(triton_device):
    """An empty weight (no input channel per group) has no tile to sum in: the bias gradient is
    still every output gradient summed."""
    grad_out = torch.randn(2, 3, 4, 4, dtype=torch.float64, device=triton_device)
    x = torch.randn(2, 0, 4, 4, dtype=torch.float64, device=triton_device)
    grad_w = torch.empty(3, 0, 3, 3, dtype=torch.float64, device=triton_device)
    grad_b = torch.full((3,), float("nan"), dtype=torch.float64, device=triton_device)
    K.conv_backward_weight(
        x, grad_out, grad_w, grad_bias=grad_b, stride=(1, 1), padding=(1, 1), dilation=(1, 1),
        groups=1, pad_mode="zeros", allow_tf32=False,
    )  # fmt: skip
    _check(grad_b, grad_out.sum([0, 2, 3]).cpu())


def test_wide_operands_leave_the_bias_gradient_to_a_separate_sum(monkeypatch, triton_device):
    """On a GPU the kernels sum the bias gradient of 16-bit operands only (``sums_bias``): for
    fp32 and fp64 the launcher takes one reduction of its own, exactly as torch does, and hands
    the kernels none."""
    assert K.sums_bias(16, 1, torch.float32)  # (the interpreter sums every dtype in the kernels)
    monkeypatch.setattr(_gemm_common, "INTERPRET", False)
    assert K.sums_bias(16, 1, torch.bfloat16) and K.sums_bias(16, 2, torch.float16)
    assert not K.sums_bias(16, 1, torch.float32) and not K.sums_bias(16, 1, torch.float64)
    assert not K.sums_bias(4, 4, torch.bfloat16)  # depthwise: always a reduction
    x = torch.randn((2, 20, 7, 6), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    handed = []
    monkeypatch.setattr(
        conv_gemm, "bias_target", lambda grad_bias, n: handed.append(grad_bias) or None
    )
    grad_w, grad_b, ref_w, ref_b, alone = _weight_and_bias_gradients(
        x, 18, (3, 3), stride=(1, 1), padding=(1, 1), groups=1, layout="channels_last",
        device=triton_device,
    )  # fmt: skip
    assert handed and all(h is None for h in handed)
    _check(grad_w, ref_w)
    _check(grad_b, ref_b)
