"""Pooling Triton launches: all levels of a spatial pyramid in one kernel launch, forward and
backward."""

from __future__ import annotations

import pytest
import torch

import torchconv_ext
from torchconv_ext import functional as TF

pytestmark = [pytest.mark.interpret, pytest.mark.usefixtures("single_thread")]


def test_pyramid_is_one_launch(monkeypatch):
    """All levels in one kernel launch, forward and backward."""
    import triton_kernels.pool as kernels

    launches = []
    for name in ("_pool_fwd_kernel", "_pool_bwd_input_kernel", "_global_pool_fwd_kernel"):
        kernel = getattr(kernels, name)

        class Counting:
            def __init__(self, kernel=kernel, name=name):
                self.kernel, self.name = kernel, name

            def __getitem__(self, grid):
                launches.append(self.name)
                return self.kernel[grid]

        monkeypatch.setattr(kernels, name, Counting())
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    with torchconv_ext.use_backend("triton"):
        y = TF.spatial_pyramid_pool(x, (1, 2, 4), "max")
        assert launches == ["_pool_fwd_kernel"]
        y.sum().backward()
    assert launches == ["_pool_fwd_kernel", "_pool_bwd_input_kernel"]
