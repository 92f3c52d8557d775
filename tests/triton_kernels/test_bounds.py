"""The interpreter's bounds check (``triton_kernels._bounds``, on in the test suite): a load or
store that reaches outside every tensor of its launch raises, naming the kernel; masked-off
elements, views inside a larger storage and several tensors at once are fine."""

from __future__ import annotations

import os

import pytest
import torch
import triton
import triton.language as tl

from triton_kernels import INTERPRET

pytestmark = pytest.mark.interpret


@pytest.fixture(autouse=True)
def _checked():
    if not INTERPRET or os.environ.get("TORCHCONV_EXT_BOUNDS_CHECK") != "1":
        pytest.skip("only under TRITON_INTERPRET=1 with TORCHCONV_EXT_BOUNDS_CHECK=1")


@triton.jit
def _copy_kernel(x_ptr, y_ptr, N, LIMIT, BLOCK: tl.constexpr):
    """y[i] = x[i] for i < N, reading x under the mask i < LIMIT (LIMIT ≥ N reads past it)."""
    i = tl.arange(0, BLOCK)
    v = tl.load(x_ptr + i, mask=i < LIMIT, other=0.0)
    tl.store(y_ptr + i, v, mask=i < N)


@triton.jit
def _store_kernel(y_ptr, N, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    tl.store(y_ptr + i, tl.full([BLOCK], 1.0, tl.float32), mask=i < N)


def test_accesses_inside_the_tensors_pass():
    """Masked-off lanes are not accesses; a view's span is its own elements only."""
    storage = torch.arange(20.0)
    x, y = storage[4:12], torch.empty(8)
    _copy_kernel[(1,)](x, y, 8, 8, BLOCK=16)
    assert torch.equal(y, storage[4:12])


def test_a_load_past_a_tensor_raises_naming_the_kernel():
    x, y = torch.arange(20.0)[4:12], torch.empty(8)
    with pytest.raises(Exception, match=r"_copy_kernel: a load of 2 element\(s\) outside") as e:
        _copy_kernel[(1,)](x, y, 8, 10, BLOCK=16)
    assert "at byte 32 of the 32 bytes" in str(e.value)


def test_a_store_past_a_tensor_raises():
    y = torch.zeros(16)
    with pytest.raises(Exception, match="_store_kernel: a store of 3 element"):
        _store_kernel[(1,)](y[:5], 8, BLOCK=8)
    assert y[5:].eq(0).all()  # (refused before it was written)


@triton.jit
def _interleave_kernel(a_ptr, b_ptr, y_ptr, BLOCK: tl.constexpr):
    """One load from two tensors: y[i] = a[i] for even i, b[i] for odd i."""
    i = tl.arange(0, BLOCK)
    tl.store(y_ptr + i, tl.load(tl.where(i % 2 == 0, a_ptr + i, b_ptr + i)))


def test_one_access_may_span_several_tensors():
    a, b, y = torch.zeros(8), torch.ones(8), torch.empty(8)
    _interleave_kernel[(1,)](a, b, y, BLOCK=8)
    assert y.tolist() == [0.0, 1.0] * 4
    with pytest.raises(Exception, match="_interleave_kernel: a load of 2 element"):
        _interleave_kernel[(1,)](a[:4], b, y, BLOCK=8)
