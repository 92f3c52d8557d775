"""Argument checking and output-size arithmetic for convolution, shared by every path.

The functional API calls :func:`conv_geometry` (or :func:`conv_transpose_geometry`) once per
call; the primitives take the normalised :class:`ConvGeometry` as arguments (``as_args`` /
``from_args``), and their fakes and both backends work from it, so the rules for
``padding='same'``, padding modes and output sizes exist in one place only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ._args import (
    IntOrTuple,
    Padding,
    check_tensor,
    checked_pairs,
    expand,
    is_ints,
    memoized,
    plain_int,
    string_padding,
    transposed_same,
)

PADDING_MODES: tuple[str, ...] = ("zeros", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class ConvGeometry:
    """Normalised convolution arguments, one entry per spatial dimension.

    ``padding`` is applied before (front/top/left) and ``padding_end`` after each dimension;
    they differ for TensorFlow-style ``'same'`` padding with an odd total, and where the caller
    gives ``(before, after)`` pairs.
    """

    stride: tuple[int, ...]
    padding: tuple[int, ...]
    padding_end: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str

    @property
    def symmetric_zero_padding(self) -> bool:
        """Whether ATen's own ``padding`` argument can express this padding."""
        return self.padding_mode == "zeros" and self.padding == self.padding_end

    def as_args(self) -> tuple:
        """The geometry as the convolution primitives take it: their trailing positional
        arguments (the one place they are spelled out is the primitives' schemas)."""
        return (
            self.stride,
            self.padding,
            self.padding_end,
            self.dilation,
            self.groups,
            self.padding_mode,
        )

    @classmethod
    def from_args(cls, *args: Any) -> ConvGeometry:
        """Inverse of :meth:`as_args` (a registered op passes lists where it has tuples)."""
        stride, padding, padding_end, dilation, groups, padding_mode = args
        return cls(
            tuple(stride), tuple(padding), tuple(padding_end), tuple(dilation), groups, padding_mode
        )

    def unpadded(self) -> ConvGeometry:
        """The same convolution of an input padded beforehand (no padding of its own)."""
        zeros = (0,) * len(self.stride)
        return dataclasses.replace(self, padding=zeros, padding_end=zeros, padding_mode="zeros")

    def with_groups(self, groups: int) -> ConvGeometry:
        """The same geometry with another group count (batching rules fold a batch into it)."""
        return dataclasses.replace(self, groups=groups)


def expand_param(value: IntOrTuple, ndim: int, name: str) -> tuple[int, ...]:
    """An int, or a sequence of 1 or ``ndim`` ints, as a tuple of ``ndim`` ints (torch's rule:
    ``TypeError`` for anything but ints, ``RuntimeError`` for a wrong count)."""
    values = expand(value, ndim)
    if values is None:
        if not is_ints(value):
            raise TypeError(f"{name} must be an int or a tuple of ints, but got {name}={value!r}")
        shown = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
        raise RuntimeError(
            f"expected {name} to be a single integer value or a list of {ndim} values to match "
            f"the convolution dimensions, but got {name}={shown}"
        )
    return values


def conv_output_size(
    size: int, kernel: int, stride: int, padding: int, padding_end: int, dilation: int
) -> int:
    """Output length of one spatial dimension."""
    return (size + padding + padding_end - dilation * (kernel - 1) - 1) // stride + 1


