"""Autocast on the CPU: every layer, padding mode and input dtype gives the dtype torch's layer
gives under the same autocast, and values as close to float64 as torch's, forward and backward.

The autocast rules are device-generic (``torchconv_ext.functional._autocast``); CUDA autocast is
checked by ``tests/gpu/test_autocast.py``. On the Triton backend the interpreter computes
float16 (so CPU float16 autocast runs the kernels) but not bfloat16 convolutions, which it
refuses (``tests/test_interpreter_dtypes.py``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchconv_ext
from tests.references.autocast import CONVS, IDS, LAYERS, check_like_torch
from tests.references.conv import SmallCNN


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("case", range(len(LAYERS)), ids=IDS)
def test_bfloat16_autocast_like_torch_fallback(case, input_dtype):
    """float32 and bfloat16 inputs to a float32 layer; a float64 layer autocast leaves alone."""
    check_like_torch(case, "torch", torch.bfloat16, input_dtype)


@pytest.mark.parametrize("case", range(len(LAYERS)), ids=IDS)
def test_float16_autocast_like_torch_fallback(case):
    check_like_torch(case, "torch", torch.float16, torch.float32)


@pytest.mark.interpret
@pytest.mark.parametrize("case", range(len(LAYERS)), ids=IDS)
def test_float16_autocast_like_torch_triton(case):
    """The interpreter computes float16: CPU float16 autocast runs every kernel."""
    check_like_torch(case, "triton", torch.float16, torch.float32)


@pytest.mark.interpret
@pytest.mark.parametrize("case", [i for i, (m, _) in enumerate(LAYERS) if not isinstance(m, CONVS)])
def test_bfloat16_autocast_like_torch_triton(case):
    """Pooling and upsampling in bfloat16 (convolutions are refused on the interpreter)."""
    check_like_torch(case, "triton", torch.bfloat16, torch.bfloat16)


def test_compiled_model_under_autocast_like_torch():
    """Compiled code applies the same casts (inside an autocast region it traces)."""
    torch.manual_seed(0)
    model = SmallCNN()
    ours = torch.compile(torchconv_ext.convert_model(model), backend="eager", fullgraph=True)
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_torch = ours(x), model(x)
    assert y.dtype == y_torch.dtype == torch.bfloat16
    torch.testing.assert_close(y, y_torch)


def test_float64_operands_mixed_with_autocast_raise_like_torch():
    """Autocast casts float32 weights but never a float64 input: torch refuses the mix."""
    theirs = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    ours = torchconv_ext.convert_model(theirs)
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError) as want:
            theirs(x)
        with pytest.raises(type(want.value), match="type"):
            ours(x)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_padding_modes_input_gradient_is_torchs_bit_for_bit_on_the_fallback(mode, dtype):
    """torch's layer pads in float32 under autocast (reflection and replication padding are on
    its float32 list), so their gradient folds in float32 and rounds once; ours alike."""
    torch.manual_seed(0)
    layer = nn.Conv2d(4, 4, 3, padding=2, dilation=2, padding_mode=mode).to(dtype)
    ours = torchconv_ext.convert_model(layer)
    x = torch.randn(2, 4, 7, 6, dtype=dtype)
    grads = []
    for module in (layer, ours):
        xx = x.clone().requires_grad_()
        with torchconv_ext.use_backend("torch"), torch.autocast("cpu", dtype=dtype):
            y = module(xx)
        (grad,) = torch.autograd.grad(y, xx, torch.ones_like(y).mul_(1.5) + y.detach())
        grads.append(grad)
    assert torch.equal(grads[0], grads[1])
