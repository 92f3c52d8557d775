"""Convolution primitives: ``torchconv_ext::conv_fwd``, ``conv_bwd_input``, ``conv_bwd_weight``
(and ``conv_bwd_weight_bias``).

A convolution ``y = conv(x, w) + b`` is bilinear in ``(x, w)``. Its three primitives are the
convolution and its two adjoints, and each one's derivatives are the other two, so gradients of
any order stay on these three ops (``g`` is the incoming gradient)::

    primitive                 derivative in its first operand   in its second operand
    conv_fwd(x, w)            conv_bwd_input(g, w)              conv_bwd_weight(g, x)
    conv_bwd_input(gy, w)     conv_fwd(g, w)                    conv_bwd_weight(gy, g)
    conv_bwd_weight(gy, x)    conv_fwd(x, g)                    conv_bwd_input(gy, g)

All three take the same geometry (:class:`ConvGeometry`, as trailing arguments): a convolution
with a padding mode is a zero-padded convolution of the padded input, ``conv_zeros(pad(x))``,
whose adjoint ``pad^T conv_zeros^T`` has that same convolution as its adjoint again, so the
table holds for every padding mode and for TensorFlow-style asymmetric padding.

A biased convolution's weight and bias gradients come from ``conv_bwd_weight_bias``: the weight
gradient with the bias's (a channel sum of ``g``), summed on the Triton path by the weight
gradient's kernel, in a tile of its own beside the weight's (``triton_kernels.sums_bias``);
its derivatives are
``conv_bwd_weight``'s, the bias's gradient riding on ``conv_fwd`` as its bias.

``conv_bwd_input`` takes a bias too: a transposed convolution *is* the input gradient of a
convolution (the adjoint one, see ``conv_transpose_geometry``), so its forward is
``conv_bwd_input`` with its bias, and its gradients are ``conv_fwd`` and ``conv_bwd_weight``.
FlopCounterMode counts them exactly as ATen counts ``aten.convolution`` (transposed or not) and
its backward: the formulas coincide (see the bottom of this file).

Sizes travel as ``SymInt[]``: ``conv_bwd_input`` takes the spatial size of its result (the
convolution's input), ``conv_bwd_weight`` the kernel size; batch and channel counts come from
the operands, which is what lets the batching rules fold a vmapped dim into them. Those two
also take their result's layout (``channels_last``): their operands do not determine it.

On the Triton path, convolutions that run on tensor cores get their activations channels-last
(converted in one pass) and their weights repacked (once per version: ``_layout``), whatever the
caller's layout, with two exceptions: the 1×1 GEMM reads NCHW activations as they are when
each image has a multiple of 4 positions (``gemm_activation``), and narrow convolutions (stems)
pack their input into padded windows themselves, their weight repacked into the windows' layout
(``gemm_operands``). A tile's rows are flattened positions, so results (forward, input
gradient at stride 1) are stored straight into torch's NCHW layout when each image has a
multiple of 4 positions: then Triton sees runs of contiguous positions and stores vectors of 8
or 16 bytes (``triton_kernels.stores_nchw``). Otherwise an NCHW store would be one address per element —
compiled for sm_90, the 3×3 forward's larger tiles then sit at 255 registers and spill
(``benchmarks/results/compile-report/nchw-store-experiment-sm_90.md``) — so the kernels store
channels-last rows and the result is converted, in one pass, to the layout torch returns.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch._C._functorch import is_batchedtensor
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

from .._backend import kernels, use_triton
from .._conv_args import ConvGeometry, conv_output_shape
from .._fallback import conv as fallback
from .._memory import (
    empty_in_layout,
    new_output,
    padding_keeps_layout,
    suggest_memory_format,
    to_layout,
)
from .._padding import fold_padding_grad
from ._layout import channels_last_activation, packed_weight
from ._primitive import Primitive, affine_forward_jvp, sum_tangents


def results_channels_last(*operands: Tensor) -> bool:
    """ATen's layout rule for a convolution's results: channels-last when an operand is
    (``_memory.suggest_memory_format``). Inside ``vmap`` a batched tensor cannot tell its
    layout, so there it counts as contiguous (only the physical tensors' layout matters)."""
    if torch._C._are_functorch_transforms_active():
        operands = tuple(t for t in operands if not is_batchedtensor(t))
        if not operands:
            return False
    return suggest_memory_format(*operands) is not torch.contiguous_format


def forward_channels_last(input: Tensor, weight: Tensor, padding_mode: str) -> bool:
    """The layout rule of a convolution's result: :func:`results_channels_last` of the input as
    torch's ``nn.ConvNd`` pads it (``_memory.padding_keeps_layout``) and the weight."""
    if padding_keeps_layout(input, padding_mode):
        return results_channels_last(input, weight)
    return results_channels_last(weight)


def input_grad_channels_last(input: Tensor, weight: Tensor, padding_mode: str) -> bool:
    """The layout rule of a convolution's input gradient: the convolution's own
    (:func:`results_channels_last`) with zero padding; with another mode that of the gradient
    of torch's ``F.pad``, which keeps the input's layout where the pad does
    (``_memory.padding_keeps_layout``) and is contiguous elsewhere, whatever the weight."""
    if padding_mode == "zeros":
        return results_channels_last(input, weight)
    return padding_keeps_layout(input, padding_mode) and results_channels_last(input)


def kernel_args(g: ConvGeometry, padding: tuple[int, ...] | None = None) -> dict:
    return dict(
        stride=g.stride,
        padding=g.padding if padding is None else padding,
        dilation=g.dilation,
        groups=g.groups,
        # fp32 convolutions use TF32 exactly when torch lets cuDNN use it.
        allow_tf32=torch.backends.cudnn.allow_tf32,
    )


def _channel_sum(t: Tensor) -> Tensor:
    """The gradient of a per-channel bias: ``t`` summed over every dim but the channels."""
    return t.sum([0, *range(2, t.dim())])


def _bias_view(bias: Tensor, spatial_dims: int) -> Tensor:
    return bias.view(-1, *[1] * spatial_dims)


# --------------------------------------------------------------------------------------------
# Implementations and fakes
# --------------------------------------------------------------------------------------------


def _fwd_impl(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> Tensor:
    """Batched N-d convolution with per-side padding and a padding mode, in ATen's layout."""
    g = ConvGeometry.from_args(stride, padding, padding_end, dilation, groups, padding_mode)
    layout = forward_channels_last(input, weight, padding_mode)
    if not use_triton(input):
        return to_layout(fallback.conv_forward(input, weight, bias, g), layout)
    return triton_forward(input, weight, bias, g, layout)


def triton_forward(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    g: ConvGeometry,
    layout: bool,
    with_z: bool = False,
    **epilogue,
) -> Any:
    """The Triton path of the forward, result in ``layout`` (channels-last or not); ``epilogue``
    goes to the kernels (a fused activation: ``activation``, ``alpha``, ``act_weight``). With
    ``with_z``, ``(result, z)``: the activation's input too, from the same epilogue."""
    k = kernels()
    gemm = k.prefers_channels_last(input.shape[1], g.groups)
    shape = conv_output_shape(input, weight, g)
    # The GEMM kernels store an NCHW result straight where its rows split into vectors, else a
    # channels-last one, converted once at the end when torch's would be contiguous.
    stored = layout or (gemm and not k.stores_nchw(shape[2:], g.stride))
    out = empty_in_layout(shape, input, stored, poison=True)
    z = empty_in_layout(shape, input, stored, poison=True) if with_z else None
    if out.numel():
        weight_form = {}
        if gemm:
            input, weight, weight_form = gemm_operands(input, weight, g)
        else:
            weight = depthwise_weight(weight, input, input.shape[1], g)
        k.conv_forward(
            input, weight, bias, out, pad_mode=g.padding_mode, pre_activation=z, **epilogue,
            **weight_form, **kernel_args(g),
        )  # fmt: skip
    return _in_layout(out, z, stored, layout)


def _in_layout(out: Tensor, z: Tensor | None, stored: bool, layout: bool) -> Any:
    """A Triton path's result ``out`` (and ``z``, where there is one: ``(out, z)``), stored
    channels-last or not (``stored``), in ``layout``."""
    if stored != layout:
        out = to_layout(out, False, exact=True)
        z = None if z is None else to_layout(z, False, exact=True)
    return out if z is None else (out, z)


def gemm_activation(t: Tensor, kernel_size, g: ConvGeometry) -> Tensor:
    """An activation (an input, a gradient of the output) as the tensor-core convolutions read
    it fastest: as it is where they read NCHW rows as vectors (``reads_nchw``: the 1×1 GEMM),
    else channels-last (one copy, unless it already is)."""
    if _reads_as_is(t, kernel_size, g):
        return t
    return channels_last_activation(t)


def _windowed(activation: Tensor, kernel_size, g: ConvGeometry, input_gradient=False) -> bool:
    """Whether the convolution is a narrow one (a stem) that reads its input — with
    ``input_gradient``, whose input gradient reads the output's gradient (``activation``) — as
    windows of a padded copy it makes itself (``triton_kernels.reads_windows``): that
    activation goes as given, and the weight in the windows' layout."""
    padding = g.padding
    if input_gradient and g.padding_mode != "zeros":
        padding = (0,) * len(padding)  # (grad-input kernels see zero padding only)
    return kernels().reads_windows(
        activation.shape[1], g.groups, kernel_size, g.stride, padding, g.dilation,
        input_gradient=input_gradient,
    )  # fmt: skip


def gemm_input(input: Tensor, kernel_size, g: ConvGeometry) -> Tensor:
    """A convolution's input as the tensor-core convolutions read it fastest: as it is for
    narrow convolutions (:func:`_windowed`), else as :func:`gemm_activation` gives it."""
    return input if _windowed(input, kernel_size, g) else gemm_activation(input, kernel_size, g)


def gemm_operands(
    input: Tensor, weight: Tensor, g: ConvGeometry, *, fused_maxout: bool = False
) -> tuple[Tensor, Tensor, dict]:
    """A forward's input and weight as the tensor-core convolutions read them fastest, and the
    launch's keyword arguments that go with them: for narrow convolutions (:func:`_windowed`)
    both as given and the weight in the windows' layout (``windowed_weight``), else the input
    as :func:`gemm_activation` gives it and the weight repacked channels-last, or for groups
    that merge (:func:`_merged`; not with a ``fused_maxout``) given as it is and as the merged
    groups' block-diagonal weight (``merged_weight``) — each repack once per version for a
    parameter (``_layout.packed_weight``)."""
    k = kernels()
    if _windowed(input, weight.shape[2:], g):
        return (
            input,
            weight,
            {"windowed_weight": k.replayed_whole(packed_weight, weight, "windows")},
        )
    activation = gemm_activation(input, weight.shape[2:], g)
    if not fused_maxout and _merged(input.shape[1], weight, g, g.padding):
        return activation, weight, merged_weight_args(weight, g)
    return activation, k.replayed_whole(packed_weight, weight), {}


def depthwise_weight(weight: Tensor, activation: Tensor, c_in: int, g: ConvGeometry) -> Tensor:
    """The weight of a convolution that does not run on the tensor-core kernels (a depthwise
    one, of ``c_in`` input channels) as its kernels read it fastest over ``activation`` (the
    input, or the output's gradient): with the channels innermost on channels-last activations
    (``triton_kernels.reads_channels_inner_weight``), else as it is — repacked once per version
    for a parameter."""
    k = kernels()
    if k.reads_channels_inner_weight(c_in, g.groups, activation):
        return k.replayed_whole(packed_weight, weight, "depthwise_channels_inner")
    return weight


def _merged(c_in: int, weight: Tensor, g: ConvGeometry, padding) -> bool:
    """Whether the forward and input gradient of a convolution with ``c_in`` input channels,
    launched with ``padding``, compute groups of a few channels several at a time
    (``triton_kernels.reads_merged``)."""
    return kernels().reads_merged(
        c_in, weight.shape[0], g.groups, weight.shape[2:], g.stride, padding, weight.dtype,
        torch.backends.cudnn.allow_tf32,
    )  # fmt: skip


def merged_weight_args(weight: Tensor, g: ConvGeometry) -> dict:
    """The launch's ``merged_weight``: the block-diagonal weight of merged groups, made once
    per version for a parameter."""
    form = "merged_groups"
    return {"merged_weight": kernels().replayed_whole(packed_weight, weight, form, g.groups)}


def forward_grads_read_channels_last(grad: Tensor, input: Tensor, weight: Tensor, geometry) -> bool:
    """Whether :func:`forward_grads` reads the gradient ``grad`` of ``conv_fwd``'s result
    through a channels-last copy (:func:`gemm_activation`): where its tensor-core kernels
    convert it. A caller that computes ``grad`` may write it so in the first place."""
    g = ConvGeometry.from_args(*geometry)
    channels_last = kernels().prefers_channels_last(input.shape[1], g.groups)
    return channels_last and not _reads_as_is(grad, weight.shape[2:], g)


def transposed_grads_read_channels_last(grad: Tensor, weight: Tensor, static: list) -> bool:
    """:func:`forward_grads_read_channels_last` for :func:`transposed_grads`, whose input and
    weight gradients are a convolution and a weight gradient over ``grad`` as their input
    (``static`` as there)."""
    g = ConvGeometry.from_args(*static[2:])
    kernel_size = weight.shape[2:]
    if not kernels().prefers_channels_last(grad.shape[1], g.groups):
        return False
    return not _windowed(grad, kernel_size, g) and not _reads_as_is(grad, kernel_size, g)


def _reads_as_is(t: Tensor, kernel_size, g: ConvGeometry) -> bool:
    return t.is_contiguous() and kernels().reads_nchw(
        kernel_size, *stride_and_padding(g), t.shape[2:]
    )


def stride_and_padding(g: ConvGeometry) -> tuple:
    """``(stride, padding before and after each dim)``, as the kernels' layout rules take them."""
    return g.stride, (*g.padding, *g.padding_end)


def _fwd_fake(input, weight, bias, *geometry):
    g = ConvGeometry.from_args(*geometry)
    shape = conv_output_shape(input, weight, g)
    return empty_in_layout(shape, input, forward_channels_last(input, weight, g.padding_mode))


def _input_shape(grad_output: Tensor, weight: Tensor, input_size, groups: int) -> list:
    return [grad_output.shape[0], weight.shape[1] * groups, *input_size]


def _bwd_input_impl(
    grad_output: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    input_size: list[int],
    channels_last: bool,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> Tensor:
    """The input gradient of ``conv_fwd`` for an input of spatial size ``input_size``, plus
    ``bias`` per channel: a transposed convolution of ``grad_output``."""
    g = ConvGeometry.from_args(stride, padding, padding_end, dilation, groups, padding_mode)
    shape = _input_shape(grad_output, weight, input_size, groups)
    if not use_triton(grad_output):
        grad = fallback.conv_backward_input(grad_output, weight, bias, shape, g)
        return to_layout(grad, channels_last)
    if g.padding_mode == "zeros":
        return triton_transposed(grad_output, weight, bias, input_size, channels_last, g)
    # The kernels see zero padding only: the gradient of the virtually padded input, folded
    # onto its sources (so the bias comes after the fold).
    grad_output, weight, gemm, weight_form = _input_gradient_operands(grad_output, weight, shape, g)
    padded = shape[:2] + [s + b + e for s, b, e in zip(input_size, g.padding, g.padding_end)]
    grad = empty_in_layout(padded, grad_output, channels_last or gemm, poison=True)
    if grad.numel():
        geometry = kernel_args(g, (0,) * len(g.stride))
        kernels().conv_backward_input(grad_output, weight, grad, **weight_form, **geometry)
    grad = to_layout(
        fold_padding_grad(grad, g.padding, g.padding_end, g.padding_mode), channels_last,
        exact=True,
    )  # fmt: skip
    if bias is not None:
        grad += _bias_view(bias, len(input_size))
    return grad


def triton_transposed(
    grad_output: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    input_size: list[int],
    channels_last: bool,
    g: ConvGeometry,
    with_z: bool = False,
    **epilogue,
) -> Any:
    """The Triton path of a transposed convolution — the input gradient of the zero-padded
    convolution ``g`` — with its bias added in the kernel, result in ``channels_last`` or not;
    ``epilogue`` goes to the kernels (a fused activation: ``activation``, ``alpha``,
    ``act_weight``), ``with_z`` as :func:`triton_forward`'s."""
    k = kernels()
    shape = _input_shape(grad_output, weight, input_size, g.groups)
    grad_output, weight, gemm, weight_form = _input_gradient_operands(grad_output, weight, shape, g)
    # Stored NCHW or channels-last as the forward's result is (``triton_forward``).
    merged = "merged_weight" in weight_form
    nchw = k.stores_nchw(input_size, g.stride, input_gradient=True, merged=merged)
    stored = channels_last or (gemm and not nchw)
    grad = empty_in_layout(shape, grad_output, stored, poison=True)
    z = empty_in_layout(shape, grad_output, stored, poison=True) if with_z else None
    if grad.numel():
        k.conv_backward_input(
            grad_output, weight, grad, bias=bias, pre_activation=z, **epilogue, **weight_form,
            **kernel_args(g),
        )  # fmt: skip
    return _in_layout(grad, z, stored, channels_last)


def _input_gradient_operands(grad_output: Tensor, weight: Tensor, shape: list, g: ConvGeometry):
    """``(grad_output, weight, gemm, weight_form)``: the output's gradient and the weight as
    the input-gradient kernels read them, whether those are the tensor-core ones, and the
    weight's other form they take, if any (the windows' or the merged groups')."""
    k = kernels()
    gemm = k.prefers_channels_last(shape[1], g.groups)
    weight_form = {}  # (the launch's other form of the weight, if any)
    if gemm and _windowed(grad_output, weight.shape[2:], g, input_gradient=True):
        # The windows read the output's gradient as it is, and this form of the weight.
        form = "windows_input_gradient"
        weight_form = {"windowed_weight": k.replayed_whole(packed_weight, weight, form)}
    elif gemm:
        grad_output = gemm_activation(grad_output, weight.shape[2:], g)
        # (The kernels see zero padding only: other modes launch with none.)
        padding = g.padding if g.padding_mode == "zeros" else (0,) * len(g.padding)
        if _merged(shape[1], weight, g, padding):
            weight_form = merged_weight_args(weight, g)
        else:
            weight = k.replayed_whole(packed_weight, weight)
    else:
        weight = depthwise_weight(weight, grad_output, shape[1], g)
    return grad_output, weight, gemm, weight_form


def _bwd_input_fake(grad_output, weight, bias, input_size, channels_last, *geometry):
    groups = ConvGeometry.from_args(*geometry).groups
    shape = _input_shape(grad_output, weight, input_size, groups)
    return empty_in_layout(shape, grad_output, channels_last)


def _weight_shape(grad_output: Tensor, input: Tensor, kernel_size, groups: int) -> list:
    return [grad_output.shape[1], input.shape[1] // groups, *kernel_size]


def _bwd_weight_impl(
    grad_output: Tensor,
    input: Tensor,
    kernel_size: list[int],
    channels_last: bool,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> Tensor:
    """The weight gradient of ``conv_fwd`` for a kernel of spatial size ``kernel_size``."""
    g = ConvGeometry.from_args(stride, padding, padding_end, dilation, groups, padding_mode)
    return _weight_gradients(grad_output, input, kernel_size, channels_last, g, bias=False)[0]


def _bwd_weight_bias_impl(
    grad_output: Tensor,
    input: Tensor,
    kernel_size: list[int],
    channels_last: bool,
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    groups: int,
    padding_mode: str,
) -> tuple[Tensor, Tensor]:
    """The weight and bias gradients of ``conv_fwd``: on the Triton path the weight gradient's
    kernel sums the bias gradient too, in a tile of its own reading the chunks of
    ``grad_output`` the weight's tiles read (a pass over ``grad_output`` and a launch fewer than
    ``conv_bwd_weight`` and a channel sum), where ``triton_kernels.sums_bias`` says so."""
    g = ConvGeometry.from_args(stride, padding, padding_end, dilation, groups, padding_mode)
    return _weight_gradients(grad_output, input, kernel_size, channels_last, g, bias=True)


def _weight_gradients(
    grad_output: Tensor,
    input: Tensor,
    kernel_size: list[int],
    channels_last: bool,
    g: ConvGeometry,
    bias: bool,
) -> tuple:
    """``(grad_weight, grad_bias)``, ``grad_bias`` ``None`` without ``bias``."""
    shape = _weight_shape(grad_output, input, kernel_size, g.groups)
    if not use_triton(grad_output):
        grad, grad_bias = fallback.conv_backward_weight(
            grad_output, input, shape, channels_last, g, bias
        )
        return to_layout(grad, channels_last), grad_bias
    grad = empty_in_layout(shape, input, channels_last, poison=True)
    if grad_output.numel() == 0 or input.numel() == 0:
        return grad.zero_(), _channel_sum(grad_output) if bias else None
    k = kernels()
    # The kernels sum the bias gradient beside the weight's where they can, else one reduction.
    summed = bias and k.sums_bias(input.shape[1], g.groups, grad_output.dtype)
    grad_bias = new_output(shape[:1], grad_output) if summed else None
    if bias and not summed:
        grad_bias = _channel_sum(grad_output)
    if k.prefers_channels_last(input.shape[1], g.groups):
        grad_output = gemm_activation(grad_output, kernel_size, g)
        input = gemm_input(input, kernel_size, g)
    k.conv_backward_weight(
        input, grad_output, grad, grad_bias=grad_bias if summed else None,
        pad_mode=g.padding_mode, **kernel_args(g),
    )  # fmt: skip
    return grad, grad_bias


def _bwd_weight_fake(grad_output, input, kernel_size, channels_last, *geometry):
    groups = ConvGeometry.from_args(*geometry).groups
    return empty_in_layout(
        _weight_shape(grad_output, input, kernel_size, groups), input, channels_last
    )


def _bwd_weight_bias_fake(grad_output, input, kernel_size, channels_last, *geometry):
    grad_weight = _bwd_weight_fake(grad_output, input, kernel_size, channels_last, *geometry)
    return grad_weight, grad_output.new_empty(grad_output.shape[1])


# --------------------------------------------------------------------------------------------
# Reverse mode (the table in the module docstring)
# --------------------------------------------------------------------------------------------


def _fwd_setup(ctx, inputs, output):
    input, weight, _, *geometry = inputs
    ctx.save_for_backward(input, weight)
    ctx.geometry = geometry


def _fwd_backward(ctx, grad):
    input, weight = ctx.saved_tensors
    return forward_grads(input, weight, ctx.needs_input_grad[:3], ctx.geometry, grad)


def forward_grads(
    input: Tensor, weight: Tensor, needs: tuple[bool, ...], geometry: list, grad: Tensor
) -> tuple:
    """The gradients of ``conv_fwd``'s input, weight and bias (``None`` where ``needs`` says
    no) for the gradient ``grad`` of its result; the fused convolutions reuse it."""
    need_input, need_weight, need_bias = needs
    padding_mode = geometry[-1]
    grad_input = grad_weight = grad_bias = None
    if need_input:
        size = list(input.shape[2:])
        layout = input_grad_channels_last(input, weight, padding_mode)
        grad_input = conv_bwd_input(grad, weight, None, size, layout, *geometry)
    # (the weight gradient's layout is the padded input's and the weight's: the forward's)
    layout = forward_channels_last(input, weight, padding_mode) if need_weight else False
    kernel = list(weight.shape[2:])
    if need_weight and need_bias:
        grad_weight, grad_bias = conv_bwd_weight_bias(grad, input, kernel, layout, *geometry)
    elif need_weight:
        grad_weight = conv_bwd_weight(grad, input, kernel, layout, *geometry)
    elif need_bias:
        grad_bias = _channel_sum(grad)
    return grad_input, grad_weight, grad_bias, *[None] * len(geometry)


def _bwd_input_setup(ctx, inputs, output):
    grad_output, weight, _, _, channels_last, *geometry = inputs
    ctx.save_for_backward(grad_output, weight)
    ctx.channels_last = channels_last
    ctx.geometry = geometry


def _bwd_input_backward(ctx, grad):
    grad_output, weight = ctx.saved_tensors
    static = [None, ctx.channels_last, *ctx.geometry]
    grads = transposed_grads(grad_output, weight, ctx.needs_input_grad[:3], static, grad)
    return *grads, None, None, *[None] * len(ctx.geometry)


def transposed_grads(
    grad_output: Tensor, weight: Tensor, needs: tuple[bool, ...], static: list, grad: Tensor
) -> tuple:
    """The gradients of ``conv_bwd_input``'s ``grad_output``, weight and bias (``None`` where
    ``needs`` says no) for the gradient ``grad`` of its result — a transposed convolution's
    input, weight and bias gradients; ``static`` is the op's arguments after the bias
    (``input_size``, unused, ``channels_last``, the geometry). The fused transposed convolution
    reuses it."""
    _, channels_last, *geometry = static
    need_grad_output, need_weight, need_bias = needs
    grad_grad_output = grad_weight = grad_bias = None
    if need_grad_output:
        # In the result's layout: a transposed convolution's input gradient has its input's
        # and weight's (ATen computes every gradient of a convolution in the layout its
        # operands give), whatever the incoming gradient's; a double backward's is then that
        # of the input gradient (ATen's: of ``grad``, which mostly has that layout too).
        grad_grad_output = conv_fwd(grad, weight, None, *geometry)
        # (A gradient batched by torch's legacy vmap cannot tell its layout: left as computed.)
        if (
            not torch._C._functorch.is_legacy_batchedtensor(grad)
            and forward_channels_last(grad, weight, geometry[-1]) != channels_last
        ):
            grad_grad_output = to_layout(grad_grad_output, channels_last)
    if need_weight:
        kernel = list(weight.shape[2:])
        layout = results_channels_last(grad_output, weight)
        grad_weight = conv_bwd_weight(grad_output, grad, kernel, layout, *geometry)
    if need_bias:
        grad_bias = _channel_sum(grad)
    return grad_grad_output, grad_weight, grad_bias


def _bwd_weight_setup(ctx, inputs, output):
    grad_output, input, _, _, *geometry = inputs
    ctx.save_for_backward(grad_output, input)
    ctx.geometry = geometry


def _bwd_weight_backward(ctx, grad, grad_of_bias=None):
    """Serves ``conv_bwd_weight`` and ``conv_bwd_weight_bias`` (``grad_of_bias``: the gradient of
    its bias gradient, a channel sum, whose adjoint adds it to every position — a bias)."""
    grad_output, input = ctx.saved_tensors
    need_grad_output, need_input = ctx.needs_input_grad[:2]
    grad_grad_output = grad_input = None
    if need_grad_output:
        grad_grad_output = conv_fwd(input, grad, grad_of_bias, *ctx.geometry)
    if need_input:
        size = list(input.shape[2:])
        layout = results_channels_last(input, grad)
        grad_input = conv_bwd_input(grad_output, grad, None, size, layout, *ctx.geometry)
    return grad_grad_output, grad_input, None, None, *[None] * len(ctx.geometry)


# --------------------------------------------------------------------------------------------
# Forward mode: a bilinear op's tangent is op(tangent_a, b) + op(a, tangent_b)
# --------------------------------------------------------------------------------------------


def _fwd_jvp(ctx, t_input, t_weight, t_bias, *_):
    input, weight, _, *geometry = ctx.primals
    return affine_forward_jvp(conv_fwd, input, weight, geometry, t_input, t_weight, t_bias)


def _bwd_input_jvp(ctx, t_grad_output, t_weight, t_bias, *_):
    grad_output, weight, _, size, layout, *geometry = ctx.primals
    parts = []
    if t_grad_output is not None:
        parts.append(conv_bwd_input(t_grad_output, weight, t_bias, size, layout, *geometry))
        t_bias = None
    if t_weight is not None or t_bias is not None:
        t_weight = torch.zeros_like(weight) if t_weight is None else t_weight
        parts.append(conv_bwd_input(grad_output, t_weight, t_bias, size, layout, *geometry))
    return sum_tangents(parts)


def _bwd_weight_jvp(ctx, t_grad_output, t_input, *_):
    grad_output, input, kernel, layout, *geometry = ctx.primals
    parts = []
    if t_grad_output is not None:
        parts.append(conv_bwd_weight(t_grad_output, input, kernel, layout, *geometry))
    if t_input is not None:
        parts.append(conv_bwd_weight(grad_output, t_input, kernel, layout, *geometry))
    return sum_tangents(parts)


def _bwd_weight_bias_jvp(ctx, t_grad_output, t_input, *_):
    t_bias = None if t_grad_output is None else _channel_sum(t_grad_output)
    return _bwd_weight_jvp(ctx, t_grad_output, t_input), t_bias


# --------------------------------------------------------------------------------------------
# Batching rules: fold the vmapped dim into the batch, the channels or the groups
# --------------------------------------------------------------------------------------------
#
# ``fold_batch(t, bdim, dim, groups)`` merges the batch dim ``bdim`` (size B) of a physical tensor
# into its logical dim ``dim``, group by group: the merged dim lists, for each of ``groups``
# blocks, the B copies of that block. With ``groups=1`` the batch is simply outermost, which
# folds a batch into N, or into the groups of a convolution (B·groups groups); with the
# convolution's own ``groups`` it folds the batch into each group's channels instead.
# ``unfold_batch`` is the inverse. Where only one operand is batched, the other needs no copy.


def fold_batch(t: Tensor | None, bdim: int | None, dim: int, groups: int = 1) -> Tensor | None:
    if t is None:
        return None
    t = t.movedim(bdim, dim)
    t = t.unflatten(dim + 1, (groups, t.shape[dim + 1] // groups))  # [.., B, groups, C/groups, ..]
    return t.transpose(dim, dim + 1).flatten(dim, dim + 2)


def unfold_batch(t: Tensor, dim: int, size: int, groups: int = 1) -> Tensor:
    t = t.unflatten(dim, (groups, size, t.shape[dim] // (groups * size)))
    return t.transpose(dim, dim + 1).flatten(dim + 1, dim + 2)  # [.., B, groups · C/groups, ..]


def _batched(t: Tensor | None, bdim: int | None, size: int) -> tuple[Tensor | None, int]:
    """``t`` with a batch dim (expanded when it has none) and where it is."""
    if t is None or bdim is not None:
        return t, bdim
    return t.expand(size, *t.shape), 0


def _fwd_vmap(info, in_dims, input, weight, bias, *geometry):
    size, g = info.batch_size, ConvGeometry.from_args(*geometry)
    d_input, d_weight, d_bias = in_dims[:3]
    if d_weight is None and d_bias is None:  # a batch of inputs: fold it into N
        out = conv_fwd(fold_batch(input, d_input, 0), weight, bias, *geometry)
        return unfold_batch(out, 0, size), 0
    weight, d_weight = _batched(weight, d_weight, size)
    bias, d_bias = _batched(bias, d_bias, size)
    if d_input is None:  # a batch of weights: fold it into each group's output channels
        weight, bias = (
            fold_batch(weight, d_weight, 0, g.groups),
            fold_batch(bias, d_bias, 0, g.groups),
        )
        out = conv_fwd(input, weight, bias, *geometry)
        return unfold_batch(out, 1, size, g.groups), 1
    # Both: one group per (batch element, group).
    out = conv_fwd(
        fold_batch(input, d_input, 1),
        fold_batch(weight, d_weight, 0),
        fold_batch(bias, d_bias, 0),
        *g.with_groups(g.groups * size).as_args(),
    )
    return unfold_batch(out, 1, size), 1


def _bwd_input_vmap(info, in_dims, grad_output, weight, bias, input_size, layout, *geometry):
    size, g = info.batch_size, ConvGeometry.from_args(*geometry)
    d_grad_output, d_weight, d_bias = in_dims[:3]
    if d_weight is None and d_bias is None:  # fold into N
        grad = conv_bwd_input(
            fold_batch(grad_output, d_grad_output, 0), weight, bias, input_size, layout, *geometry
        )
        return unfold_batch(grad, 0, size), 0
    weight, d_weight = _batched(weight, d_weight, size)
    bias, d_bias = _batched(bias, d_bias, size)
    if d_grad_output is None:
        # A batch of weights: fold it into each group's result channels (the weight's dim 1).
        weight, bias = fold_batch(weight, d_weight, 1), fold_batch(bias, d_bias, 0, g.groups)
        grad = conv_bwd_input(grad_output, weight, bias, input_size, layout, *geometry)
        return unfold_batch(grad, 1, size, g.groups), 1
    grad = conv_bwd_input(
        fold_batch(grad_output, d_grad_output, 1),
        fold_batch(weight, d_weight, 0),
        fold_batch(bias, d_bias, 0),
        input_size,
        layout,
        *g.with_groups(g.groups * size).as_args(),
    )
    return unfold_batch(grad, 1, size), 1


def _bwd_weight_vmap(info, in_dims, grad_output, input, kernel_size, layout, *geometry):
    size, g = info.batch_size, ConvGeometry.from_args(*geometry)
    d_grad_output, d_input = in_dims[:2]
    if d_input is None:  # fold into each group's output channels
        grad_output = fold_batch(grad_output, d_grad_output, 1, g.groups)
        grad = conv_bwd_weight(grad_output, input, kernel_size, layout, *geometry)
        return unfold_batch(grad, 0, size, g.groups), 0
    if d_grad_output is None:  # fold into each group's input channels (the weight's dim 1)
        input = fold_batch(input, d_input, 1, g.groups)
        grad = conv_bwd_weight(grad_output, input, kernel_size, layout, *geometry)
        return unfold_batch(grad, 1, size), 1
    # Both (per-sample gradients): one group per (batch element, group).
    grad = conv_bwd_weight(
        fold_batch(grad_output, d_grad_output, 1),
        fold_batch(input, d_input, 1),
        kernel_size,
        layout,
        *g.with_groups(g.groups * size).as_args(),
    )
    return unfold_batch(grad, 0, size), 0


def _bwd_weight_bias_vmap(info, in_dims, grad_output, input, kernel_size, layout, *geometry):
    grad_weight, weight_dim = _bwd_weight_vmap(
        info, in_dims, grad_output, input, kernel_size, layout, *geometry
    )
    d_grad_output = in_dims[0]
    if d_grad_output is None:
        return (grad_weight, _channel_sum(grad_output)), (weight_dim, None)
    batched = grad_output.movedim(d_grad_output, 0)  # (B, N, C, *spatial)
    grad_bias = batched.sum([1, *range(3, batched.dim())])
    return (grad_weight, grad_bias), (weight_dim, 0)


# --------------------------------------------------------------------------------------------
# The primitives
# --------------------------------------------------------------------------------------------

conv_fwd = Primitive(
    "conv_fwd",
    _fwd_impl,
    fake=_fwd_fake,
    setup_context=_fwd_setup,
    backward=_fwd_backward,
    jvp=_fwd_jvp,
    vmap=_fwd_vmap,
    static_attributes=True,
)
conv_bwd_input = Primitive(
    "conv_bwd_input",
    _bwd_input_impl,
    fake=_bwd_input_fake,
    setup_context=_bwd_input_setup,
    backward=_bwd_input_backward,
    jvp=_bwd_input_jvp,
    vmap=_bwd_input_vmap,
    static_attributes=True,
)
conv_bwd_weight = Primitive(
    "conv_bwd_weight",
    _bwd_weight_impl,
    fake=_bwd_weight_fake,
    setup_context=_bwd_weight_setup,
    backward=_bwd_weight_backward,
    jvp=_bwd_weight_jvp,
    vmap=_bwd_weight_vmap,
)
conv_bwd_weight_bias = Primitive(
    "conv_bwd_weight_bias",
    _bwd_weight_bias_impl,
    fake=_bwd_weight_bias_fake,
    setup_context=_bwd_weight_setup,
    backward=_bwd_weight_backward,
    jvp=_bwd_weight_bias_jvp,
    vmap=_bwd_weight_bias_vmap,
)


# --------------------------------------------------------------------------------------------
# FLOPs, as torch counts aten.convolution and aten.convolution_backward
# --------------------------------------------------------------------------------------------
# A transposed convolution's forward, input gradient and weight gradient are conv_bwd_input,
# conv_fwd and conv_bwd_weight (with input and grad_output swapped), and ATen's formulas for
# them are exactly the ones below, so one formula per primitive counts both.


def _channels_first(shape) -> list[int]:
    return [shape[1], shape[0], *shape[2:]]


@register_flop_formula(torch.ops.torchconv_ext.conv_fwd)
def _fwd_flop(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(input_shape, weight_shape, out_shape, transposed=False)


@register_flop_formula(torch.ops.torchconv_ext.conv_bwd_input)
def _bwd_input_flop(grad_output_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(grad_output_shape, weight_shape, out_shape, transposed=True)


@register_flop_formula(torch.ops.torchconv_ext.conv_bwd_weight)
def _bwd_weight_flop(grad_output_shape, input_shape, *args, out_shape=None, **kwargs) -> int:
    return _weight_gradient_flops(grad_output_shape, input_shape, out_shape)


@register_flop_formula(torch.ops.torchconv_ext.conv_bwd_weight_bias)
def _bwd_weight_bias_flop(grad_output_shape, input_shape, *args, out_shape=None, **kwargs) -> int:
    # (the bias gradient is a sum: no FLOPs, as torch counts it)
    return _weight_gradient_flops(grad_output_shape, input_shape, out_shape[0])


def _weight_gradient_flops(grad_output_shape, input_shape, weight_shape) -> int:
    return conv_flop_count(
        _channels_first(input_shape),
        _channels_first(grad_output_shape),
        _channels_first(weight_shape),
        transposed=False,
    )