def check_same_device_dtype(name: str, input: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Refuse operands on different devices or of different dtypes (torch's messages)."""
    for label, t in others.items():
        if t is None:
            continue
        if t.device != input.device:
            raise RuntimeError(
                f"{name}: expected input and {label} on the same device, but got input on "
                f"{input.device} and {label} on {t.device}"
            )
        if t.dtype != input.dtype:
            raise RuntimeError(
                f"{name}: input type ({input.dtype}) and {label} type ({t.dtype}) should be the same"
            )


def check_padding_mode(padding_mode: str) -> None:
    if padding_mode not in PADDING_MODES:
        raise ValueError(
            f"padding_mode must be one of {set(PADDING_MODES)}, but got padding_mode={padding_mode!r}"
        )


def _check_common(
    name: str,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: IntOrTuple,
    dilation: IntOrTuple,
    groups: int,
    weight_layout: str,
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """Checks shared by convolution and transposed convolution; returns (stride, dilation,
    groups) as plain ints."""
    check_tensor(name, "weight", weight)
    check_tensor(name, "bias", bias, optional=True)
    ndim = input.dim() - 2
    if weight.dim() != ndim + 2:
        raise RuntimeError(
            f"{name}: expected weight of {ndim + 2} dims {weight_layout}, but got weight of size "
            f"{list(weight.shape)}"
        )
    groups = plain_int("groups", groups)
    if weight.shape[0] == 0:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be at least 1 at dimension 0, but got "
            f"weight of size {list(weight.shape)} instead"
        )
    if any(k == 0 for k in weight.shape[2:]):
        raise RuntimeError(
            f"{name}: kernel size should be greater than zero, but got weight of size "
            f"{list(weight.shape)}"
        )
    check_same_device_dtype(name, input, weight=weight, bias=bias)
    stride_t = expand_param(stride, ndim, "stride")
    dilation_t = expand_param(dilation, ndim, "dilation")
    if min(stride_t) <= 0:
        raise RuntimeError(
            f"{name}: non-positive stride is not supported, but got stride={list(stride_t)}"
        )
    if min(dilation_t) <= 0:
        raise RuntimeError(
            f"{name}: dilation should be greater than zero, but got {list(dilation_t)}"
        )
    if groups <= 0:
        raise RuntimeError(f"{name}: non-positive groups is not supported, but got groups={groups}")
    return stride_t, dilation_t, groups


def _check_empty_input(input: torch.Tensor) -> None:
    """ATen convolves an empty input only where its batch or its channels are what is empty
    (an empty spatial dim would leave an output of padding alone, which it refuses)."""
    if input.numel() == 0 and input.shape[0] and input.shape[1]:
        raise RuntimeError(
            "Only zero batch or zero channel inputs are supported, but got input shape: "
            f"{list(input.shape)}"
        )


def _check_bias(weight: torch.Tensor, bias: torch.Tensor | None, c_out: int) -> None:
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != c_out):
        raise RuntimeError(
            f"Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional with "
            f"{c_out} elements, but got bias of size {list(bias.shape)} instead"
        )


def _padding_pairs(
    name: str, padding: Padding, ndim: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A convolution's numeric padding as ``(before, after)``: an int, or per spatial dimension
    an int (both sides) or a ``(before, after)`` pair; torch's error types for other forms."""
    pairs = checked_pairs(
        name, padding, ndim,
        lambda: f"expected padding to be a single integer value or a list of {ndim} values to "
        f"match the convolution dimensions, but got padding={list(padding)}",  # type: ignore[arg-type]
    )  # fmt: skip
    for side in pairs:
        _check_non_negative(name, padding, side)
    return pairs


def _check_non_negative(name: str, padding: object, values: tuple[int, ...]) -> None:
    if min(values) < 0:
        shown = list(values) if is_ints(padding) else padding
        raise RuntimeError(f"{name}: negative padding is not supported, but got padding={shown}")


@memoized
def conv_geometry(
    name: str,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: IntOrTuple,
    padding: str | Padding,
    dilation: IntOrTuple,
    groups: int,
    padding_mode: str,
) -> ConvGeometry:
    """Validate the arguments of a (batched) convolution and normalise them.

    ``input`` is ``(N, C_in, *spatial)``, ``weight`` ``(C_out, C_in/groups, *kernel)``;
    ``padding`` is also ``'same'``/``'valid'``, or ``(before, after)`` pairs. Raises
    torch's exception types with messages that name the argument and the expected form.
    """
    ndim = input.dim() - 2
    stride_t, dilation_t, groups = _check_common(
        name, input, weight, bias, stride, dilation, groups, "(C_out, C_in/groups, *kernel)"
    )
    check_padding_mode(padding_mode)
    c_out, c_in = weight.shape[0], input.shape[1]
    if c_out % groups != 0:
        raise RuntimeError(
            f"{name}: given groups={groups}, expected weight to be divisible by {groups} at "
            f"dimension 0, but got weight of size {list(weight.shape)}"
        )
    if c_in != weight.shape[1] * groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected "
            f"input{list(input.shape)} to have {weight.shape[1] * groups} channels, but got "
            f"{c_in} channels instead"
        )
    _check_bias(weight, bias, c_out)

    sizes, kernel = input.shape[2:], weight.shape[2:]
    if isinstance(padding, str):
        # torch.nn.functional raises RuntimeError here (torch.nn's constructors a ValueError).
        before, end = string_padding(
            name, padding, sizes, kernel, stride_t, dilation_t, error=RuntimeError
        )
    else:
        before, end = _padding_pairs(name, padding, ndim)

    check_mode_padding(padding_mode, sizes, before, end, input.shape)
    padded = [s + b + e for s, b, e in zip(sizes, before, end)]
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation_t)]
    if any(p < k for p, k in zip(padded, span)):
        raise RuntimeError(
            f"{name}: calculated padded input size per channel: ({' x '.join(map(str, padded))}). "
            f"Kernel size: ({' x '.join(map(str, span))}). Kernel size can't be greater than actual "
            "input size"
        )
    _check_empty_input(input)
    return ConvGeometry(stride_t, before, end, dilation_t, groups, padding_mode)


def conv_transpose_geometry(
    name: str,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: IntOrTuple,
    padding: str | Padding,
    output_padding: IntOrTuple,
    groups: int,
    dilation: IntOrTuple,
) -> tuple[ConvGeometry, list[int]]:
    """Validate a (batched) transposed convolution; return its adjoint convolution's geometry
    and the output's spatial size (see :func:`_transpose_geometry`)."""
    g, out = _transpose_geometry(
        name, input, weight, bias, stride, padding, output_padding, groups, dilation
    )
    return g, list(out)


