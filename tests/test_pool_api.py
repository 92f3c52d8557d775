"""Pooling API: bad arguments, unbatched / empty / integer inputs, nn modules and
convert_model, registration (opcheck, gradcheck, torch.compile), determinism, and GPU checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pool_reference import in_layout, significant_strides, single_thread, special_batch  # noqa: F401
from torch import nn

import torchconv_ext
from torchconv_ext import functional as TF
from torchconv_ext import nn as TN

X = torch.randn(2, 3, 6, 6)
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]

# --------------------------------------------------------------------------------------------
# Bad arguments: torch's exception types, messages that name the problem
# --------------------------------------------------------------------------------------------

# (ours, torch's equivalent or None, message fragment)
BAD_LIKE_TORCH = [
    (lambda: TF.max_pool2d(X, 2, 2, 2), lambda: F.max_pool2d(X, 2, 2, 2), "at most half of kernel"),
    (lambda: TF.avg_pool2d(X, 3, 1, 2), lambda: F.avg_pool2d(X, 3, 1, 2), "at most half of kernel"),
    (lambda: TF.max_pool1d(X[0], 3, 1, 2), lambda: F.max_pool1d(X[0], 3, 1, 2), "at most half"),
    (lambda: TF.max_pool2d(X, -1), lambda: F.max_pool2d(X, -1), "kernel_size must be greater"),
    (
        lambda: TF.avg_pool3d(X[None], 2, 0),
        lambda: F.avg_pool3d(X[None], 2, 0),
        "stride must be greater",
    ),
    (lambda: TF.max_pool2d(X, 2, 2, -1), lambda: F.max_pool2d(X, 2, 2, -1), "non-negative"),
    (
        lambda: TF.max_pool2d(X, 2, 2, 0, 0),
        lambda: F.max_pool2d(X, 2, 2, 0, 0),
        "dilation must be greater",
    ),
    (lambda: TF.max_pool2d(X, 7), lambda: F.max_pool2d(X, 7), "too small"),
    (lambda: TF.avg_pool1d(X[0], 7), lambda: F.avg_pool1d(X[0], 7), "too small"),
    (
        lambda: TF.max_pool3d(X[None], 3, 1, 0, 4),
        lambda: F.max_pool3d(X[None], 3, 1, 0, 4),
        "too small",
    ),
    (lambda: TF.max_pool2d(X, (2, 2, 2)), lambda: F.max_pool2d(X, (2, 2, 2)), "kernel_size must"),
    (lambda: TF.avg_pool2d(X, 2, (1, 1, 1)), lambda: F.avg_pool2d(X, 2, (1, 1, 1)), "stride must"),
    (
        lambda: TF.max_pool2d(torch.randn(6, 6), 2),
        lambda: F.max_pool2d(torch.randn(6, 6), 2),
        "Expected 3D",
    ),
    (
        lambda: TF.max_pool1d(torch.randn(6), 2),
        lambda: F.max_pool1d(torch.randn(6), 2),
        "Expected 2D",
    ),
    (lambda: TF.avg_pool3d(X[0], 2), lambda: F.avg_pool3d(X[0], 2), "Expected 4D"),
    (
        lambda: TF.avg_pool2d(X, 2, divisor_override=0),
        lambda: F.avg_pool2d(X, 2, divisor_override=0),
        "divisor",
    ),
    (
        lambda: TF.max_pool2d(torch.randn(2, 0, 6, 6), 2),
        lambda: F.max_pool2d(torch.randn(2, 0, 6, 6), 2),
        "non-zero",
    ),
    (
        lambda: TF.adaptive_avg_pool2d(X, (-1, 2)),
        lambda: F.adaptive_avg_pool2d(X, (-1, 2)),
        "greater than or equal to 0",
    ),
    (
        lambda: TF.adaptive_max_pool2d(torch.randn(2, 3, 0, 6), 2),
        lambda: F.adaptive_max_pool2d(torch.randn(2, 3, 0, 6), 2),
        "non-zero",
    ),
    (
        lambda: TF.adaptive_avg_pool2d(X, (2, 2, 2)),
        lambda: F.adaptive_avg_pool2d(X, (2, 2, 2)),
        "output_size must",
    ),
    (
        lambda: TF.adaptive_max_pool3d(X[0], 2),
        lambda: F.adaptive_max_pool3d(X[0], 2),
        "Expected 4D",
    ),
]

BAD_BEYOND_TORCH = [
    (lambda: TF.max_pool2d(X, 2, padding="full"), ValueError, "invalid padding string 'full'"),
    (lambda: TF.spatial_pyramid_pool(X, ()), ValueError, "non-empty sequence"),
    (lambda: TF.spatial_pyramid_pool(X, (1, 0)), ValueError, "levels must be positive"),
    (lambda: TF.spatial_pyramid_pool(X, (1, 2.5)), TypeError, "levels must hold ints"),
    (lambda: TF.spatial_pyramid_pool(X, (1,), "median"), ValueError, "mode must be 'max' or 'avg'"),
    (lambda: TF.spatial_pyramid_pool(X[0, 0], (1,)), RuntimeError, "batched"),
    (lambda: TF.spatial_pyramid_pool(X.long(), (1,)), NotImplementedError, "torch.int64"),
    (lambda: TF.global_avg_pool(torch.randn(2, 3)), RuntimeError, "1 to 3 spatial dims"),
    (lambda: TF.global_max_pool(torch.randn(2, 3, 0)), RuntimeError, "non-zero"),
    (lambda: TN.SpatialPyramidPool((1, -2)), ValueError, "levels must be positive"),
    (lambda: TN.SpatialPyramidPool(mode="sum"), ValueError, "mode"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(BAD_LIKE_TORCH)))
def test_bad_arguments_raise_like_torch(case, backend):
    """Same exception type as torch; our own checks (Triton path) also name the problem. On the
    fallback, arguments torch accepts go to torch's op, whose own check raises."""
    ours, theirs, fragment = BAD_LIKE_TORCH[case]
    with pytest.raises(Exception) as want:
        theirs()
    with (
        torchconv_ext.use_backend(backend),
        pytest.raises(want.type, match=fragment if backend == "triton" else None),
    ):
        ours()


