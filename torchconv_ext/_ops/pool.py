"""Pooling primitives: ``torchconv_ext::pool_fwd`` / ``pool_bwd`` (fixed windows),
``adaptive_pool_fwd`` / ``adaptive_pool_bwd`` and ``pyramid_pool_fwd`` / ``pyramid_pool_bwd``.

``mode`` is ``"max"`` or ``"avg"``. Forward primitives return ``(output, indices)``; the indices
(int64, flat into each input plane, torch's convention) exist for max pooling only — average
pooling returns an empty tensor in their place. Backward primitives take the forward's input
(read for its shape and layout only) and indices. Each implementation picks, per call, the
Triton kernels or the ATen fallback; the fakes give the sizes, dtypes and memory formats torch's
own ops return.

The three kinds share their derivatives (:class:`_Pooling`), each written with primitives or
differentiable torch ops, so every order of derivative exists:

* forward → backward primitive; max: the gather of the tangent at the indices (jvp); avg: the
  forward of the tangent (it is linear);
* backward w.r.t. ``grad_output``: max, the gather at the indices; avg, the forward (the
  adjoint of a linear map's adjoint is the map); w.r.t. ``input``: zero (only its shape is read;
  a max's window choice is locally constant), as in torch;
* vmap: pooling treats every ``(n, c)`` plane alike, so the vmapped dim folds into the batch dim
  (or, for the forward, into channels when only that is a view); flat indices stay valid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .._backend import kernels, use_triton
from .._fallback import pool as fallback
from .._memory import (
    empty_in_layout,
    pool_grad_channels_last,
    pool_input_channels_last,
    pool_output_channels_last,
    to_layout,
)
from .._pool_args import PoolGeometry, pool_output_shape, pyramid_features
from ._primitive import Primitive


def _no_indices(like: Tensor) -> Tensor:
    return torch.empty_strided((0,), (1,), dtype=torch.int64, device=like.device)


def _outputs(shape, input: Tensor, mode: str, channels_last: bool, poison: bool):
    """Output and indices (empty for avg) in torch's layout."""
    out = empty_in_layout(shape, input, channels_last, poison=poison)
    if mode != "max":
        return out, _no_indices(input)
    return out, empty_in_layout(shape, input, channels_last, torch.int64, poison=poison)


def _finish(out: Tensor, idx: Tensor | None, input: Tensor, channels_last: bool):
    """Fallback results in torch's layout."""
    out = to_layout(out, channels_last)
    return out, (to_layout(idx, channels_last) if idx is not None else _no_indices(input))


def _launch_geometry(geom: PoolGeometry) -> dict:
    """The fixed-window launchers' geometry keywords (``ceil_mode`` is in the output size)."""
    return dict(
        kernel_size=geom.kernel_size,
        stride=geom.stride,
        padding=geom.padding,
        padding_end=geom.padding_end,
        dilation=geom.dilation,
        count_include_pad=geom.count_include_pad,
        divisor_override=geom.divisor_override,
    )


# --------------------------------------------------------------------------------------------
# Implementations and fakes: fixed windows
# --------------------------------------------------------------------------------------------


def _pool_fwd(
    input: Tensor,
    mode: str,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int,
) -> tuple[Tensor, Tensor]:
    """Max / average pooling of a batched N-d input with per-side padding."""
    geom = PoolGeometry.from_args(
        kernel_size,
        stride,
        padding,
        padding_end,
        dilation,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )
    cl = pool_output_channels_last(mode, input)
    if not use_triton(input):
        if mode == "max":
            return _finish(*fallback.max_pool(input, geom), input, cl)
        return _finish(fallback.avg_pool(input, geom), None, input, cl)
    out, idx = _outputs(pool_output_shape(input.shape, geom), input, mode, cl, poison=True)
    indices = idx if mode == "max" else None
    kernels().pool_forward(input, out, indices, mode=mode, **_launch_geometry(geom))
    return out, idx


def _pool_fwd_fake(input, mode, *geometry):
    shape = pool_output_shape(input.shape, PoolGeometry.from_args(*geometry))
    return _outputs(shape, input, mode, pool_output_channels_last(mode, input), poison=False)


