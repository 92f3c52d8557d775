"""Locally connected / tiled convolution launchers (interpreter on CPU): the int64-offset path
and a launch into strided outputs, against the float64 definition."""

from __future__ import annotations

import pytest
import torch

import triton_kernels.conv_local as kernels
from tests.references.local import local_inputs, reference_local

pytestmark = pytest.mark.interpret


def _args(padding=(1,)):
    return dict(stride=(2,), padding=padding, dilation=(1,), groups=2, allow_tf32=False)


def test_int64_offsets_and_strided_outputs(monkeypatch, triton_device):
    """The int64 path (chosen for tensors past 2**31 elements) gives the definition's results,
    written through the strides of non-contiguous outputs."""
    monkeypatch.setattr(kernels, "needs_int64", lambda *tensors: True)
    x, w, b = (t.detach().to(triton_device) for t in local_inputs(1, 2, 4, 4, (7,), (3,), (2,), 2))
    ref = reference_local(x, w, b, 2, 1, 1, 2, "reflect")  # (2, 4, 4)
    y = torch.full((2, 4, 8), float("nan"), dtype=x.dtype, device=x.device)[..., ::2]
    kernels.local_conv_forward(x, w, b, y, pad_mode="reflect", **_args())
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=1e-10)

    x.requires_grad_(), w.requires_grad_()
    gy = torch.randn_like(ref)
    ref_gx, ref_gw = torch.autograd.grad(reference_local(x, w, None, 2, 1, 1, 2), [x, w], gy)
    gx = torch.full((2, 7, 4), float("nan"), dtype=x.dtype, device=x.device).transpose(1, 2)
    kernels.local_conv_backward_input(gy, w.detach(), gx, **_args())
    torch.testing.assert_close(gx, ref_gx, atol=1e-12, rtol=1e-10)
    gw = torch.full_like(w, float("nan")).detach()
    kernels.local_conv_backward_weight(x.detach(), gy, gw, pad_mode="zeros", **_args())
    torch.testing.assert_close(gw, ref_gw, atol=1e-12, rtol=1e-10)
