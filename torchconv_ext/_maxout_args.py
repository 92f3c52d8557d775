"""Argument checking for maxout, shared by the functional op and the modules."""

from __future__ import annotations

import torch

from ._args import check_tensor, is_int


def check_pieces(name: str, pieces: object, error: type[Exception]) -> int:
    """``pieces`` as a positive int; ``TypeError`` for a non-int, ``error`` for a bad value."""
    if not is_int(pieces):
        raise TypeError(f"{name}: pieces must be an int, but got {type(pieces).__name__}")
    if pieces < 1:
        raise error(f"{name}: pieces must be positive, but got pieces={pieces}")
    return int(pieces)


def maxout_dim(name: str, input: torch.Tensor, pieces: object, dim: int) -> tuple[int, int]:
    """Validate a maxout of ``input`` over ``dim``; return ``(pieces, dim)``, ``dim``
    non-negative. Raises torch's exception types (``IndexError`` for a dim out of range)."""
    check_tensor(name, "input", input)
    pieces = check_pieces(name, pieces, RuntimeError)
    if not input.is_floating_point():
        raise RuntimeError(f"{name}: expected a floating-point input, but got {input.dtype}")
    if input.dim() == 0:
        raise RuntimeError(f"{name}: expected an input with at least one dim, but got a scalar")
    if not is_int(dim):
        raise TypeError(f"{name}: dim must be an int, but got {type(dim).__name__}")
    dim = int(dim)
    if not -input.dim() <= dim < input.dim():
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-input.dim()}, "
            f"{input.dim() - 1}], but got {dim})"
        )
    dim = dim % input.dim()
    if input.shape[dim] % pieces != 0:
        raise RuntimeError(
            f"{name}: the size of dim {dim} ({input.shape[dim]}) of input {list(input.shape)} "
            f"must be divisible by pieces={pieces}"
        )
    return pieces, dim
