"""Maxout on ATen: ``Tensor.max`` over the pieces of each group (the first maximum wins ties, a
NaN wins — the first NaN — as ATen's max reductions do), and a scatter for the gradient."""

from __future__ import annotations

import torch


def maxout_forward(input: torch.Tensor, pieces: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, piece indices)``: output channel ``c`` along ``dim`` is the max of input
    channels ``c·pieces + k``."""
    return input.unflatten(dim, (-1, pieces)).max(dim + 1)


def maxout_backward(
    grad_output: torch.Tensor, indices: torch.Tensor, input_shape, pieces: int, dim: int
) -> torch.Tensor:
    """Gradient of the input: each output's gradient at its winning piece, zero elsewhere."""
    groups = list(input_shape)
    groups[dim : dim + 1] = [groups[dim] // pieces, pieces]
    grad = grad_output.new_zeros(groups)
    grad.scatter_(dim + 1, indices.unsqueeze(dim + 1), grad_output.unsqueeze(dim + 1))
    return grad.flatten(dim, dim + 1)