def _pool_bwd(
    grad_output: Tensor,
    input: Tensor,
    indices: Tensor,
    mode: str,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    padding_end: list[int],
    dilation: list[int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int,
) -> Tensor:
    """Gradient of ``pool_fwd`` w.r.t. ``input`` (only its shape and layout are read)."""
    geom = PoolGeometry.from_args(
        kernel_size,
        stride,
        padding,
        padding_end,
        dilation,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )
    cl = pool_grad_channels_last(mode, input, grad_output.shape[2:])
    if not use_triton(grad_output):
        if mode == "max":
            grad = fallback.max_pool_backward(grad_output, input, indices, geom)
        else:
            grad = fallback.avg_pool_backward(grad_output, input, geom)
        return to_layout(grad, cl)
    grad = empty_in_layout(input.shape, grad_output, cl, poison=True)
    indices = indices if mode == "max" else None
    kernels().pool_backward(grad_output, indices, grad, mode=mode, **_launch_geometry(geom))
    return grad


def _pool_bwd_fake(grad_output, input, indices, mode, *geometry):
    cl = pool_grad_channels_last(mode, input, grad_output.shape[2:])
    return empty_in_layout(input.shape, grad_output, cl)


# --------------------------------------------------------------------------------------------
# Implementations and fakes: adaptive windows
# --------------------------------------------------------------------------------------------


def _adaptive_pool_fwd(input: Tensor, mode: str, output_size: list[int]) -> tuple[Tensor, Tensor]:
    """Adaptive max / average pooling of a batched N-d input to ``output_size``."""
    cl = pool_output_channels_last("adaptive_" + mode, input)
    if not use_triton(input):
        return _finish(*fallback.adaptive_pool(input, mode, output_size), input, cl)
    out, idx = _outputs([*input.shape[:2], *output_size], input, mode, cl, poison=True)
    kernels().adaptive_pool_forward(input, out, idx if mode == "max" else None, mode=mode)
    return out, idx


def _adaptive_pool_fwd_fake(input, mode, output_size):
    cl = pool_output_channels_last("adaptive_" + mode, input)
    return _outputs([*input.shape[:2], *output_size], input, mode, cl, poison=False)


def _adaptive_pool_bwd(grad_output: Tensor, input: Tensor, indices: Tensor, mode: str) -> Tensor:
    """Gradient of ``adaptive_pool_fwd`` w.r.t. ``input`` (only its shape and layout are read)."""
    cl = pool_grad_channels_last("adaptive_" + mode, input, grad_output.shape[2:])
    if not use_triton(grad_output):
        if mode == "max":
            grad = fallback.adaptive_max_pool_backward(grad_output, input, indices)
        else:
            grad = fallback.adaptive_avg_pool_backward(grad_output, input)
        return to_layout(grad, cl)
    grad = empty_in_layout(input.shape, grad_output, cl, poison=True)
    indices = indices if mode == "max" else None
    kernels().adaptive_pool_backward(grad_output, indices, grad, mode=mode)
    return grad


def _adaptive_pool_bwd_fake(grad_output, input, indices, mode):
    cl = pool_grad_channels_last("adaptive_" + mode, input, grad_output.shape[2:])
    return empty_in_layout(input.shape, grad_output, cl)


# --------------------------------------------------------------------------------------------
# Implementations and fakes: spatial pyramid pooling
# --------------------------------------------------------------------------------------------


def _pyramid_shape(input: Tensor, levels: Sequence[int]) -> list[int]:
    return [input.shape[0], pyramid_features(input.shape[1], levels, input.dim() - 2)]


def _pyramid_pool_fwd(input: Tensor, mode: str, levels: list[int]) -> tuple[Tensor, Tensor]:
    """Spatial pyramid pooling: ``(N, C·Σ l**nd)``, levels flattened and concatenated in order."""
    if not use_triton(input):
        out, idx = fallback.pyramid_pool(input, mode, levels)
        return out.contiguous(), (idx.contiguous() if idx is not None else _no_indices(input))
    out, idx = _outputs(_pyramid_shape(input, levels), input, mode, False, poison=True)
    indices = idx if mode == "max" else None
    kernels().pyramid_pool_forward(input, out, indices, mode=mode, levels=levels)
    return out, idx


def _pyramid_pool_fwd_fake(input, mode, levels):
    return _outputs(_pyramid_shape(input, levels), input, mode, False, poison=False)


def _pyramid_pool_bwd(
    grad_output: Tensor, input: Tensor, indices: Tensor, mode: str, levels: list[int]
) -> Tensor:
    """Gradient of ``pyramid_pool_fwd`` w.r.t. ``input`` (every level, one kernel launch)."""
    cl = pool_output_channels_last("adaptive_" + mode, input)
    if not use_triton(grad_output):
        grad = fallback.pyramid_pool_backward(grad_output, input, indices, mode, levels)
        return to_layout(grad, cl)
    grad = empty_in_layout(input.shape, grad_output, cl, poison=True)
    indices = indices if mode == "max" else None
    kernels().pyramid_pool_backward(grad_output, indices, grad, mode=mode, levels=levels)
    return grad


def _pyramid_pool_bwd_fake(grad_output, input, indices, mode, levels):
    cl = pool_output_channels_last("adaptive_" + mode, input)
    return empty_in_layout(input.shape, grad_output, cl)


# --------------------------------------------------------------------------------------------
# Derivatives, shared by the three kinds
# --------------------------------------------------------------------------------------------


def _gather(source: Tensor, indices: Tensor, levels: Sequence[int] | None) -> Tensor:
    """``source``'s elements at max-pooling ``indices`` (flat into each ``(n, c)`` plane),
    shaped like the indices: the derivative of a max pooling, applied to ``source``.

    Pyramid indices ``(N, C·Σ l**nd)`` hold one ``(C, l**nd)`` block per level.
    """
    n, c = source.shape[:2]
    planes = source.reshape(n, c, math.prod(source.shape[2:]))
    if levels is None:
        flat = indices.reshape(n, c, math.prod(indices.shape[2:]))
        return planes.gather(2, flat).view(indices.shape)
    bins = [level ** (source.dim() - 2) for level in levels]
    blocks = indices.split([c * b for b in bins], dim=1)
    return torch.cat(
        [planes.gather(2, block.reshape(n, c, b)).flatten(1) for block, b in zip(blocks, bins)], 1
    )


def _mergeable(t: Tensor, dim: int) -> bool:
    """Whether dims ``dim`` and ``dim + 1`` of ``t`` merge into one without a copy."""
    return (
        t.shape[dim] == 1
        or t.shape[dim + 1] == 1
        or (t.stride(dim) == t.stride(dim + 1) * t.shape[dim + 1])
    )


def _into_batch(t: Tensor, bdim: int | None, size: int) -> Tensor:
    """``t`` with its vmapped dim (expanded to ``size`` when ``t`` is not batched) merged into
    the batch dim: ``(B·N, C, …)`` — a view when the strides allow, else a copy."""
    t = t.unsqueeze(0).expand(size, *t.shape) if bdim is None else t.movedim(bdim, 0)
    return t.flatten(0, 1)


def _fold(t: Tensor, bdim: int, channels_ok: bool) -> tuple[Tensor, Callable, int]:
    """Merge the vmapped dim of ``t`` into the batch dim, or — when only that is a view and
    ``channels_ok`` — into the channel dim. Returns the folded tensor, the inverse for results
    and where the inverse puts the vmapped dim."""
    t = t.movedim(bdim, 0)
    size, n, c = t.shape[:3]
    if channels_ok and not _mergeable(t, 0) and _mergeable(t.movedim(0, 1), 1):
        return t.movedim(0, 1).flatten(1, 2), lambda r: r.unflatten(1, (size, c)), 1
    return t.flatten(0, 1), lambda r: r.unflatten(0, (size, n)), 0


class _Pooling:
    """One kind of pooling — fixed, adaptive or pyramid windows — as its forward and backward
    :class:`Primitive`, with the derivatives every kind shares.

    A forward primitive is ``fwd(input, mode, *rest)`` and its backward ``bwd(grad_output,
    input, indices, mode, *rest')``; ``params`` are the arguments after the tensors.

    Args:
        name: the primitives are ``<name>_fwd`` and ``<name>_bwd``.
        bwd_params: the backward's ``params`` from the forward's.
        fwd_params: the forward's ``params`` from the backward's and ``grad_output``'s size
            (the forward the backward is the gradient of).
        pyramid: outputs are ``(N, features)`` pyramids (no channel dim to fold a vmap into).
        windows: fixed windows (``params[1:]`` a :class:`PoolGeometry`'s arguments), some of
            which can miss the input: their max's index is no input element's, and nothing
            flows through them.
    """

    def __init__(
        self,
        name: str,
        fwd: tuple[Callable, Callable],
        bwd: tuple[Callable, Callable],
        *,
        bwd_params: Callable[[tuple], tuple] = lambda params: params,
        fwd_params: Callable[[tuple, torch.Size], tuple] = lambda params, _size: params,
        pyramid: bool = False,
        windows: bool = False,
    ) -> None:
        self.bwd_params, self.fwd_params, self.pyramid = bwd_params, fwd_params, pyramid
        self.windows = windows
        self.fwd = Primitive(
            f"{name}_fwd",
            fwd[0],
            fake=fwd[1],
            setup_context=self._fwd_setup_context,
            backward=self._fwd_backward,
            jvp=self._fwd_jvp,
            vmap=self._fwd_vmap,
            static_attributes=True,
        )
        self.bwd = Primitive(
            f"{name}_bwd",
            bwd[0],
            fake=bwd[1],
            setup_context=self._bwd_setup_context,
            backward=self._bwd_backward,
            jvp=self._bwd_jvp,
            vmap=self._bwd_vmap,
        )

    def _gather(self, source: Tensor, indices: Tensor, params: tuple) -> Tensor:
        """The derivative of a max pooling applied to ``source``: its elements at ``indices``,
        zero for windows that miss the input (computed, not tested: no guard or sync)."""
        if not self.windows:
            return _gather(source, indices, params[1] if self.pyramid else None)
        g = PoolGeometry.from_args(*params[1:])
        empty = g.empty_windows(source.shape[2:], indices.shape[2:], source.device)
        return _gather(source, indices.masked_fill(empty, 0), None).masked_fill(empty, 0)

    # The forward: (input, *params) -> (output, indices)

    def _fwd_setup_context(self, ctx, inputs: tuple, output: tuple) -> None:
        ctx.params = inputs[1:]
        indices = ctx.indices = output[1]  # for the jvp; integer: no reference cycle
        ctx.save_for_backward(inputs[0], indices)

    def _fwd_backward(self, ctx, grad_output: Tensor, _grad_indices: None) -> tuple:
        grad_input = None
        if ctx.needs_input_grad[0]:
            input, indices = ctx.saved_tensors
            grad_input = self.bwd(grad_output, input, indices, *self.bwd_params(ctx.params))
        return grad_input, *(None for _ in ctx.params)

    def _fwd_jvp(self, ctx, tangent: Tensor, *_: None) -> tuple:
        if ctx.params[0] == "max":
            return self._gather(tangent, ctx.indices, ctx.params), None
        return self.fwd(tangent, *ctx.params)[0], None

    def _fwd_vmap(self, info, in_dims: tuple, input: Tensor, *params) -> tuple:
        folded, unfold, dim = _fold(input, in_dims[0], channels_ok=not self.pyramid)
        out, idx = self.fwd(folded, *params)
        if params[0] == "max":
            return (unfold(out), unfold(idx)), (dim, dim)
        return (unfold(out), idx), (dim, None)

    # The backward: (grad_output, input, indices, *params) -> grad_input

    def _bwd_setup_context(self, ctx, inputs: tuple, output: Tensor) -> None:
        grad_output, input, indices, *params = inputs
        ctx.params = tuple(params)
        ctx.grad_output_size = grad_output.shape
        ctx.save_for_backward(input, indices)

    def _bwd_backward(self, ctx, grad_grad_input: Tensor) -> tuple:
        input, indices = ctx.saved_tensors
        grad_grad_output = grad_input = None
        if ctx.needs_input_grad[0]:
            if ctx.params[0] == "max":
                grad_grad_output = self._gather(grad_grad_input, indices, ctx.params)
            else:
                params = self.fwd_params(ctx.params, ctx.grad_output_size)
                grad_grad_output = self.fwd(grad_grad_input, *params)[0]
        if ctx.needs_input_grad[1]:
            grad_input = torch.zeros_like(input)
        return grad_grad_output, grad_input, None, *(None for _ in ctx.params)

    def _bwd_jvp(self, ctx, tangent: Tensor | None, *_: None) -> Tensor:
        _, input, indices, *params = ctx.primals
        if tangent is None:  # only the input moves, whose values the gradient does not read
            return torch.zeros_like(input)
        return self.bwd(tangent, input, indices, *params)

    def _bwd_vmap(self, info, in_dims: tuple, grad_output, input, indices, *params) -> tuple:
        size = info.batch_size
        go_dim, input_dim, idx_dim = in_dims[:3]
        grad_output = _into_batch(grad_output, go_dim, size)
        if params[0] == "max":
            indices = _into_batch(indices, idx_dim, size)
        if input_dim is not None:
            input = _into_batch(input, input_dim, size)
        else:  # only its shape and layout are read: no copies of it
            shape = [size * input.shape[0], *input.shape[1:]]
            input = empty_in_layout(shape, input, pool_input_channels_last(input))
        grad = self.bwd(grad_output, input, indices, *params)
        return grad.unflatten(0, (size, grad.shape[0] // size)), 0


FIXED = _Pooling("pool", (_pool_fwd, _pool_fwd_fake), (_pool_bwd, _pool_bwd_fake), windows=True)
ADAPTIVE = _Pooling(
    "adaptive_pool",
    (_adaptive_pool_fwd, _adaptive_pool_fwd_fake),
    (_adaptive_pool_bwd, _adaptive_pool_bwd_fake),
    bwd_params=lambda params: params[:1],  # (mode,): the output size is grad_output's
    fwd_params=lambda params, size: (params[0], list(size[2:])),
)
PYRAMID = _Pooling(
    "pyramid_pool",
    (_pyramid_pool_fwd, _pyramid_pool_fwd_fake),
    (_pyramid_pool_bwd, _pyramid_pool_bwd_fake),
    pyramid=True,
)

pool_fwd, pool_bwd = FIXED.fwd, FIXED.bwd
adaptive_pool_fwd, adaptive_pool_bwd = ADAPTIVE.fwd, ADAPTIVE.bwd
pyramid_pool_fwd, pyramid_pool_bwd = PYRAMID.fwd, PYRAMID.bwd
