"""Memory formats: which layout torch returns for each op, and output allocation.

Every rule for "which memory format does torch give this result" lives here, one section per
op family, so the fallback, the Triton path and the fake implementations agree by construction.
Outputs are allocated here too, NaN-poisoned when tests ask for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._backend import env_flag

#: Whether outputs are NaN-filled before a kernel writes them (``TORCHCONV_EXT_POISON=1``, read at
#: import; the tests set it), so that every element a kernel fails to write shows as NaN.
POISON: bool = env_flag("TORCHCONV_EXT_POISON", False)


# --------------------------------------------------------------------------------------------
# Layout tests and allocation
# --------------------------------------------------------------------------------------------


_CL_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}


def channels_last_format(dim: int) -> torch.memory_format | None:
    """The channels-last memory format of a ``dim``-d tensor (``None`` below 4 or above 5)."""
    return _CL_FORMATS.get(dim)


def is_channels_last(t: torch.Tensor) -> bool:
    """True when ``t`` is laid out channels-last and not (also) plain contiguous."""
    fmt = _CL_FORMATS.get(t.dim())
    # (plain contiguous first: the common case, decided by one cached flag)
    return fmt is not None and not t.is_contiguous() and t.is_contiguous(memory_format=fmt)


def strides_like_channels_last(sizes: Sequence[int], strides: Sequence[int]) -> bool:
    """ATen's ``is_channels_last_strides_{2d,3d}``: ``(N, C, *spatial)`` strides in NHWC order,
    the test behind ``Tensor.suggest_memory_format()``."""
    if strides[1] == 0:
        return False
    lowest = 0
    for d in [1, *range(len(sizes) - 1, 1, -1), 0]:  # C, then W, H(, D), then N
        if sizes[d] == 0 or strides[d] < lowest:
            return False
        if d == 0 and lowest == strides[1]:
            return False  # ambiguous (N,1,1,1)-like strides default to contiguous
        lowest = strides[d] * sizes[d] if sizes[d] > 1 else strides[d]
    return True


def suggested_format(t: torch.Tensor) -> torch.memory_format:
    """ATen's ``Tensor.suggest_memory_format()``."""
    fmt = channels_last_format(t.dim())
    if (
        fmt is not None
        and t.layout == torch.strided
        and strides_like_channels_last(t.shape, t.stride())
    ):
        return fmt
    return torch.contiguous_format


