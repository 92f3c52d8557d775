"""Locally connected and tiled convolution numerics, both backends, against the float64
definition (``references.local``): forward and every gradient; the tiled op's two limits
(one tile: our convolution; one tile per position: the locally connected op)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
from tests.references.local import (
    local_inputs,
    output_size,
    per_position_weight,
    reference_local,
)
from torchconv_ext import functional as TF

LOCAL = {1: TF.conv1d_local, 2: TF.conv2d_local, 3: TF.conv3d_local}
TILED = {1: TF.conv1d_tiled, 2: TF.conv2d_tiled, 3: TF.conv3d_tiled}
TRITON = pytest.mark.interpret

# (nd, N, C_in, C_out, size, kernel, tiles ("local": one per output position), stride, padding,
#  dilation, groups, padding_mode)
CASES = [
    (1, 2, 3, 4, (9,), (3,), "local", 1, 1, 1, 1, "zeros"),
    (1, 2, 4, 2, (10,), (4,), (3,), 3, "same", 2, 2, "reflect"),
    (1, 1, 2, 2, (7,), (2,), "local", 2, 0, 1, 2, "circular"),  # depthwise
    (2, 2, 3, 5, (6, 5), (3, 3), "local", 1, 1, 1, 1, "zeros"),
    (2, 2, 4, 4, (7, 6), (3, 2), (2, 3), (2, 1), (1, 0), (1, 2), 2, "replicate"),
    (2, 1, 2, 3, (6, 7), (3, 3), (4, 2), 2, "same", 1, 1, "zeros"),  # TF 'same' with stride
    (2, 1, 3, 3, (5, 5), (2, 2), (1, 2), 1, "valid", 1, 3, "zeros"),
    (2, 2, 2, 2, (5, 5), (3, 3), (3, 3), 1, 0, 1, 1, "reflect"),  # tiles = output size
    (2, 1, 2, 2, (4, 4), (3, 3), (3, 4), 1, 0, 1, 1, "zeros"),  # tiles > output: unused ones
    (3, 1, 2, 3, (4, 5, 4), (2, 3, 2), "local", 1, 1, 1, 1, "zeros"),
    (3, 1, 2, 2, (4, 4, 5), (3, 2, 3), (2, 1, 2), 2, "same", 1, 2, "circular"),
]
# The interpreter runs one program per tile: tiny outputs.
TRITON_CASES = [
    (1, 2, 2, 3, (7,), (3,), "local", 2, "same", 1, 1, "circular"),
    (2, 2, 2, 2, (5, 4), (2, 2), (2, 1), 2, 1, (1, 2), 2, "reflect"),
    (1, 1, 2, 2, (4,), (3,), (4,), 1, 0, 1, 1, "zeros"),  # unused tiles
    # stride 3, dilation 2: each input-gradient phase reached by every third tap, 2 outputs apart
    (1, 1, 2, 2, (8,), (3,), (2,), 3, 2, 2, 1, "zeros"),
    (3, 1, 2, 2, (2, 3, 3), (2, 2, 2), (1, 2, 2), 1, "same", 1, 1, "replicate"),
]


def _ids(case):
    nd, n, ci, co, size, k, tiles, s, p, d, g, mode = case
    t = tiles if tiles == "local" else "t" + "x".join(map(str, tiles))
    return f"{nd}d-{t}-k{'x'.join(map(str, k))}-s{s}-p{p}-d{d}-g{g}-{mode}"


def _inputs(case, bias=True):
    nd, n, ci, co, size, k, tiles, s, p, d, g, mode = case
    out = output_size(size, k, s, p, d)
    lead = out if tiles == "local" else tiles
    return local_inputs(nd, n, ci, co, size, k, lead, g, bias=bias)


def _call(case, x, w, b):
    nd, n, ci, co, size, k, tiles, s, p, d, g, mode = case
    op = (LOCAL if tiles == "local" else TILED)[nd]
    return op(x, w, b, s, p, d, g, padding_mode=mode)


def _check(case, backend, layout=None, bias=True, atol=1e-10, rtol=1e-8):
    nd, n, ci, co, size, k, tiles, s, p, d, g, mode = case
    x, w, b = _inputs(case, bias)
    if layout is not None:
        x = x.detach().contiguous(memory_format=layout).requires_grad_()
    leaves = [x, w] + ([b] if bias else [])
    with torchconv_ext.use_backend(backend):
        y = _call(case, x, w, b)
        gy = torch.randn_like(y)
        grads = torch.autograd.grad(y, leaves, gy)
    ref = reference_local(x, w, b, s, p, d, g, mode)
    refs = torch.autograd.grad(ref, leaves, gy)
    torch.testing.assert_close(y, ref, atol=atol, rtol=rtol)
    for got, want, name in zip(grads, refs, ["input", "weight", "bias"]):
        torch.testing.assert_close(got, want, atol=atol, rtol=rtol, msg=f"grad {name}")
    return y, grads


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_matches_definition_fallback(case):
    _check(case, "torch")


@TRITON
@pytest.mark.parametrize("case", TRITON_CASES, ids=_ids)
def test_matches_definition_triton(case):
    _check(case, "triton")


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=TRITON)])
def test_channels_last_without_bias(backend):
    """A channels-last input gives channels-last results (and its gradient)."""
    case = (2, 2, 2, 3, (4, 3), (2, 2), "local", 1, 0, 1, 1, "zeros")
    y, grads = _check(case, backend, torch.channels_last, bias=False)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert grads[0].is_contiguous(memory_format=torch.channels_last)


def test_unbatched_and_non_contiguous_inputs():
    case = CASES[4]
    x, w, b = _inputs(case)
    strided = x.detach().repeat_interleave(2, dim=-1)[..., ::2]  # every other element
    torch.testing.assert_close(_call(case, strided, w, b), _call(case, x, w, b))
    torch.testing.assert_close(_call(case, x[0], w, b), _call(case, x, w, b)[0])


def test_tiles_never_used_get_zero_gradient():
    """A 2-wide output meets tiles 0 and 1 of 4: the others' gradient is exactly zero."""
    x, w, b = local_inputs(1, 2, 2, 2, (4,), (3,), (4,), 1)
    y = TF.conv1d_tiled(x, w, b)
    gw, gb = torch.autograd.grad(y.sum(), [w, b])
    assert y.shape == (2, 2, 2) and gw[2:].abs().sum() == 0 and gb[2:].abs().sum() == 0
    assert gw[:2].abs().min() > 0


