"""The gradient through a convolution's fused activation, ``grad_z = grad_out · act'(z)``:
read off the activation's output for the activations whose derivative the output tells (ReLU,
ReLU6, leaky ReLU with a slope ≥ 0, sigmoid: :func:`activation_grad_from_output`), else off
the pre-activation ``z`` that a training step saved (SiLU, GELU, Mish, ELU, hard swish, hard
sigmoid, leaky ReLU: :func:`activation_grad_from_input`). One pass writes ``grad_z`` in
whichever layout the caller allocated — the channels-last copy the gradient GEMMs read,
where torch's backward op and then the layout conversion would take two passes over it.

A program computes a tile of (flat positions × channels) of one image: loaded along whichever
dim each input is dense in, stored along the output's (Triton moves the tile between the two
through shared memory). The formulas are those of torch's CUDA backward ops
(``threshold_backward``, ``hardtanh_backward``, ``leaky_relu_backward``, ``sigmoid_backward``,
``silu_backward``, ``gelu_backward``, ``mish_backward``, ``elu_backward``,
``hardswish_backward``, ``hardsigmoid_backward``), in the accumulator's dtype: float32 for
16-bit tensors, as torch's opmath. Where torch's take ``1 - tanh(u)²`` the kernel takes the
same product without the cancellation (from the sigmoid that gives the tanh).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._activation import _SQRT1_2, _SQRT_2_OVER_PI, _split_float, _times_alpha
from ._common import (
    ACT_ELU,
    ACT_GELU,
    ACT_GELU_TANH,
    ACT_HARDSIGMOID,
    ACT_HARDSWISH,
    ACT_LEAKY_RELU,
    ACT_RELU,
    ACT_RELU6,
    ACT_SILU,
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
#: The activations whose gradient :func:`activation_grad_from_input` computes.
FROM_INPUT = ("leaky_relu", "elu", "gelu", "gelu_tanh", "silu", "hardswish", "hardsigmoid", "mish")
# (constexpr: compiled kernels may read no other globals; 1/√(2π), as torch's kBeta; hard
# sigmoid's slope as torch's kernels hold it, ``1.0f / 6.0f`` for every dtype)
_INV_SQRT_2PI: tl.constexpr = tl.constexpr(0.3989422804014327)
_HARDSIGMOID_SLOPE: tl.constexpr = tl.constexpr(_split_float(1 / 6)[0])

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
def _from_input(go, z, ACT_ALPHA, ACT_ALPHA_LO, ACT: tl.constexpr):
    """``go · act'(z)``, as torch's backward op of the activation computes it from its input
    (NaN in ``z`` gives what torch's comparisons give)."""
    if ACT == ACT_LEAKY_RELU:  # leaky_relu_backward(go, z, slope, self_is_result=False)
        return tl.where(z > 0, go, _times_alpha(go, ACT_ALPHA, ACT_ALPHA_LO))
    elif ACT == ACT_ELU:  # elu_backward(go, alpha, 1, 1, False, z)
        return tl.where(z <= 0, _times_alpha(go * tl.exp(z), ACT_ALPHA, ACT_ALPHA_LO), go)
    elif ACT == ACT_GELU:  # gelu_backward(go, z): go · (Φ(z) + z · φ(z))
        cdf = 0.5 * (1.0 + tl.erf(z * _SQRT1_2))
        return go * (cdf + z * (tl.exp(-0.5 * z * z) * _INV_SQRT_2PI))
    elif ACT == ACT_GELU_TANH:  # gelu_backward(go, z, approximate='tanh')
        # With s = sigmoid(2u), tanh(u) = 2s - 1: 0.5·(1 + tanh(u)) = s, 1 - tanh(u)² = 4s(1 - s).
        z2 = z * z
        # (tensors first: a constexpr times a tensor is no tensor to the interpreter)
        s = tl.sigmoid((z + 0.044715 * z2 * z) * (2.0 * _SQRT_2_OVER_PI))
        inner = (1.0 + 0.134145 * z2) * _SQRT_2_OVER_PI  # (u', 0.134145 = 3 · 0.044715)
        return go * (s + 2.0 * z * (s * (1.0 - s)) * inner)
    elif ACT == ACT_SILU:  # silu_backward(go, z): go · s · (1 + z · (1 - s))
        s = tl.sigmoid(z)
        return go * s * (1.0 + z * (1.0 - s))
    elif ACT == ACT_HARDSWISH:  # hardswish_backward(go, z): 0 to -3, the slope inside, 1 from 3
        return tl.where(z <= -3.0, 0.0, tl.where(z < 3.0, go * (z / 3.0 + 0.5), go))
    elif ACT == ACT_HARDSIGMOID:  # hardsigmoid_backward(go, z), its slope 1/6 in float32
        return tl.where((z > -3.0) & (z < 3.0), go * _HARDSIGMOID_SLOPE, 0.0)
    else:  # ACT_MISH: mish_backward(go, z): go · (t + z · σ(z) · (1 - t²)), t = tanh(softplus(z))
        # t = m / (m + 2) with n = exp(z), m = n² + 2n, so 1 - t² = 4(m + 1) / (m + 2)²; past 20
        # t is 1 (n² overflows).
        big = z > 20.0
        n = tl.exp(tl.where(big, 0.0, z))
        m = n * (n + 2.0)
        t = tl.where(big, 1.0, m / (m + 2.0))
        one_minus_t2 = tl.where(big, 0.0, 4.0 * (m + 1.0) / ((m + 2.0) * (m + 2.0)))
        return go * (t + z * tl.sigmoid(z) * one_minus_t2)


@triton.jit
def _act_grad_kernel(
    go_ptr, src_ptr, gz_ptr, C, P,
    sgo_n, sgo_c, sgo_p, ss_n, ss_c, ss_p, sgz_n, sgz_c, sgz_p,
    ACT_ALPHA, ACT_ALPHA_LO,
    ACT: tl.constexpr, OF_OUTPUT: tl.constexpr, ACC_DTYPE: tl.constexpr,
    USE_INT64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """gz[n, c, p] = go[n, c, p] · act'(z), read off src[n, c, p]: ``y = act(z)`` where
    ``OF_OUTPUT``, else ``z``; over flat positions ``p`` (each tensor's spatial dims one run of
    stride ``s*_p``). Grid: position tiles × channel tiles × images."""
    n = wide(tl.program_id(2), USE_INT64)
    p = wide(tl.program_id(0), USE_INT64) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = wide(tl.program_id(1), USE_INT64) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (p < P)[:, None] & (c < C)[None, :]
    p, c = p[:, None], c[None, :]
    go = tl.load(go_ptr + n * sgo_n + c * sgo_c + p * sgo_p, mask=mask, other=0.0)
    src = tl.load(src_ptr + n * ss_n + c * ss_c + p * ss_p, mask=mask, other=0.0).to(ACC_DTYPE)
    if OF_OUTPUT:
        gz = _from_output(go.to(ACC_DTYPE), src, ACT_ALPHA, ACT_ALPHA_LO, ACT)
    else:
        gz = _from_input(go.to(ACC_DTYPE), src, ACT_ALPHA, ACT_ALPHA_LO, ACT)
    tl.store(gz_ptr + n * sgz_n + c * sgz_c + p * sgz_p, gz.to(gz_ptr.dtype.element_ty), mask=mask)


def _position_stride(t: torch.Tensor) -> int | None:
    """The stride between consecutive flat positions of ``t`` (``(N, C, *spatial)``): 1 for a
    contiguous tensor, C for a channels-last one; ``None`` where its spatial dims are not one
    run of one stride (``_gemm_common.position_strides``)."""
    strides = position_strides(as_5d(t))
    return None if strides is None else strides[1]


def launchable(*tensors: torch.Tensor) -> bool:
    """Whether :func:`activation_grad_from_output` (and ``_from_input``) takes these tensors: spatial dims that are
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
    _launch("activation_grad_from_output", grad_out, y, grad_z, activation, alpha, True)


def activation_grad_from_input(
    grad_out: torch.Tensor,
    z: torch.Tensor,
    grad_z: torch.Tensor,
    *,
    activation: str,
    alpha: float = 0.0,
) -> None:
    """Write ``grad_out · act'(z)`` into ``grad_z``, read off the pre-activation ``z``; the
    tensors as :func:`activation_grad_from_output` takes them, ``activation`` one of
    :data:`FROM_INPUT`, ``alpha`` the leaky slope or ELU's alpha."""
    _launch("activation_grad_from_input", grad_out, z, grad_z, activation, alpha, False)


def _launch(
    name: str,
    grad_out: torch.Tensor,
    src: torch.Tensor,
    grad_z: torch.Tensor,
    activation: str,
    alpha: float,
    of_output: bool,
) -> None:
    check_device(grad_out, src, grad_z)
    kinds = FROM_OUTPUT if of_output else FROM_INPUT
    if activation not in kinds:
        raise ValueError(f"{name}: activation must be one of {kinds}, got {activation!r}")
    if not (grad_out.shape == src.shape == grad_z.shape) or grad_z.dim() not in (3, 4, 5):
        raise ValueError(
            f"{name} takes (N, C, *spatial) tensors of one shape, got "
            f"{list(grad_out.shape)}, {list(src.shape)} and {list(grad_z.shape)}"
        )
    if not launchable(grad_out, src, grad_z):
        raise ValueError(
            f"{name}: each tensor's spatial dims must be one run of one stride, the batch at "
            f"most {_GRID_LIMIT} (strides {grad_out.stride()}, {src.stride()}, "
            f"{grad_z.stride()})"
        )
    if grad_z.numel() == 0:
        return
    n, c = grad_z.shape[:2]
    positions = grad_z.numel() // (n * c)
    strides = []
    for t in (grad_out, src, grad_z):
        strides += [t.stride(0), t.stride(1), _position_stride(t)]
    grid = (cdiv(positions, _BLOCK_P), cdiv(c, _BLOCK_C), n)
    launch(_act_grad_kernel, grid, (
        grad_out, src, grad_z, c, positions, *strides, *_split_float(float(alpha)),
    ), dict(
        ACT=ACTIVATIONS[activation], OF_OUTPUT=of_output, ACC_DTYPE=acc_dtype(grad_z.dtype),
        USE_INT64=needs_int64(grad_out, src, grad_z),
        BLOCK_P=_BLOCK_P, BLOCK_C=_BLOCK_C, num_warps=_WARPS,
    ))  # fmt: skip


__all__ = [
    "FROM_INPUT",
    "FROM_OUTPUT",
    "activation_grad_from_input",
    "activation_grad_from_output",
    "launchable",
]