def new_output(
    shape: torch.Size | list[int] | tuple[int, ...],
    like: torch.Tensor,
    memory_format: torch.memory_format = torch.contiguous_format,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """An uninitialised output tensor in ``memory_format`` (NaN-filled when poisoning is on)."""
    if memory_format is torch.contiguous_format:
        return empty_in_layout(shape, like, False, dtype, poison=True)
    if 0 in shape:  # torch's channels-last strides of an empty tensor are its own
        out = torch.empty(
            shape, dtype=dtype or like.dtype, device=like.device, memory_format=memory_format
        )
        return _poisoned(out)
    return empty_in_layout(shape, like, True, dtype, poison=True)


def empty_in_layout(
    shape: Sequence[int],
    like: torch.Tensor,
    channels_last: bool,
    dtype: torch.dtype | None = None,
    poison: bool = False,
) -> torch.Tensor:
    """An uninitialised ``(N, C, *spatial)`` tensor with channels fastest (``channels_last``,
    any rank) or contiguous; NaN/-1 filled when ``poison`` and tests turn poisoning on."""
    # One ``empty_strided`` (0.4 µs less per call than ``torch.empty`` with a memory format):
    # the strides are torch's own for non-empty shapes in either format.
    out = torch.empty_strided(
        shape, _layout_strides(shape, channels_last), dtype=dtype or like.dtype, device=like.device
    )
    return _poisoned(out) if poison else out


def empty_with_fastest(
    shape: Sequence[int], like: torch.Tensor, dim: int, poison: bool = False
) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` whose dim ``dim`` has stride 1, the others in
    order (a locally connected weight's input channels innermost); poisoned as
    :func:`empty_in_layout`'s."""
    order = [*shape[:dim], *shape[dim + 1 :], shape[dim]]
    out = torch.empty(order, dtype=like.dtype, device=like.device).movedim(-1, dim)
    return _poisoned(out) if poison else out


def _poisoned(out: torch.Tensor) -> torch.Tensor:
    if POISON:
        out.fill_(float("nan") if out.is_floating_point() else -1)
    return out


def to_layout(t: torch.Tensor, channels_last: bool, *, exact: bool = False) -> torch.Tensor:
    """``t`` in the layout :func:`empty_in_layout` gives (a copy only when it differs), at the
    start of its storage: a crop of a bigger buffer (a padded gradient's interior) is copied,
    as an op's fake says its result is fresh (and the buffer is not kept alive).

    With ``exact`` — for our kernels' results stored in the other layout — the strides of
    size-1 dims, and of every dim of an empty tensor, are that layout's too: torch's contiguity
    tests ignore them, but ATen's results have them, and ATen's layout rule reads them in the
    next op (a channels-last store of one channel is contiguous, yet with those strides counts
    as channels-last downstream). Kernels' operands, and ATen's own results, need the layout
    only."""
    if t.storage_offset():
        return empty_in_layout(t.shape, t, channels_last).copy_(t)
    fmt = _CL_FORMATS.get(t.dim()) if channels_last else torch.contiguous_format
    if fmt is not None:
        # torch's own contiguity test is the same rule (sizes of 1 ignored, empty tensors
        # pass), in C, and its copy gives empty_in_layout's strides
        if t.is_contiguous(memory_format=fmt):
            if (
                exact
                and (1 in t.shape or 0 in t.shape)
                and t.layout == torch.strided  # (not MKL-DNN's: no strides to set)
                and list(t.stride()) != _layout_strides(t.shape, channels_last)
            ):
                return empty_in_layout(t.shape, t, channels_last).copy_(t)
            return t
        if t.numel() or not channels_last:  # (a channels-last copy of an empty one is not)
            return t.contiguous(memory_format=fmt)
    else:
        strides = _layout_strides(t.shape, channels_last)
        if list(t.stride()) == strides if exact else _same_significant_strides(t, strides):
            return t
    return empty_in_layout(t.shape, t, channels_last).copy_(t)


def _layout_strides(shape: Sequence[int], channels_last: bool) -> list[int]:
    """The strides :func:`empty_in_layout` gives a tensor of ``shape``: dims in order, or
    channels after the spatial dims; a dim of size 0 steps as one of size 1 (as torch's
    contiguous strides do)."""
    order = [0, *range(2, len(shape)), 1] if channels_last else range(len(shape))
    strides, step = [0] * len(shape), 1
    for d in reversed(order):
        strides[d] = step
        step = step * (shape[d] or 1)  # (not *=: under torch.jit.trace sizes are tensors)
    return strides


def own_strides(t: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``t`` with the strides a new tensor in ``memory_format`` has, where it is dense in that
    format but a size-1 dim steps otherwise (as views such as ``unsqueeze`` give) — unless
    its strides are a new tensor's in the other format: a view, or ``t`` itself. ATen's CPU
    convolutions take such a tensor for one laid out like a new one: wrong gradients with
    groups, or "grad_weight must be contiguous"."""
    shape = t.shape
    if 1 not in shape or 0 in shape or not t.is_contiguous(memory_format=memory_format):
        return t
    channels_last = memory_format is not torch.contiguous_format
    strides, own = list(t.stride()), _layout_strides(shape, channels_last)
    if strides == own or (
        t.dim() in _CL_FORMATS and strides == _layout_strides(shape, not channels_last)
    ):
        return t
    return t.as_strided(shape, own)


def _same_significant_strides(t: torch.Tensor, strides: Sequence[int]) -> bool:
    """Equal strides on every dimension longer than 1 (what layout comparisons look at)."""
    return t.numel() == 0 or all(s <= 1 or x == y for s, x, y in zip(t.shape, t.stride(), strides))


# --------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------


def suggest_memory_format(*tensors: torch.Tensor) -> torch.memory_format:
    """ATen's rule for convolution-like ops: channels-last if any operand's
    ``suggest_memory_format()`` is — its strides in channels-last order, dense or not (a crop
    or a strided slice of a channels-last tensor counts)."""
    fmt = _CL_FORMATS.get(tensors[0].dim())
    if fmt is not None:
        for t in tensors:  # (a loop, not any(...): this runs on every transposed convolution)
            # Cached flags decide the common cases: plain contiguous with channels and width
            # above 1 has strides in NCHW order (whatever a size-1 dim's stride); dense
            # channels-last without size-1 dims past the batch has its layout's own strides,
            # for one sample if its batch stride comes last. The rest needs the strides' order.
            # (Few tensor calls: each costs a parameter's __torch_function__ check.)
            if t.is_contiguous():
                shape = t.shape
                if shape[1] > 1 and shape[-1] > 1:
                    continue
            elif t.is_contiguous(memory_format=fmt):
                shape = t.shape
                if 1 not in shape[1:]:
                    if shape[0] != 1 or t.stride(0) >= t.numel():
                        return fmt
                    continue
            else:
                shape = t.shape
            if strides_like_channels_last(shape, t.stride()):
                return fmt
    return torch.contiguous_format


def padding_keeps_layout(input: torch.Tensor, padding_mode: str) -> bool:
    """Whether ``input`` keeps its memory format through the padding of a convolution whose
    ``padding_mode`` is ``padding_mode``. torch's ``nn.ConvNd`` convolves ``F.pad(input)`` for
    every mode but zeros (whatever the padding, none included): the CPU's reflection and
    replication pads keep a channels-last input so, CUDA's return contiguous tensors, and so
    does circular padding on every device."""
    return padding_mode == "zeros" or (padding_mode != "circular" and input.device.type == "cpu")


# --------------------------------------------------------------------------------------------
# Pooling (what torch's kernels return)
# --------------------------------------------------------------------------------------------


def pool_input_channels_last(input: torch.Tensor) -> bool:
    """Whether torch treats a batched pooling input as channels-last.

    1-d pooling runs as 2-d pooling of ``input.unsqueeze(-2)`` in ATen, so a 1-d input counts as
    channels-last when that view does.
    """
    sizes, strides = list(input.shape), list(input.stride())
    if input.dim() == 3:
        sizes.insert(2, 1)
        strides.insert(2, strides[2] * sizes[3])
    return len(sizes) in (4, 5) and strides_like_channels_last(sizes, strides)


def pool_output_channels_last(kind: str, input: torch.Tensor) -> bool:
    """Whether torch's ``kind`` pooling (max, avg, adaptive_max, adaptive_avg) returns a
    channels-last output (and indices) for ``input``: 3-d pooling keeps channels-last only for
    max pooling; 1-d and 2-d pooling keep it for every kind."""
    if input.dim() == 5 and kind != "max":
        return False
    return pool_input_channels_last(input)


def pool_grad_channels_last(kind: str, input: torch.Tensor, output_size: Sequence[int]) -> bool:
    """Whether torch's gradient of ``kind`` pooling w.r.t. ``input`` is channels-last.

    Adaptive average pooling to one element per plane is a mean in ATen, whose gradient is
    contiguous.
    """
    if kind == "adaptive_avg" and all(s == 1 for s in output_size):
        return False
    return pool_output_channels_last(kind, input)


# --------------------------------------------------------------------------------------------
# Nearest upsampling
# --------------------------------------------------------------------------------------------


def upsample_output_format(input: torch.Tensor) -> torch.memory_format:
    """The forward's output layout: ATen's ``input.suggest_memory_format()``."""
    return suggested_format(input)


def upsample_grad_format(grad_output: torch.Tensor) -> torch.memory_format:
    """The layout of ATen's upsampling gradients: the 2-d backward follows ``grad_output``'s
    suggested format, the 1-d and 3-d ones are always contiguous."""
    return suggested_format(grad_output) if grad_output.dim() == 4 else torch.contiguous_format