# --- the tiled op's limits ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=TRITON)])
def test_one_tile_is_our_convolution(backend):
    torch.manual_seed(0)
    x, w, b = local_inputs(2, 1, 4, 2, (4, 5), (3, 2), (1, 1), 2)
    leaves = [x, w, b]
    with torchconv_ext.use_backend(backend):
        y = TF.conv2d_tiled(x, w, b, 2, "same", (1, 2), 2, padding_mode="reflect")
        conv = TF.conv2d(x, w[0, 0], b[0, 0], 2, "same", (1, 2), 2, padding_mode="reflect")
        gy = torch.randn_like(y)
        grads = torch.autograd.grad(y, leaves, gy)
        conv_grads = torch.autograd.grad(conv, leaves, gy)
    torch.testing.assert_close(y, conv, atol=1e-12, rtol=1e-10)
    for got, want in zip(grads, conv_grads):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


# (nd, size, kernel, tiles, output size): the interpreter gets the smaller 1-d problem.
_REPEATED = {"torch": (2, (5, 4), (2, 2), (2, 3), (4, 3)), "triton": (1, (6,), (2,), (2,), (5,))}


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=TRITON)])
def test_tiled_is_the_locally_connected_op_with_repeated_kernels(backend):
    """A tiled convolution is the locally connected op with each tile's kernel written out at
    its positions; the tiled weight's gradient is the sum of those positions' gradients."""
    nd, size, kernel, tiles, out = _REPEATED[backend]
    x, w, b = local_inputs(nd, 2, 2, 2, size, kernel, tiles, 1)
    leaves = [x, w, b]
    with torchconv_ext.use_backend(backend):
        y = TILED[nd](x, w, b)
        local = LOCAL[nd](x, per_position_weight(w, out), per_position_weight(b, out))
        gy = torch.randn_like(y)
        grads = torch.autograd.grad(y, leaves, gy)
        local_grads = torch.autograd.grad(local, leaves, gy)
    torch.testing.assert_close(y, local, atol=1e-12, rtol=1e-10)
    for got, want in zip(grads, local_grads):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    # Tiles equal to the output size: the same op as locally connected.
    wl, bl = per_position_weight(w, out).detach(), per_position_weight(b, out).detach()
    with torchconv_ext.use_backend(backend):
        torch.testing.assert_close(TILED[nd](x, wl, bl), LOCAL[nd](x, wl, bl))


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=TRITON)])
def test_integer_inputs_are_computed_by_aten(backend):
    # (our kernels compute floating point: integers take the fallback, exactly, on every backend)
    x = torch.randint(-3, 3, (1, 2, 5, 5))
    w = torch.randint(-3, 3, (3, 3, 3, 2, 3, 3))
    b = torch.randint(-3, 3, (3, 3, 3))
    want = TF.conv2d_local(x.double(), w.double(), b.double()).long()
    with torchconv_ext.use_backend(backend):
        for _ in range(3):  # (the third call replays a tape)
            assert torch.equal(TF.conv2d_local(x, w, b), want)
            tiled = TF.conv2d_tiled(x, w[:1, :1], b[:1, :1])
            assert torch.equal(tiled, F.conv2d(x, w[0, 0], b[0, 0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_fallback(dtype):
    """fp32/bf16 against the float64 definition: within a few ulps of the result's scale."""
    case = CASES[3]
    x, w, b = (t.detach().to(dtype) for t in _inputs(case))
    y = _call(case, x, w, b)
    ref = reference_local(x.double(), w.double(), b.double(), 1, 1)
    assert y.dtype == dtype
    tol = {torch.float32: 1e-5, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(y.double(), ref, atol=tol * ref.abs().max().item(), rtol=0)


@pytest.mark.parametrize(
    "backend", ["torch", pytest.param("triton", marks=TRITON)]
)  # fmt: skip
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("groups", [2, 4])
def test_autocast_casts_as_for_a_convolution(backend, padding_mode, dtype, groups):
    """One tile is a convolution: under autocast, the dtypes and values of nn.Conv2d's recipe
    (``F.pad`` for a padding mode, then ``F.conv2d``), forward and backward, whatever autocast
    does to the ops inside (the fallback's reflection pad would run in float32 — and a depthwise
    tap's product, no matrix product, then too)."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 6, dtype=dtype, requires_grad=True)
    w = torch.randn(1, 1, 4, 4 // groups, 3, 3, dtype=dtype, requires_grad=True)
    b = torch.randn(1, 1, 4, dtype=dtype, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.float16):
        with torchconv_ext.use_backend(backend):
            y = TF.conv2d_tiled(x, w, b, 1, 1, 1, groups, padding_mode=padding_mode)
        padded = x if padding_mode == "zeros" else F.pad(x, (1, 1, 1, 1), mode=padding_mode)
        y_torch = F.conv2d(padded, w[0, 0], b[0, 0], 1, int(padding_mode == "zeros"), 1, groups)
    assert y.dtype == y_torch.dtype == torch.float16
    # (float16 results: a rounding of the largest value apart; see tests.fuzz_modes)
    torch.testing.assert_close(y, y_torch, rtol=4e-3, atol=2e-3 * y_torch.abs().max().item())
    grad = torch.randn_like(y)
    with torchconv_ext.use_backend(backend):
        ours = torch.autograd.grad(y, (x, w, b), grad)
    theirs = torch.autograd.grad(y_torch, (x, w, b), grad)
    for a, e in zip(ours, theirs):
        assert a.dtype == e.dtype == dtype
        torch.testing.assert_close(a, e, rtol=4e-3, atol=2e-3 * e.abs().max().item())


@pytest.mark.parametrize(
    "backend", ["torch", pytest.param("triton", marks=TRITON)]
)  # fmt: skip
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_every_registered_op_agrees_with_its_fake(backend, padding_mode):
    """Sizes, strides, storage offset and aliasing of each op's result as its fake says: one
    input channel and one sample made the fallback's zero-padded input gradient a contiguous
    crop at an offset."""
    from torch._subclasses.fake_utils import CrossRefFakeMode

    x = torch.randn(1, 1, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, 1, 3, dtype=torch.float64, requires_grad=True)
    with torchconv_ext.use_backend(backend), CrossRefFakeMode(check_strides=True):
        y = TF.conv1d_tiled(x, w, None, 1, "same", 2, padding_mode=padding_mode)
        torch.autograd.grad(y, (x, w), torch.ones_like(y))
