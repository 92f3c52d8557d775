"""Argument checking for locally connected and tiled convolution, on top of convolution's.

A locally connected (unshared) convolution has its own kernel at every output position; a tiled
convolution cycles through ``tiles`` kernels per spatial dim (output position ``o`` uses kernel
``o mod tiles``). Both take a weight ``(*lead, C_out, C_in/groups, *kernel)`` and an optional bias
``(*lead, C_out)``, where ``lead`` is the output size (locally connected) or the tile counts
(tiled). Everything else means what it means for a convolution, so the kernel of one position is
checked by :func:`conv_geometry` itself and the primitives take the same :class:`ConvGeometry`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._args import IntOrTuple, Padding, check_tensor, expand, expand_pairs, string_padding
from ._conv_args import ConvGeometry, check_same_device_dtype, conv_geometry, conv_output_size


def local_output_size(
    input: torch.Tensor, kernel: Sequence[int], g: ConvGeometry
) -> tuple[int, ...]:
    """Spatial output size of a batched ``(N, C, *spatial)`` input."""
    return tuple(
        conv_output_size(s, k, st, p, pe, d)
        for s, k, st, p, pe, d in zip(
            input.shape[2:], kernel, g.stride, g.padding, g.padding_end, g.dilation
        )
    )


def local_geometry(
    name: str,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: IntOrTuple,
    padding: str | Padding,
    dilation: IntOrTuple,
    groups: int,
    padding_mode: str,
    *,
    tiled: bool,
) -> ConvGeometry:
    """Validate a batched locally connected (``tiled=False``) or tiled convolution.

    ``input`` is ``(N, C_in, *spatial)``. Raises torch's exception types with messages that name
    the argument; a locally connected weight must have one kernel per output position.
    """
    check_tensor(name, "weight", weight)
    check_tensor(name, "bias", bias, optional=True)
    nd = input.dim() - 2
    lead_name = "tiles" if tiled else "out_positions"
    form = f"(*{lead_name}, C_out, C_in/groups, *kernel)"
    if weight.dim() != 2 * nd + 2:
        raise RuntimeError(
            f"{name}: expected weight of {2 * nd + 2} dims {form} for {nd}-d input, but got "
            f"weight of size {list(weight.shape)}"
        )
    lead, (c_out, c_in_group) = list(weight.shape[:nd]), weight.shape[nd : nd + 2]
    if min(lead) < 1:
        raise RuntimeError(
            f"{name}: expected weight {form} with positive {lead_name}, but got weight of size "
            f"{list(weight.shape)}"
        )
    if groups > 0 and c_out % groups != 0:
        raise RuntimeError(
            f"{name}: given groups={groups}, expected C_out (weight dim {nd}) to be divisible by "
            f"{groups}, but got weight of size {list(weight.shape)}"
        )
    if groups > 0 and input.shape[1] != c_in_group * groups:
        raise RuntimeError(
            f"{name}: given groups={groups} and weight of size {list(weight.shape)}, expected "
            f"input{list(input.shape)} to have {c_in_group * groups} channels, but got "
            f"{input.shape[1]} channels instead"
        )
    if bias is not None and list(bias.shape) != [*lead, c_out]:
        raise RuntimeError(
            f"{name}: given weight of size {list(weight.shape)}, expected bias of size "
            f"{[*lead, c_out]} (*{lead_name}, C_out), but got bias of size {list(bias.shape)}"
        )
    check_same_device_dtype(name, input, bias=bias)
    # Every position's kernel has the same form: convolution's checks, on the first one.
    kernel_of_one_position = weight[(0,) * nd]
    g = conv_geometry(
        name, input, kernel_of_one_position, None, stride, padding, dilation, groups, padding_mode
    )
    out = list(local_output_size(input, weight.shape[nd + 2 :], g))
    if not tiled and lead != out:
        raise RuntimeError(
            f"{name}: the weight has kernels for {lead} output positions, but input of spatial "
            f"size {list(input.shape[2:])} gives an output of size {out} (a locally connected "
            "layer only takes inputs of the size it was made for)"
        )
    return g


def module_output_size(
    name: str,
    input_size: IntOrTuple,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: str | Padding,
    dilation: Sequence[int],
) -> tuple[int, ...]:
    """The output size a locally connected module's weight is made for (``ValueError`` if the
    input is too small for the kernel)."""
    nd = len(kernel_size)
    sizes = expand(input_size, nd)
    if sizes is None or min(sizes) < 1:
        raise ValueError(
            f"{name}: input_size must be a positive int or {nd} positive ints, but got "
            f"input_size={input_size}"
        )
    if isinstance(padding, str):
        before, end = string_padding(
            name, padding, sizes, kernel_size, stride, dilation, error=ValueError
        )
    else:
        before, end = expand_pairs(padding, nd)
    out = tuple(
        conv_output_size(*a) for a in zip(sizes, kernel_size, stride, before, end, dilation)
    )
    if min(out) < 1:
        raise ValueError(
            f"{name}: input_size={list(sizes)} is too small for kernel_size={list(kernel_size)} "
            f"with dilation={list(dilation)} and padding={padding!r}"
        )
    return out
