"""Differentiable nearest upsampling over ``upsample_nearest_fwd`` / ``upsample_nearest_bwd``.

The backward is itself differentiable (it is linear: its gradient is the forward), so double
backward works as it does for torch's op.
"""

from __future__ import annotations

import torch

from .. import _ops  # noqa: F401  (registers torch.ops.torchconv_ext.*)

ops = torch.ops.torchconv_ext


class UpsampleNearestFunction(torch.autograd.Function):
    """``upsample_nearest_fwd`` with the gradient for ``input``."""

    @staticmethod
    def forward(ctx, input, output_size, scales, exact):
        ctx.args = (list(input.shape), list(output_size), list(scales), exact)
        return ops.upsample_nearest_fwd(input, list(output_size), list(scales), exact)

    @staticmethod
    def backward(ctx, grad_output):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        input_size, output_size, scales, exact = ctx.args
        grad = UpsampleNearestBackwardFunction.apply(
            grad_output, input_size, output_size, scales, exact
        )
        return grad, None, None, None


class UpsampleNearestBackwardFunction(torch.autograd.Function):
    """``upsample_nearest_bwd``, differentiable: its gradient is ``upsample_nearest_fwd``."""

    @staticmethod
    def forward(ctx, grad_output, input_size, output_size, scales, exact):
        ctx.args = (list(output_size), list(scales), exact)
        return ops.upsample_nearest_bwd(grad_output, list(input_size), list(scales), exact)

    @staticmethod
    def backward(ctx, grad_grad_input):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        output_size, scales, exact = ctx.args
        grad = UpsampleNearestFunction.apply(grad_grad_input, output_size, scales, exact)
        return grad, None, None, None, None
