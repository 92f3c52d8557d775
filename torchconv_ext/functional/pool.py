"""Pooling: torch's ``max_pool*``, ``avg_pool*``, ``adaptive_*_pool*`` with their exact
signatures and results, plus TensorFlow-style ``padding='same'``/``'valid'``, spatial pyramid
pooling and global pooling.

One generic implementation per kind serves 1-, 2- and 3-d pooling; the public functions are thin
wrappers. Dtypes our kernels do not compute (integers, ...) go to torch's own op, and so do
calls on the fallback that torch itself accepts (see ``runs_kernels``). Under autocast the input
gets the dtype torch's op would give it (``_autocast``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._args import IntOrTuple, Padding, expand, has_pairs
from .._backend import exporting, exporting_onnx
from .._ops.pool import adaptive_pool_fwd, pool_fwd, pyramid_pool_fwd
from .._pool_args import (
    adaptive_output_size,
    check_levels,
    check_mode,
    pool_geometry,
    pyramid_input_check,
)
from ._common import (
    KERNEL_DTYPES,
    TORCH_OP,
    Openings,
    autocast_dtype,
    cast_operands,
    open_call,
    overridable,
    runs_kernels,
)

#: The openings of plain max and average pooling calls (each key starts with the op's name).
_OPENINGS = Openings()


def _unbatch(t: Tensor) -> Tensor:
    # torch pools an unbatched input as a (C, *spatial) tensor, whose outputs are contiguous.
    return t.squeeze(0).contiguous()


def _check_floating(name: str, input: Tensor) -> None:
    if input.dtype not in KERNEL_DTYPES["pool"]:
        raise NotImplementedError(
            f"{name}: not implemented for {input.dtype} (floating point only)"
        )


def _to_torch(kernels: bool, dtype: torch.dtype | None, torch_accepts: bool) -> bool:
    """Whether a call goes to torch's own op: when our kernels do not run it and torch takes its
    arguments, and always for dtypes only torch computes."""
    return not kernels and (torch_accepts or dtype not in KERNEL_DTYPES["pool"])


def _windows_miss_input(
    name: str, nd: int, input: Tensor, kernel_size, stride, padding, dilation, ceil_mode
) -> bool:
    """Whether a max-pooling window holds no input element — with torch's padding only a
    dilation makes one —, whose gradient CPU torch's backward writes out of bounds, and whose
    double backward gathers past the input on any device: ours computes those calls. Arguments
    torch refuses are left to its op and its error; so are traced calls (their sizes can be
    symbolic: no guards on them) and calls recorded for another runtime (torch's op there)."""
    if dilation == 1 or dilation == (1,) * nd or dilation == [1] * nd:
        return False
    if torch.compiler.is_compiling() or exporting():  # (a trace's sizes are tensors)
        return False
    try:
        x = input if input.dim() == nd + 2 else input.unsqueeze(0)
        geometry = pool_geometry(name, x, kernel_size, stride, padding, dilation, ceil_mode)
    except Exception:
        return False
    return geometry.misses_input(x.shape[2:])


def _max_pool_to_torch(name: str, nd: int, input: Tensor, dtype, geometry: tuple) -> bool:
    """:func:`_to_torch` for max pooling: torch takes numeric padding, but ours computes the
    windows that miss the input (asked only where our kernels do not run the call)."""
    kernels = runs_kernels("pool", input, dtype)
    accepts = _torch_takes(geometry[2]) and (
        kernels or not _windows_miss_input(name, nd, input, *geometry)
    )
    return _to_torch(kernels, dtype, accepts)


def _torch_takes(padding: str | Padding) -> bool:
    """Whether torch's pooling takes this padding (ints; strings and pairs are ours)."""
    return not (isinstance(padding, str) or has_pairs(padding))


def _torch_padding(name: str, padding: str | Padding, dtype: torch.dtype) -> IntOrTuple:
    """``padding`` as torch's pooling takes it, for a dtype only torch's op computes."""
    if _torch_takes(padding) or padding == "valid":
        return 0 if isinstance(padding, str) else padding
    if padding == "same" or has_pairs(padding):
        raise NotImplementedError(
            f"{name}: padding={padding!r} is implemented for floating-point inputs, not {dtype}"
        )
    raise ValueError(
        f"{name}: invalid padding string {padding!r}, should be one of {{'valid', 'same'}}"
    )


def _documented(template: str, **fields):
    """Give a per-rank wrapper its docstring from the template shared by the three ranks."""

    def wrap(fn):
        fn.__doc__ = template.format(**fields)
        return fn

    return wrap


def _max_pool(
    name: str,
    nd: int,
    input: Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None,
    padding: str | Padding,
    dilation: IntOrTuple,
    ceil_mode: bool,
    return_indices: bool,
):
    key = _OPENINGS.key(name, input, kernel_size, stride, padding, dilation, ceil_mode)
    opened = _OPENINGS.get(key)
    if opened is not None and opened is not TORCH_OP:  # this call's opening, as decided before
        batched, call = opened
        out, idx = call(input if batched else input.unsqueeze(0))
        if not batched:
            out, idx = _unbatch(out), _unbatch(idx)
        return (out, idx) if return_indices else out
    cast, dtype = autocast_dtype(f"{name}_with_indices" if return_indices else name, input)
    if opened is TORCH_OP or _max_pool_to_torch(
        name, nd, input, dtype, (kernel_size, stride, padding, dilation, ceil_mode)
    ):
        _OPENINGS.remember(key, TORCH_OP)
        return getattr(F, name)(
            input,
            kernel_size,
            stride,
            _torch_padding(name, padding, dtype),
            dilation,
            ceil_mode=ceil_mode,
            return_indices=return_indices,
        )
    batched, x = open_call(name, nd, input, cast=cast)
    geom = pool_geometry(name, x, kernel_size, stride, padding, dilation, ceil_mode)
    call = _OPENINGS.bind(key, pool_fwd, "max", *geom.as_args())
    _OPENINGS.remember(key, (batched, call))
    out, idx = call(x)
    if not batched:
        out, idx = _unbatch(out), _unbatch(idx)
    return (out, idx) if return_indices else out


def _avg_pool(
    name: str,
    nd: int,
    input: Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None,
    padding: str | Padding,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> Tensor:
    key = _OPENINGS.key(
        name, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    opened = _OPENINGS.get(key)
    if opened is not None:  # this call's opening, as decided before
        batched, call = opened
        out, _ = call(input if batched else input.unsqueeze(0))
        return out if batched else _unbatch(out)
    cast, dtype = autocast_dtype(name, input)
    kernels = runs_kernels("pool", input, dtype)
    # ONNX's exporters drop torch's divisor_override: for ONNX a divisor is composed (by ours
    # where ceil_mode may clip a window, its sizes read for the recorded input's)
    recorded_divisor = divisor_override is not None and exporting_onnx()
    torch_accepts = _torch_takes(padding) and (nd > 1 or divisor_override is None)
    if _to_torch(kernels, dtype, torch_accepts) and not (recorded_divisor and ceil_mode):
        if nd == 1 and divisor_override is not None:
            raise NotImplementedError(
                f"{name}: divisor_override is implemented for floating-point inputs, not {dtype}"
            )
        padding = _torch_padding(name, padding, dtype)
        if recorded_divisor:  # every window whole: its mean times its size, no size read
            mean = getattr(F, name)(input, kernel_size, stride, padding, False, True)
            return mean * (math.prod(expand(kernel_size, nd)) / divisor_override)
        extra = () if nd == 1 else (divisor_override,)
        return getattr(F, name)(
            input, kernel_size, stride, padding, ceil_mode, count_include_pad, *extra
        )
    batched, x = open_call(name, nd, input, cast=cast)
    geom = pool_geometry(
        name, x, kernel_size, stride, padding, 1, ceil_mode, count_include_pad, divisor_override
    )
    call = _OPENINGS.bind(key, pool_fwd, "avg", *geom.as_args())
    _OPENINGS.remember(key, (batched, call))
    out, _ = call(x)
    return out if batched else _unbatch(out)


def _open_adaptive(name: str, nd: int, mode: str, input: Tensor, output_size, key) -> object:
    """``TORCH_OP``, or ``(batched, autocast's cast, our op on its arguments)`` (bound for the
    call signature ``key``)."""
    cast, dtype = autocast_dtype(name, input)
    # Floating-point inputs take our op on the fallback too (whose computation is ATen's op),
    # but not recorded for another runtime: torch's own call then.
    if _to_torch(runs_kernels("pool", input, dtype), dtype, torch_accepts=exporting()):
        return TORCH_OP
    batched, x = open_call(name, nd, input)
    size = list(adaptive_output_size(name, x, output_size, mode, batched))
    return batched, cast, _OPENINGS.bind(key, adaptive_pool_fwd, mode, size)


def _adaptive_pool(name: str, nd: int, mode: str, input: Tensor, output_size, return_indices: bool):
    key = _OPENINGS.key(name, input, output_size)
    opened = _OPENINGS.get(key)
    if opened is None:
        opened = _open_adaptive(name, nd, mode, input, output_size, key)
        _OPENINGS.remember(key, opened)  # (no key under autocast: a cast is never remembered)
    if opened is TORCH_OP:
        args = (input, output_size) + ((return_indices,) if mode == "max" else ())
        return getattr(F, name)(*args)
    batched, cast, call = opened
    (x,) = cast_operands(cast, input if batched else input.unsqueeze(0))
    out, idx = call(x)
    if not batched:
        out, idx = _unbatch(out), (_unbatch(idx) if mode == "max" else idx)
    return (out, idx) if return_indices else out


# --------------------------------------------------------------------------------------------
# Max pooling
# --------------------------------------------------------------------------------------------

_MAX_DOC = """{d}-D max pooling, as :func:`torch.nn.functional.max_pool{d}d`.

    Args:
        input: ``(N, C, {s})`` or unbatched ``(C, {s})``; any strides (channels-last too).
        kernel_size, stride, dilation: an int or {d} ints (``stride`` defaults to the kernel).
        padding: an int or {d} ints (at most half the kernel; padded positions never win), or —
            beyond torch — per dim a ``(before, after)`` pair (each side at most half the
            kernel), ``'valid'`` (none) or ``'same'`` (TensorFlow's rule: output
            ``ceil(size/stride)``, the odd padding element at the end, any padding amount).
        ceil_mode: round the output size up; a last window starting in the right padding is
            dropped.
        return_indices: also return the int64 flat index of each maximum in its input plane.

    NaN propagates (its index points at the NaN); ties keep the first maximum's index.
    """


@_documented(_MAX_DOC, d=1, s="L")
@overridable
def max_pool1d(
    input: Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: str | Padding = 0,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    return _max_pool(
        "max_pool1d", 1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices
    )


@_documented(_MAX_DOC, d=2, s="H, W")
@overridable
def max_pool2d(
    input: Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: str | Padding = 0,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    return _max_pool(
        "max_pool2d", 2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices
    )


@_documented(_MAX_DOC, d=3, s="D, H, W")
@overridable
def max_pool3d(
    input: Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: str | Padding = 0,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    return _max_pool(
        "max_pool3d", 3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices
    )


# --------------------------------------------------------------------------------------------
# Average pooling
# --------------------------------------------------------------------------------------------

_AVG_DOC = """{d}-D average pooling, as :func:`torch.nn.functional.avg_pool{d}d`.

    Args:
        input: ``(N, C, {s})`` or unbatched ``(C, {s})``; any strides (channels-last too).
        kernel_size, stride: an int or {d} ints (``stride`` defaults to the kernel).
        padding: an int or {d} ints (at most half the kernel), or — beyond torch — per dim a
            ``(before, after)`` pair (each side at most half the kernel), ``'valid'`` or
            ``'same'`` (TensorFlow's rule, see :func:`max_pool2d`); with ``'same'`` padded
            positions are never counted, whatever ``count_include_pad`` says.
        ceil_mode: round the output size up (a last window starting in the right padding is
            dropped).
        count_include_pad: count zero padding in the divisor (the last window clipped to the
            padded input).
        divisor_override: divide every window sum by this instead (non-zero).
    """


@_documented(_AVG_DOC, d=1, s="L")
@overridable
def avg_pool1d(
    input: Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: str | Padding = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    return _avg_pool(
        "avg_pool1d",
        1,
        input,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )


@_documented(_AVG_DOC, d=2, s="H, W")
@overridable
def avg_pool2d(
    input: Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: str | Padding = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    return _avg_pool(
        "avg_pool2d",
        2,
        input,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )


@_documented(_AVG_DOC, d=3, s="D, H, W")
@overridable
def avg_pool3d(
    input: Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: str | Padding = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    return _avg_pool(
        "avg_pool3d",
        3,
        input,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )


# --------------------------------------------------------------------------------------------
# Adaptive pooling
# --------------------------------------------------------------------------------------------

_ADAPTIVE_DOC = """{d}-D adaptive {kind} pooling, as :func:`torch.nn.functional.adaptive_{k}_pool{d}d`.

    Output ``o`` pools the input range ``[floor(o·In/Out), ceil((o+1)·In/Out))`` of each dim.

    Args:
        input: ``(N, C, {s})`` or unbatched ``(C, {s})``; any strides.
        output_size: an int or {d} ints (``None`` keeps that input size).{extra}
    """

_INDICES_DOC = "\n        return_indices: also return the int64 flat index of each maximum."


@_documented(_ADAPTIVE_DOC, d=1, s="L", kind="max", k="max", extra=_INDICES_DOC)
@overridable
def adaptive_max_pool1d(input: Tensor, output_size, return_indices: bool = False):
    return _adaptive_pool("adaptive_max_pool1d", 1, "max", input, output_size, return_indices)


@_documented(_ADAPTIVE_DOC, d=2, s="H, W", kind="max", k="max", extra=_INDICES_DOC)
@overridable
def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False):
    return _adaptive_pool("adaptive_max_pool2d", 2, "max", input, output_size, return_indices)


@_documented(_ADAPTIVE_DOC, d=3, s="D, H, W", kind="max", k="max", extra=_INDICES_DOC)
@overridable
def adaptive_max_pool3d(input: Tensor, output_size, return_indices: bool = False):
    return _adaptive_pool("adaptive_max_pool3d", 3, "max", input, output_size, return_indices)


@_documented(_ADAPTIVE_DOC, d=1, s="L", kind="average", k="avg", extra="")
@overridable
def adaptive_avg_pool1d(input: Tensor, output_size) -> Tensor:
    return _adaptive_pool("adaptive_avg_pool1d", 1, "avg", input, output_size, False)


@_documented(_ADAPTIVE_DOC, d=2, s="H, W", kind="average", k="avg", extra="")
@overridable
def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    return _adaptive_pool("adaptive_avg_pool2d", 2, "avg", input, output_size, False)


@_documented(_ADAPTIVE_DOC, d=3, s="D, H, W", kind="average", k="avg", extra="")
@overridable
def adaptive_avg_pool3d(input: Tensor, output_size) -> Tensor:
    return _adaptive_pool("adaptive_avg_pool3d", 3, "avg", input, output_size, False)


# --------------------------------------------------------------------------------------------
# Beyond torch: pyramid and global pooling
# --------------------------------------------------------------------------------------------


@overridable
def spatial_pyramid_pool(
    input: Tensor, levels: Sequence[int] = (1, 2, 4), mode: str = "max"
) -> Tensor:
    """Spatial pyramid pooling: a fixed-length vector from an input of any spatial size.

    Each level ``l`` pools the input adaptively to ``l`` bins per spatial dimension; the levels
    are flattened and concatenated in order, i.e. the result equals
    ``torch.cat([adaptive_{mode}_pool(input, l).flatten(1) for l in levels], 1)`` — computed by
    one kernel launch for all levels (and one for the gradient).

    Args:
        input: ``(N, C, *spatial)`` with 1, 2 or 3 spatial dims; any strides.
        levels: bins per dimension of each level, positive ints (e.g. ``(1, 2, 4)``).
        mode: ``'max'`` or ``'avg'``.

    Returns:
        ``(N, C · Σ l**d)`` for ``d`` spatial dims, contiguous; under autocast in the dtype
        torch's adaptive pooling gives.
    """
    name = "spatial_pyramid_pool"
    check_mode(name, mode)
    levels = check_levels(name, levels)
    pyramid_input_check(name, input, mode, levels)
    _check_floating(name, input)
    x, _ = _as_adaptive(mode, input)
    out, _ = pyramid_pool_fwd(x, mode, list(levels))
    return out


def _as_adaptive(mode: str, input: Tensor) -> tuple[Tensor, bool]:
    """Pyramid and global pooling are adaptive pooling: ``input`` in the dtype autocast gives
    torch's adaptive pooling, and whether our kernels compute it."""
    cast, dtype = autocast_dtype(f"adaptive_{mode}_pool{input.dim() - 2}d", input)
    return cast_operands(cast, input)[0], runs_kernels("pool", input, dtype)


def _global_pool(name: str, mode: str, input: Tensor) -> Tensor:
    pyramid_input_check(name, input, mode)
    _check_floating(name, input)
    x, kernels = _as_adaptive(mode, input)
    if not kernels:  # the fallback: torch's adaptive pooling to one bin (and its autocast)
        return getattr(F, f"adaptive_{mode}_pool{input.dim() - 2}d")(input, 1).flatten(1)
    out, _ = adaptive_pool_fwd(x, mode, [1] * (input.dim() - 2))
    return out.flatten(1)


@overridable
def global_avg_pool(input: Tensor) -> Tensor:
    """Mean over all spatial positions: ``(N, C, *spatial)`` → ``(N, C)``, 1–3 spatial dims.

    A single-pass reduction (equal to ``adaptive_avg_pool(input, 1).flatten(1)``).
    """
    return _global_pool("global_avg_pool", "avg", input)


@overridable
def global_max_pool(input: Tensor) -> Tensor:
    """Maximum over all spatial positions: ``(N, C, *spatial)`` → ``(N, C)``, 1–3 spatial dims.

    A single-pass reduction (equal to ``adaptive_max_pool(input, 1).flatten(1)``; NaN
    propagates, the gradient goes to the first maximum).
    """
    return _global_pool("global_max_pool", "max", input)


__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "global_avg_pool",
    "global_max_pool",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "spatial_pyramid_pool",
]
