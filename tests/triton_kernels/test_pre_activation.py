"""The epilogue's second store: ``conv_forward`` / ``conv_backward_input`` with
``pre_activation=z`` write ``act(acc)`` to the output and ``acc`` itself (the bias added) to
``z``, at the output's offsets, in every route. Each case launches three times, the outputs
NaN-filled first: with the activation, with the activation and ``z``, and with no activation;
the first two outputs are the same bit for bit, and ``z`` is the third (one accumulator, stored
twice), which is torch's convolution (float64). A spy checks each case's route."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import triton_kernels as K
from tests.triton_kernels.launches import launched_kernels
from triton_kernels import conv_1x1, conv_depthwise, conv_gemm

pytestmark = pytest.mark.interpret

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

# The kernel each route launches.
_ROUTES = {
    "gemm": "_conv_fwd_kernel",
    "merged": "_conv_fwd_kernel",
    "windows": "_conv_fwd_kernel",
    "1x1": "_conv1x1_kernel",
    "depthwise": "_conv_depthwise_fwd_kernel",
    "rows": "_conv_depthwise_rows_kernel",
    "gemm-input": "_conv_bwd_input_kernel",
    "paired-input": "_conv_bwd_input_kernel",
    "1x1-input": "_conv1x1_kernel",
    "depthwise-input": "_conv_depthwise_bwd_input_kernel",
    "rows-input": "_conv_depthwise_rows_kernel",
}

# route, x shape (the convolution's input), C_out, kernel, stride, padding, groups, layout,
# activation, alpha, PReLU weight per channel
_ARGS = "route,x_shape,c_out,kernel,stride,padding,groups,layout,act,alpha,prelu"
CASES = [
    pytest.param("gemm", (2, 20, 5, 4), 18, (3, 3), (1, 1), (1, 1), 1, "channels_last", "silu",
                 0.0, False, id="gemm-channels-last-silu"),
    pytest.param("gemm", (1, 16, 4, 8), 16, (3, 3), (1, 1), (1, 1), 1, "contig", "gelu", 0.0,
                 False, id="gemm-nchw-rows-gelu"),
    pytest.param("merged", (2, 16, 5, 4), 16, (3, 3), (1, 1), (1, 1), 4, "channels_last", "mish",
                 0.0, False, id="gemm-merged-groups-mish"),
    pytest.param("1x1", (2, 20, 3, 4), 24, (1, 1), (1, 1), (0, 0), 1, "contig", "elu", 0.7,
                 False, id="1x1-nchw-elu"),
    pytest.param("windows", (2, 3, 6, 6), 4, (3, 3), (1, 1), (1, 1), 1, "contig", "hardswish",
                 0.0, False, id="windows-stem-hardswish"),
    pytest.param("depthwise", (2, 4, 5, 6), 8, (3, 3), (2, 1), (1, 1), 4, "channels_last",
                 "leaky_relu", -0.1, False, id="depthwise-tiles-leaky-negative"),
    pytest.param("rows", (2, 3, 4, 8), 6, (3, 3), (1, 1), (1, 1), 3, "contig", "prelu", 0.0,
                 True, id="depthwise-rows-prelu"),
    pytest.param("gemm-input", (2, 20, 7, 6), 18, (3, 3), (2, 2), (1, 1), 1, "channels_last",
                 "silu", 0.0, False, id="transposed-gemm-phases-silu"),
    pytest.param("paired-input", (1, 6, 6, 8), 5, (3, 3), (2, 2), (1, 1), 1, "contig", "gelu_tanh",
                 0.0, False, id="transposed-gemm-paired-rows-gelu-tanh"),
    pytest.param("1x1-input", (2, 8, 3, 3), 6, (1, 1), (1, 1), (0, 0), 2, "channels_last",
                 "prelu", 0.0, True, id="transposed-1x1-groups-prelu"),
    pytest.param("depthwise-input", (2, 4, 5, 6), 4, (3, 2), (2, 1), (1, 0), 4,
                 "channels_last", "hardsigmoid", 0.0, False, id="transposed-depthwise-tiles"),
    pytest.param("rows-input", (2, 3, 4, 8), 6, (3, 3), (1, 1), (1, 1), 3, "contig", "mish",
                 0.0, False, id="transposed-depthwise-rows-mish"),
]  # fmt: skip


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "contig":
        return t.contiguous()
    return t.movedim(1, -1).contiguous().movedim(-1, 1)  # channels fastest, for any rank


def _nan_like(t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(t, float("nan"))


def _launches(monkeypatch) -> list[str]:
    tuners = (conv_depthwise._FWD, conv_depthwise._BWD_INPUT, *conv_1x1._GEMM.values(),
              *conv_gemm._FWD.values(), *conv_gemm._BWD_INPUT.values())  # fmt: skip
    return launched_kernels(monkeypatch, conv_depthwise, tuners)


@pytest.mark.parametrize(_ARGS, CASES)
def test_the_epilogue_stores_the_pre_activation_beside_the_activation(
    monkeypatch, route, x_shape, c_out, kernel, stride, padding, groups, layout, act, alpha,
    prelu,
):  # fmt: skip
    g = torch.Generator().manual_seed(0)
    f64 = dict(generator=g, dtype=torch.float64)
    w = _layout(torch.randn((c_out, x_shape[1] // groups, *kernel), **f64), layout)
    geometry = dict(stride=stride, padding=padding, dilation=(1,) * len(kernel), groups=groups)
    conv = _CONV[len(kernel)]
    transposed = route.endswith("-input")
    if transposed:  # the input gradient of the convolution: a transposed convolution
        src = torch.randn(conv(torch.zeros(x_shape), w.float(), None, **geometry).shape, **f64)
        out = torch.empty(x_shape, dtype=torch.float64)
        channels = x_shape[1]
    else:
        src = torch.randn(x_shape, **f64)
        out = conv(src, w, None, **geometry)
        channels = c_out
    src, out = _layout(src, layout), _layout(out, layout)
    if route == "merged":
        assert conv_gemm.merged_sums(x_shape[1] // groups, c_out // groups, groups) > 1
    if route == "paired-input":  # both w phases of a row in one program, stored as NCHW rows
        assert conv_gemm.paired_width(out.unsqueeze(2), (1, *stride), False) > 0
    bias = torch.randn(channels, **f64)
    act_weight = torch.randn(channels, **f64) if prelu else None

    def launch(y, activation, z=None):
        epilogue = dict(activation=activation, alpha=alpha, act_weight=act_weight)
        if transposed:
            K.conv_backward_input(src, w, y, **geometry, allow_tf32=False, bias=bias,
                                  pre_activation=z, **epilogue)  # fmt: skip
        else:
            K.conv_forward(src, w, bias, y, **geometry, pad_mode="zeros", allow_tf32=False,
                           pre_activation=z, **epilogue)  # fmt: skip

    activated, plain = _nan_like(out), _nan_like(out)
    launch(activated, act)
    y, z = _nan_like(out), _nan_like(out)
    launched = _launches(monkeypatch)
    launch(y, act, z)
    assert launched == [_ROUTES[route]]
    launch(plain, None)
    torch.testing.assert_close(y, activated, rtol=0, atol=0)
    torch.testing.assert_close(z, plain, rtol=0, atol=0)
    if transposed:
        padding_out = [
            size - ((o - 1) * s - 2 * p + k)
            for size, o, s, p, k in zip(x_shape[2:], src.shape[2:], stride, padding, kernel)
        ]
        t_conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
        want = t_conv[len(kernel)](src, w, bias, stride, padding, padding_out, groups)
    else:
        want = conv(src, w, bias, **geometry)
    torch.testing.assert_close(z, want, rtol=1e-10, atol=1e-10)


def test_a_pre_activation_needs_an_activation_and_the_outputs_strides():
    x, w = torch.randn(1, 4, 5, 5), torch.randn(8, 4, 3, 3)
    geometry = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    y = torch.empty(1, 8, 5, 5)

    def launch(z, activation="silu"):
        K.conv_forward(x, w, None, y, **geometry, pad_mode="zeros", allow_tf32=False,
                       activation=activation, pre_activation=z)  # fmt: skip

    with pytest.raises(ValueError, match="pre_activation is given without an activation"):
        launch(torch.empty_like(y), activation=None)
    with pytest.raises(ValueError, match="pre_activation must have the output's shape, strides"):
        launch(torch.empty_like(y, memory_format=torch.channels_last))
    with pytest.raises(ValueError, match="pre_activation must have the output's shape, strides"):
        launch(torch.empty_like(y, dtype=torch.float64))


def test_a_16_bit_activation_is_taken_of_the_stored_pre_activation():
    """In 16 bits the training form's output is the activation of the ``z`` it stored (rounded
    once to float16, then activated in float32), as torch's activation of a stored convolution
    is — the ``z`` its backward reads."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 5, 4, generator=g).half()
    w = (torch.randn(16, 16, 3, 3, generator=g) / 4).half()
    geometry = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    y, z = torch.full((2, 2, 16, 5, 4), float("nan"), dtype=torch.float16)
    K.conv_forward(x, w, None, y, **geometry, pad_mode="zeros", allow_tf32=False,
                   activation="silu", pre_activation=z)  # fmt: skip
    torch.testing.assert_close(z.float(), F.conv2d(x.float(), w.float(), padding=1),
                               rtol=2e-3, atol=2e-3)  # fmt: skip
    torch.testing.assert_close(y, F.silu(z.float()).half())
