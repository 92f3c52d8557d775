"""Autocast on the CPU: every layer, padding mode and input dtype gives the dtype torch's layer
gives under the same autocast, and values as close to float64 as torch's, forward and backward.

The autocast rules are device-generic (``torchconv_ext.functional._autocast``); CUDA autocast is
checked by ``tests/gpu/test_autocast.py``. On the Triton backend the interpreter computes
float16 (so CPU float16 autocast runs the kernels) but not bfloat16 convolutions, which it
refuses (``tests/test_interpreter_dtypes.py``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import torchconv_ext
from tests.references.conv import SmallCNN

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
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)
_SIZES = {1: (5,), 2: (4, 5), 3: (3, 4, 4)}


def _first(y):
    return y[0] if isinstance(y, tuple) else y


def _run(layer: nn.Module, x: torch.Tensor, autocast_dtype: torch.dtype | None):
    """Output (the first, for layers returning indices) and input gradient under autocast."""
    x = x.detach().requires_grad_()
    with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None):
        y = _first(layer(x))
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.dtype)
    (grad,) = torch.autograd.grad(y, x, g)
    return y, grad


def _check_like_torch(ours, theirs, exact, name):
    """Same dtype as torch's; error vs float64 at most twice torch's, plus rounding."""
    assert ours.dtype == theirs.dtype, name
    err_ours = (ours.double() - exact).abs().max().item()
    err_theirs = (theirs.double() - exact).abs().max().item()
    unit = torch.finfo(ours.dtype).eps * exact.abs().max().item()
    assert err_ours <= 2 * err_theirs + 4 * unit, (name, err_ours, err_theirs)


def _check(case: int, backend: str, autocast_dtype: torch.dtype, input_dtype: torch.dtype):
    theirs, nd = LAYERS[case]
    ours = torchconv_ext.convert_model(theirs)
    torch.manual_seed(case)
    x = torch.randn(2, 3, *_SIZES[nd]).to(input_dtype)
    with torchconv_ext.use_backend(backend):
        y, grad = _run(ours, x, autocast_dtype)
    y_torch, grad_torch = _run(theirs, x, autocast_dtype)
    # The exact result: torch's layer in float64 on the same (rounded) operands autocast used.
    exact = copy.deepcopy(theirs).double()
    x64 = x.to(y_torch.dtype if isinstance(theirs, _CONVS) else x.dtype).double()
    if isinstance(theirs, _CONVS):  # the weights rounded as autocast rounds them
        for p in exact.parameters():
            p.data = p.data.to(y_torch.dtype).double()
    y64, grad64 = _run(exact, x64, None)
    _check_like_torch(y, y_torch, y64, "output")
    assert grad.dtype == grad_torch.dtype == x.dtype
    _check_like_torch(grad, grad_torch, grad64, "input gradient")


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("case", range(len(LAYERS)), ids=IDS)
def test_bfloat16_autocast_like_torch_fallback(case, input_dtype):
    if input_dtype == torch.float64:
        LAYERS[case][0].double()  # a float64 model: autocast leaves it alone
    try:
        _check(case, "torch", torch.bfloat16, input_dtype)
    finally:
        LAYERS[case][0].float()


@pytest.mark.parametrize("case", range(len(LAYERS)), ids=IDS)
def test_float16_autocast_like_torch_fallback(case):
    _check(case, "torch", torch.float16, torch.float32)


@pytest.mark.interpret
@pytest.mark.parametrize("case", range(len(LAYERS)), ids=IDS)
def test_float16_autocast_like_torch_triton(case):
    """The interpreter computes float16: CPU float16 autocast runs every kernel."""
    _check(case, "triton", torch.float16, torch.float32)


@pytest.mark.interpret
@pytest.mark.parametrize(
    "case", [i for i, (m, _) in enumerate(LAYERS) if not isinstance(m, _CONVS)]
)
def test_bfloat16_autocast_like_torch_triton(case):
    """Pooling and upsampling in bfloat16 (convolutions are refused on the interpreter)."""
    _check(case, "triton", torch.bfloat16, torch.bfloat16)


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
