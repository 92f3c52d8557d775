"""``interpolate`` and ``upsample_nearest``: torch's signatures; the nearest modes run our kernels,
every other mode is :func:`torch.nn.functional.interpolate` itself. On the fallback
(``runs_kernels`` false) the nearest modes with torch's own arguments call ATen's op directly, on the
geometry checked here.

``open_call`` does not apply: ``interpolate`` has no unbatched form (a ``(C, L)`` tensor is not a
1-d input), and torch refuses a wrong rank only after checking the other arguments, with a
``NotImplementedError`` (``upsample_geometry`` keeps that order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .._backend import exporting
from .._fallback import upsample as fallback
from .._ops.upsample import upsample_nearest_fwd
from .._upsample_args import NEAREST_MODES, op_name, upsample_geometry
from ._common import Openings, autocast_dtype, cast_operands, overridable, runs_kernels

#: The openings of plain nearest-interpolation calls.
_OPENINGS = Openings()

Size = int | Sequence[int]
Scale = float | Sequence[float]


def _by_torch(geometry: tuple) -> Callable[[Tensor], Tensor]:
    """ATen's nearest op on a checked geometry, as a call on the input alone."""
    return lambda input: fallback.nearest_forward(input, *geometry)


@overridable
def interpolate(
    input: Tensor,
    size: Size | None = None,
    scale_factor: Scale | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
    *,
    output_size_rounding: str = "floor",
) -> Tensor:
    """Resize ``input``, as :func:`torch.nn.functional.interpolate`, with one extension.

    Modes ``'nearest'`` and ``'nearest-exact'`` run torchconv_ext's kernels (Triton on CUDA,
    ATen on the CPU fallback) and give torch's results: the same output sizes, values, output
    memory format (channels-last in → channels-last out) and gradients, for 3-D, 4-D and 5-D
    inputs of any layout. Every other mode (``'linear'``, ``'bilinear'``, ``'bicubic'``,
    ``'trilinear'``, ``'area'``, ...) is passed unchanged to
    :func:`torch.nn.functional.interpolate`, so this function is a full drop-in.

    Args:
        input: ``(N, C, W)``, ``(N, C, H, W)`` or ``(N, C, D, H, W)``.
        size: output spatial size, an int or one int per spatial dim.
        scale_factor: multiplier for the spatial size, a float or one per spatial dim. Exactly
            one of ``size`` and ``scale_factor`` must be given.
        mode: the algorithm; see above.
        align_corners: must be ``None`` for the nearest modes (as in torch).
        recompute_scale_factor: if ``True``, the output size is computed from ``scale_factor``
            and the interpolation then uses the scale ``in / out`` instead of ``1 /
            scale_factor`` (the default uses the given factor).
        antialias: must be ``False`` for the nearest modes (as in torch).
        output_size_rounding: how an output size is computed from ``scale_factor`` (nearest
            modes only; ignored when ``size`` is given). ``'floor'`` (default, torch's rule):
            ``floor(in * scale_factor)``. ``'round'``: ``round(in * scale_factor)``, halves to
            even, the rule of OpenCV's ``cv2.resize(fx=, fy=)`` and scikit-image's ``rescale``,
            for code ported from them; e.g. 5 × 1.5 gives 8 instead of 7. Only the size
            changes: the source index keeps torch's rule with the scale
            ``1 / scale_factor`` (or ``in / out`` with ``recompute_scale_factor=True``).

    Returns:
        The resized tensor, ``(N, C, *output_size)``; under autocast in the dtype torch's
        nearest upsampling gives on that device (float32 for CUDA autocast).

    Nearest rule: output coordinate ``o`` copies input ``min(floor(o * s), in - 1)``
    (``'nearest'``) or ``min(floor((o + 0.5) * s), in - 1)`` (``'nearest-exact'``), where ``s``
    is the float32 scale ATen uses. The Triton kernels follow torch's CUDA kernels exactly;
    torch's own CPU kernels deviate from them in rare cases where ``scale_factor`` does not
    match the sizes (see ``torchconv_ext._fallback.upsample``), and the CPU fallback keeps
    torch's CPU results. Backward is a deterministic gather (no atomics).
    """
    if mode not in NEAREST_MODES:
        if output_size_rounding != "floor":
            raise ValueError(
                "output_size_rounding='round' is only supported for the modes 'nearest' and "
                f"'nearest-exact', got mode {mode!r}"
            )
        return torch.nn.functional.interpolate(
            input, size, scale_factor, mode, align_corners, recompute_scale_factor, antialias
        )
    key = _OPENINGS.key(
        input, size, scale_factor, mode, align_corners, recompute_scale_factor, antialias,
        output_size_rounding,
    )  # fmt: skip
    opened = _OPENINGS.get(key)
    if opened is not None:  # this call's opening, as decided before (outside autocast)
        return opened(input)
    if output_size_rounding == "floor" and exporting():
        # recorded for another runtime: torch's own call (the overload ONNX's exporters read)
        return torch.nn.functional.interpolate(
            input, size, scale_factor, mode, align_corners, recompute_scale_factor, antialias
        )
    geom = upsample_geometry(
        input,
        size,
        scale_factor,
        mode,
        align_corners,
        recompute_scale_factor,
        antialias,
        output_size_rounding,
    )
    cast, dtype = autocast_dtype(op_name(input.dim() - 2, geom.exact), input)
    kernels = runs_kernels("upsample", input, dtype)
    (input,) = cast_operands(cast, input)
    # Torch's own op on the checked geometry (our messages name the argument where torch's do
    # not): torch's speed and autograd. Not for our 'round' sizes, which torch's decompositions
    # under torch.compile would index past the input (they do not clamp).
    ours = output_size_rounding != "floor" or kernels
    output_size, scales, exact = geom.as_args()
    # Tuples, as remembered: every call of a problem then passes the same arguments.
    geometry = (tuple(output_size), tuple(scales), exact)
    call = _OPENINGS.bind(key, upsample_nearest_fwd, *geometry) if ours else _by_torch(geometry)
    _OPENINGS.remember(key, call)
    return call(input)


@overridable
def upsample_nearest(
    input: Tensor,
    size: Size | None = None,
    scale_factor: Scale | None = None,
    *,
    output_size_rounding: str = "floor",
) -> Tensor:
    """Nearest upsampling: ``interpolate(input, size, scale_factor, mode='nearest')``.

    As :func:`torch.nn.functional.upsample_nearest` (without its deprecation warning); see
    :func:`interpolate` for the arguments.
    """
    return interpolate(
        input, size, scale_factor, mode="nearest", output_size_rounding=output_size_rounding
    )


__all__ = ["interpolate", "upsample_nearest"]
