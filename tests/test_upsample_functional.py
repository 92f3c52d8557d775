"""Nearest upsampling through ``interpolate`` on both backends.

The fallback runs ATen's own kernels, so every result (values, strides, gradients) must equal
torch's exactly; a wide grid checks that our argument handling feeds them the right sizes and
scales for every rank, layout, mode, dtype and size/scale form. The Triton kernels (interpreter on
CPU) are compared with ``references.upsample``: torch's index rule, forward bitwise, backward in
float64. Also the non-nearest modes (torch's), the 'round' option, gradcheck and determinism.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
from tests.references.upsample import (
    MODES,
    check_against_reference,
    layout,
    reference,
    run,
    torch_geometry,
)
from torchconv_ext import functional as TF

LAYOUTS = ("contiguous", "channels_last", "strided", "expanded")
SIZES = {1: (7,), 2: (5, 4), 3: (3, 4, 2)}

# Size / scale forms: (kwargs for interpolate) per rank.
GEOMETRIES = {
    1: [
        dict(scale_factor=2),
        dict(scale_factor=3.0),
        dict(scale_factor=0.5),
        dict(size=11),
        dict(size=7),
        dict(size=3),
        dict(scale_factor=1.7),
        dict(scale_factor=2.05),
        dict(scale_factor=1.7, recompute_scale_factor=True),
        dict(scale_factor=(0.3,)),
        dict(size=[14]),
    ],
    2: [
        dict(scale_factor=2),
        dict(scale_factor=(2, 3)),
        dict(scale_factor=(0.5, 1.5)),
        dict(size=(9, 7)),
        dict(size=3),
        dict(size=(5, 4)),
        dict(scale_factor=(1.05, 2.05)),
        dict(scale_factor=2.6, recompute_scale_factor=True),
        dict(scale_factor=(3.0000001, 1)),
    ],
    3: [
        dict(scale_factor=2),
        dict(scale_factor=(1, 2, 3)),
        dict(size=(5, 3, 4)),
        dict(scale_factor=(0.7, 1.3, 2.5)),
        dict(scale_factor=1.5, recompute_scale_factor=True),
        dict(size=2),
    ],
}


def _grid():
    for nd, geoms in GEOMETRIES.items():
        yield from ((nd, i, lay) for i in range(len(geoms)) for lay in LAYOUTS)


@pytest.mark.parametrize("nd,geom,lay", list(_grid()))
def test_fallback_matches_torch(nd, geom, lay):
    """Forward and backward equal torch's, bitwise, with torch's strides, in both modes."""
    kwargs = GEOMETRIES[nd][geom]
    base = torch.randn((3, 4, *SIZES[nd]), dtype=torch.float64)
    for mode in MODES:
        x = layout(base, lay).requires_grad_()
        with torchconv_ext.use_backend("torch"):
            ours = TF.interpolate(x, mode=mode, **kwargs)
        theirs = F.interpolate(x, mode=mode, **kwargs)
        assert torch.equal(ours, theirs) and ours.stride() == theirs.stride()
        go = torch.randn_like(theirs)
        (g_ours,) = torch.autograd.grad(ours, x, go)
        (g_theirs,) = torch.autograd.grad(theirs, x, go)
        assert torch.equal(g_ours, g_theirs) and g_ours.stride() == g_theirs.stride()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.uint8])
def test_fallback_dtypes(dtype):
    for nd in (1, 2, 3):
        x = (torch.rand((2, 3, *SIZES[nd])) * 200).to(dtype)
        for mode, kwargs in itertools.product(MODES, GEOMETRIES[nd][:4]):
            assert torch.equal(
                TF.interpolate(x, mode=mode, **kwargs), F.interpolate(x, mode=mode, **kwargs)
            )


def test_upsample_nearest_matches_torch():
    x = torch.randn(2, 3, 4, 5)
    for kwargs in (dict(scale_factor=2), dict(size=(3, 7))):
        with pytest.warns(UserWarning, match="deprecated"):
            expected = F.upsample_nearest(x, **kwargs)
        assert torch.equal(TF.upsample_nearest(x, **kwargs), expected)


@pytest.mark.parametrize(
    "mode,nd,kwargs",
    [
        ("linear", 1, dict(scale_factor=2.5, align_corners=True)),
        ("bilinear", 2, dict(size=(7, 9))),
        ("bicubic", 2, dict(scale_factor=1.5, antialias=True)),
        ("area", 2, dict(scale_factor=0.5)),
        ("trilinear", 3, dict(scale_factor=(1, 2, 0.5), recompute_scale_factor=True)),
    ],
)
def test_other_modes_are_torchs(mode, nd, kwargs):
    x = torch.randn((2, 3, *SIZES[nd]), dtype=torch.float64, requires_grad=True)
    ours = TF.interpolate(x, mode=mode, **kwargs)
    theirs = F.interpolate(x, mode=mode, **kwargs)
    assert torch.equal(ours, theirs)
    assert ours.grad_fn.name() == theirs.grad_fn.name()


@pytest.mark.parametrize("recompute", [None, True])
def test_round_option_on_fallback(recompute):
    """'round' only changes the output size; the index rule stays torch's."""
    x = torch.randn(2, 3, 5, 3, dtype=torch.float64)
    ours = TF.interpolate(
        x, scale_factor=(1.5, 0.5), recompute_scale_factor=recompute, output_size_rounding="round"
    )
    assert ours.shape[2:] == (8, 2)  # round(7.5) = 8, round(1.5) = 2
    if recompute:
        expected = F.interpolate(x, size=(8, 2))
    else:
        expected = torch.ops.aten.upsample_nearest2d(x, [8, 2], 1.5, 0.5)
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_gradcheck_fallback(nd):
    shape = {1: (2, 2, 5), 2: (1, 2, 3, 4), 3: (1, 2, 2, 3, 2)}[nd]
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    with torchconv_ext.use_backend("torch"):
        for mode in MODES:
            f = lambda t, mode=mode: TF.interpolate(t, scale_factor=2.5, mode=mode)
            assert torch.autograd.gradcheck(f, (x,))
            assert torch.autograd.gradgradcheck(f, (x,))


def test_backward_is_deterministic_under_deterministic_algorithms():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float32, requires_grad=True)
    go = torch.randn(2, 3, 11, 13)
    torch.use_deterministic_algorithms(True)
    try:
        grads = [torch.autograd.grad(TF.interpolate(x, size=(11, 13)), x, go)[0] for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(grads[0], grads[1])


# ---------------------------------------------------------------------------------------------
# The Triton kernels vs the reference
# ---------------------------------------------------------------------------------------------

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


@pytest.mark.interpret
@pytest.mark.parametrize(
    "shape,lay,kwargs", CASES, ids=[f"{len(c[0]) - 2}d-{c[1]}-{i}" for i, c in enumerate(CASES)]
)
def test_triton_matches_reference(shape, lay, kwargs):
    x = layout(torch.randn(shape, dtype=torch.float64), lay)
    for mode in MODES:
        check_against_reference(x, mode, **kwargs)


@pytest.mark.interpret
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


@pytest.mark.interpret
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


@pytest.mark.interpret
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


@pytest.mark.interpret
def test_round_option_on_triton():
    x = torch.randn(2, 3, 5, 3, dtype=torch.float64)
    with torchconv_ext.use_backend("triton"):
        ours = TF.interpolate(x, scale_factor=(1.5, 0.5), output_size_rounding="round")
    assert ours.shape[2:] == (8, 2)
    assert torch.equal(ours, reference(x, (8, 2), (1.5, 0.5), False))
