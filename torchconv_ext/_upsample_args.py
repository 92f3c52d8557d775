"""Nearest upsampling arguments: checks, output sizes, scales and output layout, in one place.

Everything here follows ``torch.nn.functional.interpolate`` and ATen's ``upsample_nearest*``
(the same exception types and messages), and is shared by the fallback, the Triton path and the
fake implementations:

* :func:`upsample_geometry` turns ``interpolate``'s arguments into ``(output_size, scales)``, where
  ``scales[i]`` is torch's scale factor for spatial dim ``i`` or ``0.0`` when the interpolation
  scale comes from the sizes (``size`` given, or ``recompute_scale_factor=True``);
* :func:`source_scales` gives the float32 factor that maps output to input coordinates, exactly as
  ATen's ``compute_scales_value<float>`` does: ``float(1.0 / scale_factor)`` when a scale factor
  is used, else ``float(in) / out``;
* the output layouts are ``_memory.upsample_output_format`` / ``upsample_grad_format``.

The source index of output coordinate ``o`` is then ``min(floor(o * scale), in - 1)`` for
``'nearest'`` and ``min(floor((o + 0.5) * scale), in - 1)`` for ``'nearest-exact'``, with the
products rounded to float32 as ATen's CUDA kernels (and its CPU kernels for float32 and reduced
precision tensors) compute them.
"""

from __future__ import annotations

import math
import numbers
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ._args import is_int, memoized

NEAREST_MODES: tuple[str, ...] = ("nearest", "nearest-exact")
ROUNDINGS: tuple[str, ...] = ("floor", "round")
# The dtypes ATen's nearest upsampling kernels accept.
SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.uint8,
)
_INT64_MAX = 2**63 - 1
_DIM_NAMES = ("D", "H", "W")


@dataclass(frozen=True)
class UpsampleGeometry:
    """Normalised nearest-upsampling arguments for an ``(N, C, *spatial)`` input."""

    output_size: tuple[int, ...]
    #: torch's scale factor per spatial dim, ``0.0`` where the scale comes from the sizes.
    scales: tuple[float, ...]
    #: ``True`` for ``'nearest-exact'``.
    exact: bool

    def as_args(self) -> tuple[list[int], list[float], bool]:
        """The geometry as ``upsample_nearest_fwd``'s arguments after the input."""
        return list(self.output_size), list(self.scales), self.exact

    @classmethod
    def from_args(
        cls, output_size: Sequence[int], scales: Sequence[float], exact: bool
    ) -> UpsampleGeometry:
        """The geometry from the registered ops' arguments (the inverse of :meth:`as_args`)."""
        return cls(tuple(output_size), tuple(scales), exact)


# Torch's messages name the modes it has: lanczos from torch 2.13 on.
if hasattr(torch._C._nn, "_upsample_lanczos2d_aa"):
    _ANTIALIAS_MODES = "bilinear, bicubic, and lanczos"
    _MODES = "nearest | linear | bilinear | bicubic | trilinear | lanczos | area | nearest-exact"
else:
    _ANTIALIAS_MODES = "bilinear and bicubic"
    _MODES = "nearest | linear | bilinear | bicubic | trilinear | area | nearest-exact"


def op_name(spatial_dims: int, exact: bool) -> str:
    """ATen's name for the op, used in error messages."""
    return f"{'_upsample_nearest_exact' if exact else 'upsample_nearest'}{spatial_dims}d"


def _is_integer(x: object) -> bool:
    """``torch.nn.functional``'s rule: Python / NumPy integers and integer tensors of one
    element (bool ones too: ATen's op refuses those, :func:`upsample_geometry` as it does)."""
    return is_int(x)


def _as_size(x: object) -> int | torch.SymInt:
    """A size argument as an int; a symbolic size stays symbolic (never specialised)."""
    return x if isinstance(x, (int, torch.SymInt)) else int(x)


