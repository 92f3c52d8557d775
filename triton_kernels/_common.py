"""What every kernel file shares: the vocabulary, the constexpr codes and the launch helpers.

Every kernel works on 5-d tensors ``(N, C, D, H, W)``: 1-d and 2-d problems are viewed as 3-d
ones with unit leading spatial sizes (``as_5d``: a view, never a copy), so one kernel serves all
three ranks.

Vocabulary (one spelling everywhere in ``triton_kernels``):

* Tensors by role, as pointers and stride prefixes: input ``x_ptr`` / ``sx_``, weight ``w_ptr`` /
  ``sw_``, bias ``b_ptr`` / ``sb``, output ``y_ptr`` / ``sy_``, grad_out ``go_ptr`` / ``sgo_``,
  grad_in ``gi_ptr`` / ``sgi_``, grad_weight ``gw_ptr`` / ``sgw_``, indices ``idx_ptr`` / ``sidx_``,
  workspace ``ws_ptr`` / ``sws_``. Stride suffixes name the dim of the 5-d view: ``_n, _c, _d,
  _h, _w`` (a weight's are ``_o, _i, _d, _h, _w``).
* Sizes: ``N``; channels ``C`` (``C_IN`` / ``C_OUT`` per group for convolutions); input spatial
  ``D, H, W``; output spatial ``OD, OH, OW``; window ``KD, KH, KW``.
* Geometry: ``STRIDE_D``, ``PAD_D`` (padding before), ``PAD_END_D`` (after, where a kernel needs
  it), ``DIL_D``, and the same for ``_H`` / ``_W``. Python launchers spell the per-dim tuples
  ``stride``, ``padding``, ``padding_end``, ``dilation`` and ``kernel_size``; ``kernel`` always
  means a Triton kernel, ``group`` a convolution group, ``geom`` a geometry, ``grad_*`` a
  gradient.
* Flags: ``CHANNELS_INNER`` (channels are the fastest-varying dim of the tile and of memory),
  ``USE_INT64`` (offsets need 64 bits), ``ACC_DTYPE`` (the accumulator's dtype; the accumulator
  is ``acc``), ``PAD_MODE`` / ``MODE`` / ``WINDOW`` / ``ACT`` (the codes below, never bare
  numbers).
* Epilogue activation (``_activation``): its parameter tensor ``aw_ptr`` / ``saw`` (a PReLU
  weight, per channel or one shared: stride 0), its scalar ``ACT_ALPHA`` / ``ACT_ALPHA_LO``.
* Kernel names: ``_<family>_<fwd|bwd_input|bwd_weight>_kernel``.
* Divisors: ``Q_<size>`` is ``fast_divisor(<size>)`` (``_indexing.quotient``). Inside a main loop,
  a runtime ``//`` or ``%`` costs a long instruction sequence every step: advance counters or
  divide by such a precomputed divisor, and check the loop (``loop SASS`` in the compile report).

Launcher contract (see the package docstring): arguments are validated upstream, outputs are
preallocated and every element is written.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import triton.language as tl

#: True when the kernels were decorated under Triton's CPU interpreter.
INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"


#: What a switch in the environment may say (any case, spaces ignored); unset or empty: its default.
_SWITCH_VALUES = {"1": True, "true": True, "yes": True, "on": True,
                  "0": False, "false": False, "no": False, "off": False}  # fmt: skip


def env_flag(name: str, default: bool) -> bool:
    """The environment variable ``name`` as a switch: ``1``/``true``/``yes``/``on`` or
    ``0``/``false``/``no``/``off``; ``default`` where unset or empty. Anything else raises
    ``ValueError`` naming the variable (a misspelt "off" must not leave a feature on).

    (As ``torchconv_ext._backend.env_flag``, whose package this one does not import.)"""
    value = os.environ.get(name, "")
    if not value.strip():
        return default
    flag = _SWITCH_VALUES.get(value.strip().lower())
    if flag is None:
        raise ValueError(
            f"environment variable {name}={value!r} is not a switch: expected 1, true, yes or on, "
            "or 0, false, no or off"
        )
    return flag


#: Whether the workspaces kernels share are NaN-filled when made (``TORCHCONV_EXT_POISON=1``,
#: read at import; the tests set it), as the library's outputs are: a kernel that reads what no
#: kernel wrote then reads NaN, not whatever the memory held (fresh memory is often zeros,
#: which a padding or a sum would take without a trace). (Read as ``torchconv_ext._memory``
#: reads it for outputs: that package may run without this one, so neither imports the other's.)
POISON: bool = env_flag("TORCHCONV_EXT_POISON", False)


def workspace(t: torch.Tensor) -> torch.Tensor:
    """``t``, a workspace just made uninitialised, NaN-filled under :data:`POISON`."""
    if POISON:
        t.fill_(float("nan"))
    return t


if INTERPRET:
    from ._interpreter import adapt_the_interpreter

    adapt_the_interpreter()
    if env_flag("TORCHCONV_EXT_BOUNDS_CHECK", False):
        from ._bounds import check_bounds

        check_bounds()

#: Offsets at or past this many elements need 64-bit arithmetic.
INT32_LIMIT = 2**31


def _compile_options() -> dict[str, bool]:
    """The compile options every launch and compile of ours passes. Multiplies and adds are
    contracted into FMAs (one rounding, not two: the bias and activation epilogues, the
    averages), as Triton has always compiled them — from Triton 3.10 its default is not to, and
    3.9 warns on every compile that leaves the choice to it. Whoever sets
    ``TRITON_DEFAULT_FP_FUSION`` chooses for our kernels too."""
    if os.environ.get("TRITON_DEFAULT_FP_FUSION") is not None:
        return {}
    return {"enable_fp_fusion": True}


#: Compile options of every kernel of ours (:func:`_compile_options`).
COMPILE_OPTIONS: dict[str, bool] = _compile_options()

# constexpr codes: padding modes (how a coordinate outside the input is read) ...
PAD_ZEROS = tl.constexpr(0)
PAD_REFLECT = tl.constexpr(1)
PAD_REPLICATE = tl.constexpr(2)
PAD_CIRCULAR = tl.constexpr(3)
# ... the reduction of a pooling window ...
MAX = tl.constexpr(0)
AVG = tl.constexpr(1)
# ... and how pooling windows are laid out.
FIXED = tl.constexpr(0)  # kernel_size / stride / padding / dilation
ADAPTIVE = tl.constexpr(1)  # output_size bins
PYRAMID = tl.constexpr(2)  # one adaptive grid per pyramid level, concatenated
# ... and the activation a convolution's epilogue applies after the bias.
ACT_NONE = tl.constexpr(0)
ACT_RELU = tl.constexpr(1)
ACT_LEAKY_RELU = tl.constexpr(2)  # slope ACT_ALPHA below zero
ACT_PRELU = tl.constexpr(3)  # slope aw_ptr[channel · saw] below zero
ACT_ELU = tl.constexpr(4)  # ACT_ALPHA · (exp(z) - 1) below zero
ACT_GELU = tl.constexpr(5)  # exact (erf)
ACT_GELU_TANH = tl.constexpr(6)  # tanh approximation
ACT_SILU = tl.constexpr(7)
ACT_RELU6 = tl.constexpr(8)
ACT_HARDSWISH = tl.constexpr(9)  # z · relu6(z + 3) / 6
ACT_HARDSIGMOID = tl.constexpr(10)  # relu6(z + 3) / 6
ACT_MISH = tl.constexpr(11)  # z · tanh(softplus(z))
ACT_SIGMOID = tl.constexpr(12)

#: Padding-mode names (as the ops take them) to the codes launchers pass as ``PAD_MODE``.
PAD_MODES: dict[str, int] = {
    "zeros": PAD_ZEROS.value,
    "reflect": PAD_REFLECT.value,
    "replicate": PAD_REPLICATE.value,
    "circular": PAD_CIRCULAR.value,
}
#: Pooling reductions by name, as launchers pass them as ``MODE``.
POOL_MODES: dict[str, int] = {"max": MAX.value, "avg": AVG.value}
#: Epilogue activations by name (``None``: none), as launchers pass them as ``ACT``.
ACTIVATIONS: dict[str | None, int] = {
    None: ACT_NONE.value,
    "relu": ACT_RELU.value,
    "leaky_relu": ACT_LEAKY_RELU.value,
    "prelu": ACT_PRELU.value,
    "elu": ACT_ELU.value,
    "gelu": ACT_GELU.value,
    "gelu_tanh": ACT_GELU_TANH.value,
    "silu": ACT_SILU.value,
    "relu6": ACT_RELU6.value,
    "hardswish": ACT_HARDSWISH.value,
    "hardsigmoid": ACT_HARDSIGMOID.value,
    "mish": ACT_MISH.value,
    "sigmoid": ACT_SIGMOID.value,
}


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` in plain Python (``triton.cdiv`` is a slower constexpr function)."""
    return -(-a // b)


def fast_divisor(d: int) -> int:
    """``d`` (``1 <= d < 2**31``) as one kernel argument for ``_indexing.quotient``: the
    multiplier ``m = floor(2**32·(2**l - d)/d) + 1`` and shift ``l = ceil(log2 d)`` of
    Granlund and Montgomery's division by an invariant integer, packed above bit 32 so that
    every value is an int64 argument (the kernels mark these arguments ``do_not_specialize``:
    one compiled variant for every divisor)."""
    if not 1 <= d < 2**31:
        raise ValueError(f"divisor {d} outside [1, 2**31)")
    shift = (d - 1).bit_length()
    multiplier = (2**32 * (2**shift - d)) // d + 1
    return (shift << 33) | (1 << 32) | multiplier


def next_power_of_2(n: int) -> int:
    """The least power of two ``>= n`` (``n >= 1``), as ``triton.next_power_of_2`` in plain
    Python."""
    return 1 << (n - 1).bit_length() if n > 0 else 0


def as_5d(t: torch.Tensor) -> torch.Tensor:
    """View an ``(N, C, *spatial)`` tensor with 1–3 spatial dims as ``(N, C, D, H, W)``."""
    while t.dim() < 5:
        t = t.unsqueeze(2)
    return t


def spatial3(values: Sequence[int], fill: int) -> tuple[int, int, int]:
    """Left-pad per-dimension parameters to three entries (depth, height, width)."""
    values = tuple(map(int, values))
    return (fill,) * (3 - len(values)) + values


def phase_steps(stride: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """``(TSTEP_D, TSTEP_H, TSTEP_W, OSTEP_D, OSTEP_H, OSTEP_W)`` of an input gradient split
    into phases modulo the stride (``_indexing.phase_taps``): per dim, the taps that reach one
    phase are every ``stride / gcd(stride, dilation)``-th, and consecutive ones meet output
    positions ``dilation / gcd`` apart."""
    strides, dilations = spatial3(stride, 1), spatial3(dilation, 1)
    gcds = [math.gcd(s, d) for s, d in zip(strides, dilations, strict=True)]
    return (
        *(s // g for s, g in zip(strides, gcds, strict=True)),
        *(d // g for d, g in zip(dilations, gcds, strict=True)),
    )


def pack_geometry(*params: tuple[Sequence[int], int]) -> tuple[int, ...]:
    """Per-dim parameters as the kernels take them, each ``(values, fill)`` padded to ``(D, H,
    W)`` with ``fill`` (1 for sizes, strides and dilations, 0 for paddings), concatenated."""
    packed: tuple[int, ...] = ()
    for values, fill in params:
        packed += spatial3(values, fill)
    return packed


def row_strides(t5: torch.Tensor) -> list[int]:
    """The ``(n, c, d, h)`` strides of a 5-d tensor read as rows along ``w``. A unit dim's index
    is always 0, so its stride is free: 0 keeps it out of alignments."""
    return [s if size > 1 else 0 for s, size in zip(t5.stride()[:4], t5.shape[:4])]


def row_alignment(width: int, *tensors5: torch.Tensor) -> int:
    """The largest power of two, at most 16 bytes of the first tensor's elements, dividing
    ``width`` and every tensor's row strides. The row-segment kernels take sizes and strides in
    these units and multiply back by a constexpr, which shows the compiler aligned vectors
    (Triton itself marks integer arguments divisible by 16 only)."""
    strides = (s for t in tensors5 for s in row_strides(t))
    return math.gcd(width, *strides, 16 // tensors5[0].element_size())


def needs_int64(*tensors: torch.Tensor | None) -> bool:
    """Whether any tensor can be addressed past 2**31 elements (then offsets must be int64)."""
    for t in tensors:
        if t is None:
            continue
        if t.untyped_storage().nbytes() < INT32_LIMIT:
            continue  # every offset lies inside a storage of fewer than 2**31 elements
        span = 1 + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()) if s > 0)
        if max(span, t.numel()) >= INT32_LIMIT:
            return True
    return False


def acc_dtype(dtype: torch.dtype) -> tl.dtype:
    """The accumulator of a reduction over ``dtype`` values: fp64 for fp64, else fp32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def acc_torch_dtype(dtype: torch.dtype) -> torch.dtype:
    """:func:`acc_dtype` as a torch dtype (for workspaces)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def channels_inner(t5: torch.Tensor) -> bool:
    """Whether channels are the fastest-varying dim of a 5-d view (channels-last-like): then
    kernels tile channels innermost, so loads along channels are contiguous. (The same for the
    ``(N, C, *spatial)`` tensor the view is of: size-1 dims do not count.)"""
    if t5.shape[1] <= 1:
        return False
    spatial = [st for s, st in zip(t5.shape[2:], t5.stride()[2:]) if s > 1]
    return not spatial or t5.stride(1) < min(spatial)


def dot_precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    """``tl.dot``'s ``input_precision`` that matches torch for this dtype."""
    if dtype == torch.float32 and allow_tf32 and not INTERPRET:
        return "tf32"
    return "ieee"


def check_device(*tensors: torch.Tensor | None) -> None:
    """Refuse a launch that cannot run (CPU tensors without the interpreter)."""
    for t in tensors:
        if t is not None and not t.is_cuda and not INTERPRET:
            raise RuntimeError(
                "Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 set before "
                "triton_kernels is imported to run them on the CPU"
            )