@pytest.mark.parametrize("case", range(len(BAD_BEYOND_TORCH)))
def test_bad_arguments_beyond_torch(case):
    call, kind, fragment = BAD_BEYOND_TORCH[case]
    with pytest.raises(kind, match=fragment):
        call()


def test_integer_inputs_behave_like_torch():
    x = torch.randint(0, 9, (2, 3, 6, 6))
    assert torch.equal(TF.max_pool2d(x, 3, 2, 1), F.max_pool2d(x, 3, 2, 1))
    assert torch.equal(TF.avg_pool2d(x, 2), F.avg_pool2d(x, 2))
    with pytest.raises(NotImplementedError):
        TF.adaptive_max_pool2d(x, 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_and_empty_batch(backend):
    calls = [
        (lambda f: f.max_pool2d, (3, 2, 1)),
        (lambda f: f.avg_pool1d, (3, 2, 1, True)),
        (lambda f: f.adaptive_avg_pool2d, ((2, 3),)),
        (lambda f: f.adaptive_max_pool3d, (2,)),
    ]
    for pick, args in calls:
        ours, theirs = pick(TF), pick(F)
        nd = int(theirs.__name__.rstrip("d")[-1])
        unbatched = special_batch(nd)[0].requires_grad_()
        transposed = (
            unbatched.detach().transpose(-1, -2).contiguous().transpose(-1, -2).requires_grad_()
        )
        for x in (unbatched, transposed, special_batch(nd)[:0].requires_grad_()):
            with torchconv_ext.use_backend(backend):
                got = ours(x, *args)
            want = theirs(x, *args)
            torch.testing.assert_close(got, want, equal_nan=True)
            assert significant_strides(got) == significant_strides(want)
            gy = torch.randn_like(want)
            with torchconv_ext.use_backend(backend):
                (g,) = torch.autograd.grad(got, x, gy)
            torch.testing.assert_close(g, torch.autograd.grad(want, x, gy)[0])


# --------------------------------------------------------------------------------------------
# nn modules and convert_model
# --------------------------------------------------------------------------------------------

TORCH_MODULES = [
    (nn.MaxPool1d(3, 2, 1), 1),
    (nn.MaxPool2d(3, 2, 1, ceil_mode=True), 2),
    (nn.MaxPool2d(2, return_indices=True), 2),
    (nn.MaxPool3d(2, dilation=(1, 2, 1)), 3),
    (nn.AvgPool1d(3, 2, 1, count_include_pad=False), 1),
    (nn.AvgPool2d(3, 2, 1, ceil_mode=True), 2),
    (nn.AvgPool2d(2, divisor_override=3), 2),
    (nn.AvgPool3d(2, ceil_mode=True), 3),
    (nn.AdaptiveAvgPool1d(3), 1),
    (nn.AdaptiveAvgPool2d((2, None)), 2),
    (nn.AdaptiveAvgPool3d(2), 3),
    (nn.AdaptiveMaxPool1d(3, return_indices=True), 1),
    (nn.AdaptiveMaxPool2d(4), 2),
    (nn.AdaptiveMaxPool3d((1, 2, 3)), 3),
]


@pytest.mark.parametrize("i", range(len(TORCH_MODULES)))
def test_convert_model_swaps_each_pooling_layer(i):
    module, nd = TORCH_MODULES[i]
    ours = torchconv_ext.convert_model(module)
    assert (
        type(ours).__name__ == type(module).__name__ and type(ours).__module__ == TN.pool.__name__
    )
    assert isinstance(ours, type(module)) and type(ours).replaces is type(module)
    assert repr(ours) == repr(module) and ours.state_dict().keys() == module.state_dict().keys()
    x = special_batch(nd)
    got, want = ours(x), module(x)
    for g, w in zip(
        got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)
    ):
        torch.testing.assert_close(g, w, equal_nan=True)


