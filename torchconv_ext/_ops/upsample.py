"""``torchconv_ext::upsample_nearest_fwd`` / ``upsample_nearest_bwd``.

Both primitives serve the modes ``nearest`` (``exact=False``) and ``nearest-exact``
(``exact=True``) for 1–3 spatial dims. ``scales`` holds torch's scale factor per spatial dim, or
``0.0`` where the interpolation scale comes from the sizes (see ``_upsample_args``). Each picks,
per call, the Triton kernels or the ATen fallback; the fake implementations give sizes, dtype and
strides (ATen's memory-format rules) for tracing.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._backend import kernels, use_triton
from .._fallback import upsample as fallback
from .._memory import new_output, upsample_grad_format, upsample_output_format
from .._upsample_args import (
    check_sizes,
    output_shape,
    source_scales,
)


@torch.library.custom_op("torchconv_ext::upsample_nearest_fwd", mutates_args=())
def upsample_nearest_fwd(
    input: Tensor, output_size: list[int], scales: list[float], exact: bool
) -> Tensor:
    """Nearest upsampling of ``(N, C, *spatial)`` ``input`` to ``output_size``."""
    fmt = upsample_output_format(input)
    if not use_triton(input):
        return fallback.nearest_forward(input, output_size, scales, exact).contiguous(
            memory_format=fmt
        )
    check_sizes(input.shape, output_size)  # what ATen checks on the fallback path
    out = new_output(output_shape(input.shape, output_size), input, fmt)
    if out.numel():
        scale = source_scales(input.shape[2:], output_size, scales)
        kernels().upsample_nearest_forward(input, out, scale, exact=exact)
    return out


@upsample_nearest_fwd.register_fake
def _(input, output_size, scales, exact):
    out = input.new_empty(output_shape(input.shape, output_size))
    return out.contiguous(memory_format=upsample_output_format(input))


@torch.library.custom_op("torchconv_ext::upsample_nearest_bwd", mutates_args=())
def upsample_nearest_bwd(
    grad_output: Tensor, input_size: list[int], scales: list[float], exact: bool
) -> Tensor:
    """Gradient of ``upsample_nearest_fwd`` for an input of shape ``input_size``."""
    fmt = upsample_grad_format(grad_output)
    if not use_triton(grad_output):
        return fallback.nearest_backward(grad_output, input_size, scales, exact).contiguous(
            memory_format=fmt
        )
    check_sizes(input_size, grad_output.shape[2:])
    grad = new_output(input_size, grad_output, fmt)
    if grad.numel():
        scale = source_scales(input_size[2:], grad_output.shape[2:], scales)
        kernels().upsample_nearest_backward(grad_output, grad, scale, exact=exact)
    return grad


@upsample_nearest_bwd.register_fake
def _(grad_output, input_size, scales, exact):
    grad = grad_output.new_empty(input_size)
    return grad.contiguous(memory_format=upsample_grad_format(grad_output))


# Gradients of the primitives themselves (the public entry point is the autograd Function in
# ``_autograd.upsample``; these make the raw ops differentiable too, e.g. for opcheck). Both ops
# are linear and each one's gradient is the other.
def _fwd_setup_context(ctx, inputs, output):
    input, _, scales, exact = inputs
    ctx.args = (list(input.shape), list(scales), exact)


def _fwd_backward(ctx, grad_output):
    input_size, scales, exact = ctx.args
    return upsample_nearest_bwd(grad_output, input_size, scales, exact), None, None, None


def _bwd_setup_context(ctx, inputs, output):
    grad_output, _, scales, exact = inputs
    ctx.args = (list(grad_output.shape[2:]), list(scales), exact)


def _bwd_backward(ctx, grad_grad_input):
    output_size, scales, exact = ctx.args
    return upsample_nearest_fwd(grad_grad_input, output_size, scales, exact), None, None, None


upsample_nearest_fwd.register_autograd(_fwd_backward, setup_context=_fwd_setup_context)
upsample_nearest_bwd.register_autograd(_bwd_backward, setup_context=_bwd_setup_context)