@memoized
def _transpose_geometry(
    name: str,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: IntOrTuple,
    padding: str | Padding,
    output_padding: IntOrTuple,
    groups: int,
    dilation: IntOrTuple,
) -> tuple[ConvGeometry, tuple[int, ...]]:
    """Validate a (batched) transposed convolution; return its adjoint convolution's geometry
    and the output's spatial size.

    A transposed convolution is the input-gradient of the convolution that maps its output back
    to its input, so it is described by that convolution's geometry: ``padding`` cropped at the
    start and ``padding_end`` at the end of the full result (a negative ``padding_end`` extends
    it). Beyond torch: ``(before, after)`` pairs crop each side by its own amount
    (``output_padding`` lowers the end's), ``'same'`` gives ``output = input·stride`` with the
    crop split evenly, the odd pixel at the end, and ``'valid'`` crops nothing.
    """
    ndim = input.dim() - 2
    stride_t, dilation_t, groups = _check_common(
        name, input, weight, bias, stride, dilation, groups, "(C_in, C_out/groups, *kernel)"
    )
    if weight.shape[1] == 0:
        raise RuntimeError(
            f"{name}: non-empty weight expected, but got weight of size {list(weight.shape)}"
        )
    c_in = input.shape[1]
    if c_in % groups != 0:
        raise RuntimeError(
            f"{name}: given groups={groups}, expected input channels {c_in} to be divisible by "
            f"{groups}, for input of size {list(input.shape)}"
        )
    if weight.shape[0] != c_in:
        raise RuntimeError(
            f"Given transposed=1, weight of size {list(weight.shape)}, expected input"
            f"{list(input.shape)} to have {weight.shape[0]} channels, but got {c_in} channels instead"
        )
    _check_bias(weight, bias, weight.shape[1] * groups)

    out_pad = expand_param(output_padding, ndim, "output_padding")
    sizes, kernel = input.shape[2:], weight.shape[2:]
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation_t)]
    full = [(i - 1) * s + k for i, s, k in zip(sizes, stride_t, span)]
    if isinstance(padding, str):
        if any(out_pad):
            raise ValueError(f"{name}: output_padding cannot be combined with padding={padding!r}")
        if padding == "valid":
            before = end = (0,) * ndim
        elif padding == "same":
            crops = [transposed_same(*a) for a in zip(kernel, stride_t, dilation_t)]
            before, end = tuple(c[0] for c in crops), tuple(c[1] for c in crops)
        else:
            string_padding(name, padding, sizes, kernel, stride_t, dilation_t, error=RuntimeError)
    else:
        before, after = _padding_pairs(name, padding, ndim)
        if any(op < 0 or (op >= s and op >= d) for op, s, d in zip(out_pad, stride_t, dilation_t)):
            raise RuntimeError(
                f"{name}: output padding must be non-negative and smaller than either stride or "
                f"dilation, but got output_padding={list(out_pad)}, stride={list(stride_t)}, "
                f"dilation={list(dilation_t)}"
            )
        end = tuple(a - op for a, op in zip(after, out_pad))
    _check_empty_input(input)
    out = [f - b - e for f, b, e in zip(full, before, end)]
    if any(o <= 0 for o in out):
        raise RuntimeError(
            f"{name}: given input size {list(sizes)}, the calculated output size {out} is too "
            "small: reduce padding"
        )
    return ConvGeometry(stride_t, before, end, dilation_t, groups, "zeros"), tuple(out)


def check_mode_padding(
    padding_mode: str,
    sizes: Sequence[int],
    before: Sequence[int],
    end: Sequence[int],
    input_shape: Sequence[int],
) -> None:
    """Reflect padding must be smaller than the input, circular padding at most its size."""
    if padding_mode not in ("reflect", "circular"):
        return
    for dim, (size, b, e) in enumerate(zip(sizes, before, end)):
        if padding_mode == "reflect" and max(b, e) >= size:
            raise RuntimeError(
                f"padding_mode='reflect': padding ({b}, {e}) should be less than the input size "
                f"{size} at spatial dimension {dim} of input {list(input_shape)}"
            )
        if padding_mode == "circular" and max(b, e) > size:
            raise RuntimeError(
                f"padding_mode='circular': padding ({b}, {e}) wraps around more than once at "
                f"spatial dimension {dim} of input {list(input_shape)} (size {size})"
            )


def conv_output_shape(input: torch.Tensor, weight: torch.Tensor, g: ConvGeometry) -> list[int]:
    """``[N, C_out, *out_spatial]`` of a batched convolution."""
    spatial = [
        conv_output_size(s, k, st, p, pe, d)
        for s, k, st, p, pe, d in zip(
            input.shape[2:], weight.shape[2:], g.stride, g.padding, g.padding_end, g.dilation
        )
    ]
    return [input.shape[0], weight.shape[0], *spatial]
