"""1×1 stride-1 convolutions (the plain GEMM kernels) and fused transposed-convolution biases,
through the dispatching launchers, against torch in float64.

A spy on the tuners records which kernel variant each launch ran, so every test also proves
the path it means to check was taken (the 1×1 GEMM, or the implicit GEMM it falls back to).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import triton_kernels as K
from tests.triton_kernels.test_conv_gemm import _check, _layout, _make, _poisoned
from triton_kernels import _gemm_common

pytestmark = pytest.mark.interpret

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _batch_slice(t: torch.Tensor) -> torch.Tensor:
    """The same values as every other image of a twice-as-large batch (rows not flat)."""
    big = torch.full((2 * t.shape[0], *t.shape[1:]), float("nan"), dtype=t.dtype)
    big[::2] = t
    return big[::2]


def _arrange(t: torch.Tensor, layout: str) -> torch.Tensor:
    return _batch_slice(t) if layout == "batch_slice" else _layout(t, layout)


# x shape, C_out, groups, layout of x / grad_out, layout of the result
CASES = [
    pytest.param((2, 20, 5, 6), 24, 1, "contig", "contig", id="2d"),
    pytest.param((2, 20, 5, 6), 24, 2, "channels_last", "channels_last", id="2d-cl-groups2"),
    pytest.param((1, 18, 7), 5, 1, "contig", "channels_last", id="1d-n1-mixed"),
    pytest.param((2, 6, 3, 2, 4), 8, 2, "channels_last", "contig", id="3d-mixed"),
    pytest.param((3, 20, 4, 5), 17, 1, "batch_slice", "channels_last", id="batch-slice"),
]


@pytest.mark.parametrize("x_shape,c_out,groups,layout,out_layout", CASES)
def test_pointwise_forward_runs_the_gemm(ran, x_shape, c_out, groups, layout, out_layout):
    x, w, b = _make(x_shape, c_out, (1,) * (len(x_shape) - 2), groups, torch.float64, bias=True)
    ref = _CONV[x.dim() - 2](x, w, b, groups=groups)
    out = _poisoned(ref.shape, torch.float64, "cpu", out_layout)
    geo = dict(stride=(1,) * (x.dim() - 2), padding=(0,) * (x.dim() - 2), groups=groups)
    K.conv_forward(_arrange(x, layout), _layout(w, layout if layout != "batch_slice" else
                   "contig"), b, out, dilation=(1,) * (x.dim() - 2), pad_mode="zeros",
                   allow_tf32=False, **geo)  # fmt: skip
    assert ran == ["conv1x1_narrow"]
    _check(out, ref)


@pytest.mark.parametrize("x_shape,c_out,groups,layout,out_layout", CASES)
def test_pointwise_backward_input_with_bias_runs_the_gemm(
    ran, x_shape, c_out, groups, layout, out_layout
):
    """The input gradient, plus a bias per input channel: a 1×1 transposed convolution."""
    nd = len(x_shape) - 2
    x, w, _ = _make(x_shape, c_out, (1,) * nd, groups, torch.float64)
    grad_out = torch.randn(x.shape[0], c_out, *x.shape[2:], dtype=torch.float64)
    bias = torch.randn(x.shape[1], dtype=torch.float64)
    ref = _CONV_T[nd](grad_out, w, bias, groups=groups)
    grad_in = _poisoned(x.shape, torch.float64, "cpu", out_layout)
    K.conv_backward_input(
        _arrange(grad_out, layout), w, grad_in, stride=(1,) * nd, padding=(0,) * nd,
        dilation=(1,) * nd, groups=groups, allow_tf32=False, bias=bias,
    )  # fmt: skip
    assert ran == ["conv1x1_narrow"]
    _check(grad_in, ref)


@pytest.mark.parametrize("split", [False, True], ids=["one-pass", "split-k"])
@pytest.mark.parametrize("x_shape,c_out,groups,layout,out_layout", CASES)
def test_pointwise_backward_weight_runs_the_gemm(
    ran, monkeypatch, split, x_shape, c_out, groups, layout, out_layout
):
    if split:
        monkeypatch.setattr(_gemm_common, "SPLIT_MIN_POSITIONS", 2)
    nd = len(x_shape) - 2
    x, w, _ = _make(x_shape, c_out, (1,) * nd, groups, torch.float64)
    w.requires_grad_()
    y = _CONV[nd](x, w, groups=groups)
    grad_out = torch.randn_like(y)
    (ref,) = torch.autograd.grad(y, w, grad_out)
    positions = grad_out.numel() // c_out
    assert (_gemm_common.choose_split(1, positions) > 1) == split
    results = []
    for _ in range(2):
        grad_w = _poisoned(w.shape, torch.float64, "cpu", out_layout)
        K.conv_backward_weight(
            _arrange(x, layout), _arrange(grad_out, layout), grad_w, stride=(1,) * nd,
            padding=(0,) * nd, dilation=(1,) * nd, groups=groups, pad_mode="zeros",
            allow_tf32=False,
        )  # fmt: skip
        results.append(grad_w)
    assert ran == ["conv1x1_bwd_weight_narrow"] * 2
    _check(results[0], ref)
    assert torch.equal(results[0], results[1])  # fixed summation order


def test_positions_that_do_not_collapse_fall_back_to_the_implicit_gemm(ran):
    """A crop of wider rows: the spatial dims do not collapse into one stride."""
    x, w, b = _make((2, 20, 4, 5), 6, (1, 1), 1, torch.float64, bias=True)
    ref = F.conv2d(x, w, b)
    out = _poisoned(ref.shape, torch.float64, "cpu", "contig")
    wide = torch.full((2, 20, 4, 7), float("nan"), dtype=torch.float64)
    wide[..., :5] = x
    K.conv_forward(
        wide[..., :5], w, b, out, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
        pad_mode="zeros", allow_tf32=False,
    )  # fmt: skip
    assert ran == ["conv_fwd_tap_narrow"]
    _check(out, ref)


def test_every_other_column_still_collapses(ran):
    """Every other element of rows twice as wide: one position stride (2), still the GEMM."""
    x, w, b = _make((2, 20, 4, 5), 6, (1, 1), 1, torch.float64, bias=True)
    ref = F.conv2d(x, w, b)
    out = _poisoned(ref.shape, torch.float64, "cpu", "strided")
    K.conv_forward(
        _layout(x, "strided"), w, b, out, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
        groups=1, pad_mode="zeros", allow_tf32=False,
    )  # fmt: skip
    assert ran == ["conv1x1_narrow"]
    _check(out, ref)


@pytest.mark.parametrize(
    "stride,padding", [((2, 2), (0, 0)), ((1, 1), (1, 1))], ids=["strided", "padded"]
)
def test_pointwise_kernels_with_stride_or_padding_run_the_implicit_gemm(ran, stride, padding):
    x, w, b = _make((1, 20, 5, 5), 4, (1, 1), 1, torch.float64, bias=True)
    ref = F.conv2d(x, w, b, stride=stride, padding=padding)
    out = _poisoned(ref.shape, torch.float64, "cpu", "channels_last")
    K.conv_forward(
        x, w, b, out, stride=stride, padding=padding, dilation=(1, 1), groups=1,
        pad_mode="zeros", allow_tf32=False,
    )  # fmt: skip
    assert ran == ["conv_fwd_tap_narrow"]
    _check(out, ref)


# --- transposed-convolution bias, fused into each input-gradient kernel ----------------------


@pytest.mark.parametrize(
    "y_shape,c_in,kernel,stride,padding,groups,variant",
    [
        ((2, 20, 3, 4), 6, (3, 3), (2, 2), (1, 1), 1, "conv_bwd_input_tap_narrow"),
        ((1, 4, 5, 3), 6, (2, 3), (2, 1), (0, 1), 2, "conv_bwd_input_flat_narrow"),
        # stride 3: the positions tiles (the row kernel adds the bias too: test_conv_depthwise.py)
        ((1, 6, 4), 3, (2,), (3,), (1,), 3, "conv_depthwise_bwd_input"),
    ],
    ids=["tap", "flat-groups", "depthwise"],
)
def test_transposed_convolution_bias_is_added_in_the_kernel(
    ran, y_shape, c_in, kernel, stride, padding, groups, variant
):
    """``conv_backward_input`` with a bias is a transposed convolution with its bias: compared
    with torch's, including inputs no tap reaches (stride > 1), which hold the bias alone."""
    nd = len(y_shape) - 2
    g = torch.Generator().manual_seed(0)
    y = torch.randn(y_shape, generator=g, dtype=torch.float64)
    w = torch.randn((y_shape[1], c_in // groups, *kernel), generator=g, dtype=torch.float64)
    bias = torch.randn(c_in, generator=g, dtype=torch.float64)
    ref = _CONV_T[nd](y, w, bias, stride=stride, padding=padding, groups=groups)
    grad_in = _poisoned(ref.shape, torch.float64, "cpu", "channels_last")
    K.conv_backward_input(
        y, w, grad_in, stride=stride, padding=padding, dilation=(1,) * nd, groups=groups,
        allow_tf32=False, bias=bias,
    )  # fmt: skip
    assert ran == [variant]
    _check(grad_in, ref)
