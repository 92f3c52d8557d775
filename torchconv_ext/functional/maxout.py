"""``maxout`` (beyond torch): the max over groups of ``pieces`` consecutive channels; and the
maxout convolution behind ``nn.MaxoutConv*d`` (:func:`maxout_conv`)."""

from __future__ import annotations

from torch import Tensor

from .._args import IntOrTuple, Padding
from .._fallback import conv as conv_fallback
from .._maxout_args import check_pieces, maxout_dim
from .._ops.conv import conv_fwd
from .._ops.maxout import maxout_fwd
from .._ops.maxout_conv import maxout_conv_fwd
from ._common import conv_dtype
from .conv import kernels_convolve, open_conv, torch_computes


def maxout(input: Tensor, pieces: int, dim: int = 1) -> Tensor:
    """Maxout (Goodfellow et al., 2013): output channel ``c`` along ``dim`` is the max of input
    channels ``c·pieces + k``, ``k = 0 … pieces-1`` (consecutive channels form a group).

    Args:
        input: a floating-point tensor whose size along ``dim`` is a multiple of ``pieces``
            (e.g. ``(N, C·pieces, *spatial)`` with ``dim=1``; for an unbatched ``(C·pieces,
            *spatial)`` input pass ``dim=0``).
        pieces: the number of linear pieces per unit (``1``: the identity).
        dim: the channel dim.

    Returns:
        ``input`` with ``dim`` shrunk ``pieces`` times, channels-last when the input is and
        ``dim == 1``. The gradient flows to the maximum; ties keep the first piece, and a NaN
        wins and takes the gradient, as in max pooling.
    """
    pieces, dim = maxout_dim("maxout", input, pieces, dim)
    return maxout_fwd(input, pieces, dim)[0]


def maxout_conv(
    name: str,
    spatial_dims: int,
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    pieces: int,
    stride: IntOrTuple = 1,
    padding: str | Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> Tensor:
    """``maxout(conv{spatial_dims}d(input, weight, bias, ...), pieces)`` over the channels: the
    computation of ``nn.MaxoutConv*d`` (``name`` names it in errors).

    ``weight`` has ``C_out·pieces`` output channels; the result has ``C_out``, each the max of
    the convolution's channels ``c·pieces + k``, exactly as the two ops in sequence compute it
    (same values, gradients, layout and errors). On the Triton backend the max is taken in the
    convolution kernel's epilogue, so the ``C_out·pieces`` channels are never written — except
    for depthwise convolutions, and where a unit's pieces would span two groups (then the
    convolution and the maxout run one after the other). Elsewhere torch's convolution runs, then
    :func:`maxout`.
    """
    pieces = check_pieces(name, pieces, RuntimeError)
    cast, dtype = conv_dtype(input)
    if torch_computes(spatial_dims, input, dtype, stride, padding, padding_mode):
        z = conv_fallback.torch_conv(
            spatial_dims, input, weight, bias, stride, padding, dilation, groups
        )
        return maxout(z, pieces, dim=-(spatial_dims + 1))
    batched, x, weight, bias, g = open_conv(
        name, spatial_dims, cast, input, weight, bias, stride, padding, dilation, groups,
        padding_mode,
    )  # fmt: skip
    kernels = kernels_convolve(dtype, x, weight)
    if kernels and (weight.shape[0] // g.groups) % pieces == 0:
        out = maxout_conv_fwd(x, weight, bias, pieces, *g.as_args())[0]
    else:  # the two ops in sequence (maxout's own checks give its errors)
        args = (x, weight, bias, *g.as_args())
        z = conv_fwd(*args) if kernels else conv_fallback.conv_by_torch(x, weight, bias, g)
        out = maxout(z, pieces, 1)
    return out if batched else out.squeeze(0)


__all__ = ["maxout"]
