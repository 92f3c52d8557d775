"""The gradient through a convolution's fused activation, read off the activation's output:
``grad_z = grad_out · act'(z)`` for the activations whose derivative the output tells (ReLU,
ReLU6, leaky ReLU with a slope ≥ 0, sigmoid), in one pass that writes ``grad_z`` in whichever
layout the caller allocated — the channels-last copy the gradient GEMMs read, where torch's
backward op and then the layout conversion would take two passes over it.

A program computes a tile of (flat positions × channels) of one image: loaded along whichever
dim each input is dense in, stored along the output's (Triton moves the tile between the two
through shared memory). The formulas are torch's backward ops' (``threshold_backward``,
``hardtanh_backward``, ``leaky_relu_backward`` of the result, ``sigmoid_backward``), in the
accumulator's dtype: float32 for 16-bit tensors, as torch's opmath.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._activation import _split_float, _times_alpha
from ._common import (
    ACT_LEAKY_RELU,
    ACT_RELU,
    ACT_RELU6,
    ACTIVATIONS,
    acc_dtype,
    as_5d,
    cdiv,
    check_device,
    needs_int64,
)
from ._gemm_common import position_strides
from ._indexing import wide
from ._plan import launch

#: The activations whose gradient :func:`activation_grad_from_output` computes.
FROM_OUTPUT = ("relu", "relu6", "leaky_relu", "sigmoid")

#: A tile of positions × channels: 4096 elements, 32 per thread of 4 warps.
_BLOCK_P, _BLOCK_C, _WARPS = 64, 64, 4
#: Triton's grid limit on its second and third axes (channel tiles, images).
_GRID_LIMIT = 65535


@triton.jit
def _from_output(go, y, ACT_ALPHA, ACT_ALPHA_LO, ACT: tl.constexpr):
    """``go · act'(z)`` from ``y = act(z)``, as torch's backward op of the activation computes it
    (NaN in ``y`` passes ``go`` where torch's comparison is false, as there)."""
    if ACT == ACT_RELU:  # threshold_backward(go, y, 0)
        return tl.where(y <= 0, 0.0, go)
    elif ACT == ACT_RELU6:  # hardtanh_backward(go, y, 0, 6)
        return tl.where((y <= 0) | (y >= 6), 0.0, go)
    elif ACT == ACT_LEAKY_RELU:  # leaky_relu_backward(go, y, slope, self_is_result=True)
        return tl.where(y > 0, go, _times_alpha(go, ACT_ALPHA, ACT_ALPHA_LO))
    else:  # ACT_SIGMOID: sigmoid_backward(go, y)
        return go * (1.0 - y) * y


@triton.jit
def _act_grad_from_output_kernel(
    go_ptr, y_ptr, gz_ptr, C, P,
    sgo_n, sgo_c, sgo_p, sy_n, sy_c, sy_p, sgz_n, sgz_c, sgz_p,
    ACT_ALPHA, ACT_ALPHA_LO,
    ACT: tl.constexpr, ACC_DTYPE: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """gz[n, c, p] = go[n, c, p] · act'(z) read off y[n, c, p], over flat positions ``p`` (each
    tensor's spatial dims one run of stride ``s*_p``). Grid: position tiles × channel tiles ×
    images."""
    n = wide(tl.program_id(2), USE_INT64)
    p = wide(tl.program_id(0), USE_INT64) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = wide(tl.program_id(1), USE_INT64) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (p < P)[:, None] & (c < C)[None, :]
    p, c = p[:, None], c[None, :]
    go = tl.load(go_ptr + n * sgo_n + c * sgo_c + p * sgo_p, mask=mask, other=0.0)
    y = tl.load(y_ptr + n * sy_n + c * sy_c + p * sy_p, mask=mask, other=0.0)
    gz = _from_output(go.to(ACC_DTYPE), y.to(ACC_DTYPE), ACT_ALPHA, ACT_ALPHA_LO, ACT)
    tl.store(gz_ptr + n * sgz_n + c * sgz_c + p * sgz_p, gz.to(gz_ptr.dtype.element_ty), mask=mask)


def _position_stride(t: torch.Tensor) -> int | None:
    """The stride between consecutive flat positions of ``t`` (``(N, C, *spatial)``): 1 for a
    contiguous tensor, C for a channels-last one; ``None`` where its spatial dims are not one
    run of one stride (``_gemm_common.position_strides``)."""
    strides = position_strides(as_5d(t))
    return None if strides is None else strides[1]


def launchable(*tensors: torch.Tensor) -> bool:
    """Whether :func:`activation_grad_from_output` takes these tensors: spatial dims that are
    one run each (``_gemm_common.position_strides``), and a batch and channel tiles within a grid axis."""
    n, c = tensors[0].shape[:2]
    return (
        n <= _GRID_LIMIT
        and cdiv(c, _BLOCK_C) <= _GRID_LIMIT
        and all(_position_stride(t) is not None for t in tensors)
    )


def activation_grad_from_output(
    grad_out: torch.Tensor,
    y: torch.Tensor,
    grad_z: torch.Tensor,
    *,
    activation: str,
    alpha: float = 0.0,
) -> None:
    """Write ``grad_out · act'(z)`` into ``grad_z``, read off ``y = act(z)``.

    All three ``(N, C, *spatial)`` with 1–3 spatial dims, one shape and dtype, each laid out
    with its spatial dims as one run (:func:`launchable`: contiguous or channels-last, or any
    permutation of N and C around them); ``grad_z`` preallocated, every element written.
    ``activation`` one of :data:`FROM_OUTPUT`, ``alpha`` leaky ReLU's slope (≥ 0)."""
    check_device(grad_out, y, grad_z)
    if activation not in FROM_OUTPUT:
        raise ValueError(
            f"activation_grad_from_output: activation must be one of {FROM_OUTPUT}, got "
            f"{activation!r}"
        )
    if not (grad_out.shape == y.shape == grad_z.shape) or grad_z.dim() not in (3, 4, 5):
        raise ValueError(
            "activation_grad_from_output takes (N, C, *spatial) tensors of one shape, got "
            f"{list(grad_out.shape)}, {list(y.shape)} and {list(grad_z.shape)}"
        )
    if not launchable(grad_out, y, grad_z):
        raise ValueError(
            "activation_grad_from_output: each tensor's spatial dims must be one run of one "
            f"stride, the batch at most {_GRID_LIMIT} (strides {grad_out.stride()}, "
            f"{y.stride()}, {grad_z.stride()})"
        )
    if grad_z.numel() == 0:
        return
    n, c = grad_z.shape[:2]
    positions = grad_z.numel() // (n * c)
    strides = []
    for t in (grad_out, y, grad_z):
        strides += [t.stride(0), t.stride(1), _position_stride(t)]
    grid = (cdiv(positions, _BLOCK_P), cdiv(c, _BLOCK_C), n)
    launch(_act_grad_from_output_kernel, grid, (
        grad_out, y, grad_z, c, positions, *strides, *_split_float(float(alpha)),
    ), dict(
        ACT=ACTIVATIONS[activation], ACC_DTYPE=acc_dtype(grad_z.dtype),
        USE_INT64=needs_int64(grad_out, y, grad_z),
        BLOCK_P=_BLOCK_P, BLOCK_C=_BLOCK_C, num_warps=_WARPS,
    ))  # fmt: skip


__all__ = ["FROM_OUTPUT", "activation_grad_from_output", "launchable"]
