"""``maxout`` (beyond torch): the max over groups of ``pieces`` consecutive channels."""

from __future__ import annotations

from torch import Tensor

from .._maxout_args import maxout_dim
from .._ops.maxout import maxout_fwd


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


__all__ = ["maxout"]
