"""Fixed-window max / average pooling vs torch in float64, both backends, forward and backward.

Every batch stacks four kinds of input (random, NaN-laden, -inf-laden, tie-heavy integers), so
each call checks NaN propagation (index at the NaN), first-maximum ties and -inf windows at once.
The fallback runs the brute-force grid of (kernel, stride, padding, dilation, ceil_mode,
count_include_pad, divisor_override) × layouts; the Triton kernels (interpreter on CPU) a chosen
part of it, each case in one of the layouts.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchconv_ext
from tests.references.pool import (
    LAYOUTS,
    in_layout,
    reference_pool,
    significant_strides,
    special_batch,
    tf_same_pads,
)
from torchconv_ext import functional as TF

OURS = {
    "max": {1: TF.max_pool1d, 2: TF.max_pool2d, 3: TF.max_pool3d},
    "avg": {1: TF.avg_pool1d, 2: TF.avg_pool2d, 3: TF.avg_pool3d},
}


def _torch_avg_pool1d(
    x,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """torch's avg_pool1d, which is avg_pool2d of (N, C, 1, L), with divisor_override too."""

    def two(v):
        return None if v is None else (1, v if isinstance(v, int) else v[0])

    out = F.avg_pool2d(
        x.unsqueeze(-2),
        two(kernel_size),
        two(stride),
        (0, two(padding)[1]),
        ceil_mode,
        count_include_pad,
        divisor_override,
    )
    return out.squeeze(-2)


TORCH = {
    "max": {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d},
    "avg": {1: _torch_avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d},
}


def check_case(mode, nd, kwargs, layout, backend, dtype=torch.float64, x=None):
    """Ours vs torch on the special batch: values, indices and strides exactly (max) or to
    rounding (avg); the input gradient likewise. Where torch refuses, ours must too."""
    x = special_batch(nd) if x is None else x
    x = in_layout(x.to(dtype), layout).requires_grad_()
    ref_fn, our_fn = TORCH[mode][nd], OURS[mode][nd]
    extra = {"return_indices": True} if mode == "max" else {}
    try:
        want = ref_fn(x, **kwargs, **extra)
    except RuntimeError:
        with pytest.raises(RuntimeError), torchconv_ext.use_backend(backend):
            our_fn(x, **kwargs, **extra)
        return False
    with torchconv_ext.use_backend(backend):
        got = our_fn(x, **kwargs, **extra)
    got, want = (got, want) if mode == "max" else ((got,), (want,))
    tol = dict(rtol=0, atol=0) if mode == "max" else dict(rtol=1e-12, atol=1e-12)
    msg = f"{mode}{nd}d {kwargs} {layout} {backend}"
    torch.testing.assert_close(got[0], want[0], equal_nan=True, **tol, msg=lambda m: f"{msg}: {m}")
    assert significant_strides(got[0]) == significant_strides(want[0]), msg
    if mode == "max":
        assert significant_strides(got[1]) == significant_strides(want[1]), msg
    x_sem, want_sem = x, want
    if mode == "max" and nd == 3 and layout == "channels_last" and backend != "torch":
        # ATen's channels-last 3-d CPU kernel drops the depth term of an all -inf window's index
        # (and its gradient follows it); its contiguous kernel (and our Triton kernel) does not.
        # The fallback is torch's own op, so it matches torch as it is.
        x_sem = x.detach().contiguous().requires_grad_()
        want_sem = ref_fn(x_sem, **kwargs, **extra)
    if mode == "max":
        torch.testing.assert_close(
            got[1], want_sem[1], rtol=0, atol=0, msg=lambda m: f"{msg} indices: {m}"
        )

    gy = torch.randn(want[0].shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (g_want,) = torch.autograd.grad(want_sem[0], x_sem, gy.to(dtype), retain_graph=True)
    with torchconv_ext.use_backend(backend):
        (g_got,) = torch.autograd.grad(got[0], x, gy.to(dtype))
    torch.testing.assert_close(
        g_got, g_want, rtol=1e-12, atol=1e-12, msg=lambda m: f"{msg} grad: {m}"
    )
    (g_layout,) = torch.autograd.grad(want[0], x, gy.to(dtype))
    assert significant_strides(g_got) == significant_strides(g_layout), f"{msg} grad strides"
    return True


def grid(mode: str):
    """The brute-force grid: scalar arguments of every combination, then mixed per-dim ones."""
    dilations = (1, 2) if mode == "max" else (1,)
    for k, s, p, d, ceil in itertools.product(
        (1, 2, 3), (1, 2, 3), (0, 1), dilations, (False, True)
    ):
        if p > k // 2:
            continue
        base = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil)
        if mode == "max":
            yield dict(base, dilation=d)
        else:  # count_include_pad is moot with a divisor_override
            for cip, div in ((True, None), (False, None), (True, 3)):
                yield dict(base, count_include_pad=cip, divisor_override=div)


