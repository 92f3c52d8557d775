"""Triton's CPU interpreter in float16 and bfloat16: what it computes right, and what we refuse.

Running every op family in both half-precision dtypes against torch (``test_every_pair``) finds
one family the interpreter gets wrong: bfloat16 convolutions, whose matrix products
(``tl.dot``) come out around 1e10. That pair raises an error naming the interpreter and the
dtype (``_backend.INTERPRETER_REFUSES``); every other pair matches torch as closely as torch's
own kernels in that dtype. float32 and float64 are what every other test runs.

The refusal is per op family: the interpreter's direct depthwise kernels do compute bfloat16
right, but which kernel a convolution runs is the kernels' choice, so all bfloat16
convolutions are refused. ``test_refused_pair_is_wrong_without_the_refusal`` fails once Triton
computes the pair right, which is when to lift the refusal.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
from torchconv_ext import _backend
from torchconv_ext import functional as TF

pytestmark = pytest.mark.interpret

HALF = (torch.float16, torch.bfloat16)


def _conv_ops(x):
    """The parameters, and ``f(module, x, *params)`` for every convolution kernel kind."""
    g = torch.Generator().manual_seed(1)
    shapes = [(4, 3, 3, 3), (3, 1, 3, 3), (3, 2, 2, 2)]
    params = [torch.randn(s, generator=g).to(x.dtype) for s in shapes]
    return params, [
        lambda f, x, w, dw, wt: f.conv2d(x, w, padding=1),
        lambda f, x, w, dw, wt: f.conv2d(x, dw, stride=2, padding=1, groups=3),
        lambda f, x, w, dw, wt: f.conv_transpose2d(x, wt, stride=2),
    ]


def _pool_ops(x):
    pyramid = {
        TF: lambda x: TF.spatial_pyramid_pool(x, (1, 2), "max"),
        F: lambda x: torch.cat([F.adaptive_max_pool2d(x, s).flatten(1) for s in (1, 2)], 1),
    }
    return [], [
        lambda f, x: f.max_pool2d(x, 3, 2, 1),
        lambda f, x: f.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
        lambda f, x: f.adaptive_avg_pool2d(x, (2, 3)),
        lambda f, x: f.adaptive_max_pool2d(x, (3, 2)),
        lambda f, x: pyramid[f](x),
    ]


def _upsample_ops(x):
    return [], [
        lambda f, x: f.interpolate(x, scale_factor=2),
        lambda f, x: f.interpolate(x, size=(7, 5), mode="nearest-exact"),
    ]


FAMILIES = {"conv": _conv_ops, "pool": _pool_ops, "upsample": _upsample_ops}


def _run(fn, module, x, params, backend="torch"):
    """``fn``'s output and the gradients of a fixed projection of it w.r.t. ``x`` and params."""
    x, *params = (t.detach().requires_grad_() for t in (x, *params))
    with torchconv_ext.use_backend(backend):
        y = fn(module, x, *params)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(y.dtype)
        grads = torch.autograd.grad(y, [x, *params], g, allow_unused=True)
    return [y, *(t for t in grads if t is not None)]


def _check(family: str, dtype: torch.dtype) -> None:
    x = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(0)).to(dtype)
    params, ops = FAMILIES[family](x)
    for i, op in enumerate(ops):
        ours = _run(op, TF, x, params, "triton")
        theirs = _run(op, F, x, params)
        exact = _run(op, F, x.double(), [p.double() for p in params])
        for got, want, ref in zip(ours, theirs, exact):
            assert got.dtype == want.dtype == dtype
            err, torch_err = ((t.double() - ref).abs().max().item() for t in (got, want))
            unit = torch.finfo(dtype).eps * ref.abs().max().item()
            assert err <= 2 * torch_err + 2 * unit, (family, dtype, i, err, torch_err)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_pair(family, dtype):
    """Each (family, dtype) pair either matches torch or is refused with a clear error."""
    if (family, dtype) in _backend.INTERPRETER_REFUSES:
        with pytest.raises(RuntimeError, match=rf"interpreter.*{family} in {dtype}"):
            _check(family, dtype)
    else:
        _check(family, dtype)


def test_refused_pairs():
    assert frozenset({("conv", torch.bfloat16)}) == _backend.INTERPRETER_REFUSES


@pytest.mark.parametrize(
    "call",
    [
        lambda x: TF.conv1d(x[..., 0], torch.randn(2, 3, 2).to(x.dtype)),
        lambda x: TF.conv2d(x, torch.randn(3, 1, 3, 3).to(x.dtype), groups=3),
        lambda x: TF.conv3d(x[:, :, None], torch.randn(2, 3, 1, 2, 2).to(x.dtype)),
        lambda x: TF.conv2d(x, torch.randn(2, 3, 3, 3).to(x.dtype), padding="same"),
        lambda x: TF.conv_transpose2d(x, torch.randn(3, 2, 2, 2).to(x.dtype), padding="same"),
        lambda x: TF.conv_transpose2d(x, torch.randn(3, 2, 2, 2).to(x.dtype), 1, ((0, 1), 1)),
        lambda x: TF.conv2d_local(x, torch.randn(3, 3, 2, 3, 2, 2).to(x.dtype)),
        lambda x: TF.conv2d_tiled(x, torch.randn(2, 1, 2, 3, 2, 2).to(x.dtype)),
    ],
    ids=[
        "conv1d",
        "depthwise",
        "conv3d",
        "torch-accepted",
        "transposed",
        "transposed-pairs",
        "local",
        "tiled",
    ],
)
def test_bfloat16_convolutions_are_refused(call):
    x = torch.randn(1, 3, 4, 4, dtype=torch.bfloat16)
    with (
        torchconv_ext.use_backend("triton"),
        pytest.raises(RuntimeError, match=r"Triton's interpreter.*torch\.bfloat16"),
    ):
        call(x)


def test_bfloat16_autocast_convolution_is_refused():
    """The case that returned values around 1e10: a float32 layer under CPU bfloat16
    autocast."""
    layer = torchconv_ext.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    with (
        torchconv_ext.use_backend("triton"),
        torch.autocast("cpu", dtype=torch.bfloat16),
        pytest.raises(RuntimeError, match=r"interpreter.*conv in torch\.bfloat16"),
    ):
        layer(torch.randn(1, 3, 5, 5))


def test_refused_pair_is_wrong_without_the_refusal(monkeypatch):
    """Evidence for the refusal: past it, the interpreter's bfloat16 convolution is far off.
    When this fails, Triton computes the pair: lift the refusal."""
    monkeypatch.setattr(_backend, "INTERPRETER_REFUSES", frozenset())
    x = torch.randn(1, 4, 5, 5)
    w = torch.randn(4, 4, 3, 3)
    with torchconv_ext.use_backend("triton"):
        got = TF.conv2d(x.bfloat16(), w.bfloat16(), padding=1).double()
    exact = F.conv2d(x.bfloat16().double(), w.bfloat16().double(), padding=1)
    assert (got - exact).abs().max() > 100 * exact.abs().max()
