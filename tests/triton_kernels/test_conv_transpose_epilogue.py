"""Transposed convolutions with a fused activation: ``conv_backward_input(..., bias, activation)``
is ``act(conv_transpose(grad_out, w) + bias)``, the activation applied in every route's epilogue
(the depthwise row segments and position tiles, the 1×1 GEMM, the windows, the implicit GEMM:
several stride phases, groups, merged groups). Against torch's ``conv_transpose*d`` then its
activation, in float64 (and float32), the result NaN-filled before the launch; a spy checks
that each case took the route it is meant to check."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import triton_kernels as K
from tests.triton_kernels.launches import launched_kernels
from triton_kernels import conv_1x1, conv_depthwise, conv_gemm
from triton_kernels.conv_gemm import merged_sums

pytestmark = [
    pytest.mark.interpret,
    # (the interpreter's dense sums of merged tiles meet infinities times zeros: NaN, by design)
    pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning"),
]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_ACT = {
    "relu": lambda y, alpha, weight: F.relu(y),
    "leaky_relu": lambda y, alpha, weight: F.leaky_relu(y, alpha),
    "prelu": lambda y, alpha, weight: F.prelu(y, weight),
    "elu": lambda y, alpha, weight: F.elu(y, alpha),
    "gelu": lambda y, alpha, weight: F.gelu(y),
    "gelu_tanh": lambda y, alpha, weight: F.gelu(y, approximate="tanh"),
    "silu": lambda y, alpha, weight: F.silu(y),
    "hardswish": lambda y, alpha, weight: F.hardswish(y),
    "hardsigmoid": lambda y, alpha, weight: F.hardsigmoid(y),
    "mish": lambda y, alpha, weight: F.mish(y),
    "sigmoid": lambda y, alpha, weight: torch.sigmoid(y),
}
_TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}

# The kernel each route launches.
_ROUTES = {
    "rows": "_conv_depthwise_rows_kernel",
    "depthwise": "_conv_depthwise_bwd_input_kernel",
    "1x1": "_conv1x1_kernel",
    "windows": "_conv_fwd_kernel",  # (the forward's tap loop over windows of grad_out)
    "gemm": "_conv_bwd_input_kernel",
    "merged": "_conv_bwd_input_kernel",
}

# route, grad_in shape (the convolution's input), C_out (grad_out's channels), kernel, stride,
# padding, dilation, groups, layout (of grad_out, w, grad_in), activation, alpha, PReLU weight
# ("channel": one per channel of grad_in, every other element of a buffer; "one"), bias, dtype
_ARGS = "route,x_shape,c_out,kernel,stride,padding,dilation,groups,layout,act,alpha,aw,bias,dtype"
_F64, _F32 = torch.float64, torch.float32
CASES = [
    pytest.param("rows", (2, 3, 4, 8), 6, (3, 3), (1, 1), (1, 1), (1, 1), 3, "contig", "prelu",
                 0.0, "channel", True, _F64, id="depthwise-rows-mult2-prelu"),
    pytest.param("depthwise", (2, 4, 5, 6), 4, (3, 2), (2, 1), (1, 0), (1, 2), 4,
                 "channels_last", "leaky_relu", -0.1, None, True, _F64,
                 id="depthwise-tiles-strided-leaky"),
    pytest.param("depthwise", (1, 3, 4, 5), 6, (3, 3), (1, 1), (1, 1), (1, 1), 3,
                 "channels_last", "hardsigmoid", 0.0, None, True, _F32,
                 id="depthwise-tiles-mult2-hardsigmoid-fp32"),
    pytest.param("1x1", (2, 20, 3, 4), 24, (1, 1), (1, 1), (0, 0), (1, 1), 1, "contig", "gelu",
                 0.0, None, True, _F64, id="1x1-nchw-gelu"),
    pytest.param("1x1", (2, 8, 3, 3), 6, (1, 1), (1, 1), (0, 0), (1, 1), 2, "channels_last",
                 "prelu", 0.0, "one", True, _F64, id="1x1-groups-prelu-one"),
    pytest.param("windows", (2, 6, 5, 6), 3, (3, 3), (1, 1), (1, 1), (1, 1), 1, "contig", "mish",
                 0.0, None, True, _F64, id="windows-mish"),
    pytest.param("windows", (2, 5, 9), 1, (5,), (1,), (2,), (1,), 1, "contig", "gelu_tanh", 0.0,
                 None, True, _F64, id="windows-1d-gelu-tanh"),
    pytest.param("gemm", (2, 20, 7, 6), 18, (3, 3), (2, 2), (1, 1), (1, 1), 1, "channels_last",
                 "silu", 0.0, None, True, _F64, id="gemm-stride2-phases-silu"),
    pytest.param("gemm", (1, 4, 7, 8), 5, (2, 2), (3, 3), (0, 0), (1, 1), 1, "channels_last",
                 "sigmoid", 0.0, None, False, _F64, id="gemm-stride3-tapless-phases-sigmoid"),
    pytest.param("gemm", (2, 8, 5, 5), 6, (3, 3), (1, 2), (1, 1), (1, 1), 2, "channels_last",
                 "prelu", 0.0, "channel", True, _F64, id="gemm-groups-prelu"),
    pytest.param("merged", (2, 16, 5, 4), 16, (3, 3), (1, 1), (1, 1), (1, 1), 4,
                 "channels_last", "relu", 0.0, None, True, _F64, id="gemm-merged-groups-relu"),
    pytest.param("gemm", (1, 18, 4, 5), 16, (3, 3), (1, 1), (1, 1), (1, 1), 1, "channels_last",
                 "hardswish", 0.0, None, True, _F32, id="gemm-hardswish-fp32"),
    pytest.param("gemm", (1, 4, 3, 4, 4), 6, (2, 3, 2), (1, 2, 1), (0, 1, 1), (1, 1, 1), 1,
                 "channels_last", "elu", 0.7, None, True, _F64, id="gemm-3d-elu"),
]  # fmt: skip


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "contig":
        return t.contiguous()
    return t.movedim(1, -1).contiguous().movedim(-1, 1)  # channels fastest, for any rank


def _operands(x_shape, c_out, kernel, stride, padding, dilation, groups, aw, bias, seed=0):
    """grad_out (the output of a convolution of an ``x_shape`` input), the weight, the bias and
    the PReLU weight, in float64."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn((c_out, x_shape[1] // groups, *kernel), generator=g, dtype=torch.float64)
    out = _CONV[len(kernel)](torch.zeros(x_shape, dtype=torch.float64), w, None, stride,
                             padding, dilation, groups)  # fmt: skip
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    b = torch.randn(x_shape[1], generator=g, dtype=torch.float64) if bias else None
    act_weight = None
    if aw == "channel":  # slopes of both signs, read through a stride
        act_weight = torch.randn(2 * x_shape[1], generator=g, dtype=torch.float64)[::2]
    elif aw == "one":
        act_weight = torch.tensor([-0.3], dtype=torch.float64)
    return grad_out, w, b, act_weight