def mixed(nd: int, mode: str) -> list[dict]:
    """Different arguments per dim, and a default stride."""
    k, s, p = (2, 3, 2)[-nd:], (1, 2, 2)[-nd:], (1, 1, 0)[-nd:]
    cases = [dict(kernel_size=k, stride=s, padding=p, ceil_mode=True), dict(kernel_size=2)]
    if mode == "max":
        cases[0]["dilation"] = (2, 1, 2)[-nd:]
    else:
        cases[0]["count_include_pad"] = False
    return cases


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_fallback_grid(mode, nd, layout):
    ran = sum(check_case(mode, nd, kw, layout, "torch") for kw in [*grid(mode), *mixed(nd, mode)])
    assert ran > 20  # most of the grid is valid for these sizes


# The Triton kernels run a chosen part of the grid (every interpreter launch costs time): the
# classic shapes, overlapping / gapped windows, dilation, ceil_mode's clipped and dropped last
# windows, both divisor rules and overrides; each case in one layout, round-robin.
TRITON_CASES = [
    ("max", 2, dict(kernel_size=2, stride=2)),
    ("max", 2, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("max", 2, dict(kernel_size=3, stride=1, padding=1, dilation=2)),
    (
        "max",
        2,
        dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1), ceil_mode=True),
    ),
    ("max", 2, dict(kernel_size=3, stride=3, ceil_mode=True)),
    ("max", 2, dict(kernel_size=1, stride=2)),
    ("max", 1, dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)),
    ("max", 3, dict(kernel_size=2, stride=(1, 2, 1), padding=1, ceil_mode=True)),
    ("avg", 2, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("avg", 2, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("avg", 2, dict(kernel_size=2, stride=1, padding=1, divisor_override=3)),
    ("avg", 2, dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), count_include_pad=False)),
    ("avg", 2, dict(kernel_size=3, stride=3, ceil_mode=True, divisor_override=-2)),
    ("avg", 1, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("avg", 3, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
]


@pytest.mark.interpret
@pytest.mark.parametrize("i", range(len(TRITON_CASES)))
def test_triton_grid(i):
    mode, nd, kwargs = TRITON_CASES[i]
    assert check_case(mode, nd, kwargs, LAYOUTS[i % 3], "triton")


@pytest.mark.interpret
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_triton_spans_tiles(mode):
    """Several position and channel tiles (masks at every tile edge), both layouts."""
    x = special_batch(2, channels=9, sizes=(9, 10))[:2]
    kwargs = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    for layout in ("contiguous", "channels_last"):
        assert check_case(mode, 2, kwargs, layout, "triton", x=x)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_reduced_precision(backend):
    """fp32 / fp16 (and bf16 on the fallback; the interpreter has no bf16) vs fp64 torch:
    max exact, average within twice torch's own error in that dtype."""
    dtypes = [torch.float32, torch.float16] + ([torch.bfloat16] if backend == "torch" else [])
    x = special_batch(2)[[0, 3]]
    for dtype, layout in zip(dtypes, ("channels_last", "contiguous", "strided")):
        xl = in_layout(x.to(dtype), layout)
        with torchconv_ext.use_backend(backend):
            got, idx = TF.max_pool2d(xl, 3, 2, 1, return_indices=True)
            avg = TF.avg_pool2d(xl, 3, 2, 1, ceil_mode=True)
        want, want_idx = F.max_pool2d(xl, 3, 2, 1, return_indices=True)
        assert got.dtype == dtype and torch.equal(got, want) and torch.equal(idx, want_idx)
        exact = F.avg_pool2d(xl.double(), 3, 2, 1, ceil_mode=True)
        torch_err = (F.avg_pool2d(xl, 3, 2, 1, ceil_mode=True).double() - exact).abs().max()
        assert avg.dtype == dtype
        assert (avg.double() - exact).abs().max() <= 2 * torch_err + 1e-6


# --------------------------------------------------------------------------------------------
# TensorFlow-style padding
# --------------------------------------------------------------------------------------------

SAME_CASES = [  # (nd, kernel, stride, dilation)
    (2, 3, 2, 1),
    (2, (2, 4), (1, 3), 1),
    (2, 2, 1, 2),
    (1, 4, 3, 1),
    (3, (2, 3, 2), 2, 1),
]


def _same_check(backend, layouts):
    for (nd, k, s, d), layout in zip(SAME_CASES, itertools.cycle(layouts)):
        x = special_batch(nd)
        # The border holds the largest values, so a padded position would lose anyway; the
        # -inf-laden sample is what tests that padding never wins.
        kt = (k,) * nd if isinstance(k, int) else k
        st = (s,) * nd if isinstance(s, int) else s
        pads = [tf_same_pads(size, ki, si, d) for size, ki, si in zip(x.shape[2:], kt, st)]
        want, want_idx = reference_pool(x, "max", k, s, pads, d)
        xl = in_layout(x, layout).requires_grad_()
        with torchconv_ext.use_backend(backend):
            got, idx = OURS["max"][nd](xl, k, s, "same", d, return_indices=True)
            avg = OURS["avg"][nd](xl, k, s, "same")  # count_include_pad=True is ignored
            valid = OURS["avg"][nd](xl, k, s, "valid")
        assert got.shape[2:] == tuple(-(-n // si) for n, si in zip(x.shape[2:], st))
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(idx, want_idx, rtol=0, atol=0)
        avg_pads = [tf_same_pads(size, ki, si) for size, ki, si in zip(x.shape[2:], kt, st)]
        want_avg, _ = reference_pool(x, "avg", k, s, avg_pads, count_include_pad=False)
        torch.testing.assert_close(avg, want_avg, rtol=1e-12, atol=1e-12, equal_nan=True)
        torch.testing.assert_close(valid, TORCH["avg"][nd](x, k, s), equal_nan=True)

        # Gradients: the reference's autograd through torch ops on the explicit windows.
        xr = x.clone().nan_to_num_(0.0, posinf=0.0, neginf=0.0).requires_grad_()
        xo = in_layout(xr.detach(), layout).requires_grad_()
        with torchconv_ext.use_backend(backend):
            y = OURS["avg"][nd](xo, k, s, "same")
            ym = OURS["max"][nd](xo, k, s, "same", d)
        gy = torch.randn(y.shape, dtype=torch.float64)
        (g,) = torch.autograd.grad(y, xo, gy)
        (gm,) = torch.autograd.grad(ym, xo, gy)
        yr, _ = reference_pool_differentiable(xr, k, s, avg_pads)
        (gr,) = torch.autograd.grad(yr, xr, gy)
        torch.testing.assert_close(g, gr, rtol=1e-12, atol=1e-12)
        _, ref_idx = reference_pool(xr.detach(), "max", k, s, pads, d)
        gm_want = torch.zeros_like(xr).flatten(2).scatter_add_(2, ref_idx.flatten(2), gy.flatten(2))
        torch.testing.assert_close(gm, gm_want.view_as(xr), rtol=1e-12, atol=1e-12)


def reference_pool_differentiable(x, k, s, pads):
    """'same' average pooling from differentiable torch ops: window sums over zero padding
    divided by the number of in-range elements of each window."""
    nd = x.dim() - 2
    taps = math.prod((k,) * nd if isinstance(k, int) else k)
    flat = [v for pair in reversed(pads) for v in pair]
    sums = TORCH["avg"][nd](F.pad(x, flat), k, s) * taps
    counts = TORCH["avg"][nd](F.pad(torch.ones_like(x[:1, :1]), flat), k, s) * taps
    return sums / counts, None


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_same_padding(backend):
    layouts = LAYOUTS if backend == "torch" else ("channels_last", "strided", "contiguous")
    _same_check(backend, layouts)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_same_max_pooling_pads_past_half_the_kernel_and_empty_windows(backend):
    """TensorFlow's 'same' with a dilation can pad more than half the kernel (ATen's padding
    argument refuses that) and leave windows that hold no input element: -inf, the first tap's
    index, and no gradient (ATen's CPU backward would write out of bounds for them)."""
    gen = torch.Generator().manual_seed(0)
    for shape, kernel, stride, dilation, pads in (
        ((2, 3, 4, 5), (4, 1), (3, 1), (2, 1), [(3, 3), (0, 0)]),  # 3 > 4 // 2 rows each side
        ((1, 2, 3, 1), (1, 2), 1, (1, 2), [(0, 0), (1, 1)]),  # taps -1 and 1 of a 1-wide row
    ):
        x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
        with torchconv_ext.use_backend(backend):
            y, idx = TF.max_pool2d(x, kernel, stride, "same", dilation, return_indices=True)
            gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
            (grad,) = torch.autograd.grad(y, x, gy)
        padded = F.pad(x, [v for pair in reversed(pads) for v in pair], value=-math.inf)
        want = F.max_pool2d(padded, kernel, stride, 0, dilation)
        torch.testing.assert_close(y, want, rtol=0, atol=0)
        torch.testing.assert_close(grad, torch.autograd.grad(want, x, gy)[0], rtol=0, atol=0)
    assert idx.flatten().tolist() == [1, 2, 3, 1, 2, 3]  # each row's tap at width 1
    assert (y == -math.inf).all() and not grad.any()


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_same_3d_average_pooling_of_an_input_smaller_than_the_kernel(backend):
    """ATen's 3-d average pooling refuses an input smaller than its kernel, padding or not;
    'same' pads it to the kernel's size."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 4, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    with torchconv_ext.use_backend(backend):
        y = TF.avg_pool3d(x, (3, 4, 4), (3, 3, 2), "same")
        gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
        (g,) = torch.autograd.grad(y, x, gy)
    want, _ = reference_pool_differentiable(x, (3, 4, 4), (3, 3, 2), [(1, 1), (1, 1), (1, 1)])
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, torch.autograd.grad(want, x, gy)[0], rtol=1e-12, atol=1e-12)


def test_reference_agrees_with_torch():
    """The definition-based reference (used for 'same') matches torch where torch applies."""
    rename = {"kernel_size": "kernel", "padding": "pads"}
    for nd, mode in itertools.product((1, 2, 3), ("max", "avg")):
        x = special_batch(nd)
        for kw in list(grid(mode))[::7] + mixed(nd, mode):
            extra = {"return_indices": True} if mode == "max" else {}
            try:
                want = TORCH[mode][nd](x, **kw, **extra)
            except RuntimeError:
                continue
            got = reference_pool(x, mode, **{rename.get(a, a): v for a, v in kw.items()})
            if mode == "max":
                torch.testing.assert_close(got[0], want[0], rtol=0, atol=0, equal_nan=True)
                torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
            else:
                torch.testing.assert_close(got[0], want, rtol=1e-12, atol=1e-12, equal_nan=True)


# --------------------------------------------------------------------------------------------
# The rules spelled out, and random geometries
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_ceil_mode_and_divisor_rules_by_hand(backend):
    x = torch.arange(6.0, dtype=torch.float64).view(1, 1, 6)
    with torchconv_ext.use_backend(backend):
        # ceil_mode: 4 windows start at -1, 1, 3, 5; the last one covers input 5, the right
        # padding (6) and a position past the padded input (7).
        incl = TF.avg_pool1d(x, 3, 2, 1, ceil_mode=True)
        excl = TF.avg_pool1d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
        over = TF.avg_pool1d(x, 3, 2, 1, ceil_mode=True, divisor_override=4)
        # A window that would start in the right padding is dropped: 3 outputs, not 4.
        dropped = TF.max_pool1d(x[..., :5], 2, 2, 1, ceil_mode=True, return_indices=True)
    torch.testing.assert_close(
        incl[0, 0], torch.tensor([1 / 3, 6 / 3, 12 / 3, 5 / 2], dtype=torch.float64)
    )
    torch.testing.assert_close(
        excl[0, 0], torch.tensor([1 / 2, 6 / 3, 12 / 3, 5 / 1], dtype=torch.float64)
    )
    torch.testing.assert_close(
        over[0, 0], torch.tensor([1 / 4, 6 / 4, 12 / 4, 5 / 4], dtype=torch.float64)
    )
    assert dropped[0].tolist() == [[[0.0, 2.0, 4.0]]] and dropped[1].tolist() == [[[0, 2, 4]]]


@st.composite
def geometries(draw):
    k = draw(st.integers(1, 4))
    kwargs = dict(
        kernel_size=k,
        stride=draw(st.integers(1, 4)),
        padding=draw(st.integers(0, k // 2)),
        ceil_mode=draw(st.booleans()),
    )
    mode = draw(st.sampled_from(["max", "avg"]))
    if mode == "max":
        kwargs["dilation"] = draw(st.integers(1, 3))
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
    sizes = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    return mode, kwargs, sizes, draw(st.sampled_from(LAYOUTS))


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(geometries())
def test_random_geometries_fallback(case):
    mode, kwargs, sizes, layout = case
    check_case(mode, 2, kwargs, layout, "torch", x=special_batch(2, channels=2, sizes=sizes))


@pytest.mark.interpret
@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(geometries())
def test_random_geometries_triton(case):
    mode, kwargs, sizes, layout = case
    check_case(mode, 2, kwargs, layout, "triton", x=special_batch(2, channels=2, sizes=sizes))
