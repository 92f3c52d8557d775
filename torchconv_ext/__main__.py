"""``python -m torchconv_ext``: a small demo (the default), or ``check``.

* ``demo``: convert a small CNN, run it through our kernels, compare with torch. On a machine
  without CUDA, run it as ``TRITON_INTERPRET=1 python -m torchconv_ext`` to execute the Triton
  kernels on the CPU (slowly, under Triton's interpreter); otherwise the CPU fallback runs.
* ``check``: check every kernel on this device against torch (``python -m torchconv_ext check
  --help``).
"""

from __future__ import annotations

import argparse
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


def demo() -> int:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m torchconv_ext",
        description="torchconv_ext: Triton kernels for CNN layers as PyTorch ops.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{demo,check}")
    commands.add_parser(
        "demo",
        help="(default) convert a small CNN, run it through our kernels and compare with torch",
        description="Convert a small CNN, run it through our kernels and compare with torch. "
        "Without CUDA, set TRITON_INTERPRET=1 to run the Triton kernels on the CPU (else the "
        "CPU fallback runs).",
    )
    # The check parses its own options (and answers its own --help).
    commands.add_parser(
        "check", help="check every kernel on this device against torch", add_help=False
    )
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command == "check":
        from .check.cli import main as check

        return check(rest, reexec=True)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return demo()


if __name__ == "__main__":
    sys.exit(main())
