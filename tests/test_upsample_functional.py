"""Nearest upsampling on the fallback backend vs torch (a wide grid), the drop-in modules and
``convert_model``, the non-nearest modes, and the op-level checks (opcheck, compile).

The fallback runs ATen's own kernels, so every result (values, strides, gradients) must equal
torch's exactly; the grid checks that our argument handling feeds them the right sizes and scales
for every rank, layout, mode, dtype and size/scale form.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchconv_ext
from tests.test_upsample_reference import layout
from torchconv_ext import functional as TF

LAYOUTS = ("contiguous", "channels_last", "strided", "expanded")
MODES = ("nearest", "nearest-exact")
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
# Modules and model conversion
# ---------------------------------------------------------------------------------------------


def test_upsample_module_is_a_drop_in():
    for kwargs in (
        dict(scale_factor=2),
        dict(size=(3, 9), mode="nearest-exact"),
        dict(scale_factor=1.5, mode="bilinear", align_corners=False),
        dict(scale_factor=(2, 1), recompute_scale_factor=True),
    ):
        ours, theirs = torchconv_ext.nn.Upsample(**kwargs), nn.Upsample(**kwargs)
        assert isinstance(ours, nn.Upsample)
        assert repr(ours).replace("torchconv_ext.", "") == repr(theirs)
        assert vars(ours).keys() == vars(theirs).keys() and ours.state_dict() == {}
        x = torch.randn(2, 3, 5, 4)
        assert torch.equal(ours(x), theirs(x))
    n2d = torchconv_ext.nn.UpsamplingNearest2d(scale_factor=3)
    assert isinstance(n2d, nn.UpsamplingNearest2d)
    x = torch.randn(1, 2, 3, 4)
    assert torch.equal(n2d(x), nn.UpsamplingNearest2d(scale_factor=3)(x))


def test_convert_model_swaps_nearest_upsampling_only():
    model = nn.Sequential(
        nn.Upsample(scale_factor=2),
        nn.Upsample(size=(8, 8), mode="nearest-exact"),
        nn.Upsample(scale_factor=2, mode="bilinear"),
        nn.UpsamplingNearest2d(scale_factor=2),
        nn.UpsamplingBilinear2d(scale_factor=2),
    )
    converted = torchconv_ext.convert_model(model)
    kinds = [type(m) for m in converted]
    assert kinds == [
        torchconv_ext.nn.Upsample,
        torchconv_ext.nn.Upsample,
        nn.Upsample,
        torchconv_ext.nn.UpsamplingNearest2d,
        nn.UpsamplingBilinear2d,
    ]
    assert all(type(m) is type(o) for m, o in zip(model, [*model]))  # original untouched
    x = torch.randn(1, 2, 3, 3)
    assert torch.equal(converted(x), model(x))
    torchconv_ext.convert_model(model, inplace=True)
    assert type(model[0]) is torchconv_ext.nn.Upsample


# ---------------------------------------------------------------------------------------------
# Op-level checks
# ---------------------------------------------------------------------------------------------

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
