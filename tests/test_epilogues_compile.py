"""Every epilogue activation compiles for sm_90 (no GPU: the stand-in driver of
``benchmarks.standin``), in a forward kernel and in the input-gradient kernels that compute
transposed convolutions, and so does the epilogue that stores the pre-activation too, and the
kernel of the gradient through each activation. Triton's interpreter runs any Python; only compiling shows what a GPU
would refuse (a GELU constant read as a plain global failed so)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from torchconv_ext._activation import ACTIVATION_ARGS

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = """
import torch
from benchmarks.standin import require_compiled_kernels, stand_in_gpu
require_compiled_kernels()
import torchconv_ext
from torchconv_ext import functional as TF

def activations():
    for name in {names!r}:
        if name == "prelu":
            yield name, {{"weight": torch.full((16,), 0.25, dtype=torch.bfloat16)}}
        elif name == "gelu":
            yield name, {{"approximate": "none"}}
            yield name, {{"approximate": "tanh"}}
        else:
            yield name, None

x = torch.randn(2, 16, 6, 6, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
depthwise = torch.randn(16, 1, 3, 3, dtype=torch.bfloat16)
with stand_in_gpu("sm_90", mode="launch"), torchconv_ext.use_backend("triton"):
    for name, args in activations():  # every activation, in the depthwise forward
        TF.conv2d(x, depthwise, padding=1, groups=16, activation=name, activation_args=args)
        print("forward", name, args and args.get("approximate", ""))
    weight = torch.randn(16, 16, 3, 3, dtype=torch.bfloat16)
    for name, args in activations():  # transposed: the implicit GEMM's input gradient
        TF.conv_transpose2d(x, weight, stride=2, activation=name, activation_args=args)
        print("transposed", name, args and args.get("approximate", ""))
    # In training, SiLU's kernels store the pre-activation too (the epilogue's second store).
    trained = x.detach().requires_grad_()
    TF.conv2d(trained, depthwise, padding=1, groups=16, activation="silu")
    print("training depthwise")
    TF.conv2d(trained, weight, padding=1, activation="silu")
    print("training gemm")
    TF.conv_transpose2d(trained, weight, stride=2, activation="silu")
    print("training transposed")
    # The gradient through each activation, off its output or off the pre-activation.
    import triton_kernels as K
    from triton_kernels.activation_grad import FROM_INPUT, FROM_OUTPUT
    grad, nchw = x.detach(), x.detach().contiguous()
    for launcher, kinds in ((K.activation_grad_from_output, FROM_OUTPUT),
                            (K.activation_grad_from_input, FROM_INPUT)):
        for kind in kinds:
            launcher(nchw, grad, torch.empty_like(grad), activation=kind, alpha=0.5)
            print("gradient", kind)
"""


def test_every_epilogue_activation_compiles_for_sm90(tmp_path):
    script = tmp_path / "compile_epilogues.py"
    script.write_text(_SCRIPT.format(names=list(ACTIVATION_ARGS)))
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRITON_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("TRITON_INTERPRET", None)
    out = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    compiled = out.stdout.split("\n")
    count = len(ACTIVATION_ARGS) + 1  # (GELU twice: exact and tanh)
    assert sum(line.startswith("forward") for line in compiled) == count
    assert sum(line.startswith("transposed") for line in compiled) == count
    assert sum(line.startswith("training") for line in compiled) == 3
    assert sum(line.startswith("gradient") for line in compiled) == 12
