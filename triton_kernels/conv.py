"""Convolution launchers: choose the direct depthwise kernels, the 1×1 GEMM, the windowed tap
loop of narrow convolutions (stems) or the implicit GEMM."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._common import channels_inner
from ._gemm_common import sums_bias as _gemm_sums_bias
from .conv_1x1 import conv1x1_backward_input, conv1x1_backward_weight, conv1x1_forward, is_pointwise
from .conv_depthwise import (
    depthwise_conv_backward_input,
    depthwise_conv_backward_weight,
    depthwise_conv_forward,
)
from .conv_gemm import (
    gemm_conv_backward_input,
    gemm_conv_backward_weight,
    gemm_conv_forward,
    sums_merge,
)
from .conv_window import (
    window_conv_backward_input,
    window_conv_backward_weight,
    window_conv_forward,
    windows,
)


def _is_depthwise(c_in: int, groups: int) -> bool:
    # One input channel per group: a GEMM would waste almost all of each tensor-core tile.
    return groups > 1 and groups == c_in


def prefers_channels_last(c_in: int, groups: int) -> bool:
    """Whether a convolution with ``c_in`` input channels in ``groups`` runs on tensor-core
    GEMMs, which load channels-inner operands (channels-last activations, weights with the input
    channel innermost) as 16-byte vectors and any other layout element by element. Callers that
    own a layout convert to it; the depthwise kernels read either layout at full width."""
    return not _is_depthwise(c_in, groups)


def reads_channels_inner_weight(c_in: int, groups: int, activation: torch.Tensor) -> bool:
    """Whether a convolution with ``c_in`` input channels in ``groups`` over ``activation``
    (its input; for its input gradient, the output's gradient) reads its weight fastest with
    the channels innermost (``(C·mult, 1, *K)``, unit stride along dim 0): a depthwise
    convolution on channels-last activations tiles channels innermost and loads each tap's
    weights for a vector of channels — 16-byte vectors from that layout, one element at a time
    from torch's. Callers may repack a weight so once and pass it while it does not change."""
    return _is_depthwise(c_in, groups) and channels_inner(activation)  # (any rank)


def _positions_divisible(sizes: Sequence[int], by: int) -> bool:
    return math.prod(sizes) % by == 0


def stores_nchw(
    sizes: Sequence[int],
    stride: Sequence[int],
    *,
    input_gradient: bool = False,
    merged: bool = False,
) -> bool:
    """Whether a tensor-core convolution of that ``stride`` stores an NCHW result — its output,
    or with ``input_gradient`` its input gradient — of spatial ``sizes`` straight from its tiles
    as vectors of at least 8 bytes. A tile's rows are flat positions: the GEMMs store runs of 4,
    8 or 16 of them in one image when that divides the positions per image
    (``_gemm_common.flat_alignment``). An input gradient at another stride than 1 has strided
    rows, but at stride 2 along w a program computes both w phases of its rows and stores them
    interleaved as whole rows (``conv_gemm.paired_width``): runs of 4 or more where that divides
    the width, unless groups merge (``merged``: ``reads_merged``). Otherwise callers that return
    NCHW store channels-last and convert: the NCHW stores would be one per element."""
    if input_gradient and any(s != 1 for s in stride):
        return stride[-1] == 2 and sizes[-1] % 4 == 0 and not merged
    return _positions_divisible(sizes, 4)


def reads_windows(
    channels: int,
    groups: int,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    *,
    input_gradient: bool = False,
) -> bool:
    """Whether a convolution reads through windows of a padded copy (``conv_window``): its
    forward and weight gradient read the input so when that has few ``channels``
    (:func:`windows`); with ``input_gradient``, its input gradient reads the output's gradient
    so when that has few ``channels`` at stride 1. Never a pointwise one (the 1×1 GEMM's).
    Callers hand such operands over as they are, and may pass the weight as ``window_weight``
    made it (``windowed_weight``)."""
    if is_pointwise(kernel_size, stride, padding):
        return False
    if input_gradient and any(s != 1 for s in stride):
        return False
    return windows(channels, groups, dilation)


def reads_nchw(
    kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int], sizes: Sequence[int]
) -> bool:
    """Whether the tensor-core convolutions read a contiguous NCHW activation (the input, or the
    gradient of the output) of spatial ``sizes`` as it is, as vectors of at least 8 bytes: a
    pointwise convolution (``padding``: before and after each dim, all zero), whose 1×1 GEMM
    takes rows of positions from every operand, with positions per image in multiples of 4 (as
    :func:`stores_nchw`). Others read channels-last activations (callers convert)."""
    return is_pointwise(kernel_size, stride, padding) and _positions_divisible(sizes, 4)


