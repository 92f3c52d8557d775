"""The activation a convolution's epilogue applies to its accumulator, after the bias.

Kernels that take one call :func:`activate` on the finished accumulator just before the store,
with ``ACT`` one of the ``ACT_*`` codes of ``_common`` (``ACT_NONE`` compiles to nothing, so an
unactivated convolution runs exactly the code it ran before). Launchers pass the activation's
runtime arguments with :func:`epilogue_args`. Where a training step needs the pre-activation
``z`` too (the derivatives of SiLU and its kin read it), the epilogue stores it beside the
activation, at the same offsets: ``z_ptr`` is the tensor :func:`pre_activation_target` checks,
or None — a constant to Triton, so that the store compiles away. The formulas are torch's (``torch.nn.functional``),
evaluated in the accumulator's dtype; ELU's ``expm1`` (which Triton's language lacks, and its
interpreter has no ``libdevice`` for) is Kahan's: accurate near 0, where ``exp(z) - 1`` would
cancel (fp32's ELU of -1e-8 came out 0).
"""

from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl

from ._common import (
    ACT_ELU,
    ACT_GELU,
    ACT_GELU_TANH,
    ACT_HARDSIGMOID,
    ACT_HARDSWISH,
    ACT_LEAKY_RELU,
    ACT_MISH,
    ACT_PRELU,
    ACT_RELU,
    ACT_RELU6,
    ACT_SIGMOID,
    ACT_SILU,
    ACTIVATIONS,
    as_5d,
)

__all__ = [
    "ACTIVATIONS",
    "activate",
    "epilogue_args",
    "pre_activation_target",
    "stored_pre_activation",
]

# (constexpr: compiled kernels may read no other globals)
_SQRT1_2: tl.constexpr = tl.constexpr(0.7071067811865476)
_SQRT_2_OVER_PI: tl.constexpr = tl.constexpr(0.7978845608028654)


@triton.jit
def _times_alpha(v, ACT_ALPHA, ACT_ALPHA_LO):
    # The slope in v's dtype (its fp32 halves summed there: fp64 gets the fp64 value), then one
    # product, as torch's: two products summed made inf · slope NaN (inf - inf, or inf · 0).
    return v * (tl.cast(ACT_ALPHA, v.dtype) + tl.cast(ACT_ALPHA_LO, v.dtype))


@triton.jit
def activate(z, aw_ptr, aw_offs, aw_mask, ACT_ALPHA, ACT_ALPHA_LO, ACT: tl.constexpr):
    """``act(z)``, elementwise in ``z``'s dtype. ``aw_offs`` / ``aw_mask`` (broadcast to ``z``)
    address each element's PReLU weight; ``ACT_ALPHA + ACT_ALPHA_LO`` is the leaky slope or the
    ELU alpha (two fp32 scalars, so fp64 kernels get the fp64 value: Triton passes floats as
    fp32). NaN stays NaN, as in torch."""
    if ACT == ACT_RELU:
        z = tl.where(z < 0, 0.0, z)
    elif ACT == ACT_LEAKY_RELU:
        z = tl.where(z > 0, z, _times_alpha(z, ACT_ALPHA, ACT_ALPHA_LO))
    elif ACT == ACT_PRELU:
        slope = tl.load(aw_ptr + aw_offs, mask=aw_mask, other=0.0).to(z.dtype)
        z = tl.where(z > 0, z, z * slope)
    elif ACT == ACT_ELU:
        z = tl.where(z > 0, z, _times_alpha(_expm1(z), ACT_ALPHA, ACT_ALPHA_LO))
    elif ACT == ACT_GELU:
        z = 0.5 * z * (1.0 + tl.erf(z * _SQRT1_2))
    elif ACT == ACT_GELU_TANH:
        # 0.5·(1 + tanh(u)) = sigmoid(2u): torch's tanh formula without tanh.
        u = _SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)
        z = z * tl.sigmoid(2.0 * u)
    elif ACT == ACT_SILU:
        z = z * tl.sigmoid(z)
    elif ACT == ACT_RELU6:
        z = _relu6(z)
    elif ACT == ACT_HARDSWISH:
        z = z * _relu6(z + 3.0) / 6.0
    elif ACT == ACT_HARDSIGMOID:
        z = _relu6(z + 3.0) / 6.0
    elif ACT == ACT_MISH:
        # tanh(softplus(z)) = (n² + 2n) / (n² + 2n + 2) with n = exp(z): no cancellation;
        # past 20, softplus(z) = z and tanh of it is 1 (torch's threshold), and n² overflows.
        n = tl.exp(tl.where(z > 20.0, 0.0, z))
        m = n * (n + 2.0)
        z = tl.where(z > 20.0, z, z * (m / (m + 2.0)))
    elif ACT == ACT_SIGMOID:
        z = tl.sigmoid(z)
    return z


