"""Explicit padding for the ATen fallback, and its adjoint for gradients.

The Triton kernels apply padding modes in their index arithmetic; the fallback pads with
``F.pad`` like torch does. Either way the gradient of a padded input is folded back onto the
input by :func:`fold_padding_grad` — the same code for every rank and both backends.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

_HALF_DTYPES = (torch.float16, torch.bfloat16)

_F_PAD_MODES = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "circular": "circular",
}


def f_pad_order(before: Sequence[int], end: Sequence[int]) -> list[int]:
    """``before``/``end`` per spatial dim as ``F.pad`` takes them: the last dim first, each as
    ``(before, end)``."""
    return [p for b, e in zip(reversed(before), reversed(end)) for p in (b, e)]


def pad_input(
    x: torch.Tensor, before: Sequence[int], end: Sequence[int], padding_mode: str
) -> torch.Tensor:
    """``x`` padded by ``before``/``end`` elements on each spatial dim."""
    pads = f_pad_order(before, end)
    if not any(pads):
        return x
    return F.pad(x, pads, mode=_F_PAD_MODES[padding_mode])


def fold_padding_grad(
    grad_padded: torch.Tensor, before: Sequence[int], end: Sequence[int], padding_mode: str
) -> torch.Tensor:
    """Adjoint of :func:`pad_input`: sum each padded position's gradient into its source.

    A negative ``end`` (zeros only) is a crop — a transposed convolution's output extended past
    its full size is the "input" its gradient folds onto —, whose adjoint extends the gradient
    with zeros.

    Reflected and replicated gradients of half-precision tensors fold in float32 and round once,
    as torch's ``nn.Conv*d`` folds them under autocast (whose float32 list holds torch's
    reflection and replication padding); circular padding is built of slices, folded in the
    tensor's dtype by torch too."""
    wide = padding_mode in ("reflect", "replicate") and grad_padded.dtype in _HALF_DTYPES
    grad = grad_padded
    for i, (b, e) in enumerate(zip(before, end)):
        if b == 0 and e == 0:
            continue
        dim = 2 + i
        if e < 0:
            shape = list(grad.shape)
            shape[dim] = -e
            grad, e = torch.cat([grad, grad.new_zeros(shape)], dim), 0
        size = grad.shape[dim] - b - e
        center = grad.narrow(dim, b, size)
        if padding_mode == "zeros":
            grad = center
            continue
        center = center.to(torch.float32 if wide else center.dtype, copy=True)
        left, right = grad.narrow(dim, 0, b), grad.narrow(dim, b + size, e)
        if padding_mode == "reflect":  # padded j ← source b - j (left), size - 2 - j (right)
            center.narrow(dim, 1, b).add_(left.flip(dim))
            center.narrow(dim, size - 1 - e, e).add_(right.flip(dim))
        elif padding_mode == "replicate":  # every padded element copies the edge
            center.narrow(dim, 0, 1).add_(left.sum(dim, keepdim=True, dtype=center.dtype))
            center.narrow(dim, size - 1, 1).add_(right.sum(dim, keepdim=True, dtype=center.dtype))
        else:  # circular: left padding wraps from the end, right padding from the start
            center.narrow(dim, size - b, b).add_(left)
            center.narrow(dim, 0, e).add_(right)
        grad = center
    return grad.to(grad_padded.dtype)
