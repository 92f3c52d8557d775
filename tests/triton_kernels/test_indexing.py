"""Division by invariant integers (``_common.fast_divisor``, ``_indexing.quotient``,
``unflatten_fast`` and ``unflatten_rows``): exact against ``//`` and ``%`` over the whole int32 range of dividends; and
the one-comparison range test of the gathers (``_indexing.in_range``)."""

from __future__ import annotations

import random

import pytest
import torch
import triton
import triton.language as tl

from triton_kernels._common import fast_divisor
from triton_kernels._indexing import in_range, quotient, unflatten, unflatten_fast, unflatten_rows

pytestmark = pytest.mark.interpret

BLOCK = 1024
#: Powers of two, their neighbours, the sizes of real layers and the extremes.
DIVISORS = [1, 2, 3, 4, 5, 7, 14, 28, 56, 112, 255, 256, 257, 1000, 65535, 2**16 + 1, 2**30,
            2**31 - 1]  # fmt: skip


@triton.jit
def _quotient_kernel(x_ptr, q_ptr, N, DIVISOR):
    i = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + i, mask=i < N, other=0)
    tl.store(q_ptr + i, quotient(x, DIVISOR), mask=i < N)


@triton.jit
def _unflatten_kernel(
    p_ptr, out_ptr, N, S0, S1, S2, Q0, Q1, Q2, FAST: tl.constexpr, USE_INT64: tl.constexpr
):
    i = tl.arange(0, BLOCK)
    p = tl.load(p_ptr + i, mask=i < N, other=0)
    if FAST:
        n, i0, i1, i2 = unflatten_fast(p, S0, S1, S2, Q0, Q1, Q2, USE_INT64)
    else:
        n, i0, i1, i2 = unflatten(p, S0, S1, S2)
    tl.store(out_ptr + i * 4, n, mask=i < N)
    tl.store(out_ptr + i * 4 + 1, i0, mask=i < N)
    tl.store(out_ptr + i * 4 + 2, i1, mask=i < N)
    tl.store(out_ptr + i * 4 + 3, i2, mask=i < N)


def _dividends(d: int, seed: int) -> torch.Tensor:
    rng = random.Random(seed)
    top = 2**31 - 1
    edges = [0, 1, d - 1, d, d + 1, 2 * d - 1, top, top - 1, top - top % d, top - top % d - 1]
    xs = [x for x in edges if 0 <= x <= top]
    xs += [rng.randrange(top + 1) for _ in range(BLOCK - len(xs))]
    return torch.tensor(xs, dtype=torch.int32)


