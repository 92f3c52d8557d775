"""``torchconv_ext::conv_transpose_fwd`` / ``conv_transpose_bwd_input`` / ``conv_transpose_bwd_weight``.

A transposed convolution is the input-gradient of a convolution, so the three primitives are
the convolution's own implementations with roles swapped: forward = convolution grad-input,
grad-input = convolution forward, grad-weight = convolution grad-weight with input and
grad-output exchanged. The shared geometry is the adjoint convolution's (see
``conv_transpose_geometry``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

from .._memory import suggest_memory_format
from .conv import _channels_first, _geometry, conv_forward, conv_input_grad, conv_weight_grad


def _bias_view(bias: Tensor, dims: int) -> Tensor:
    return bias.view(-1, *([1] * (dims - 2)))


@torch.library.custom_op("torchconv_ext::conv_transpose_fwd", mutates_args=())
def conv_transpose_fwd(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    output_size: list[int],
) -> Tensor:
    """Batched N-d transposed convolution to spatial size ``output_size``."""
    g = _geometry(stride, padding, padding_end, dilation, groups, "zeros")
    shape = [input.shape[0], weight.shape[1] * groups, *output_size]
    out = conv_input_grad(input, weight, shape, suggest_memory_format(input, weight), g)
    if bias is not None:
        out += _bias_view(bias, out.dim())
    return out


@conv_transpose_fwd.register_fake
def _(input, weight, bias, stride, padding, padding_end, dilation, groups, output_size):
    shape = [input.shape[0], weight.shape[1] * groups, *output_size]
    return input.new_empty(shape).contiguous(memory_format=suggest_memory_format(input, weight))


@torch.library.custom_op("torchconv_ext::conv_transpose_bwd_input", mutates_args=())
def conv_transpose_bwd_input(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    output_size: list[int],
) -> Tensor:
    """Gradient of ``conv_transpose_fwd`` for ``input``: a convolution of ``grad_output``."""
    g = _geometry(stride, padding, padding_end, dilation, groups, "zeros")
    return conv_forward(grad_output, weight, None, g, suggest_memory_format(input, weight))


@conv_transpose_bwd_input.register_fake
def _(grad_output, input, weight, stride, padding, padding_end, dilation, groups, output_size):
    return input.new_empty(input.shape).contiguous(
        memory_format=suggest_memory_format(input, weight)
    )


@torch.library.custom_op("torchconv_ext::conv_transpose_bwd_weight", mutates_args=())
def conv_transpose_bwd_weight(
    grad_output: Tensor,
    input: Tensor,
    weight: Tensor,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    output_size: list[int],
) -> Tensor:
    """Gradient of ``conv_transpose_fwd`` for ``weight``: the adjoint convolution's weight
    gradient, whose input is ``grad_output`` and whose output gradient is ``input``."""
    g = _geometry(stride, padding, padding_end, dilation, groups, "zeros")
    fmt = suggest_memory_format(input, weight)
    return conv_weight_grad(input, grad_output, weight, fmt, g)


@conv_transpose_bwd_weight.register_fake
def _(grad_output, input, weight, stride, padding, padding_end, dilation, groups, output_size):
    return weight.new_empty(weight.shape).contiguous(
        memory_format=suggest_memory_format(input, weight)
    )


# FLOPs: as torch counts aten.convolution(transposed=True) and its backward.
@register_flop_formula(torch.ops.torchconv_ext.conv_transpose_fwd)
def _fwd_flop(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=True)


@register_flop_formula(torch.ops.torchconv_ext.conv_transpose_bwd_input)
def _bwd_input_flop(grad_out_shape, x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(grad_out_shape, w_shape, out_shape, transposed=False)


@register_flop_formula(torch.ops.torchconv_ext.conv_transpose_bwd_weight)
def _bwd_weight_flop(grad_out_shape, x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(
        _channels_first(grad_out_shape),
        _channels_first(x_shape),
        _channels_first(out_shape),
        transposed=False,
    )
