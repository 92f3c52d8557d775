"""Nearest upsampling as two primitives, ``upsample_nearest_fwd`` and ``upsample_nearest_bwd``.

Both serve the modes ``nearest`` (``exact=False``) and ``nearest-exact`` (``exact=True``) for 1–3
spatial dims, and take the geometry as ``UpsampleGeometry.as_args()`` spells it: ``scales`` holds
torch's scale factor per spatial dim, or ``0.0`` where the interpolation scale comes from the
sizes (see ``_upsample_args``). Each picks, per call, the Triton kernels or the ATen fallback;
the fakes give sizes, dtype and strides (ATen's memory-format rules) for tracing.

Both are linear and each is the other's adjoint, so every derivative is one of the two: the
forward's gradient is the backward of the incoming gradient, the backward's is the forward of
its own; the forward's jvp is the forward of the tangent, the backward's the backward of it.
Batching folds the vmapped dim into ``N``: every sample is upsampled alike.
"""

from __future__ import annotations

from torch import Tensor

from .._backend import kernels, use_triton
from .._fallback import upsample as fallback
from .._memory import new_output, upsample_grad_format, upsample_output_format
from .._upsample_args import UpsampleGeometry, check_sizes, output_shape, source_scales
from ._primitive import Primitive

# --------------------------------------------------------------------------------------------
# Implementations and fakes
# --------------------------------------------------------------------------------------------


def _forward(input: Tensor, output_size: list[int], scales: list[float], exact: bool) -> Tensor:
    """Nearest upsampling of ``(N, C, *spatial)`` ``input`` to ``output_size``."""
    geom = UpsampleGeometry.from_args(output_size, scales, exact)
    fmt = upsample_output_format(input)
    if not use_triton(input):
        out = fallback.nearest_forward(input, geom.output_size, geom.scales, geom.exact)
        return out.contiguous(memory_format=fmt)
    check_sizes(input.shape, geom.output_size)  # what ATen checks on the fallback path
    out = new_output(output_shape(input.shape, geom.output_size), input, fmt)
    if out.numel():
        scale = source_scales(input.shape[2:], geom.output_size, geom.scales)
        kernels().upsample_nearest_forward(input, out, scale, exact=geom.exact)
    return out


def _forward_fake(input, output_size, scales, exact):
    out = input.new_empty(output_shape(input.shape, output_size))
    return out.contiguous(memory_format=upsample_output_format(input))


def _backward(
    grad_output: Tensor, input_size: list[int], scales: list[float], exact: bool
) -> Tensor:
    """Gradient of ``upsample_nearest_fwd`` for an input of shape ``input_size``."""
    geom = UpsampleGeometry.from_args(grad_output.shape[2:], scales, exact)
    fmt = upsample_grad_format(grad_output)
    if not use_triton(grad_output):
        grad = fallback.nearest_backward(grad_output, input_size, geom.scales, geom.exact)
        return grad.contiguous(memory_format=fmt)
    check_sizes(input_size, geom.output_size)
    grad = new_output(input_size, grad_output, fmt)
    if grad.numel():
        scale = source_scales(input_size[2:], geom.output_size, geom.scales)
        kernels().upsample_nearest_backward(grad_output, grad, scale, exact=geom.exact)
    return grad


def _backward_fake(grad_output, input_size, scales, exact):
    grad = grad_output.new_empty(input_size)
    return grad.contiguous(memory_format=upsample_grad_format(grad_output))


# --------------------------------------------------------------------------------------------
# Derivatives: each primitive's are the other primitive (or itself)
# --------------------------------------------------------------------------------------------


def _forward_setup(ctx, inputs, output):
    input, _, scales, exact = inputs
    ctx.input_size, ctx.scales, ctx.exact = list(input.shape), scales, exact


def _forward_grad(ctx, grad_output):
    grad = None
    if ctx.needs_input_grad[0]:
        grad = upsample_nearest_bwd(grad_output, ctx.input_size, ctx.scales, ctx.exact)
    return grad, None, None, None


def _forward_jvp(ctx, tangent, *_):
    _, output_size, scales, exact = ctx.primals
    return upsample_nearest_fwd(tangent, output_size, scales, exact)


def _backward_setup(ctx, inputs, output):
    grad_output, _, scales, exact = inputs
    ctx.output_size, ctx.scales, ctx.exact = list(grad_output.shape[2:]), scales, exact


def _backward_grad(ctx, grad_grad_input):
    grad = None
    if ctx.needs_input_grad[0]:
        grad = upsample_nearest_fwd(grad_grad_input, ctx.output_size, ctx.scales, ctx.exact)
    return grad, None, None, None


def _backward_jvp(ctx, tangent, *_):
    _, input_size, scales, exact = ctx.primals
    return upsample_nearest_bwd(tangent, input_size, scales, exact)


# --------------------------------------------------------------------------------------------
# Batching: the vmapped dim folds into N
# --------------------------------------------------------------------------------------------


def _fold(t: Tensor, batch_dim: int) -> tuple[Tensor, int, int]:
    """``t`` with its vmapped dim folded into ``N``, the vmapped size and ``N``."""
    t = t.movedim(batch_dim, 0)
    return t.flatten(0, 1), t.shape[0], t.shape[1]


def _forward_vmap(info, in_dims, input, output_size, scales, exact):
    x, batch, n = _fold(input, in_dims[0])
    out = upsample_nearest_fwd(x, output_size, scales, exact)
    return out.unflatten(0, (batch, n)), 0


def _backward_vmap(info, in_dims, grad_output, input_size, scales, exact):
    go, batch, n = _fold(grad_output, in_dims[0])
    grad = upsample_nearest_bwd(go, [go.shape[0], *input_size[1:]], scales, exact)
    return grad.unflatten(0, (batch, n)), 0


upsample_nearest_fwd = Primitive(
    "upsample_nearest_fwd",
    _forward,
    fake=_forward_fake,
    setup_context=_forward_setup,
    backward=_forward_grad,
    jvp=_forward_jvp,
    vmap=_forward_vmap,
    static_attributes=True,  # (the input's size, and the static arguments)
)
upsample_nearest_bwd = Primitive(
    "upsample_nearest_bwd",
    _backward,
    fake=_backward_fake,
    setup_context=_backward_setup,
    backward=_backward_grad,
    jvp=_backward_jvp,
    vmap=_backward_vmap,
)

__all__ = ["upsample_nearest_bwd", "upsample_nearest_fwd"]
