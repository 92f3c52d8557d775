"""``torchconv_ext::conv_fwd`` / ``conv_bwd_input`` / ``conv_bwd_weight``.

Each primitive is a ``torch.library.custom_op`` whose implementation picks, per call, the
Triton kernels or the ATen fallback (see ``_backend``); a fake implementation gives sizes, dtype
and strides for tracing, and FLOP formulas let ``FlopCounterMode`` count our convolutions exactly
as it counts ``aten.convolution``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

from .._backend import kernels, use_triton
from .._conv_args import ConvGeometry, conv_output_shape
from .._fallback import conv as fallback
from .._memory import new_output, suggest_memory_format
from .._padding import fold_padding_grad


def _geometry(stride, padding, padding_end, dilation, groups, padding_mode) -> ConvGeometry:
    return ConvGeometry(
        tuple(stride), tuple(padding), tuple(padding_end), tuple(dilation), groups, padding_mode
    )


def _tf32() -> bool:
    """fp32 convolutions use TF32 exactly when torch lets cuDNN use it."""
    return torch.backends.cudnn.allow_tf32


def _kernel_args(g: ConvGeometry, padding: tuple[int, ...] | None = None) -> dict:
    return dict(
        stride=g.stride,
        padding=g.padding if padding is None else padding,
        dilation=g.dilation,
        groups=g.groups,
        allow_tf32=_tf32(),
    )


# --- implementations shared by convolution and transposed convolution -------------------


def conv_forward(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    g: ConvGeometry,
    fmt: torch.memory_format | None = None,
) -> Tensor:
    """Convolution on the backend in force, in ATen's output memory format (or ``fmt``)."""
    fmt = fmt or suggest_memory_format(input, weight)
    if not use_triton(input):
        return fallback.conv_forward(input, weight, bias, g).contiguous(memory_format=fmt)
    out = new_output(conv_output_shape(input, weight, g), input, fmt)
    if out.numel():
        kernels().conv_forward(input, weight, bias, out, pad_mode=g.padding_mode, **_kernel_args(g))
    return out


def conv_input_grad(
    grad_output: Tensor,
    weight: Tensor,
    input_shape: list[int],
    fmt: torch.memory_format,
    g: ConvGeometry,
) -> Tensor:
    """Gradient of a convolution's input of shape ``input_shape`` (a transposed convolution)."""
    if not use_triton(grad_output):
        grad = fallback.conv_backward_input(grad_output, weight, input_shape, g)
        return grad.contiguous(memory_format=fmt)
    if g.padding_mode == "zeros":
        grad = new_output(input_shape, grad_output, fmt)
        if grad.numel():
            kernels().conv_backward_input(grad_output, weight, grad, **_kernel_args(g))
        return grad
    # Other modes: the gradient of the virtually padded input, folded onto its sources.
    padded = list(input_shape[:2]) + [
        s + b + e for s, b, e in zip(input_shape[2:], g.padding, g.padding_end)
    ]
    grad = new_output(padded, grad_output, fmt)
    if grad.numel():
        zero = (0,) * len(g.stride)
        kernels().conv_backward_input(grad_output, weight, grad, **_kernel_args(g, zero))
    folded = fold_padding_grad(grad, g.padding, g.padding_end, g.padding_mode)
    return folded.contiguous(memory_format=fmt)


def conv_weight_grad(
    grad_output: Tensor, input: Tensor, weight: Tensor, fmt: torch.memory_format, g: ConvGeometry
) -> Tensor:
    """Gradient of a convolution's weight (``weight`` gives the shape only)."""
    if not use_triton(grad_output):
        grad = fallback.conv_backward_weight(grad_output, input, weight, g)
        return grad.contiguous(memory_format=fmt)
    grad = new_output(weight.shape, weight, fmt)
    if grad_output.numel() == 0 or input.numel() == 0:
        return grad.zero_()
    kernels().conv_backward_weight(
        input, grad_output, grad, pad_mode=g.padding_mode, **_kernel_args(g)
    )
    return grad


# --- registered primitives ------------------------------------------------------------------


@torch.library.custom_op("torchconv_ext::conv_fwd", mutates_args=())
def conv_fwd(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> Tensor:
    """Batched N-d convolution with per-side padding and a padding mode."""
    g = _geometry(stride, padding, padding_end, dilation, groups, padding_mode)
    return conv_forward(input, weight, bias, g)


@conv_fwd.register_fake
def _(input, weight, bias, stride, padding, padding_end, dilation, groups, padding_mode):
    g = _geometry(stride, padding, padding_end, dilation, groups, padding_mode)
    fmt = suggest_memory_format(input, weight)
    return input.new_empty(conv_output_shape(input, weight, g)).contiguous(memory_format=fmt)


@torch.library.custom_op("torchconv_ext::conv_bwd_input", mutates_args=())
def conv_bwd_input(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> Tensor:
    """Gradient of ``conv_fwd`` with respect to ``input`` (only its shape is read)."""
    g = _geometry(stride, padding, padding_end, dilation, groups, padding_mode)
    fmt = suggest_memory_format(input, weight)
    return conv_input_grad(grad_output, weight, list(input.shape), fmt, g)


@conv_bwd_input.register_fake
def _(grad_output, input, weight, stride, padding, padding_end, dilation, groups, padding_mode):
    return input.new_empty(input.shape).contiguous(
        memory_format=suggest_memory_format(input, weight)
    )


@torch.library.custom_op("torchconv_ext::conv_bwd_weight", mutates_args=())
def conv_bwd_weight(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> Tensor:
    """Gradient of ``conv_fwd`` with respect to ``weight`` (only its shape is read)."""
    g = _geometry(stride, padding, padding_end, dilation, groups, padding_mode)
    return conv_weight_grad(grad_output, input, weight, suggest_memory_format(input, weight), g)


@conv_bwd_weight.register_fake
def _(grad_output, input, weight, stride, padding, padding_end, dilation, groups, padding_mode):
    return weight.new_empty(weight.shape).contiguous(
        memory_format=suggest_memory_format(input, weight)
    )


# FLOPs: the same formulas torch uses for aten.convolution / aten.convolution_backward.
@register_flop_formula(torch.ops.torchconv_ext.conv_fwd)
def _conv_fwd_flop(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def _channels_first(shape) -> list[int]:
    return [shape[1], shape[0], *shape[2:]]


@register_flop_formula(torch.ops.torchconv_ext.conv_bwd_input)
def _conv_bwd_input_flop(grad_out_shape, x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    # As torch counts aten.convolution_backward: grad_input is a transposed convolution.
    return conv_flop_count(grad_out_shape, w_shape, out_shape, transposed=True)


@register_flop_formula(torch.ops.torchconv_ext.conv_bwd_weight)
def _conv_bwd_weight_flop(grad_out_shape, x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    # As torch counts aten.convolution_backward: a convolution of input by grad_output.
    return conv_flop_count(
        _channels_first(x_shape),
        _channels_first(grad_out_shape),
        _channels_first(out_shape),
        transposed=False,
    )
