"""Nearest upsampling Triton kernels (interpreter on CPU) vs torch's index rule, and on GPUs vs
torch's CUDA kernels.

On CPU the reference is ``test_upsample_reference.reference``: a gather with the source indices of
torch's own 1-d kernel on float32 positions (ATen's float32 rule, which torch's CUDA kernels and the
Triton kernels apply). Forward values must be equal bitwise (nearest copies, no arithmetic);
outputs are NaN-poisoned before the kernels write (conftest), so an unwritten element fails.
Backward is compared in float64 with the reference's autograd (an index_add, which sums the same
terms in another order, hence a 1e-12 tolerance: one term missing or extra would be O(1)).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
import triton_kernels.upsample as kernels
from tests.test_upsample_functional import compile_check, opcheck_all
from tests.test_upsample_reference import (
    layout,
    random_geometries,
    reference,
    torch_geometry,
    torch_index,
)
from torchconv_ext import functional as TF

pytestmark = pytest.mark.interpret

MODES = {"nearest": False, "nearest-exact": True}


def run(x, backend="triton", **kwargs):
    """Our interpolate on ``x`` and its input gradient for a random grad_output."""
    x = x.detach().requires_grad_()
    with torchconv_ext.use_backend(backend):
        y = TF.interpolate(x, **kwargs)
        go = torch.randn(y.shape, dtype=y.dtype)
        (g,) = torch.autograd.grad(y, x, go)
    return x, y, go, g


def check_against_reference(x, mode="nearest", **kwargs):
    """Forward bitwise and backward (float64) vs the reference; output strides vs torch's."""
    _, y, go, g = run(x, mode=mode, **kwargs)
    out_size, scales = torch_geometry(
        x, kwargs.get("size"), kwargs.get("scale_factor"), kwargs.get("recompute_scale_factor")
    )
    xr = x.detach().requires_grad_()
    expected = reference(xr, out_size, scales, MODES[mode])
    assert torch.equal(y, expected), (x.shape, kwargs, mode)
    assert y.stride() == F.interpolate(x, mode=mode, **kwargs).stride()
    if x.is_floating_point():
        (g_ref,) = torch.autograd.grad(expected, xr, go)
        # Same terms, summed in another order: float64 rounding apart, equal.
        torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)


# One case per line: rank × layout × geometry (generic and integer fast path, up and down),
# each in both modes. Sizes span several tiles of the interpreter's 16-wide × 8-row blocks.
CASES = [
    ((2, 3, 9), "contiguous", dict(scale_factor=2)),
    ((2, 3, 9), "channels_last", dict(size=20)),
    ((1, 2, 13), "strided", dict(scale_factor=1.7)),
    ((2, 2, 11), "expanded", dict(scale_factor=0.45)),
    ((2, 3, 5, 4), "contiguous", dict(scale_factor=(2, 4))),
    ((2, 5, 3, 4), "channels_last", dict(scale_factor=2)),
    ((1, 3, 5, 6), "channels_last", dict(size=(7, 11))),
    ((2, 3, 6, 5), "strided", dict(scale_factor=(1.05, 2.05))),
    ((2, 2, 7, 5), "expanded", dict(size=(3, 9))),
    ((1, 2, 10, 7), "contiguous", dict(scale_factor=(0.5, 2.6), recompute_scale_factor=True)),
    ((1, 3, 2, 3, 4), "contiguous", dict(scale_factor=(2, 1, 2))),
    ((1, 4, 2, 2, 3), "channels_last", dict(scale_factor=2)),
    ((1, 2, 3, 4, 2), "channels_last", dict(size=(5, 3, 4))),
    ((2, 2, 3, 2, 4), "strided", dict(scale_factor=(1.5, 2.5, 0.7))),
]


@pytest.mark.parametrize(
    "shape,lay,kwargs", CASES, ids=[f"{len(c[0]) - 2}d-{c[1]}-{i}" for i, c in enumerate(CASES)]
)
def test_triton_matches_reference(shape, lay, kwargs):
    x = layout(torch.randn(shape, dtype=torch.float64), lay)
    for mode in MODES:
        check_against_reference(x, mode, **kwargs)