def _is_scale(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _checked_int64(value: float) -> int:
    """ATen's ``checked_convert<int64_t>(double)``: truncate, refusing NaN, inf and overflow."""
    if not math.isfinite(value) or not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise RuntimeError("value cannot be converted to type int64_t without overflow")
    return int(value)


def _sizes_message(sizes: Sequence[int]) -> str:
    names = _DIM_NAMES[3 - len(sizes) :]
    return ", ".join(f"{n}: {s}" for n, s in zip(names, sizes))


def check_sizes(input_shape: Sequence[int], output_size: Sequence[int]) -> None:
    """ATen's checks: positive spatial sizes, and a non-empty input unless only the batch is."""
    spatial = len(input_shape) - 2
    in_sizes = list(input_shape[2:])
    if any(s <= 0 for s in in_sizes) or any(s <= 0 for s in output_size):
        glue = " and output" if spatial == 1 else " output"
        raise RuntimeError(
            "Input and output sizes should be greater than 0, but got input "
            f"({_sizes_message(in_sizes)}){glue} ({_sizes_message(list(output_size))})"
        )
    if math.prod(input_shape[1:]) == 0:
        raise RuntimeError(
            f"Non-empty {len(input_shape)}D data tensor expected but got a tensor with sizes "
            f"{list(input_shape)}"
        )


def check_dtype(input: torch.Tensor, exact: bool) -> None:
    """Refuse the dtypes ATen's kernels refuse (integers other than uint8, bool, complex)."""
    if input.dtype not in SUPPORTED_DTYPES:
        raise NotImplementedError(
            f'"{op_name(input.dim() - 2, exact)}" not implemented for {input.dtype}: expected '
            "a floating point or uint8 tensor"
        )


def _output_size_from_scale(size: int, scale: float, recompute: bool, rounding: str) -> int:
    product = size * scale
    if torch.compiler.is_compiling():
        # Traced sizes (and scales) can be symbolic: they must stay symbolic (no int(), which
        # would specialise them), and cannot be tested here; the sizes they yield are checked
        # like any other.
        return round(product) if rounding == "round" else torch.sym_int(product)
    # Torch truncates: in Python (int(), which raises ValueError / OverflowError for NaN / inf)
    # when it recomputes the scale, in C++ (RuntimeError) otherwise.
    truncated = int(product) if recompute else _checked_int64(product)
    if rounding == "round":
        # Python's round() is half-to-even, like OpenCV's cvRound and NumPy's round (float():
        # under torch.jit.trace, sizes are tensors).
        return round(float(product))
    return truncated


@memoized
def upsample_geometry(
    input: torch.Tensor,
    size: int | Sequence[int] | None,
    scale_factor: float | Sequence[float] | None,
    mode: str,
    align_corners: bool | None,
    recompute_scale_factor: bool | None,
    antialias: bool,
    output_size_rounding: str = "floor",
) -> UpsampleGeometry:
    """Check ``interpolate``'s arguments for a nearest mode and normalise them.

    Raises what ``torch.nn.functional.interpolate`` raises for the same arguments (in the same
    order): ``ValueError`` for ``align_corners``, size/scale conflicts and length mismatches,
    ``TypeError`` for non-integer sizes (``RuntimeError`` for bool tensors), ``NotImplementedError`` for a rank other than 3-5,
    ``RuntimeError`` for non-positive output sizes or an empty input.
    """
    if mode not in NEAREST_MODES:
        raise ValueError(
            f"nearest upsampling expects mode 'nearest' or 'nearest-exact', got {mode!r}"
        )
    if output_size_rounding not in ROUNDINGS:
        raise ValueError(
            f"output_size_rounding must be 'floor' or 'round', got {output_size_rounding!r}"
        )
    if align_corners is not None:
        raise ValueError(
            "align_corners option can only be set with the interpolating modes: "
            "linear | bilinear | bicubic | trilinear"
        )
    dim = input.dim() - 2
    in_spatial = list(input.shape[2:])

    if size is not None and scale_factor is not None:
        raise ValueError("only one of size or scale_factor should be defined")
    if size is None and scale_factor is None:
        raise ValueError("either size or scale_factor should be defined")
    scale_factors: list[float] | None = None
    if size is not None:
        sizes = list(size) if isinstance(size, (list, tuple)) else [size] * max(dim, 0)
        if isinstance(size, (list, tuple)) and len(size) != dim:
            raise ValueError(
                "Input and output must have the same number of spatial dimensions, but got "
                f"input with spatial dimensions of {in_spatial} and output size of {size}. "
                "Please provide input tensor in (N, C, d1, d2, ...,dK) format and "
                "output size in (o1, o2, ...,oK) format."
            )
        if any(isinstance(s, torch.Tensor) and s.dtype == torch.bool for s in sizes):
            raise RuntimeError(f"interpolate: expected integer sizes, but got size={size!r}")
        if not all(_is_integer(s) for s in sizes):
            raise TypeError(
                "expected size to be one of int or Tuple[int] or Tuple[int, int] or "
                f"Tuple[int, int, int], but got size with types {[type(s) for s in sizes]}"
            )
        output_size = [_as_size(s) for s in sizes]
    else:
        if isinstance(scale_factor, (list, tuple)):
            if len(scale_factor) != dim:
                raise ValueError(
                    "Input and scale_factor must have the same number of spatial dimensions, but "
                    f"got input with spatial dimensions of {in_spatial} and "
                    f"scale_factor of shape {scale_factor}. "
                    "Please provide input tensor in (N, C, d1, d2, ...,dK) format and "
                    "scale_factor in (s1, s2, ...,sK) format."
                )
            factors = list(scale_factor)
        else:
            factors = [scale_factor] * max(dim, 0)
        if not all(_is_scale(s) for s in factors):
            raise TypeError(
                "expected scale_factor to be a float or a tuple of floats, but got scale_factor "
                f"with types {[type(s) for s in factors]}"
            )
        scale_factors = [float(s) for s in factors]

    recompute = bool(recompute_scale_factor)
    if recompute and size is not None:
        raise ValueError("recompute_scale_factor is not meaningful with an explicit size.")
    if antialias:
        raise ValueError(
            f"Anti-alias option is restricted to {_ANTIALIAS_MODES} modes and requires a 4-D "
            "tensor as input"
        )
    if dim not in (1, 2, 3):
        raise NotImplementedError(
            f"Input Error: Only 3D, 4D and 5D input Tensors supported (got {input.dim()}D) for "
            f"the modes: {_MODES} (got {mode})"
        )

    if scale_factors is not None:
        output_size = [
            _output_size_from_scale(s, f, recompute, output_size_rounding)
            for s, f in zip(in_spatial, scale_factors)
        ]
    exact = mode == "nearest-exact"
    check_dtype(input, exact)
    check_sizes(input.shape, output_size)
    scales = (0.0,) * dim if scale_factors is None or recompute else tuple(scale_factors)
    return UpsampleGeometry(tuple(output_size), scales, exact)


def _float32(x: float) -> float:
    """Round a Python float to the nearest float32 value."""
    return struct.unpack("f", struct.pack("f", x))[0]


def source_scales(
    input_size: Sequence[int], output_size: Sequence[int], scales: Sequence[float]
) -> tuple[float, ...]:
    """The float32 output→input coordinate factor per spatial dim (``compute_scales_value``)."""
    return tuple(
        _float32(1.0 / s) if s > 0 else _float32(_float32(i) / _float32(o))
        for i, o, s in zip(input_size, output_size, scales)
    )


def output_shape(input_shape: Sequence[int], output_size: Sequence[int]) -> list[int]:
    """``(N, C, *output_size)`` (symbolic sizes stay symbolic)."""
    return [input_shape[0], input_shape[1], *output_size]
