"""``conv1d`` / ``conv2d`` / ``conv3d``: torch's signatures, plus ``padding_mode``,
TensorFlow-style ``padding='same'`` with any stride, ``(before, after)`` padding pairs, and a
fused ``activation``."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .. import _activation
from .._args import IntOrTuple, Padding, expand, expand_pairs, has_pairs, string_padding
from .._backend import exporting, untraced
from .._conv_args import conv_geometry
from .._fallback import conv as fallback
from .._ops.conv import conv_fwd
from .._ops.conv_act import conv_act_fwd
from .._padding import pad_input
from ._common import (
    KERNEL_DTYPES,
    TORCH_OP,
    Openings,
    cast_operands,
    conv_dtype,
    empty_batch,
    open_call,
    overridable,
    runs_kernels,
)

#: The openings of plain convolution calls (``_conv``).
_OPENINGS = Openings()


def _torch_accepts(spatial_dims: int, stride: IntOrTuple, padding, padding_mode: str) -> bool:
    """Whether torch's ``conv*d`` takes these arguments (or refuses them itself: a malformed
    stride reaches torch, whose error is the one to give)."""
    if padding_mode != "zeros":
        return False
    if not isinstance(padding, str):  # ints; (before, after) pairs are ours
        return not has_pairs(padding)
    if padding != "same":
        return True
    strides = expand(stride, spatial_dims)
    return strides is None or all(s == 1 for s in strides)


def torch_computes(
    spatial_dims: int, input: Tensor, dtype, stride: IntOrTuple, padding, padding_mode: str
) -> bool:
    """Whether torch's own ``conv*d`` computes this call: the backend does not choose our kernels
    for it, or its batch is empty (nothing to compute, and ATen's results and gradients then
    have layouts of their own), and torch takes its arguments."""
    return (
        not runs_kernels("conv", input, dtype) or empty_batch(input, spatial_dims)
    ) and _torch_accepts(spatial_dims, stride, padding, padding_mode)


def kernels_convolve(dtype, x: Tensor, weight: Tensor) -> bool:
    """Whether our kernels compute an opened convolution of the batched ``x``: a dtype they
    compute, and channels and samples to convolve (torch computes the others: other dtypes as
    torch does, empty ones with the layouts ATen gives them)."""
    return dtype in KERNEL_DTYPES["conv"] and weight.shape[1] > 0 and x.shape[0] > 0


def open_conv(
    name: str,
    spatial_dims: int,
    cast: torch.dtype | None,
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: IntOrTuple,
    padding: str | Padding,
    dilation: IntOrTuple,
    groups: int,
    padding_mode: str,
    *extra: Tensor | None,
) -> tuple:
    """The opening of our path for every convolution: :func:`open_call` (rank, unbatched input),
    autocast's cast to ``cast`` of the operands and ``extra`` tensors, the checked geometry; a
    padding mode under autocast pads before the cast, as ``nn.ConvNd`` does (the padding's
    gradient then sums in the input's dtype).

    Returns ``(batched, input, weight, bias, geometry, *extra)``.
    """
    batched, input, weight, bias, *extra = open_call(
        name, spatial_dims, input, weight, bias, *extra
    )
    x, weight, bias, *extra = cast_operands(cast, input, weight, bias, *extra)
    g = conv_geometry(name, x, weight, bias, stride, padding, dilation, groups, padding_mode)
    if x is not input and g.padding_mode != "zeros":
        x = pad_input(input, g.padding, g.padding_end, g.padding_mode).to(x.dtype)
        g = g.unpadded()
    return (batched, x, weight, bias, g, *extra)


def _conv(
    name: str,
    spatial_dims: int,
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: IntOrTuple,
    padding: str | Padding,
    dilation: IntOrTuple,
    groups: int,
    padding_mode: str,
) -> Tensor:
    key = _OPENINGS.key(name, input, weight, bias, stride, padding, dilation, groups, padding_mode)
    opened = _OPENINGS.get(key)
    if opened is None:
        cast, dtype = conv_dtype(input)
        if torch_computes(spatial_dims, input, dtype, stride, padding, padding_mode):
            opened = TORCH_OP
            _OPENINGS.remember(key, opened)
    if opened is TORCH_OP:
        return fallback.torch_conv(
            spatial_dims, input, weight, bias, stride, padding, dilation, groups
        )
    if opened is not None:  # this call's opening, as decided before
        batched, call = opened
        out = call(input if batched else input.unsqueeze(0), weight, bias)
        return out if batched else out.squeeze(0)
    if exporting():
        out = _recorded(spatial_dims, input, weight, bias, stride, padding, dilation, groups,
                        padding_mode)  # fmt: skip
        if out is not None:
            return out
    batched, x, weight, bias, g = open_conv(
        name, spatial_dims, cast, input, weight, bias, stride, padding, dilation, groups,
        padding_mode,
    )  # fmt: skip
    if kernels_convolve(dtype, x, weight):
        call = _OPENINGS.bind(key, conv_fwd, *g.as_args())
        _OPENINGS.remember(key, (batched, call))
        out = call(x, weight, bias)
    else:  # other dtypes (complex, integers), empty channels or batches: as torch computes them
        out = fallback.conv_by_torch(x, weight, bias, g)
    return out if batched else out.squeeze(0)


def _recorded(
    spatial_dims: int,
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: IntOrTuple,
    padding: str | Padding,
    dilation: IntOrTuple,
    groups: int,
    padding_mode: str,
) -> Tensor | None:
    """A convolution recorded for another runtime as torch's layer records it: its padding
    (a padding mode, or pairs) as ``F.pad`` by constant sizes, then torch's convolution; or
    ``None`` where the padding depends on the input's size (TensorFlow's ``'same'`` with a
    stride) or the arguments are malformed (our path then says how). A pad whose sizes came
    from the input's would be computed in the graph, which ONNX's circular padding refuses."""
    if not isinstance(weight, Tensor) or weight.dim() != spatial_dims + 2:
        return None
    if isinstance(padding, str):
        strides, dilations = expand(stride, spatial_dims), expand(dilation, spatial_dims)
        if padding not in ("same", "valid") or strides is None or dilations is None:
            return None
        if padding == "same" and any(s != 1 for s in strides):
            return None
        with untraced():  # (the kernel's sizes, plain ints: a trace's are tensors)
            kernel = tuple(weight.shape[2:])
        ones = (1,) * spatial_dims  # (with stride 1, 'same' pads alike for any size)
        pads = string_padding("", padding, ones, kernel, ones, dilations, ValueError)
    else:
        pads = expand_pairs(padding, spatial_dims)
        if pads is None:
            return None
    input = pad_input(input, *pads, padding_mode)
    return fallback.torch_conv(spatial_dims, input, weight, bias, stride, 0, dilation, groups)


def _conv_act(
    name: str,
    spatial_dims: int,
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: IntOrTuple,
    padding: str | Padding,
    dilation: IntOrTuple,
    groups: int,
    padding_mode: str,
    activation: str | None,
    activation_args: Mapping[str, object] | None,
) -> Tensor:
    """:func:`_conv` followed by an activation: fused into the kernels' epilogue on the Triton
    path (``conv_act_fwd``), torch's activation after torch's convolution elsewhere."""
    plain = plain_activation(activation, activation_args)
    key = None
    if plain is not None:
        key = _OPENINGS.key(
            name, input, weight, bias, stride, padding, dilation, groups, padding_mode, *plain
        )
    opened = _OPENINGS.get(key)
    if opened is not None:  # this call's opening on our kernels, as decided before
        batched, call = opened
        out = call(input if batched else input.unsqueeze(0), weight, bias, None)
        return out if batched else out.squeeze(0)
    act = _activation.parse_activation(activation, activation_args)
    if act is None:  # activation_args={} alone
        return _conv(name, spatial_dims, input, weight, bias, stride, padding, dilation, groups,
                     padding_mode)  # fmt: skip
    if isinstance(weight, Tensor) and weight.dim() > 0:
        _activation.check_channels(act, weight.shape[0])
    cast, dtype = conv_dtype(input)
    z = None
    if torch_computes(spatial_dims, input, dtype, stride, padding, padding_mode):
        z = fallback.torch_conv(
            spatial_dims, input, weight, bias, stride, padding, dilation, groups
        )
    elif exporting():
        z = _recorded(spatial_dims, input, weight, bias, stride, padding, dilation, groups,
                      padding_mode)  # fmt: skip
    if z is not None:
        batched = z.dim() == spatial_dims + 2
        y = _activation.apply(z if batched else z.unsqueeze(0), act.kind, act.alpha, act.weight)
        return y if batched else y.squeeze(0)
    batched, x, weight, bias, g, act_weight = open_conv(
        name, spatial_dims, cast, input, weight, bias, stride, padding, dilation, groups,
        padding_mode, act.weight,
    )  # fmt: skip
    if act_weight is not None and act_weight.dtype != x.dtype:
        act_weight = act_weight.to(x.dtype)
    if kernels_convolve(dtype, x, weight):
        call = _OPENINGS.bind(key, conv_act_fwd, act.kind, act.alpha, *g.as_args())
        _OPENINGS.remember(key, (batched, call))  # (no key for a PReLU: its weight is not static)
        out = call(x, weight, bias, act_weight)
    else:  # other dtypes, empty channels or batches: torch's convolution, then its activation
        z = fallback.conv_by_torch(x, weight, bias, g)
        out = _activation.apply(z, act.kind, act.alpha, act_weight)
    return out if batched else out.squeeze(0)


def plain_activation(activation: object, activation_args: object) -> tuple | None:
    """The activation and its arguments as the tail of an opening's key: ``(activation, name,
    value, ...)``, or ``None`` for a call opened every time — a PReLU (its weight is an
    operand, reshaped on every call) or arguments other than a dict."""
    if activation == "prelu" or not (activation_args is None or type(activation_args) is dict):
        return None
    if not activation_args:  # (the common call: no generator to run)
        return (activation,)
    return (activation, *(v for item in activation_args.items() for v in item))


ACTIVATION_DOC = """
    Fused activation (our extension; keyword-only, default ``None``: none):

    Args:
        activation: ``None``, ``'relu'``, ``'leaky_relu'``, ``'prelu'``, ``'elu'``, ``'gelu'``,
            ``'silu'``, ``'relu6'``, ``'hardswish'``, ``'hardsigmoid'``, ``'mish'`` or
            ``'sigmoid'``: applied to the result, bias included, as the
            ``torch.nn.functional`` function of that name (``torch.sigmoid``). On the Triton
            backend it runs in the convolution kernel's epilogue (no second pass over the
            output); elsewhere torch's activation follows torch's convolution, with torch's
            derivatives (torch's hard sigmoid has no second derivative). On the Triton backend
            differentiable to any order: ReLU's, non-negative leaky ReLU's, ReLU6's and
            sigmoid's derivatives are read off the output; while gradients are recorded, the
            others run as torch's activation after our convolution (the pre-activation saved,
            as unfused; hard sigmoid stays fused and its backward recomputes the
            pre-activation).
        activation_args: that function's keyword arguments, as a dict: ``negative_slope``
            (``'leaky_relu'``, default 0.01), ``alpha`` (``'elu'``, default 1.0),
            ``approximate`` (``'gelu'``: ``'none'`` or ``'tanh'``), ``weight`` (``'prelu'``,
            required: a tensor of 1 or ``C_out`` values, differentiable, applied per output
            channel also for unbatched inputs).