def test_index_rule_over_many_geometries(monkeypatch):
    """Hundreds of (size, scale, mode) combinations on 1-d tensors, in one tile each (a wide
    tile keeps the interpreter fast): forward indices and backward ranges are torch's."""
    monkeypatch.setattr(kernels, "_MAX_INNER", 8192)
    monkeypatch.setattr(kernels, "_FWD_TILE", 8192)
    monkeypatch.setattr(kernels, "_BWD_TILE", 8192)
    for n, o, s, exact in random_geometries(120, seed=7, max_size=3000):
        x = torch.arange(n, dtype=torch.float64).view(1, 1, n)
        mode = "nearest-exact" if exact else "nearest"
        kwargs = dict(scale_factor=s) if s > 0 else dict(size=o)
        check_against_reference(x, mode, **kwargs)


def test_fast_path_equals_generic_path(monkeypatch):
    x = layout(torch.randn(2, 3, 3, 5, 4, dtype=torch.float64), "strided")
    out_size, scales = (6, 10, 16), (2.0, 2.0, 4.0)
    assert kernels.fast_factors(x.shape[2:], out_size, (0.5, 0.5, 0.25)) == (2, 2, 4)
    fast = run(x, scale_factor=scales)
    monkeypatch.setattr(kernels, "fast_factors", lambda *args: None)
    generic = run(x, scale_factor=scales)
    assert torch.equal(fast[1], generic[1])
    torch.manual_seed(0)
    go = torch.randn(fast[1].shape, dtype=x.dtype)
    grads = []
    for fn in (lambda *a: (2, 2, 4), lambda *a: None):
        monkeypatch.setattr(kernels, "fast_factors", fn)
        xi = x.detach().requires_grad_()
        with torchconv_ext.use_backend("triton"):
            grads.append(torch.autograd.grad(TF.interpolate(xi, scale_factor=scales), xi, go)[0])
    assert torch.equal(grads[0], grads[1])


def test_fast_path_only_for_exact_power_of_two_factors():
    assert kernels.fast_factors((4, 5), (8, 5), (0.5, 1.0)) == (2, 1)
    assert kernels.fast_factors((4,), (16,), (0.25,)) == (4,)
    assert kernels.fast_factors((4,), (12,), (1 / 3,)) is None  # not a power of two
    assert kernels.fast_factors((10,), (20,), (0.48780488,)) is None  # scale_factor 2.05
    assert kernels.fast_factors((10,), (10,), (0.95238096,)) is None  # scale_factor 1.05


def test_int64_offsets(monkeypatch):
    """The int64 path (chosen for tensors past 2**31 elements) gives the same results."""
    monkeypatch.setattr(kernels, "needs_int64", lambda *tensors: True)
    check_against_reference(torch.randn(2, 3, 5, 4, dtype=torch.float64), scale_factor=2)
    check_against_reference(
        layout(torch.randn(2, 3, 5, 4, dtype=torch.float64), "channels_last"),
        "nearest-exact",
        size=(7, 9),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint8])
def test_other_dtypes(dtype):
    """Values are copies in every dtype; gradients accumulate in float32 (atol vs float64)."""
    base = torch.rand(2, 4, 5, 3) * 100
    for lay, kwargs in (
        ("contiguous", dict(scale_factor=2)),
        ("channels_last", dict(scale_factor=(1.5, 2.5))),
    ):
        x = layout(base.to(dtype), lay)
        if dtype == torch.uint8:
            with torchconv_ext.use_backend("triton"):
                y = TF.interpolate(x, **kwargs)
            assert torch.equal(y, reference(x, *torch_geometry(x, **kwargs), False))
            continue
        _, y, go, g = run(x, **kwargs)
        xr = x.double().requires_grad_()
        expected = reference(xr, *torch_geometry(x, **kwargs), False)
        assert torch.equal(y, expected.to(dtype))
        (g_ref,) = torch.autograd.grad(expected, xr, go.double())
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        torch.testing.assert_close(g.double(), g_ref, rtol=tol, atol=tol)