@pytest.mark.parametrize("d", DIVISORS)
def test_quotient_is_exact(triton_device, d):
    x = _dividends(d, d).to(triton_device)
    q = torch.full_like(x, -1)
    _quotient_kernel[(1,)](x, q, x.numel(), fast_divisor(d))
    torch.testing.assert_close(q.cpu(), x.cpu() // d, rtol=0, atol=0)


@pytest.mark.parametrize("fast,use_int64", [(True, False), (True, True), (False, False)],
                         ids=["fast", "fast-int64", "plain"])  # fmt: skip
@pytest.mark.parametrize("sizes", [(1, 56, 56), (3, 7, 7), (2, 1, 14), (5, 3, 1000)])
def test_unflatten_fast_matches_unflatten(triton_device, sizes, fast, use_int64):
    total = 3 * sizes[0] * sizes[1] * sizes[2]
    p = torch.randint(0, total, (BLOCK,), generator=torch.Generator().manual_seed(0))
    p = p.to(torch.int32).to(triton_device)
    out = torch.full((BLOCK, 4), -1, dtype=torch.int32, device=triton_device)
    _unflatten_kernel[(1,)](
        p, out, BLOCK, *sizes, *map(fast_divisor, sizes), FAST=fast, USE_INT64=use_int64
    )
    s0, s1, s2 = sizes
    pc = p.cpu()
    want = torch.stack([pc // (s0 * s1 * s2), pc // (s1 * s2) % s0, pc // s2 % s1, pc % s2], 1)
    torch.testing.assert_close(out.cpu(), want, rtol=0, atol=0)


@triton.jit
def _unflatten_rows_kernel(r_ptr, out_ptr, N, S0, S1, Q0, Q1, USE_INT64: tl.constexpr):
    i = tl.arange(0, BLOCK)
    r = tl.load(r_ptr + i, mask=i < N, other=0)
    n, i0, i1 = unflatten_rows(r, S0, S1, Q0, Q1, USE_INT64)
    tl.store(out_ptr + i * 3, n, mask=i < N)
    tl.store(out_ptr + i * 3 + 1, i0, mask=i < N)
    tl.store(out_ptr + i * 3 + 2, i1, mask=i < N)


@pytest.mark.parametrize("use_int64", [False, True], ids=["fast", "int64"])
@pytest.mark.parametrize("sizes", [(56, 56), (7, 7), (1, 14), (3, 1000)])
def test_unflatten_rows_matches_division(triton_device, sizes, use_int64):
    """The row-segment kernels' split of a row index over ``(n, d, h)``: exact, with room for
    a step's rows past the last (the dividends reach past every valid row)."""
    s0, s1 = sizes
    r = torch.randint(0, 5 * s0 * s1 + 64, (BLOCK,), generator=torch.Generator().manual_seed(0))
    r = r.to(torch.int32).to(triton_device)
    out = torch.full((BLOCK, 3), -1, dtype=torch.int32, device=triton_device)
    _unflatten_rows_kernel[(1,)](r, out, BLOCK, s0, s1, *map(fast_divisor, sizes), use_int64)
    rc = r.cpu()
    want = torch.stack([rc // (s0 * s1), rc // s1 % s0, rc % s1], 1)
    torch.testing.assert_close(out.cpu(), want, rtol=0, atol=0)


@pytest.mark.parametrize("d", [0, -3, 2**31])
def test_fast_divisor_rejects_what_it_cannot_divide_by(d):
    with pytest.raises(ValueError, match="divisor"):
        fast_divisor(d)


def test_fast_divisor_is_always_an_int64_argument():
    """Every packed divisor is at least 2**32, so Triton types it int64 whatever ``d`` is (no
    i32/u32 signature change between layers)."""
    assert all(fast_divisor(d) >= 2**32 for d in DIVISORS)


@triton.jit
def _in_range_kernel(i_ptr, out_ptr, N, SIZE, WIDE: tl.constexpr):
    k = tl.arange(0, BLOCK)
    i = tl.load(i_ptr + k, mask=k < N, other=0)
    if WIDE:
        i = i.to(tl.int64) * 3  # 64-bit coordinates, past the int32 range
    tl.store(out_ptr + k, in_range(i, SIZE).to(tl.int8), mask=k < N)


@pytest.mark.parametrize("wide", [False, True], ids=["int32", "int64"])
@pytest.mark.parametrize("size", [0, 1, 2, 7, 224, 2**31 - 1])
def test_in_range_is_zero_to_size(triton_device, size, wide):
    """``0 <= i < size`` for negative coordinates (padding before), ones at and past the size
    (padding after) and the extremes; size 1 reaches the kernel as a constant (Triton's
    specialisation), the others as run-time integers."""
    edges = [0, 1, -1, -2, size - 1, size, size + 1, 2**31 - 1, -(2**31)]
    rng = random.Random(size)
    xs = [x for x in edges if -(2**31) <= x < 2**31]
    xs += [rng.randrange(-(2**31), 2**31) for _ in range(BLOCK - len(xs))]
    i = torch.tensor(xs, dtype=torch.int32)
    out = torch.full((BLOCK,), -1, dtype=torch.int8, device=triton_device)
    _in_range_kernel[(1,)](i.to(triton_device), out, BLOCK, size, WIDE=wide)
    coords = i.to(torch.int64) * (3 if wide else 1)
    expected = (coords >= 0) & (coords < size)
    assert torch.equal(out.cpu().bool(), expected)
