"""Differentiable pooling over the ``*_pool_fwd`` / ``*_pool_bwd`` primitives.

Each Function returns ``(output, indices)``; the indices (empty for average pooling) are not
differentiable. Backward runs the gather-form gradient op once; it is not itself differentiable
(double backward raises).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .. import _ops  # noqa: F401  (registers torch.ops.torchconv_ext.*)

ops = torch.ops.torchconv_ext


class PoolFunction(torch.autograd.Function):
    """Fixed-window max / average pooling (``pool_fwd``), geometry as in ``PoolGeometry``."""

    @staticmethod
    def forward(
        ctx,
        input,
        mode,
        kernel,
        stride,
        padding,
        padding_end,
        dilation,
        ceil_mode,
        count_include_pad,
        divisor_override,
    ):
        args = (
            mode,
            list(kernel),
            list(stride),
            list(padding),
            list(padding_end),
            list(dilation),
            ceil_mode,
            count_include_pad,
            divisor_override,
        )
        out, idx = ops.pool_fwd(input, *args)
        ctx.save_for_backward(input, idx)
        ctx.args = args
        ctx.mark_non_differentiable(idx)
        return out, idx

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output, _grad_indices):
        input, idx = ctx.saved_tensors
        return (ops.pool_bwd(grad_output, input, idx, *ctx.args),) + (None,) * 9


class AdaptivePoolFunction(torch.autograd.Function):
    """Adaptive max / average pooling (``adaptive_pool_fwd``) to ``output_size``."""

    @staticmethod
    def forward(ctx, input, mode, output_size):
        out, idx = ops.adaptive_pool_fwd(input, mode, list(output_size))
        ctx.save_for_backward(input, idx)
        ctx.mode = mode
        ctx.mark_non_differentiable(idx)
        return out, idx

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output, _grad_indices):
        input, idx = ctx.saved_tensors
        return ops.adaptive_pool_bwd(grad_output, input, idx, ctx.mode), None, None


class PyramidPoolFunction(torch.autograd.Function):
    """Spatial pyramid pooling (``pyramid_pool_fwd``) over ``levels``."""

    @staticmethod
    def forward(ctx, input, mode, levels):
        out, idx = ops.pyramid_pool_fwd(input, mode, list(levels))
        ctx.save_for_backward(input, idx)
        ctx.mode, ctx.levels = mode, list(levels)
        ctx.mark_non_differentiable(idx)
        return out, idx

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output, _grad_indices):
        input, idx = ctx.saved_tensors
        return ops.pyramid_pool_bwd(grad_output, input, idx, ctx.mode, ctx.levels), None, None