"""


@overridable
def conv1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    activation: str | None = None,
    activation_args: Mapping[str, object] | None = None,
) -> Tensor:
    """1-D convolution over ``(N, C_in, L)`` or ``(C_in, L)``; see :func:`conv2d`."""
    if activation is not None or activation_args is not None:
        return _conv_act(
            "conv1d", 1, input, weight, bias, stride, padding, dilation, groups, padding_mode,
            activation, activation_args,
        )  # fmt: skip
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups, padding_mode)


@overridable
def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    activation: str | None = None,
    activation_args: Mapping[str, object] | None = None,
) -> Tensor:
    """2-D convolution, as :func:`torch.nn.functional.conv2d`, with two extensions.

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
        weight: ``(C_out, C_in/groups, kH, kW)``.
        bias: ``(C_out,)`` or ``None``.
        stride, dilation: an int or one int per spatial dim, all positive.
        padding: an int / tuple (zero-or-mode padding on both sides), ``'valid'`` (none) or
            ``'same'``. Unlike torch, ``'same'`` also works with stride > 1, following
            TensorFlow: output ``ceil(in/stride)``, the odd padding pixel at the end; and each
            spatial dim's entry may be a ``(before, after)`` pair — ``padding=((0, 1), (0, 1))``
            pads one row at the bottom and one column at the right, what ``nn.ZeroPad2d((0, 1,
            0, 1))`` before the convolution does, without its copy of the input.
        groups: the number of blocked connections; ``groups == C_in`` is depthwise.
        padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'`` (as in
            ``nn.Conv2d``); on the Triton backend it is index arithmetic, not a padded copy.

    Under autocast the operands are cast as torch casts a convolution's. Dtypes the kernels
    do not compute (complex, integers) run torch's own ops on every backend, so they behave as
    in torch.

    Returns:
        ``(N, C_out, H_out, W_out)`` (or unbatched), channels-last when an operand is.
    """
    if activation is not None or activation_args is not None:
        return _conv_act(
            "conv2d", 2, input, weight, bias, stride, padding, dilation, groups, padding_mode,
            activation, activation_args,
        )  # fmt: skip
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups, padding_mode)


@overridable
def conv3d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: str | Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    activation: str | None = None,
    activation_args: Mapping[str, object] | None = None,
) -> Tensor:
    """3-D convolution over ``(N, C_in, D, H, W)`` or ``(C_in, D, H, W)``; see :func:`conv2d`."""
    if activation is not None or activation_args is not None:
        return _conv_act(
            "conv3d", 3, input, weight, bias, stride, padding, dilation, groups, padding_mode,
            activation, activation_args,
        )  # fmt: skip
    return _conv("conv3d", 3, input, weight, bias, stride, padding, dilation, groups, padding_mode)


__all__ = ["conv1d", "conv2d", "conv3d"]


conv2d.__doc__ += ACTIVATION_DOC
