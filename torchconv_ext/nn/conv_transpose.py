"""``ConvTranspose1d`` / ``2d`` / ``3d``: torch's modules running our transposed convolution.

Same constructor, parameters and ``state_dict`` as ``torch.nn``; ``forward(input,
output_size=None)`` honours ``output_size`` like torch. Beyond torch, ``padding='same'``
(output = input·stride), ``padding='valid'`` and per spatial dim ``(before, after)`` pairs (the
crop at the start and at the end of the full output, as ``F.conv_transpose2d``'s) are
accepted, and the keyword-only
``activation`` / ``activation_args`` fuse an activation, as for the convolutions
(``nn._activated``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.overrides import handle_torch_function, has_torch_function

from .. import functional as F
from .._args import expand_pairs
from ._activated import Activated, with_activation_arguments
from ._base import DropIn, extend_constructor


def output_padding_for(
    input: Tensor,
    output_size: Sequence[int] | None,
    output_padding: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    kernel_size: Sequence[int],
    num_spatial_dims: int,
    dilation: Sequence[int],
) -> Sequence[int]:
    """The ``output_padding`` that makes a transposed convolution's output ``output_size``
    (the layer's own ``output_padding`` without one), with the checks and messages of torch's
    ``_ConvTransposeNd._output_padding``, for ``padding`` as ints or ``(before, after)`` pairs.

    A function of its own with ``__torch_function__`` handling, so that ``torch.fx`` records
    one call to it — with the sizes as they come, e.g. a traced ``skip.size()`` — rather than
    tracing into size comparisons it cannot decide.
    """
    sizes = output_size if isinstance(output_size, list | tuple) else ()
    relevant = (input, output_size, *sizes)
    if has_torch_function(relevant):
        return handle_torch_function(
            output_padding_for,
            relevant,
            input,
            output_size,
            output_padding,
            stride,
            padding,
            kernel_size,
            num_spatial_dims,
            dilation,
        )
    if output_size is None:
        return output_padding
    n = num_spatial_dims
    lead = 2 if input.dim() == n + 2 else 1  # (batch and) channel dims
    if len(output_size) == lead + n:
        output_size = output_size[lead:]
    if len(output_size) != n:
        raise ValueError(
            f"ConvTranspose{n}D: for {input.dim()}D input, output_size must have {n} or "
            f"{lead + n} elements (got {len(output_size)})"
        )
    before, after = expand_pairs(padding, n)  # (the layer's padding: ints, or pairs of ours)
    smallest = [
        (input.size(lead + d) - 1) * stride[d] - before[d] - after[d]
        + dilation[d] * (kernel_size[d] - 1) + 1
        for d in range(n)
    ]  # fmt: skip
    largest = [size + s - 1 for size, s in zip(smallest, stride)]
    if any(not lo <= size <= hi for size, lo, hi in zip(output_size, smallest, largest)):
        raise ValueError(
            f"requested an output size of {output_size}, but valid sizes range from {smallest} "
            f"to {largest} (for an input of {input.size()[2:]})"
        )
    return [size - lo for size, lo in zip(output_size, smallest)]


def _padding_string(cls: type, arguments: dict) -> dict:
    """torch would store ``'same'`` as a tuple of letters; keep the string for our forward."""
    padding = arguments.get("padding", 0)
    if not isinstance(padding, str):
        return {}
    arguments["padding"] = 0
    return {"padding": padding}


class _ConvTransposeMixin(Activated, DropIn):
    _functional = None  # set per class: our conv_transpose1d / 2d / 3d
    _ndim: int

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "replaces" in cls.__dict__:  # (ours: a user's subclass keeps its own constructor)
            extend_constructor(cls, _padding_string)
            with_activation_arguments(cls)

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError(f"Only `zeros` padding mode is supported for {type(self).__name__}")
        if isinstance(self.padding, str):
            if output_size is not None:
                raise ValueError(
                    f"{type(self).__name__}: output_size cannot be combined with "
                    f"padding={self.padding!r}, which fixes the output size"
                )
            output_padding = 0
        else:
            output_padding = output_padding_for(
                input,
                output_size,
                self.output_padding,
                self.stride,
                self.padding,
                self.kernel_size,
                self._ndim,
                self.dilation,
            )
        activation = {}
        if self.fused_activation is not None:
            activation = dict(
                activation=self.fused_activation, activation_args=self._activation_args()
            )
        return type(self)._functional(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            output_padding,
            self.groups,
            self.dilation,
            **activation,
        )


class ConvTranspose1d(_ConvTransposeMixin, nn.ConvTranspose1d):
    """Drop-in :class:`torch.nn.ConvTranspose1d` running our ``conv_transpose1d``."""

    replaces = nn.ConvTranspose1d
    _ndim = 1
    _functional = staticmethod(F.conv_transpose1d)


class ConvTranspose2d(_ConvTransposeMixin, nn.ConvTranspose2d):
    """Drop-in :class:`torch.nn.ConvTranspose2d` running our ``conv_transpose2d``."""

    replaces = nn.ConvTranspose2d
    _ndim = 2
    _functional = staticmethod(F.conv_transpose2d)


class ConvTranspose3d(_ConvTransposeMixin, nn.ConvTranspose3d):
    """Drop-in :class:`torch.nn.ConvTranspose3d` running our ``conv_transpose3d``."""

    replaces = nn.ConvTranspose3d
    _ndim = 3
    _functional = staticmethod(F.conv_transpose3d)


# Lazy layers (see ``nn.conv``): ``in_channels`` from the first input, then ours of their kind.


class LazyConvTranspose1d(ConvTranspose1d, nn.LazyConvTranspose1d):
    """Drop-in :class:`torch.nn.LazyConvTranspose1d`: our :class:`ConvTranspose1d` once its
    first input has set its sizes."""

    replaces = nn.LazyConvTranspose1d
    cls_to_become = ConvTranspose1d


class LazyConvTranspose2d(ConvTranspose2d, nn.LazyConvTranspose2d):
    """Drop-in :class:`torch.nn.LazyConvTranspose2d`: our :class:`ConvTranspose2d` once its
    first input has set its sizes."""

    replaces = nn.LazyConvTranspose2d
    cls_to_become = ConvTranspose2d


class LazyConvTranspose3d(ConvTranspose3d, nn.LazyConvTranspose3d):
    """Drop-in :class:`torch.nn.LazyConvTranspose3d`: our :class:`ConvTranspose3d` once its
    first input has set its sizes."""

    replaces = nn.LazyConvTranspose3d
    cls_to_become = ConvTranspose3d