def reads_merged(
    c_in: int,
    c_out: int,
    groups: int,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dtype: torch.dtype,
    allow_tf32: bool,
) -> bool:
    """Whether the forward and the input gradient of a convolution (no fused maxout) run on the
    implicit GEMM with groups merged (``conv_gemm.merged_sums``: groups of a few channels, such
    as ResNeXt's), reading the block-diagonal weight ``merged_weight`` makes: callers may make
    it once per weight and pass it as ``merged_weight``."""
    if groups == 1 or _is_depthwise(c_in, groups) or is_pointwise(kernel_size, stride, padding):
        return False
    return sums_merge(c_in // groups, c_out // groups, groups, dtype, allow_tf32) > 1


def _check_per_channel(launcher: str, name: str, t: torch.Tensor | None, channels: int) -> None:
    # The kernels index a bias by channel with no bound: a short one would be read past its end.
    if t is not None and tuple(t.shape) != (channels,):
        raise ValueError(
            f"{launcher}: expected {name} of shape ({channels},), one per channel it is added "
            f"to, but got {tuple(t.shape)}"
        )


def _check_merged(launcher: str, merged_weight, *problem) -> None:
    if merged_weight is not None and not reads_merged(*problem):
        raise ValueError(
            f"{launcher}: merged_weight is for convolutions whose groups merge (reads_merged); "
            "this one's do not: pass the weight alone"
        )


def _check_windowed(launcher: str, windowed_weight, *problem, input_gradient=False) -> None:
    if windowed_weight is not None and not reads_windows(*problem, input_gradient=input_gradient):
        raise ValueError(
            f"{launcher}: windowed_weight is for convolutions that read windows (reads_windows); "
            "this one does not: pass the weight alone"
        )


def conv_forward(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    *,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    pad_mode: str,
    allow_tf32: bool,
    activation: str | None = None,
    alpha: float = 0.0,
    act_weight: torch.Tensor | None = None,
    pre_activation: torch.Tensor | None = None,
    pieces: int = 1,
    winner: torch.Tensor | None = None,
    windowed_weight: torch.Tensor | None = None,
    merged_weight: torch.Tensor | None = None,
) -> None:
    """``out = act(conv(x, w) + bias)``; ``padding`` is the padding before each spatial dim.

    ``activation`` (``None`` or a name of ``ACTIVATIONS``: ``'relu'``, ``'leaky_relu'``,
    ``'prelu'``, ``'elu'``, ``'gelu'``, ``'gelu_tanh'``, ``'silu'``, ``'relu6'``,
    ``'hardswish'``, ``'hardsigmoid'``, ``'mish'``, ``'sigmoid'``) runs in every kernel's
    epilogue; ``alpha`` is the leaky slope or
    ELU alpha, ``act_weight`` the PReLU weight (one per output channel, or one).
    ``pre_activation`` (``out``'s shape, dtype and strides; with an activation), where given,
    gets ``conv(x, w) + bias`` from the same epilogue: what a training step's derivative reads.

    ``pieces`` > 1 fuses a maxout into the GEMM kernels' epilogue: ``w`` has ``C_out·pieces``
    rows, ``out`` (C_out channels) gets the max over rows ``c·pieces + k`` and ``winner`` (int64,
    ``out``'s shape and strides) the winning ``k``; no activation then. Depthwise convolutions
    (:func:`prefers_channels_last` false) have no fused maxout: run them, then the maxout.

    ``windowed_weight``: ``window_weight(w)``, made earlier, for a convolution that
    :func:`reads_windows` (else the launch packs the weight itself). ``merged_weight``:
    ``merged_weight(w, groups)``, made earlier, for a convolution that :func:`reads_merged`
    (else the launch builds it itself)."""
    _check_per_channel("conv_forward", "bias", bias, w.shape[0])
    _check_windowed(
        "conv_forward", windowed_weight, x.shape[1], groups, w.shape[2:], stride, padding, dilation
    )
    if merged_weight is not None and pieces != 1:
        raise ValueError("conv_forward: merged_weight is not for a fused maxout (pieces > 1)")
    _check_merged(
        "conv_forward", merged_weight, x.shape[1], w.shape[0], groups, w.shape[2:], stride,
        padding, x.dtype, allow_tf32,
    )  # fmt: skip
    epilogue = dict(
        activation=activation, alpha=alpha, act_weight=act_weight, pre_activation=pre_activation
    )
    if pieces != 1:
        if _is_depthwise(x.shape[1], groups):
            raise ValueError(
                "conv_forward: a depthwise convolution has no fused maxout (pieces="
                f"{pieces}); run the convolution, then maxout_forward"
            )
        epilogue.update(pieces=pieces, winner=winner)
    if _is_depthwise(x.shape[1], groups):
        depthwise_conv_forward(
            x, w, bias, out, stride=stride, padding=padding, dilation=dilation, pad_mode=pad_mode,
            **epilogue,
        )  # fmt: skip
    elif is_pointwise(w.shape[2:], stride, padding) and conv1x1_forward(
        x, w, bias, out, groups=groups, allow_tf32=allow_tf32, **epilogue
    ):
        pass  # the 1×1 GEMM ran it
    elif reads_windows(x.shape[1], groups, w.shape[2:], stride, padding, dilation):
        window_conv_forward(
            x, w, bias, out, stride=stride, padding=padding, dilation=dilation,
            pad_mode=pad_mode, allow_tf32=allow_tf32, windowed_weight=windowed_weight,
            **epilogue,
        )  # fmt: skip
    else:
        gemm_conv_forward(
            x,
            w,
            bias,
            out,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            pad_mode=pad_mode,
            allow_tf32=allow_tf32,
            merged_weight=merged_weight,
            **epilogue,
        )


def conv_backward_input(
    grad_out: torch.Tensor,
    w: torch.Tensor,
    grad_in: torch.Tensor,
    *,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    allow_tf32: bool,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    alpha: float = 0.0,
    act_weight: torch.Tensor | None = None,
    pre_activation: torch.Tensor | None = None,
    windowed_weight: torch.Tensor | None = None,
    merged_weight: torch.Tensor | None = None,
) -> None:
    """Gradient of a zero-padded convolution with respect to its input, written to ``grad_in``,
    plus ``bias`` per channel when given, then ``activation``: a transposed convolution's
    ``grad_in = act(conv_transpose(grad_out, w) + bias)``, bias and activation in every
    kernel's epilogue, as :func:`conv_forward`'s (``activation``, ``alpha``,
    ``pre_activation`` as there; ``act_weight``: the PReLU weight, one per channel of
    ``grad_in`` or one).
    ``windowed_weight``: ``window_weight(w, input_gradient=True)``, made earlier, for a
    convolution whose input gradient :func:`reads_windows`; ``merged_weight``:
    ``merged_weight(w, groups)`` for one that :func:`reads_merged`."""
    _check_per_channel("conv_backward_input", "bias", bias, grad_in.shape[1])
    _check_windowed(
        "conv_backward_input", windowed_weight, grad_out.shape[1], groups, w.shape[2:], stride,
        padding, dilation, input_gradient=True,
    )  # fmt: skip
    _check_merged(
        "conv_backward_input", merged_weight, grad_in.shape[1], w.shape[0], groups, w.shape[2:],
        stride, padding, grad_out.dtype, allow_tf32,
    )  # fmt: skip
    epilogue = dict(
        bias=bias, activation=activation, alpha=alpha, act_weight=act_weight,
        pre_activation=pre_activation,
    )  # fmt: skip
    if _is_depthwise(grad_in.shape[1], groups):
        depthwise_conv_backward_input(
            grad_out, w, grad_in, stride=stride, padding=padding, dilation=dilation, **epilogue
        )
    elif is_pointwise(w.shape[2:], stride, padding) and conv1x1_backward_input(
        grad_out, w, grad_in, groups=groups, allow_tf32=allow_tf32, **epilogue
    ):
        pass  # the 1×1 GEMM ran it
    elif reads_windows(
        grad_out.shape[1], groups, w.shape[2:], stride, padding, dilation, input_gradient=True
    ):
        window_conv_backward_input(
            grad_out, w, grad_in, padding=padding, dilation=dilation, allow_tf32=allow_tf32,
            windowed_weight=windowed_weight, **epilogue,
        )  # fmt: skip
    else:
        gemm_conv_backward_input(
            grad_out,
            w,
            grad_in,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            allow_tf32=allow_tf32,
            merged_weight=merged_weight,
            **epilogue,
        )


def sums_bias(c_in: int, groups: int, dtype: torch.dtype) -> bool:
    """Whether :func:`conv_backward_weight` sums a bias gradient from the gradient chunks it
    loads for the weight's (the GEMMs, 16-bit operands): a caller passes ``grad_bias`` then, and
    otherwise sums it itself (one reduction either way)."""
    return not _is_depthwise(c_in, groups) and _gemm_sums_bias(dtype)


def conv_backward_weight(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    grad_w: torch.Tensor,
    *,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    pad_mode: str,
    allow_tf32: bool,
    grad_bias: torch.Tensor | None = None,
) -> None:
    """Gradient of a convolution with respect to its weight, written to ``grad_w``, and to its
    bias, written to ``grad_bias`` (contiguous, ``(C_out,)``) when given: the GEMMs sum it
    beside the weight's where :func:`sums_bias` says so, else (and with nothing to sum it
    beside: an empty operand) one reduction here does."""
    _check_per_channel("conv_backward_weight", "grad_bias", grad_bias, grad_w.shape[0])
    if grad_bias is not None and (
        not sums_bias(x.shape[1], groups, grad_out.dtype) or x.numel() == 0 or grad_w.numel() == 0
    ):
        torch.sum(grad_out, [0, *range(2, grad_out.dim())], out=grad_bias)
        grad_bias = None
    if _is_depthwise(x.shape[1], groups):
        depthwise_conv_backward_weight(
            x,
            grad_out,
            grad_w,
            stride=stride,
            padding=padding,
            dilation=dilation,
            pad_mode=pad_mode,
        )
    elif is_pointwise(grad_w.shape[2:], stride, padding) and conv1x1_backward_weight(
        x, grad_out, grad_w, groups=groups, allow_tf32=allow_tf32, grad_bias=grad_bias
    ):
        pass  # the 1×1 GEMM ran it
    elif reads_windows(x.shape[1], groups, grad_w.shape[2:], stride, padding, dilation):
        window_conv_backward_weight(
            x, grad_out, grad_w, stride=stride, padding=padding, dilation=dilation,
            pad_mode=pad_mode, allow_tf32=allow_tf32, grad_bias=grad_bias,
        )  # fmt: skip
    else:
        gemm_conv_backward_weight(
            x,
            grad_out,
            grad_w,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            pad_mode=pad_mode,
            allow_tf32=allow_tf32,
            grad_bias=grad_bias,
        )
