"""Convolution on ATen: symmetric zero padding goes straight to ``aten.convolution`` (so the
fallback runs torch's own kernel, after a stride check); other padding is made explicit with
``F.pad`` first.

``torch.convolution`` is ``aten.convolution`` through torch's C++ argument parser, several times
cheaper to call than ``torch.ops.aten.convolution``.

Every operand reaches ATen through :func:`aten_operands`: ATen's CPU convolutions misread an
operand dense in their layout whose size-1 dims step otherwise (``x.unsqueeze(0)`` of a
channels-last image, a compiled graph's gradient) — wrong weight and input gradients with
groups, or "grad_weight must be contiguous". :func:`torch_conv` and
:func:`torch_conv_transpose` are torch's functional ops with the same care, for the calls the
functional API hands to torch.

:func:`conv_by_torch` and :func:`conv_transpose_by_torch` compute a whole (transposed)
convolution with torch's differentiable functional ops instead, for what the primitives do not
take: dtypes other than real floating point (complex, integers) and empty channel dims, which
torch's convolution computes in its own way (complex by its own rules of differentiation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .._backend import jit_tracing, untraced
from .._conv_args import ConvGeometry
from .._memory import empty_in_layout, own_strides, suggest_memory_format
from .._padding import fold_padding_grad, pad_input
from . import without_autocast

aten = torch.ops.aten
_TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_TORCH_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def aten_operands(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """``tensors`` (the input and the weight first: ATen's layout follows them) with their
    layout's own strides where only a size-1 dim's differ (module doc)."""
    layout = suggest_memory_format(tensors[0], tensors[1])
    return [own_strides(t, layout) for t in tensors]


def torch_conv(spatial_dims: int, input, weight, *args) -> torch.Tensor:
    """``F.conv{spatial_dims}d(input, weight, *args)``, its operands as ATen reads them right."""
    return _by_torch(_TORCH_CONV[spatial_dims], input, weight, args)


def torch_conv_transpose(spatial_dims: int, input, weight, *args) -> torch.Tensor:
    """``F.conv_transpose{spatial_dims}d(input, weight, *args)``, the same way."""
    return _by_torch(_TORCH_CONV_TRANSPOSE[spatial_dims], input, weight, args)


def _by_torch(op, input, weight, args: tuple) -> torch.Tensor:
    if not (isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor)):
        return op(input, weight, *args)  # (torch's own errors)
    if input.layout is not torch.strided or weight.layout is not torch.strided:
        return op(input, weight, *args)  # (MKL-DNN tensors, which have no strides to read)
    if jit_tracing():
        return _traced_by_torch(op, input, weight, args)
    input_shape, weight_shape = input.shape, weight.shape
    if len(input_shape) == len(weight_shape):
        if (1 not in input_shape and 1 not in weight_shape) or _batched(input, weight):
            return op(input, weight, *args)  # (the common case; and vmap's own operands)
        return op(*aten_operands(input, weight), *args)
    if len(input_shape) == len(weight_shape) - 1 and not _batched(input, weight):
        # unbatched: torch's own lift can give such strides
        lifted = input.unsqueeze(0)
        read = aten_operands(lifted, weight)
        if read[0] is not lifted or read[1] is not weight:
            return op(*read, *args).squeeze(0)
    return op(input, weight, *args)


def _traced_by_torch(op, input, weight, args: tuple) -> torch.Tensor:
    """:func:`_by_torch` under ``torch.jit.trace``, whose recording runs again on other
    tensors: an operand the example's strides would have restrided is copied in its layout
    instead (a recorded copy serves any later tensor; a view with the example's strides would
    misread one). The example decides, its sizes read as ints."""
    lifted = input.dim() == weight.dim() - 1
    x = input.unsqueeze(0) if lifted else input
    with untraced():
        layout = suggest_memory_format(x, weight)
        copied = [own_strides(t, layout) is not t for t in (x, weight)]
    if not any(copied):
        return op(input, weight, *args)
    x, w = (t.clone(memory_format=layout) if c else t for t, c in zip((x, weight), copied))
    out = op(x, w, *args)
    return out.squeeze(0) if lifted else out


def _batched(*tensors: torch.Tensor) -> bool:
    """Whether an operand is vmap's (which cannot say whether it is channels-last; vmap's
    rules hand ATen operands of their own)."""
    return torch._C._are_functorch_transforms_active() and any(
        torch._C._functorch.is_batchedtensor(t) for t in tensors
    )


def _padded(input: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    if g.symmetric_zero_padding:
        return input
    return pad_input(input, g.padding, g.padding_end, g.padding_mode)


def _aten_padding(g: ConvGeometry) -> list[int]:
    return list(g.padding) if g.symmetric_zero_padding else [0] * len(g.stride)


@without_autocast
def conv_forward(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, g: ConvGeometry
) -> torch.Tensor:
    zeros = [0] * len(g.stride)
    input, weight = aten_operands(_padded(input, g), weight)
    return torch.convolution(
        input,
        weight,
        bias,
        g.stride,
        _aten_padding(g),
        g.dilation,
        False,
        zeros,
        g.groups,
    )


@without_autocast
def conv_backward_input(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    input_shape: Sequence[int],
    g: ConvGeometry,
) -> torch.Tensor:
    """Gradient of the input, as ATen computes it: a transposed convolution of ``grad_output``,
    plus ``bias`` per channel when given.

    Also serves transposed convolution, whose output is this "input" (then ``padding_end`` may
    differ from ``padding``, or even be negative: an extension of the full result).
    """
    sizes = input_shape[2:]
    spans = [
        (o - 1) * s + d * (k - 1) + 1
        for o, s, d, k in zip(grad_output.shape[2:], g.stride, g.dilation, weight.shape[2:])
    ]
    # ATen's transposed convolution crops `padding` from both ends and appends `output_padding`.
    output_padding = [size + 2 * p - span for size, p, span in zip(sizes, g.padding, spans)]
    grad_output, weight = aten_operands(grad_output, weight)
    if g.padding_mode == "zeros" and all(
        0 <= op < max(s, d) for op, s, d in zip(output_padding, g.stride, g.dilation)
    ):
        return torch.convolution(
            grad_output,
            weight,
            bias,
            g.stride,
            g.padding,
            g.dilation,
            True,
            output_padding,
            g.groups,
        )
    # Otherwise: the gradient of the padded input (no cropping), folded onto the input.
    padded = [size + b + e for size, b, e in zip(sizes, g.padding, g.padding_end)]
    zeros = [0] * len(g.stride)
    output_padding = [p - span for p, span in zip(padded, spans)]
    grad = torch.convolution(
        grad_output, weight, None, g.stride, zeros, g.dilation, True, output_padding, g.groups
    )
    grad = fold_padding_grad(grad, g.padding, g.padding_end, g.padding_mode)
    return grad if bias is None else grad + bias.view(-1, *[1] * len(sizes))


@without_autocast
def conv_backward_weight(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight_shape: Sequence[int],
    channels_last: bool,
    g: ConvGeometry,
    bias: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradients of the weight of shape ``weight_shape`` and, with ``bias``, of a bias (else
    ``None``); ATen reads the weight gradient's layout from the weight, so an empty one in the
    layout wanted stands in for it."""
    weight = empty_in_layout(weight_shape, input, channels_last)
    input, weight, grad_output = aten_operands(_padded(input, g), weight, grad_output)
    zeros = [0] * len(g.stride)
    _, grad_weight, grad_bias = aten.convolution_backward(
        grad_output,
        input,
        weight,
        [weight_shape[0]] if bias else None,
        g.stride,
        _aten_padding(g),
        g.dilation,
        False,
        zeros,
        g.groups,
        [False, True, bias],
    )
    return grad_weight, grad_bias


@without_autocast
def conv_by_torch(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, g: ConvGeometry
) -> torch.Tensor:
    """``nn.ConvNd``'s own recipe: ``F.pad`` with the padding mode, then ``F.convNd``."""
    padded = pad_input(input, g.padding, g.padding_end, g.padding_mode)
    return torch_conv(len(g.stride), padded, weight, bias, g.stride, 0, g.dilation, g.groups)


@without_autocast
def conv_transpose_by_torch(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, g: ConvGeometry
) -> torch.Tensor:
    """A transposed convolution of adjoint geometry ``g``: torch's full transposed convolution,
    cropped by ``g.padding`` / ``g.padding_end`` (a negative ``padding_end`` extends it)."""
    nd = len(g.stride)
    full = torch_conv_transpose(nd, input, weight, None, g.stride, 0, 0, g.groups, g.dilation)
    crop = [-p for b, e in zip(reversed(g.padding), reversed(g.padding_end)) for p in (b, e)]
    out = F.pad(full, crop)
    return out if bias is None else out + bias.view(-1, *[1] * nd)