def test_backward_is_bitwise_repeatable_and_deterministic():
    x = layout(torch.randn(2, 3, 7, 6), "channels_last").requires_grad_()
    go = torch.randn(2, 3, 16, 13)
    torch.use_deterministic_algorithms(True)
    try:
        with torchconv_ext.use_backend("triton"):
            grads = [
                torch.autograd.grad(TF.interpolate(x, size=(16, 13)), x, go)[0] for _ in range(3)
            ]
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(grads[0], g) for g in grads[1:])


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_gradcheck(nd):
    shape = {1: (1, 2, 4), 2: (1, 2, 3, 4), 3: (1, 1, 2, 3, 2)}[nd]
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    size = {1: (9,), 2: (5, 7), 3: (3, 5, 4)}[nd]
    # fast_mode: random projections instead of the full Jacobian (every interpreter launch costs).
    with torchconv_ext.use_backend("triton"):
        for mode in MODES:
            f = lambda t, mode=mode: TF.interpolate(t, size=size, mode=mode)
            assert torch.autograd.gradcheck(f, (x,), fast_mode=True)
        assert torch.autograd.gradgradcheck(
            lambda t: TF.interpolate(t, scale_factor=2.5), (x,), fast_mode=True
        )


def test_round_option_on_triton():
    x = torch.randn(2, 3, 5, 3, dtype=torch.float64)
    with torchconv_ext.use_backend("triton"):
        ours = TF.interpolate(x, scale_factor=(1.5, 0.5), output_size_rounding="round")
    assert ours.shape[2:] == (8, 2)
    assert torch.equal(ours, reference(x, (8, 2), (1.5, 0.5), False))


def test_opcheck_triton():
    opcheck_all("triton")


def test_compile_fullgraph_triton():
    compile_check("triton", "aot_eager")


# ---------------------------------------------------------------------------------------------
# GPU: against torch's CUDA kernels (which apply the same float32 rule), large shapes, bf16.
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_gpu_matches_torch_cuda(dtype):
    """Bitwise equal to torch's CUDA kernels (the same float32 rule), strides included."""
    torch.manual_seed(0)
    for nd, shape in ((1, (4, 64, 300)), (2, (4, 64, 37, 50)), (3, (2, 16, 9, 17, 12))):
        for lay in ("contiguous", "channels_last", "strided"):
            x = layout(torch.randn(shape, dtype=dtype, device="cuda"), lay)
            geometries = [dict(scale_factor=2), dict(scale_factor=4), dict(size=shape[2:])]
            for _, o, s, _exact in random_geometries(8, seed=nd, max_size=60):
                if s > 0 and min(int(n * s) for n in shape[2:]) >= 1:
                    geometries.append(dict(scale_factor=s))
                elif s == 0:
                    geometries.append(dict(size=o))
            for kwargs in geometries:
                for mode in MODES:
                    ours = TF.interpolate(x, mode=mode, **kwargs)
                    theirs = F.interpolate(x, mode=mode, **kwargs)
                    assert torch.equal(ours, theirs) and ours.stride() == theirs.stride(), kwargs


@pytest.mark.gpu
def test_gpu_backward_vs_reference():
    torch.manual_seed(0)
    x = layout(torch.randn(2, 32, 13, 17, dtype=torch.float64), "channels_last")
    for kwargs in (dict(scale_factor=2), dict(scale_factor=(2.3, 0.7)), dict(size=(40, 31))):
        for mode, exact in MODES.items():
            xc = x.cuda().requires_grad_()
            y = TF.interpolate(xc, mode=mode, **kwargs)
            go = torch.randn_like(y)
            (g,) = torch.autograd.grad(y, xc, go)
            xr = x.clone().requires_grad_()
            expected = reference(xr, *torch_geometry(x, **kwargs), exact)
            assert torch.equal(y.cpu(), expected)
            (g_ref,) = torch.autograd.grad(expected, xr, go.cpu())
            torch.testing.assert_close(g.cpu(), g_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("scale", [2.0, 2.0001])
def test_gpu_past_int32_offsets(scale):
    """Outputs past 2**31 elements (uint8 keeps them near 2 GiB): int64 offsets, both paths."""
    x = torch.randint(0, 255, (1, 1, 2**15, 2**14), dtype=torch.uint8, device="cuda")
    y = TF.interpolate(x, scale_factor=scale)
    assert y.numel() >= 2**31
    rows = torch.tensor([0, 1, 12345, y.shape[2] - 2, y.shape[2] - 1])
    src_h = torch_index(x.shape[2], y.shape[2], scale, False)[rows]
    src_w = torch_index(x.shape[3], y.shape[3], scale, False)
    expected = x[0, 0].cpu()[src_h][:, src_w]
    assert torch.equal(y[0, 0, rows.cuda()].cpu(), expected)
