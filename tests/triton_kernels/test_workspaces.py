"""Workspaces that one kernel writes and another reads are NaN-filled when made under
``TORCHCONV_EXT_POISON=1`` (the suite sets it), as the library's outputs are: a kernel that
reads what no kernel wrote reads NaN, not memory that happened to hold zeros."""

from __future__ import annotations

import pytest
import torch

from triton_kernels import _common
from triton_kernels._gemm_common import bias_target, split_workspace
from triton_kernels.conv_depthwise import _grad_weight_workspace


@pytest.fixture(autouse=True)
def _poisoning():
    if not _common.POISON:
        pytest.skip("only under TORCHCONV_EXT_POISON=1")


def test_split_reductions_start_poisoned():
    grad_w = torch.zeros(4, 3, 3, 3)
    assert split_workspace(grad_w, 2).isnan().all()
    assert bias_target(torch.zeros(4), 2).isnan().all()
    workspace, _ = _grad_weight_workspace(torch.zeros(4, 1, 1, 3, 3), 2)
    assert workspace.isnan().all()


def test_a_single_split_writes_in_place():
    """One split sums straight into the gradient: nothing is poisoned there."""
    grad_bias = torch.zeros(4)
    assert bias_target(grad_bias, 1).eq(0).all()
    gw = torch.zeros(4, 1, 1, 3, 3)
    workspace, _ = _grad_weight_workspace(gw, 1)
    assert workspace is gw and gw.eq(0).all()
