"""Locally connected and tiled convolution on ATen: one ``einsum`` per kernel tap.

The weight is ``(*tiles, C_out, C_in/groups, *kernel)``; output position ``o`` uses the kernel of
tile ``o mod tiles`` (tiles equal to the output size: locally connected). The output positions of
each dim are laid out as ``(q, t)`` with ``o = q·tiles + t`` — rounded up to whole rows of tiles,
the extra positions reading zeros and then dropped — so a tap is one ``einsum`` against the
weight, never a per-position copy of it. A tap reads a strided view of the padded input (no
unfold), and the input gradient adds into the same views.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from .._args import ceil_div
from .._conv_args import ConvGeometry
from .._padding import fold_padding_grad, pad_input
from . import without_autocast

_Q, _T = "uvw", "xyz"  # einsum letters of (q, t) per spatial dim


def _rows_of_tiles(out: Sequence[int], tiles: Sequence[int]) -> list[int]:
    """Positions per dim, rounded up to whole rows of tiles."""
    return [ceil_div(o, t) * t for o, t in zip(out, tiles)]


def _extended_size(positions, kernel, g: ConvGeometry) -> list[int]:
    """Padded input length each dim needs for ``positions`` outputs."""
    return [
        (k - 1) * d + (p - 1) * s + 1 for p, k, s, d in zip(positions, kernel, g.stride, g.dilation)
    ]


def _tap_views(
    t: torch.Tensor, positions, kernel, g: ConvGeometry
) -> Iterator[tuple[tuple[int, ...], torch.Tensor]]:
    """``(tap, view)`` for every kernel tap: what the tap reads of the padded ``(N, G, C, *S)``
    tensor ``t`` at each of ``positions`` output positions per dim, ``(N, G, C, *positions)``
    (a view)."""
    for tap in itertools.product(*(range(k) for k in kernel)):
        index = [slice(None)] * 3
        for k, p, s, d in zip(tap, positions, g.stride, g.dilation):
            index.append(slice(k * d, k * d + (p - 1) * s + 1, s))
        yield tap, t[tuple(index)]


def _split_tiles(t: torch.Tensor, tiles: Sequence[int], first: int) -> torch.Tensor:
    """Dims ``first, first+1, …`` of ``t`` (positions, whole rows of tiles) as ``(q, t)`` pairs."""
    for i, tile in enumerate(tiles):
        dim = first + 2 * i
        t = t.unflatten(dim, (t.shape[dim] // tile, tile))
    return t


def _merge_tiles(t: torch.Tensor, nd: int, first: int) -> torch.Tensor:
    """Inverse of :func:`_split_tiles`."""
    for i in range(nd):
        t = t.flatten(first + i, first + i + 1)
    return t


def _specs(nd: int) -> tuple[str, str]:
    """einsum specs of per-position ``(q, t)`` dims and of the tile dims."""
    return "".join(q + t for q, t in zip(_Q[:nd], _T[:nd])), _T[:nd]


def _crop(t: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    for i, size in enumerate(sizes):
        t = t.narrow(2 + i, 0, size)
    return t


def _extend(t: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """``t`` zero-padded at the end of each spatial dim to at least ``sizes``."""
    pads = [
        p for s, want in zip(reversed(t.shape[2:]), reversed(sizes)) for p in (0, max(want - s, 0))
    ]
    return F.pad(t, pads) if any(pads) else t


@without_autocast
def local_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    out: Sequence[int],
    g: ConvGeometry,
) -> torch.Tensor:
    """``(N, C_out, *out)``: each output position's kernel applied to its window."""
    nd = input.dim() - 2
    tiles, kernel = weight.shape[:nd], weight.shape[nd + 2 :]
    positions = _rows_of_tiles(out, tiles)
    padded = pad_input(input, g.padding, g.padding_end, g.padding_mode)
    padded = _extend(padded, _extended_size(positions, kernel, g)).unflatten(1, (g.groups, -1))
    w = weight.unflatten(nd, (g.groups, -1))  # (*tiles, G, C_out/G, C_in/G, *kernel)
    qt, t = _specs(nd)
    result = None
    for tap, view in _tap_views(padded, positions, kernel, g):
        part = torch.einsum(
            f"ngi{qt},{t}goi->ngo{qt}", _split_tiles(view, tiles, 3), w[(Ellipsis, *tap)]
        )
        result = part if result is None else result + part
    result = _crop(_merge_tiles(result, nd, 3).flatten(1, 2), out)
    if bias is None:
        return result
    b = bias.movedim(-1, 0)  # (C_out, *tiles): one value per tile, repeated over its rows
    b = b.repeat(1, *(p // tile for p, tile in zip(positions, tiles)))
    return result + _crop(b.unsqueeze(0), out)


@without_autocast
def local_backward_input(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_shape: Sequence[int],
    g: ConvGeometry,
) -> torch.Tensor:
    """Gradient of the input ``(N, C_in, *input_shape[2:])``: each tap's contribution added
    into the window it read, then the padding folded onto its sources."""
    nd = grad_output.dim() - 2
    tiles, kernel = weight.shape[:nd], weight.shape[nd + 2 :]
    positions = _rows_of_tiles(grad_output.shape[2:], tiles)
    gy = _split_tiles(_extend(grad_output, positions).unflatten(1, (g.groups, -1)), tiles, 3)
    w = weight.unflatten(nd, (g.groups, -1))
    padded = [s + b + e for s, b, e in zip(input_shape[2:], g.padding, g.padding_end)]
    extended = [max(p, e) for p, e in zip(padded, _extended_size(positions, kernel, g))]
    grad = grad_output.new_zeros([input_shape[0], g.groups, input_shape[1] // g.groups, *extended])
    qt, t = _specs(nd)
    for tap, view in _tap_views(grad, positions, kernel, g):
        part = torch.einsum(f"ngo{qt},{t}goi->ngi{qt}", gy, w[(Ellipsis, *tap)])
        view.add_(_merge_tiles(part, nd, 3))
    grad = _crop(grad.flatten(1, 2), padded)
    return fold_padding_grad(grad, g.padding, g.padding_end, g.padding_mode)


@without_autocast
def local_backward_weight(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    tiles: Sequence[int],
    kernel: Sequence[int],
    g: ConvGeometry,
) -> torch.Tensor:
    """Gradient of the weight ``(*tiles, C_out, C_in/groups, *kernel)``: per tile and tap, the
    window products summed over the batch and the positions of the tile."""
    nd = input.dim() - 2
    positions = _rows_of_tiles(grad_output.shape[2:], tiles)
    gy = _split_tiles(_extend(grad_output, positions).unflatten(1, (g.groups, -1)), tiles, 3)
    padded = pad_input(input, g.padding, g.padding_end, g.padding_mode)
    padded = _extend(padded, _extended_size(positions, kernel, g)).unflatten(1, (g.groups, -1))
    qt, t = _specs(nd)
    taps = [
        torch.einsum(f"ngo{qt},ngi{qt}->{t}goi", gy, _split_tiles(view, tiles, 3))
        for _, view in _tap_views(padded, positions, kernel, g)
    ]
    grad = torch.stack(taps, dim=-1)  # (*tiles, G, C_out/G, C_in/G, taps)
    return grad.flatten(nd, nd + 1).unflatten(-1, tuple(kernel)).contiguous()
