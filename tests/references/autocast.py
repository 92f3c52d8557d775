"""Autocast checks the CPU tests and the GPU tests share: every layer we convert, in every
padding mode, against torch's layer under the same autocast.

``check_like_torch`` holds ours to torch's dtype exactly and to torch's accuracy: our error
against float64 (torch's layer on the operands rounded as autocast rounds them) is at most twice
torch's own, plus a few units of rounding.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

import torchconv_ext

# (layer, spatial dims): every torch layer we convert, every padding mode.
LAYERS = [
    *[(nn.Conv2d(3, 4, 3, padding=1, padding_mode=m), 2) for m in ("zeros", "reflect")],
    *[(nn.Conv2d(3, 4, 3, padding=1, padding_mode=m), 2) for m in ("replicate", "circular")],
    (nn.Conv1d(3, 4, 3, padding="same", padding_mode="reflect"), 1),
    (nn.Conv3d(3, 2, 2, padding=1, padding_mode="replicate"), 3),
    (nn.Conv2d(3, 3, 3, groups=3, padding=1, padding_mode="circular"), 2),
    (nn.ConvTranspose1d(3, 2, 3, stride=2), 1),
    (nn.ConvTranspose2d(3, 2, 2, stride=2, padding=1, output_padding=1), 2),
    (nn.MaxPool1d(2, 1), 1),
    (nn.MaxPool2d(2, return_indices=True), 2),
    (nn.MaxPool3d(2), 3),
    (nn.MaxPool3d(2, return_indices=True), 3),
    (nn.AvgPool1d(2, 1, 1), 1),
    (nn.AvgPool2d(2, 1, 1, count_include_pad=False), 2),
    (nn.AvgPool3d(2, 1), 3),
    (nn.AdaptiveMaxPool1d(2), 1),
    (nn.AdaptiveMaxPool2d(2), 2),
    (nn.AdaptiveMaxPool3d(2, return_indices=True), 3),
    (nn.AdaptiveAvgPool1d(3), 1),
    (nn.AdaptiveAvgPool2d(3), 2),
    (nn.AdaptiveAvgPool3d(2), 3),
    (nn.Upsample(scale_factor=2), 1),
    (nn.Upsample(scale_factor=1.5, mode="nearest-exact"), 2),
    (nn.Upsample(size=(3, 4, 5)), 3),
]
IDS = [f"{type(m).__name__}-{i}" for i, (m, _) in enumerate(LAYERS)]
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)


def _first(y):
    return y[0] if isinstance(y, tuple) else y


def _run(layer: nn.Module, x: torch.Tensor, autocast_dtype: torch.dtype | None):
    """Output (the first, for layers returning indices) and input gradient under autocast."""
    x = x.detach().requires_grad_()
    device = x.device.type
    with torch.autocast(device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        y = _first(layer(x))
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y)
    (grad,) = torch.autograd.grad(y, x, g)
    return y, grad


def _close_like_torch(ours, theirs, exact, what):
    assert ours.dtype == theirs.dtype, what
    err_ours = (ours.double() - exact).abs().max().item()
    err_theirs = (theirs.double() - exact).abs().max().item()
    unit = torch.finfo(ours.dtype).eps * exact.abs().max().item()
    assert err_ours <= 2 * err_theirs + 4 * unit, (what, err_ours, err_theirs)


def check_like_torch(
    case: int,
    backend: str,
    autocast_dtype: torch.dtype,
    input_dtype: torch.dtype,
    device: str = "cpu",
    batch: int = 2,
    size: int = 4,
) -> None:
    """Layer ``LAYERS[case]`` (in ``input_dtype`` when that is float64, else float32) under
    autocast: ours as torch's, output and input gradient."""
    layer, nd = LAYERS[case]
    model_dtype = torch.float64 if input_dtype == torch.float64 else torch.float32
    theirs = copy.deepcopy(layer).to(device, model_dtype)
    ours = torchconv_ext.convert_model(theirs)
    torch.manual_seed(case)
    x = torch.randn(batch, 3, *range(size - nd + 1, size + 1), device=device).to(input_dtype)
    with torchconv_ext.use_backend(backend):
        y, grad = _run(ours, x, autocast_dtype)
    y_torch, grad_torch = _run(theirs, x, autocast_dtype)
    # The exact result: torch's layer in float64 on the operands rounded as autocast rounds them.
    exact = copy.deepcopy(theirs).double()
    rounded = y_torch.dtype if isinstance(theirs, CONVS) else x.dtype
    if isinstance(theirs, CONVS):
        for p in exact.parameters():
            p.data = p.data.to(rounded).double()
    y64, grad64 = _run(exact, x.to(rounded).double(), None)
    _close_like_torch(y, y_torch, y64, "output")
    assert grad.dtype == grad_torch.dtype == x.dtype
    _close_like_torch(grad, grad_torch, grad64, "input gradient")
