"""Autograd for ops linear in input and in weight (convolution, transposed convolution).

Such an op is three primitives sharing one argument list: ``fwd(input, weight, bias, *args)``,
``bwd_input(grad, input, weight, *args)`` and ``bwd_weight(grad, input, weight, *args)``; the bias
gradient is a sum. :func:`differentiable` builds the ``autograd.Function`` the functional API
calls (lowest eager overhead) and registers the same backward on the raw forward op, so
``torch.ops.torchconv_ext.<fwd>`` is differentiable too.
"""

from __future__ import annotations

import torch


def _backward(ops, grad_output, input, weight, args, needs_input_grad):
    _, bwd_input, bwd_weight = ops
    grad_input = grad_weight = grad_bias = None
    if needs_input_grad[0]:
        grad_input = bwd_input(grad_output, input, weight, *args)
    if needs_input_grad[1]:
        grad_weight = bwd_weight(grad_output, input, weight, *args)
    if needs_input_grad[2]:
        grad_bias = grad_output.sum([d for d in range(grad_output.dim()) if d != 1])
    return grad_input, grad_weight, grad_bias


def differentiable(name: str, fwd, bwd_input, bwd_weight) -> type[torch.autograd.Function]:
    """An ``autograd.Function`` over the three primitives, also registered on ``fwd``."""
    ops = (fwd, bwd_input, bwd_weight)

    class Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input, weight, bias, *args):
            ctx.save_for_backward(input, weight)
            ctx.args = args
            return fwd(input, weight, bias, *args)

        @staticmethod
        def backward(ctx, grad_output):
            input, weight = ctx.saved_tensors
            grads = _backward(ops, grad_output, input, weight, ctx.args, ctx.needs_input_grad)
            return (*grads, *(None for _ in ctx.args))

    def setup_context(ctx, inputs, output):
        input, weight, bias, *args = inputs
        ctx.save_for_backward(input, weight)
        ctx.args = args
        ctx.needs = (
            input.requires_grad,
            weight.requires_grad,
            bias is not None and bias.requires_grad,
        )

    def op_backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        grads = _backward(ops, grad_output, input, weight, ctx.args, ctx.needs)
        return (*grads, *(None for _ in ctx.args))

    torch.library.register_autograd(fwd.default, op_backward, setup_context=setup_context)
    Function.__name__ = Function.__qualname__ = name
    return Function