def _launches(monkeypatch) -> list[str]:
    """Names of the kernels the routes launch from now on (each tuner spied on by itself)."""
    tuners = (conv_depthwise._BWD_INPUT, *conv_1x1._GEMM.values(), *conv_gemm._FWD.values(),
              *conv_gemm._BWD_INPUT.values())  # fmt: skip
    return launched_kernels(monkeypatch, conv_depthwise, tuners)


def _reference(grad_out, w, bias, x_shape, *, stride, padding, dilation, groups, act, alpha,
               act_weight):  # fmt: skip
    """``act(conv_transpose(grad_out, w, bias))`` with the output padding that gives
    ``x_shape``."""
    output_padding = [
        size - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
        for size, o, s, p, d, k in zip(
            x_shape[2:], grad_out.shape[2:], stride, padding, dilation, w.shape[2:]
        )
    ]
    y = _CONV_T[grad_out.dim() - 2](
        grad_out, w, bias, stride, padding, output_padding, groups, dilation
    )
    return _ACT[act](y, alpha, act_weight)


@pytest.mark.parametrize(_ARGS, CASES)
def test_transposed_convolution_applies_the_activation(
    monkeypatch, route, x_shape, c_out, kernel, stride, padding, dilation, groups, layout,
    act, alpha, aw, bias, dtype,
):  # fmt: skip
    grad_out, w, b, act_weight = _operands(
        x_shape, c_out, kernel, stride, padding, dilation, groups, aw, bias
    )
    if route == "merged":
        assert merged_sums(w.shape[1], c_out // groups, groups) > 1
        # An infinity in one group: its tile is summed again group by group (and stored with
        # the activation there too); the other groups' results stay finite.
        grad_out[0, 5, 1, 1] = float("inf")
    cast = lambda t: None if t is None else t.to(dtype)
    grad_out, w, b, act_weight = map(cast, (grad_out, w, b, act_weight))
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    ref = _reference(
        *(None if t is None else t.double() for t in (grad_out, w, b)), x_shape, **geometry,
        act=act, alpha=alpha, act_weight=None if act_weight is None else act_weight.double(),
    )  # fmt: skip
    grad_in = _layout(torch.full(x_shape, float("nan"), dtype=dtype), layout)
    launched = _launches(monkeypatch)
    K.conv_backward_input(
        _layout(grad_out, layout), _layout(w, layout), grad_in, **geometry, allow_tf32=False,
        bias=b, activation=act, alpha=alpha, act_weight=act_weight,
    )  # fmt: skip
    assert launched == [_ROUTES[route]]
    if route == "merged":
        assert ref[:, :4].isfinite().all() and not ref.isfinite().all()
    torch.testing.assert_close(grad_in.double(), ref, equal_nan=route == "merged", **_TOL[dtype])


# route: grad_in shape, C_out, kernel, padding, groups
_REFUSED = {
    "depthwise": ((1, 4, 4, 4), 4, (3, 3), (1, 1), 4),
    "1x1": ((1, 4, 4, 4), 8, (1, 1), (0, 0), 1),
    "windows": ((1, 4, 4, 4), 8, (3, 3), (1, 1), 1),
    "gemm": ((1, 4, 4, 4), 16, (3, 3), (1, 1), 1),
}


@pytest.mark.parametrize("route", sorted(_REFUSED))
def test_an_unknown_activation_is_refused(route):
    x_shape, c_out, kernel, padding, groups = _REFUSED[route]
    geometry = dict(stride=(1, 1), padding=padding, dilation=(1, 1), groups=groups)
    grad_out, w, _, _ = _operands(x_shape, c_out, kernel, **geometry, aw=None, bias=False)
    with pytest.raises(ValueError, match="unknown epilogue activation 'tanh'"):
        K.conv_backward_input(
            _layout(grad_out, "channels_last"), _layout(w, "channels_last"),
            torch.empty(x_shape, dtype=torch.float64), **geometry, allow_tf32=False,
            activation="tanh",
        )  # fmt: skip
