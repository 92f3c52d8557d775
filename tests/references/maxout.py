"""The float64 reference for maxout, written from its definition (no code shared with the
package)."""

from __future__ import annotations

import torch


def reference_maxout(x: torch.Tensor, pieces: int, dim: int = 1):
    """Maxout by definition: output channel ``c`` along ``dim`` is the max of input channels
    ``c·pieces + k``, ``k < pieces``; ties keep the first piece, a NaN wins (the first NaN).
    Returns ``(values, piece indices)``; autograd through it sends the gradient to the winner."""
    dim %= x.dim()  # (a negative dim counts from the end of the input, not of its groups)
    groups = x.unflatten(dim, (x.shape[dim] // pieces, pieces))
    best = groups.select(dim + 1, 0)
    index = torch.zeros(best.shape, dtype=torch.int64, device=x.device)
    for k in range(1, pieces):
        v = groups.select(dim + 1, k)
        take = (v > best) | (v.isnan() & ~best.isnan())
        best = torch.where(take, v, best)
        index = torch.where(take, k, index)
    return best, index
