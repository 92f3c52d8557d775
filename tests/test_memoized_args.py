"""Argument checks remembered per plain argument tuple (``torchconv_ext._args.memoized``): a
remembered result is only ever returned for arguments the check would treat alike, and a call
that raises raises again."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchconv_ext._args import memoized
from torchconv_ext._conv_args import conv_geometry
from torchconv_ext._pool_args import adaptive_output_size, pool_geometry


def test_remembers_per_plain_arguments_and_tells_them_apart():
    calls = []

    @memoized
    def check(t, value):
        calls.append(value)
        return (tuple(t.shape), t.dtype, value)

    x = torch.zeros(2, 3)
    assert check(x, 1) == ((2, 3), torch.float32, 1)
    assert check(torch.ones(2, 3), 1) == ((2, 3), torch.float32, 1)  # same shape/dtype/device
    assert len(calls) == 1
    # what a check can read differs: it runs again
    for t, v in [(x, True), (x, 1.0), (x, (1,)), (x, [1]), (x.double(), 1), (x.t(), 1)]:
        check(t, v)
    assert len(calls) == 7
    # not plain (NumPy ints, nested objects, tensor subclasses): never remembered
    check(x, np.int64(1))
    check(x, np.int64(1))
    check(torch.nn.Parameter(x), 1)  # a Parameter is a plain tensor type
    assert len(calls) == 10


def test_errors_are_raised_every_time():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    assert conv_geometry("conv2d", x, w, None, 1, 1, 1, 1, "zeros").stride == (1, 1)
    for _ in range(2):
        with pytest.raises(TypeError):
            conv_geometry("conv2d", x, w, None, 1, 1, 1, True, "zeros")  # bool groups
        with pytest.raises(RuntimeError, match="stride"):
            conv_geometry("conv2d", x, w, None, 0, 1, 1, 1, "zeros")
        with pytest.raises(RuntimeError, match="Kernel size"):
            conv_geometry("conv2d", x[..., :2, :2], w, None, 1, 0, 1, 1, "zeros")
        with pytest.raises(RuntimeError, match="type"):
            conv_geometry("conv2d", x, w.double(), None, 1, 1, 1, 1, "zeros")


def test_results_follow_the_shape():
    x = torch.randn(1, 2, 6, 6)
    a = pool_geometry("max_pool2d", x, 2, None, "same", 1, False)
    b = pool_geometry("max_pool2d", x[..., :5, :5], 2, None, "same", 1, False)
    assert a.padding_end != b.padding_end  # 'same' padding depends on the size
    sizes = adaptive_output_size("adaptive_avg_pool2d", x, (None, 3))
    sizes.append(0)  # the caller's list is its own
    assert adaptive_output_size("adaptive_avg_pool2d", x, (None, 3)) == [6, 3]
    assert adaptive_output_size("adaptive_avg_pool2d", x, 2) == [2, 2]
    assert adaptive_output_size("adaptive_avg_pool2d", x, 2) == [2, 2]
