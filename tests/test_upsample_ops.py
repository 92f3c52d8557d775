"""Registered upsampling ops, both backends: opcheck, and a small decoder block under
``torch.compile(fullgraph=True)``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchconv_ext

# Every op and mode, 1-d to 3-d, scale factors and sizes, three layouts (opcheck is slow: few).
OPCHECK_CASES = [
    (
        torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last),
        [8, 7],
        [2.0, 1.5],
        False,
    ),
    (
        torch.randn(1, 2, 3, 4, 2, dtype=torch.float64).transpose(2, 4),
        [4, 6, 5],
        [0.0, 0.0, 0.0],
        True,
    ),
    (torch.randn(2, 3, 5, dtype=torch.float64), [11], [0.0], False),
]


def opcheck_all(backend: str) -> None:
    ops = torch.ops.torchconv_ext
    with torchconv_ext.use_backend(backend):
        for x, out_size, scales, exact in OPCHECK_CASES:
            x = x.detach().requires_grad_()
            torch.library.opcheck(ops.upsample_nearest_fwd, (x, out_size, scales, exact))
            go = torch.randn([*x.shape[:2], *out_size], dtype=x.dtype, requires_grad=True)
            torch.library.opcheck(ops.upsample_nearest_bwd, (go, list(x.shape), scales, exact))


def test_opcheck_fallback():
    opcheck_all("torch")


def compile_check(backend: str, compiler: str) -> None:
    """A small decoder block under ``torch.compile(fullgraph=True)``: same values and grads."""
    model = nn.Sequential(
        torchconv_ext.nn.Upsample(scale_factor=2),
        nn.ReLU(),
        torchconv_ext.nn.Upsample(size=(7, 5), mode="nearest-exact"),
    )
    compiled = torch.compile(model, fullgraph=True, backend=compiler)
    x = torch.randn(2, 3, 4, 3).contiguous(memory_format=torch.channels_last)
    with torchconv_ext.use_backend(backend):
        xs = [x.clone().requires_grad_() for _ in range(2)]
        out = compiled(xs[0])
        expected = model(xs[1])
        out.square().sum().backward()
        expected.square().sum().backward()
    assert torch.equal(out, expected) and out.stride() == expected.stride()
    assert torch.equal(xs[0].grad, xs[1].grad)


def test_compile_fullgraph_fallback():
    compile_check("torch", "inductor")


@pytest.mark.interpret
def test_opcheck_triton():
    opcheck_all("triton")


@pytest.mark.interpret
def test_compile_fullgraph_triton():
    compile_check("triton", "aot_eager")
