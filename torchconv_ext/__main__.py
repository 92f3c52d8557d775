"""``python -m torchconv_ext``: convert a small CNN, run it through our kernels, compare with torch.

On a machine without CUDA, run it as ``TRITON_INTERPRET=1 python -m torchconv_ext`` to execute the
Triton kernels on the CPU (slowly, under Triton's interpreter); otherwise the CPU fallback runs.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

import torchconv_ext


def small_cnn() -> nn.Module:
    """A little of everything our convolution supports."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),  # RGB stem
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, padding_mode="reflect"),  # depthwise
        nn.Conv2d(16, 24, 1),  # pointwise
        nn.ReLU(),
        nn.Conv2d(24, 24, 3, stride=2, padding=2, dilation=2, groups=4),  # grouped, dilated
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(24, 10),
    )


def main() -> int:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    runs_triton = device == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    backend = "triton" if runs_triton else "torch"
    torch.manual_seed(0)
    reference = small_cnn().to(device, torch.float64)
    ours = torchconv_ext.convert_model(reference)
    x = torch.randn(4, 3, 16, 16, device=device, dtype=torch.float64)

    def run(model: nn.Module) -> list[torch.Tensor]:
        model.zero_grad()
        out = model(x)
        out.square().mean().backward()
        return [out.detach()] + [p.grad for p in model.parameters()]

    expected = run(reference)
    with torchconv_ext.use_backend(backend):
        got = run(ours)
    worst = max((a - b).abs().max().item() for a, b in zip(got, expected))
    swapped = sum(type(m).__module__.startswith("torchconv_ext") for m in ours.modules())
    print(
        f"device={device} backend={backend} ({'Triton kernels' if runs_triton else 'ATen fallback'})"
    )
    print(f"converted {swapped} layers; outputs and {len(got) - 1} parameter gradients compared")
    print(f"largest difference vs torch (float64): {worst:.3g}")
    ok = worst < 1e-9
    print("outputs and gradients match torch" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
