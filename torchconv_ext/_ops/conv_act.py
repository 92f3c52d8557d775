"""The activated convolution: ``torchconv_ext::conv_act_fwd``, ``act(conv(x, w) + b)``.

On the Triton path the activation runs in the convolution kernels' epilogue (one pass over the
output, no pre-activation tensor); the fallback is ATen's convolution, then torch's activation.
``kind`` and ``alpha`` are the activation's (``_activation``), ``act_weight`` the PReLU weight
(``None`` for the other kinds); the geometry is ``conv_fwd``'s.

Derivatives go through the convolution's own primitives: with ``z`` the pre-activation,
``∂y = act'(z) · ∂z``, and ``z``'s gradients are ``conv_fwd``'s (``conv_bwd_input``,
``conv_bwd_weight``, a channel sum). ``z`` itself is **recomputed** in the backward with
``conv_fwd``, not saved: saving it would make every forward — inference included, where fusing
pays most — write a second output as large as the first, and expose it in the op's schema. The
recomputation costs one forward convolution per backward, and it is differentiable, so
derivatives of any order come out right. ReLU and leaky ReLU with a slope ≥ 0 need no ``z`` at
all: their derivative is read off the saved output (its sign is ``z``'s).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

from .. import _activation as act
from .._backend import use_triton
from .._conv_args import ConvGeometry
from .._fallback import conv as fallback
from .._memory import to_layout
from ._primitive import Primitive
from .conv import (
    conv_fwd,
    fold_batch,
    forward_channels_last,
    forward_grads,
    triton_forward,
    unfold_batch,
)


def _impl(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    act_weight: Tensor | None,
    kind: str,
    alpha: float,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> Tensor:
    """``act(conv_fwd(input, weight, bias, ...))`` in ATen's layout."""
    g = ConvGeometry.from_args(stride, padding, padding_end, dilation, groups, padding_mode)
    layout = forward_channels_last(input, weight, padding_mode)
    if not use_triton(input):
        z = fallback.conv_forward(input, weight, bias, g)
        return to_layout(act.apply(z, kind, alpha, act_weight), layout)
    return triton_forward(
        input, weight, bias, g, layout, activation=kind, alpha=alpha, act_weight=act_weight
    )


def _fake(input, weight, bias, act_weight, kind, alpha, *geometry):
    return conv_fwd.fake(input, weight, bias, *geometry)


# --------------------------------------------------------------------------------------------
# Derivatives
# --------------------------------------------------------------------------------------------


def _setup(ctx, inputs, output):
    input, weight, bias, act_weight, kind, alpha, *geometry = inputs
    ctx.kind, ctx.alpha, ctx.geometry = kind, alpha, geometry
    if act.from_output(kind, alpha):
        ctx.save_for_backward(input, weight, output)
    else:
        ctx.save_for_backward(input, weight, bias, act_weight)


def _backward(ctx, grad):
    needs = ctx.needs_input_grad
    grad_act_weight = None
    if act.from_output(ctx.kind, ctx.alpha):
        input, weight, output = ctx.saved_tensors
        grad_z = act.backward_from_output(grad, output, ctx.kind, ctx.alpha)
    else:
        input, weight, bias, act_weight = ctx.saved_tensors
        z = conv_fwd(input, weight, bias, *ctx.geometry)  # recomputed: see the module docstring
        if needs[3]:  # PReLU's weight: both of its gradients in one pass
            grad_z, grad_act_weight = act.prelu_backward(grad, z, act_weight)
        else:
            grad_z = act.backward(grad, z, ctx.kind, ctx.alpha, act_weight)
    grads = (None, None, None)
    if any(needs[:3]):
        grads = forward_grads(input, weight, needs[:3], ctx.geometry, grad_z)[:3]
    return *grads, grad_act_weight, None, None, *[None] * len(ctx.geometry)


def _jvp(ctx, t_input, t_weight, t_bias, t_act_weight, *_):
    input, weight, bias, act_weight, kind, alpha, *geometry = ctx.primals
    z = conv_fwd(input, weight, bias, *geometry)
    primals = SimpleNamespace(primals=(input, weight, bias, *geometry))
    t_z = conv_fwd.jvp(primals, t_input, t_weight, t_bias)
    out = torch.zeros_like(z) if t_z is None else act.backward(t_z, z, kind, alpha, act_weight)
    if t_act_weight is not None:
        out = out + torch.where(z > 0, z.new_zeros(()), z) * act.per_channel(t_act_weight, z)
    return out


def _vmap(info, in_dims, input, weight, bias, act_weight, kind, alpha, *geometry):
    tensors, dims = (input, weight, bias, act_weight), in_dims[:4]
    if all(d is None for d in dims[1:]):  # a batch of inputs: fold it into N
        out = conv_act_fwd(fold_batch(input, dims[0], 0), weight, bias, act_weight, kind, alpha,
                           *geometry)  # fmt: skip
        return unfold_batch(out, 0, info.batch_size), 0
    # Batched parameters: one call per batch element (the geometry is never batched).
    results = []
    for i in range(info.batch_size):
        sliced = [t if d is None else t.select(d, i) for t, d in zip(tensors, dims)]
        results.append(conv_act_fwd(*sliced, kind, alpha, *geometry))
    return torch.stack(results), 0


conv_act_fwd = Primitive(
    "conv_act_fwd",
    _impl,
    fake=_fake,
    setup_context=_setup,
    backward=_backward,
    jvp=_jvp,
    vmap=_vmap,
    static_attributes=True,
)


@register_flop_formula(torch.ops.torchconv_ext.conv_act_fwd)
def _flop(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    # As torch counts a convolution followed by an activation (activations count 0).
    return conv_flop_count(input_shape, weight_shape, out_shape, transposed=False)