@triton.jit
def stored_pre_activation(acc, z_ptrs, mask):
    """Store ``acc`` at ``z_ptrs`` in their dtype and return what was stored, back in ``acc``'s
    dtype: the training form's activation is then that of the ``z`` its backward reads, as
    torch's activation of a stored convolution is (and the full-precision accumulator need not
    live on beside the stored values: the largest 1×1 tiles spilled so)."""
    z = acc.to(z_ptrs.dtype.element_ty)
    tl.store(z_ptrs, z, mask=mask)
    return z.to(acc.dtype)


@triton.jit
def _expm1(z):
    """``exp(z) - 1`` without cancellation near 0 (Kahan): ``(u - 1) · z / log(u)`` with
    ``u = exp(z)`` — ``u - 1`` is exact there, and the ratio ``(u - 1) / log(u)`` varies slowly
    with ``u``, so even an approximate ``exp`` leaves it accurate. ``u == 1``: ``z`` itself;
    ``u == 0`` (``exp`` underflowed): -1. NaN stays NaN."""
    u = tl.exp(z)
    d = u - 1.0
    return tl.where(u == 1.0, z, tl.where(d == -1.0, d, d * (z / tl.log(u))))


@triton.jit
def _relu6(z):
    """``min(max(z, 0), 6)``, NaN kept (as torch's ``hardtanh``)."""
    z = tl.where(z < 0, 0.0, z)
    return tl.where(z > 6.0, 6.0, z)


def _split_float(value: float) -> tuple[float, float]:
    """``(hi, lo)``: ``hi`` is ``value`` rounded to fp32 and ``hi + lo == value`` to ~48 bits."""
    try:
        hi = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:  # beyond fp32's range: the kernel sees ±inf either way
        return value, 0.0
    return hi, value - hi


def epilogue_args(
    activation: str | None, alpha: float, weight: torch.Tensor | None, dummy: torch.Tensor
) -> tuple:
    """The runtime arguments ``(aw_ptr, saw, ACT_ALPHA, ACT_ALPHA_LO)`` of an epilogue:
    ``weight`` is the PReLU weight (one per channel, or one for all: stride 0), ``alpha`` the
    leaky slope or ELU alpha; ``dummy`` stands in for an absent weight (never read)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown epilogue activation {activation!r}")
    hi, lo = _split_float(float(alpha))
    if weight is None:
        return dummy, 0, hi, lo
    return weight, (0 if weight.numel() == 1 else weight.stride(0)), hi, lo


def pre_activation_target(
    launcher: str, z: torch.Tensor | None, out: torch.Tensor, activation: str | None
) -> torch.Tensor | None:
    """The 5-d tensor an epilogue stores the pre-activation to (``z_ptr``), ``None`` for none:
    ``z`` must have the output's shape, dtype, strides and device (the kernels store it at the
    output's offsets) and an activation must be given (else it would be the output again)."""
    if z is None:
        return None
    if activation is None:
        raise ValueError(f"{launcher}: pre_activation is given without an activation")
    if (z.shape, z.stride(), z.dtype, z.device) != (out.shape, out.stride(), out.dtype, out.device):
        raise ValueError(
            f"{launcher}: pre_activation must have the output's shape, strides, dtype and device "
            f"{list(out.shape)}, {list(out.stride())}, {out.dtype}, {out.device}; got "
            f"{list(z.shape)}, {list(z.stride())}, {z.dtype}, {z.device}"
        )
    return as_5d(z)
