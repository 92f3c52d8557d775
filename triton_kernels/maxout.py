"""Maxout kernels: the max over groups of ``pieces`` channels, and its gather backward.

Tensors arrive as 3-d views ``(A, C, B)`` — the dims before the maxout dim, the maxout dim, the
dims after it — read through their strides. Output channel ``c`` is the max of input channels
``c·pieces + k``, ``k < pieces``; the index saved is ``k``. The comparison keeps the first
maximum on ties and lets a NaN win (the first NaN), as ATen's max reductions and max pooling do;
no arithmetic touches the values, so results are exact in every dtype.

A program owns a 2-d tile of ``BLOCK_R`` rows × ``BLOCK_I`` inner positions of the tensor it
writes, inner along whichever of ``c`` and ``b`` is faster in memory (``CHANNELS_INNER``: ``c``,
e.g. channels-last), so loads and stores coalesce. The backward is a gather — each input element
takes its output's gradient if it won, else zero — so every element is written once, with no
atomics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (
    COMPILE_OPTIONS,
    INTERPRET,
    acc_dtype,
    cdiv,
    check_device,
    needs_int64,
    next_power_of_2,
)
from ._indexing import wide

# Fixed tiles (no autotuning): a memory-bound pass gains little from tuning.
_TILE, _MAX_INNER = (4096, 64) if INTERPRET else (2048, 128)


@triton.jit
def _tile_coords(C, B, BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr,
                 CHANNELS_INNER: tl.constexpr, USE_INT64: tl.constexpr):  # fmt: skip
    """``(a, c, b)`` of this program's tile over an ``(A, C, B)`` tensor, each broadcasting to
    ``[BLOCK_R, BLOCK_I]``. The grid is flat, row tiles × inner tiles (no 65535-program limit
    of a second axis: ``B`` alone can pass 65535 tiles)."""
    inner_tiles = tl.cdiv(C if CHANNELS_INNER else B, BLOCK_I)
    pid = tl.program_id(0)
    r = wide(pid // inner_tiles, USE_INT64) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
    i = wide(pid % inner_tiles, USE_INT64) * BLOCK_I + tl.arange(0, BLOCK_I)[None, :]
    if CHANNELS_INNER:
        a, b, c = r // B, r % B, i
    else:
        a, c, b = r // C, r % C, i
    return a, c, b


@triton.jit
def running_max(best, best_k, v, k):
    """One step of maxout's comparison: ``(best, best_k)`` after piece ``k`` with values ``v``.
    ``v`` replaces ``best`` when greater, or when it is the first NaN (a NaN wins; ties keep the
    first piece), so a running max from ``-inf`` and piece 0 gives ATen's max and argmax. Also the
    epilogue of the convolution kernels' fused maxout."""
    take = (v > best) | ((v != v) & (best == best))
    return tl.where(take, v, best), tl.where(take, k, best_k)