def test_modules_constructed_directly_and_in_a_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        nn.AvgPool2d(2, ceil_mode=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    converted = torchconv_ext.convert_model(model)
    assert [type(m).__module__ for m in converted[2:5]] == [TN.pool.__name__] * 3
    assert type(model[2]) is nn.MaxPool2d  # the original is left alone
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(converted(x), model(x))
    # TensorFlow-style padding through the modules
    assert TN.MaxPool2d(3, 2, padding="same")(x).shape == (2, 3, 5, 5)
    assert TN.AvgPool1d(4, 3, padding="same")(x[:, :, 0]).shape == (2, 3, 3)
    assert TN.AvgPool3d(2, padding="valid")(x[None]).shape == (1, 2, 1, 4, 4)


def test_new_modules():
    x = special_batch(2)
    spp = TN.SpatialPyramidPool((1, 2, 4), mode="avg")
    assert "levels=(1, 2, 4), mode='avg'" in repr(spp)
    assert spp.output_features(3) == 3 * 21 == spp(x).shape[1]
    torch.testing.assert_close(spp(x), TF.spatial_pyramid_pool(x, (1, 2, 4), "avg"), equal_nan=True)
    torch.testing.assert_close(TN.GlobalAvgPool()(x), x.mean((2, 3)), equal_nan=True)
    torch.testing.assert_close(
        TN.GlobalMaxPool()(x), F.adaptive_max_pool2d(x, 1).flatten(1), equal_nan=True
    )
    assert list(spp.parameters()) == [] and spp.state_dict() == {}


# --------------------------------------------------------------------------------------------
# Registration: opcheck, gradcheck, torch.compile
# --------------------------------------------------------------------------------------------


def _op_samples(layout):
    x = in_layout(torch.randn(2, 3, 5, 6, dtype=torch.float64), layout)
    geo = (
        ["max", [3, 2], [2, 1], [1, 0], [1, 1], [1, 2], True, True, 0],
        ["avg", [3, 2], [2, 1], [1, 0], [1, 1], [1, 1], True, False, 0],
    )
    return x, geo


def _opcheck_all(backend, layout, modes=("max", "avg"), test_utils=None):
    ops = torch.ops.torchconv_ext
    check = lambda op, args: torch.library.opcheck(
        op, args, **({"test_utils": test_utils} if test_utils else {})
    )
    x, geos = _op_samples(layout)
    with torchconv_ext.use_backend(backend):
        for geo in (g for g in geos if g[0] in modes):
            y, idx = ops.pool_fwd(x, *geo)
            check(ops.pool_fwd, (x, *geo))
            check(ops.pool_bwd, (torch.randn_like(y), x, idx, *geo))
        for mode in modes:
            y, idx = ops.adaptive_pool_fwd(x, mode, [3, 4])
            check(ops.adaptive_pool_fwd, (x, mode, [3, 4]))
            check(ops.adaptive_pool_bwd, (torch.randn_like(y), x, idx, mode))
            y, idx = ops.pyramid_pool_fwd(x, mode, [1, 2])
            check(ops.pyramid_pool_fwd, (x, mode, [1, 2]))
            check(ops.pyramid_pool_bwd, (torch.randn_like(y), x, idx, mode, [1, 2]))


def test_opcheck_fallback():
    _opcheck_all("torch", "channels_last")
    for layout in ("contiguous", "strided"):  # the fakes' strides for the other layouts
        _opcheck_all("torch", layout, test_utils="test_faketensor")


@pytest.mark.interpret
def test_opcheck_triton():
    # Max pooling (output and indices); the fakes are shared with the fallback's checks.
    _opcheck_all("triton", "channels_last", ("max",))


def _distinct(shape, layout="contiguous"):
    """Well-separated values, so finite differences never swap a maximum."""
    n = torch.Size(shape).numel()
    x = (
        torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(torch.float64).view(shape)
        / n
    )
    return in_layout(x, layout).requires_grad_()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck(backend):
    fast = backend == "triton"  # the interpreter: random projections, not full Jacobians
    x = _distinct((1, 2, 5, 4), "channels_last")
    x1, x3 = _distinct((2, 2, 7)), _distinct((1, 1, 3, 4, 3))
    fns = [
        (lambda t: TF.max_pool2d(t, 3, 2, 1, 2, ceil_mode=True), x),
        (lambda t: TF.avg_pool2d(t, 2, 1, "same", divisor_override=3), x),
        (lambda t: TF.adaptive_avg_pool3d(t, (2, 3, 2)), x3),
        (lambda t: TF.spatial_pyramid_pool(t, (1, 3), "max"), x1),
        (lambda t: TF.global_max_pool(t) + TF.global_avg_pool(t), x3),
        # The Triton backward is compared with torch's elsewhere; these run on the fallback only.
        (lambda t: TF.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False), x),
        (lambda t: TF.max_pool1d(t, 2, 2, "same"), x1),
        (lambda t: TF.adaptive_max_pool2d(t, (2, 3)), x),
        (lambda t: TF.spatial_pyramid_pool(t, (1, 2, 3), "avg"), x),
    ]
    with torchconv_ext.use_backend(backend):
        for fn, inp in fns[:5] if fast else fns:
            assert torch.autograd.gradcheck(fn, (inp,), fast_mode=fast)


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    model = torchconv_ext.convert_model(
        nn.Sequential(
            nn.MaxPool2d(3, 2, 1, ceil_mode=True),
            nn.AvgPool2d(2, 1, padding=1, count_include_pad=False),
            nn.AdaptiveMaxPool2d((3, 2)),
            TN.SpatialPyramidPool((1, 2), "avg"),
        )
    )
    x = torch.randn(2, 3, 9, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    compiled = torch.compile(model, fullgraph=True)
    y_c = compiled(x)
    (g_c,) = torch.autograd.grad(y_c.sum(), x)
    y_e = model(x)
    (g_e,) = torch.autograd.grad(y_e.sum(), x)
    torch.testing.assert_close(y_c, y_e)
    torch.testing.assert_close(g_c, g_e)


# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------


def _backward_twice(x, backend):
    grads = []
    for _ in range(2):
        with torchconv_ext.use_backend(backend):
            y = (
                TF.max_pool2d(x, 3, 1, 1).sum()
                + TF.avg_pool2d(x, 3, 2, 1, ceil_mode=True).sum()
                + TF.spatial_pyramid_pool(x, (1, 2, 3), "avg").sum()
                + TF.adaptive_max_pool2d(x, (4, 3)).sum()
            )
            grads.append(torch.autograd.grad(y, x)[0])
    return grads


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic_algorithms_and_bitwise_repeat(backend):
    x = torch.randint(0, 3, (2, 3, 5, 6)).to(torch.float32).requires_grad_()  # many ties
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = _backward_twice(x, backend)
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(first, second)


# --------------------------------------------------------------------------------------------
# GPU (skipped without CUDA): real shapes, reduced precision, >2**31 elements, determinism
# --------------------------------------------------------------------------------------------


GPU_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gpu_matches_torch(dtype, layout):
    """Real shapes against torch in float64 on the GPU: max values and indices exactly,
    averages and gradients to the dtype's rounding."""
    torch.manual_seed(0)
    x = torch.randn(8, 64, 55, 57, device="cuda").to(dtype)
    x[0, 0, :3, :3] = float("nan")
    x[1, 1] = float("-inf")
    x64 = x.double().requires_grad_()
    x = in_layout(x, layout).requires_grad_()
    tol = dict(rtol=GPU_TOL[dtype], atol=GPU_TOL[dtype], equal_nan=True)
    pyramid = (1, 2, 4)
    cases = [  # (ours, torch) on a tensor
        (
            lambda t: TF.max_pool2d(t, 3, 2, ceil_mode=True, return_indices=True),
            lambda t: F.max_pool2d(t, 3, 2, ceil_mode=True, return_indices=True),
        ),
        (
            lambda t: TF.max_pool2d(t, 2, 2, return_indices=True),
            lambda t: F.max_pool2d(t, 2, 2, return_indices=True),
        ),
        (
            lambda t: TF.adaptive_max_pool2d(t, (6, 7), return_indices=True),
            lambda t: F.adaptive_max_pool2d(t, (6, 7), return_indices=True),
        ),
        (
            lambda t: TF.avg_pool2d(t, 3, 2, 1, count_include_pad=False),
            lambda t: F.avg_pool2d(t, 3, 2, 1, count_include_pad=False),
        ),
        (lambda t: TF.adaptive_avg_pool2d(t, 7), lambda t: F.adaptive_avg_pool2d(t, 7)),
        (lambda t: TF.adaptive_avg_pool2d(t, 1), lambda t: F.adaptive_avg_pool2d(t, 1)),
        (
            lambda t: TF.spatial_pyramid_pool(t, pyramid),
            lambda t: torch.cat([F.adaptive_max_pool2d(t, lv).flatten(1) for lv in pyramid], 1),
        ),
    ]
    for ours, theirs in cases:
        got, want, layout_ref = ours(x), theirs(x64), theirs(x)
        got, want, layout_ref = (
            v if isinstance(v, tuple) else (v,) for v in (got, want, layout_ref)
        )
        if len(want) == 2:  # max: a copy of an input element and its index, exactly
            torch.testing.assert_close(got[0].double(), want[0], rtol=0, atol=0, equal_nan=True)
            assert torch.equal(got[1], want[1])
        else:
            torch.testing.assert_close(got[0].double(), want[0], **tol)
        assert significant_strides(got[0]) == significant_strides(layout_ref[0])
        gy = torch.randn(want[0].shape, device="cuda").to(dtype)
        (g,) = torch.autograd.grad(got[0], x, gy)
        (g64,) = torch.autograd.grad(want[0], x64, gy.double())
        torch.testing.assert_close(g.double(), g64, **tol)
    torch.testing.assert_close(TF.global_avg_pool(x).double(), x64.mean((2, 3)), **tol)


@pytest.mark.gpu
def test_gpu_deterministic_where_torch_is_not():
    x = torch.randn(16, 32, 28, 28, device="cuda", requires_grad=True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = _backward_twice(x, "auto")
        assert torch.equal(first, second)
        with pytest.raises(RuntimeError, match="deterministic"):
            F.adaptive_max_pool2d(x, (4, 3)).sum().backward()
    finally:
        torch.use_deterministic_algorithms(previous)


@pytest.mark.gpu
def test_gpu_beyond_int32_offsets():
    """> 2**31 elements: the kernels switch to int64 offsets."""
    free, _ = torch.cuda.mem_get_info()
    if free < 12 * 2**30:
        pytest.skip("needs 12 GiB of free GPU memory")
    x = torch.randn(1, 2, 2**30 + 7, device="cuda", dtype=torch.float16)
    y, idx = TF.max_pool1d(x, 4, 4, return_indices=True)
    tail = x[..., -(2**12 + 3) :]
    want, want_idx = F.max_pool1d(tail[..., 3:], 4, 4, return_indices=True)
    assert torch.equal(y[..., -want.shape[-1] :], want)
    assert torch.equal(idx[..., -want.shape[-1] :] - (x.shape[-1] - tail.shape[-1] + 3), want_idx)
    g = torch.autograd.grad(TF.avg_pool1d(x.requires_grad_(), 2).float().sum(), x)[0]
    assert g.dtype == torch.float16 and bool((g[..., -4:] == 0.5).all())
