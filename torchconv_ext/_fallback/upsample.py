"""Nearest upsampling on ATen: ``upsample_nearest{1,2,3}d`` / ``_upsample_nearest_exact{1,2,3}d``
and their backward ops, so the fallback gives exactly what torch gives on that device.

Torch's CPU kernels differ from its CUDA kernels (and from the Triton kernels, which follow the
CUDA rule) in rare cases where a scale factor does not match the sizes: for float64 tensors the
1-d/3-d CPU kernels compute the scale in float64, and the 2-d CPU kernel copies straight through
when ``out == in`` or ``out == 2·in`` whatever the scale factor. The fallback keeps torch's
behaviour on each device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._backend import exporting
from .._upsample_args import source_scales
from . import without_autocast

aten = torch.ops.aten

_FORWARD = {
    (1, False): aten.upsample_nearest1d.default,
    (2, False): aten.upsample_nearest2d.default,
    (3, False): aten.upsample_nearest3d.default,
    (1, True): aten._upsample_nearest_exact1d.default,
    (2, True): aten._upsample_nearest_exact2d.default,
    (3, True): aten._upsample_nearest_exact3d.default,
}
_BACKWARD = {
    (1, False): aten.upsample_nearest1d_backward.default,
    (2, False): aten.upsample_nearest2d_backward.default,
    (3, False): aten.upsample_nearest3d_backward.default,
    (1, True): aten._upsample_nearest_exact1d_backward.default,
    (2, True): aten._upsample_nearest_exact2d_backward.default,
    (3, True): aten._upsample_nearest_exact3d_backward.default,
}


def _aten_scales(scales: Sequence[float]) -> list[float | None]:
    """Our ``0.0`` (scale taken from the sizes) is ATen's ``None``."""
    return [s if s > 0 else None for s in scales]


@without_autocast
def nearest_forward(
    input: torch.Tensor, output_size: Sequence[int], scales: Sequence[float], exact: bool
) -> torch.Tensor:
    if exporting():
        return _gathered(input, output_size, scales, exact)
    op = _FORWARD[(len(output_size), exact)]
    return op(input, list(output_size), *_aten_scales(scales))


def _gathered(
    input: torch.Tensor, output_size: Sequence[int], scales: Sequence[float], exact: bool
) -> torch.Tensor:
    """Nearest upsampling as one ``index_select`` per spatial dim, at the source indices of
    ATen's CUDA rule (``_upsample_args``'s docstring). What a graph for another runtime records:
    ONNX's exporters translate ATen's op to a Resize that takes the output size from the scale
    factors where both are given, which is wrong for sizes torch does not compute (rounded)."""
    in_sizes = [int(s) for s in input.shape[2:]]  # (under torch.jit.trace, sizes are tensors)
    factors = source_scales(in_sizes, output_size, scales)
    for d, (size, out, factor) in enumerate(zip(in_sizes, output_size, factors)):
        coords = torch.arange(out, dtype=torch.float32, device=input.device)
        if exact:
            coords = coords + 0.5
        index = (coords * factor).floor().clamp_(max=size - 1).long()
        input = input.index_select(2 + d, index)
    return input


@without_autocast
def nearest_backward(
    grad_output: torch.Tensor,
    input_size: Sequence[int],
    scales: Sequence[float],
    exact: bool,
) -> torch.Tensor:
    output_size = list(grad_output.shape[2:])
    op = _BACKWARD[(len(output_size), exact)]
    return op(grad_output, output_size, list(input_size), *_aten_scales(scales))