@triton.jit
def _maxout_fwd_kernel(
    x_ptr, y_ptr, idx_ptr,
    A, C_OUT, B, PIECES,
    sx_a, sx_c, sx_b, sy_a, sy_c, sy_b, sidx_a, sidx_c, sidx_b,
    CHANNELS_INNER: tl.constexpr, USE_INT64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr,
):  # fmt: skip
    """y[a, c, b] = max_k x[a, c·PIECES + k, b]; idx[a, c, b] = the winning k.

    Values are compared as ``ACC_DTYPE`` (fp32 or fp64): exact for every input dtype, and
    16-bit floats compare correctly under the interpreter too.
    """
    a, c, b = _tile_coords(C_OUT, B, BLOCK_R, BLOCK_I, CHANNELS_INNER, USE_INT64)
    mask = (a < A) & (c < C_OUT) & (b < B)
    x = x_ptr + a * sx_a + (c * PIECES) * sx_c + b * sx_b
    best = tl.load(x, mask=mask, other=0.0).to(ACC_DTYPE)
    best_k = tl.zeros(best.shape, dtype=tl.int64)
    for k in range(1, PIECES):
        v = tl.load(x + k * sx_c, mask=mask, other=0.0).to(ACC_DTYPE)
        best, best_k = running_max(best, best_k, v, k)
    tl.store(y_ptr + a * sy_a + c * sy_c + b * sy_b, best.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(idx_ptr + a * sidx_a + c * sidx_c + b * sidx_b, best_k, mask=mask)


@triton.jit
def _maxout_bwd_kernel(
    go_ptr, idx_ptr, gi_ptr,
    A, C_IN, B, PIECES,
    sgo_a, sgo_c, sgo_b, sidx_a, sidx_c, sidx_b, sgi_a, sgi_c, sgi_b,
    CHANNELS_INNER: tl.constexpr, USE_INT64: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr,
):  # fmt: skip
    """gi[a, c, b] = go[a, c // PIECES, b] where piece c mod PIECES won, else 0."""
    a, c, b = _tile_coords(C_IN, B, BLOCK_R, BLOCK_I, CHANNELS_INNER, USE_INT64)
    mask = (a < A) & (c < C_IN) & (b < B)
    group = c // PIECES
    won = tl.load(idx_ptr + a * sidx_a + group * sidx_c + b * sidx_b, mask=mask, other=-1)
    g = tl.load(
        go_ptr + a * sgo_a + group * sgo_c + b * sgo_b,
        mask=mask & (won == c - group * PIECES),
        other=0.0,
    )
    tl.store(gi_ptr + a * sgi_a + c * sgi_c + b * sgi_b, g, mask=mask)


def maxout_epilogue(
    pieces: int, winner: torch.Tensor | None, out: torch.Tensor, activation: str | None
) -> torch.Tensor:
    """Check the fused maxout arguments of a convolution launcher and return the winner tensor
    the kernel gets (``out`` stands in, never written, when ``pieces`` is 1): ``winner`` is
    int64 with ``out``'s shape and strides exactly when ``pieces`` > 1, and the two epilogues
    do not combine (a maxout over activated pieces is not what a maxout layer computes)."""
    if pieces < 1:
        raise ValueError(f"maxout epilogue: pieces must be positive, got {pieces}")
    if pieces == 1:
        if winner is not None:
            raise ValueError("maxout epilogue: winner is given but pieces is 1")
        return out
    if activation is not None:
        raise ValueError(
            f"maxout epilogue: pieces={pieces} and activation={activation!r} do not combine"
        )
    if winner is None:
        raise ValueError(f"maxout epilogue: pieces={pieces} needs a winner tensor")
    if (winner.dtype, winner.shape, winner.stride()) != (torch.int64, out.shape, out.stride()):
        raise ValueError(
            "maxout epilogue: winner must be int64 with the output's shape and strides, got "
            f"{winner.dtype} {list(winner.shape)} strides {winner.stride()} for an output "
            f"{list(out.shape)} strides {out.stride()}"
        )
    return winner


def _launch(kernel, written: torch.Tensor, *tensors: torch.Tensor, pieces: int, **flags) -> None:
    """Launch over the tiles of ``written`` (A, C, B), the tensor the kernel writes."""
    a, c, b = written.shape
    channels_inner = b == 1 or (c > 1 and written.stride(1) < written.stride(2))
    inner = c if channels_inner else b
    block_i = min(next_power_of_2(inner), _MAX_INNER)
    block_r = max(_TILE // block_i, 1)
    rows = a * (b if channels_inner else c)
    grid = (cdiv(rows, block_r) * cdiv(inner, block_i),)
    kernel[grid](
        *tensors, a, c, b, pieces,
        *(s for t in tensors for s in t.stride()),
        CHANNELS_INNER=channels_inner,
        USE_INT64=needs_int64(*tensors),
        BLOCK_R=block_r,
        BLOCK_I=block_i,
        **flags,
        **COMPILE_OPTIONS,
    )  # fmt: skip


def maxout_forward(
    x: torch.Tensor, out: torch.Tensor, indices: torch.Tensor, *, pieces: int
) -> None:
    """Maxout of ``x`` (A, C·pieces, B) into ``out`` and int64 ``indices`` (A, C, B)."""
    check_device(x, out, indices)
    if out.numel():
        _launch(
            _maxout_fwd_kernel, out, x, out, indices, pieces=pieces, ACC_DTYPE=acc_dtype(x.dtype)
        )


def maxout_backward(
    grad_out: torch.Tensor, indices: torch.Tensor, grad_in: torch.Tensor, *, pieces: int
) -> None:
    """Gradient of maxout into ``grad_in`` (A, C·pieces, B): every element written."""
    check_device(grad_out, indices, grad_in)
    if grad_in.numel():
        _launch(_maxout_bwd_kernel, grad_in, grad_out, indices, grad_in, pieces=pieces)
