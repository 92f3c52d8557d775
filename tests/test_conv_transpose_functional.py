"""Transposed convolution numerics, both backends, against torch in float64: forward and every
gradient, layouts, unbatched and empty inputs, gradcheck, random geometries."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchconv_ext
from torchconv_ext import functional as TF

OURS = {1: TF.conv_transpose1d, 2: TF.conv_transpose2d, 3: TF.conv_transpose3d}
TORCH = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}

# (ndim, N, C_in, C_out, spatial, kernel, stride, padding, output_padding, groups, dilation)
CASES = [
    (1, 2, 3, 4, (5,), (3,), 2, 1, 1, 1, 1),
    (1, 1, 4, 2, (4,), (4,), 3, "same", 0, 2, 1),
    (1, 1, 2, 3, (4,), (2,), 4, "same", 0, 1, 1),  # stride > kernel: 'same' extends
    (2, 1, 2, 1, (8, 3), (3, 1), 2, "same", 0, 1, 1),  # 'same' crops one dim, extends the other
    (2, 2, 4, 6, (4, 5), (2, 2), 2, 0, 0, 1, 1),  # U-Net up-step 2×2/2
    (2, 1, 3, 2, (3, 4), (4, 4), 2, 1, 0, 1, 1),  # DCGAN 4×4/2
    (2, 1, 4, 4, (4, 3), (3, 3), (2, 3), (1, 0), (1, 2), 4, 1),  # depthwise, odd strides
    (2, 1, 2, 4, (4, 4), (3, 2), 2, 1, (0, 1), 2, (2, 1)),  # grouped, dilated
    (2, 1, 3, 5, (3, 4), (3, 3), 2, "valid", 0, 1, 1),
    (2, 2, 20, 3, (3, 3), (3, 3), 1, 1, 0, 1, 1),  # C_in not a multiple of 16
    (3, 1, 2, 3, (3, 2, 3), (2, 2, 2), 2, 0, 0, 1, 1),  # 3D U-Net up-step
    (3, 1, 2, 2, (2, 3, 2), (3, 3, 3), 2, "same", 0, 1, 1),
]


def _id(c):
    nd, n, ci, co, size, k, s, p, op, g, d = c
    return f"{nd}d-c{ci}-{co}-k{'x'.join(map(str, k))}-s{s}-p{p}-op{op}-g{g}-d{d}"


def reference(x, w, b, s, p, op, g, d):
    """torch's conv_transpose; 'same'/'valid' by cropping or extending torch's full output."""
    nd = w.dim() - 2
    if not isinstance(p, str):
        return TORCH[nd](x, w, b, s, p, op, g, d)
    full = TORCH[nd](x, w, None, s, 0, 0, g, d)
    if p == "same":
        strides = (s,) * nd if isinstance(s, int) else s
        pads = []
        for i, stride in zip(x.shape[2:], strides):
            pads.append((i * stride, full.shape[2 + len(pads)]))
        for dim, (target, size) in enumerate(pads):
            crop = size - target
            start = max(crop, 0) // 2
            full = full.narrow(2 + dim, start, min(size - start, target))
            if full.shape[2 + dim] < target:  # extend with zeros at the end
                extra = list(full.shape)
                extra[2 + dim] = target - full.shape[2 + dim]
                full = torch.cat([full, full.new_zeros(extra)], 2 + dim)
    return full if b is None else full + b.view(-1, *[1] * nd)


def _inputs(case, dtype=torch.float64, channels_last=False, bias=True, seed=0):
    nd, n, ci, co, size, k, s, p, op, g, d = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, ci, *size, generator=gen, dtype=torch.float64).to(dtype)
    if channels_last and nd > 1:
        x = x.contiguous(memory_format=torch.channels_last if nd == 2 else torch.channels_last_3d)
    w = torch.randn(ci, co // g, *k, generator=gen, dtype=torch.float64).to(dtype)
    b = torch.randn(co, generator=gen, dtype=torch.float64).to(dtype) if bias else None
    return [t.requires_grad_() if t is not None else None for t in (x, w, b)]


def check(
    case, backend, dtype=torch.float64, channels_last=False, bias=True, atol=1e-10, rtol=1e-7
):
    nd, n, ci, co, size, k, s, p, op, g, d = case
    x, w, b = _inputs(case, dtype, channels_last, bias)
    with torchconv_ext.use_backend(backend):
        y = OURS[nd](x, w, b, s, p, op, g, d)
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b) if t is not None]
    ref = reference(*leaves[:2], leaves[2] if bias else None, s, p, op, g, d)
    torch.testing.assert_close(y.double(), ref, atol=atol, rtol=rtol)
    gy = torch.randn_like(ref)
    with torchconv_ext.use_backend(backend):
        grads = torch.autograd.grad(y, [t for t in (x, w, b) if t is not None], gy.to(dtype))
    for got, want in zip(grads, torch.autograd.grad(ref, leaves, gy)):
        torch.testing.assert_close(got.double(), want, atol=atol * 10, rtol=rtol)
    return y


@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("channels_last", [False, True])
def test_fallback_matches_torch(case, channels_last):
    check(case, "torch", channels_last=channels_last)


@pytest.mark.interpret
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_triton_matches_torch(case):
    check(case, "triton", channels_last=case[0] == 2, bias=case[0] != 3)


@pytest.mark.interpret
@pytest.mark.parametrize(
    "dtype,atol,rtol", [(torch.float32, 1e-4, 1e-4), (torch.float16, 2e-2, 1e-2)]
)
def test_triton_low_precision(dtype, atol, rtol):
    check(CASES[4], "triton", dtype=dtype, atol=atol, rtol=rtol)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_output_layout_unbatched_and_empty(backend):
    x = torch.randn(2, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 3, 3, 3)
    with torchconv_ext.use_backend(backend):
        y = TF.conv_transpose2d(x, w, stride=2)
        assert y.stride() == F.conv_transpose2d(x, w, stride=2).stride()
        torch.testing.assert_close(
            TF.conv_transpose2d(x[0], w, stride=2), F.conv_transpose2d(x[0], w, stride=2)
        )
        empty = TF.conv_transpose2d(x[:0], w, stride=2)
        assert empty.shape == (0, 3, 11, 11)


@pytest.mark.interpret
@pytest.mark.parametrize("layouts", [(x, w, g) for x in (0, 1) for w in (0, 1) for g in (0, 1)])
def test_gradient_layouts_like_aten(layouts):
    """ATen computes every gradient of a convolution in the layout its input and weight give
    (the incoming gradient is converted to it): so does ours, whatever the incoming gradient's
    layout."""

    def laid_out(t, channels_last):
        return t.contiguous(memory_format=torch.channels_last) if channels_last else t

    x = laid_out(torch.randn(2, 4, 5, 5, dtype=torch.float64), layouts[0]).requires_grad_()
    w = laid_out(torch.randn(4, 6, 3, 3, dtype=torch.float64), layouts[1]).requires_grad_()
    ref = F.conv_transpose2d(x, w, stride=2, padding=1)
    gy = laid_out(torch.randn(ref.shape, dtype=torch.float64), layouts[2])
    with torchconv_ext.use_backend("triton"):
        y = TF.conv_transpose2d(x, w, stride=2, padding=1)
    for ours, theirs in zip(
        torch.autograd.grad(y, (x, w), gy), torch.autograd.grad(ref, (x, w), gy)
    ):
        torch.testing.assert_close(ours, theirs)
        assert ours.stride() == theirs.stride()


@pytest.mark.interpret
@pytest.mark.parametrize("shapes", [((2, 4, 5, 5), (4, 6, 3, 3)), ((2, 1, 5, 5), (1, 4, 3, 3))])
def test_repeated_calls_take_each_layout_as_aten(shapes):
    """A remembered opening decides the result's layout on every call (contiguous operands of
    most shapes by their contiguity alone; a single input channel by ATen's full rule):
    each mix of layouts, in turn with one signature, gets ATen's strides and values."""
    x_shape, w_shape = shapes
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(x_shape, generator=g, dtype=torch.float64)
    w0 = torch.randn(w_shape, generator=g, dtype=torch.float64)
    with torchconv_ext.use_backend("triton"):
        for _ in range(2):
            for x_cl, w_cl in ((0, 0), (1, 0), (0, 1), (1, 1), (0, 0)):
                x = x0.contiguous(memory_format=torch.channels_last) if x_cl else x0
                w = w0.contiguous(memory_format=torch.channels_last) if w_cl else w0
                ours = TF.conv_transpose2d(x, w, stride=2)
                theirs = F.conv_transpose2d(x, w, stride=2)
                torch.testing.assert_close(ours, theirs)
                assert ours.stride() == theirs.stride(), (x_cl, w_cl)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_gradcheck(backend):
    for case in (CASES[1], CASES[5]):
        nd, n, ci, co, size, k, s, p, op, g, d = case
        x, w, b = _inputs(case)
        with torchconv_ext.use_backend(backend):
            assert torch.autograd.gradcheck(
                lambda x, w, b: OURS[nd](x, w, b, s, p, op, g, d),
                (x, w, b),
                fast_mode=backend == "triton",
            )


_config = st.fixed_dictionaries(
    {
        "nd": st.integers(1, 2),
        "groups": st.integers(1, 2),
        "cin": st.integers(1, 3),
        "cout": st.integers(1, 3),
        "kernel": st.integers(1, 4),
        "stride": st.integers(1, 4),
        "dilation": st.integers(1, 2),
        "padding": st.one_of(st.integers(0, 2), st.sampled_from(["same", "valid"])),
        "output_padding": st.integers(0, 3),
        "size": st.integers(1, 5),
    }
)


def _random_case(c):
    nd, s, d = c["nd"], c["stride"], c["dilation"]
    op = 0 if isinstance(c["padding"], str) else c["output_padding"] % max(s, d)
    span = d * (c["kernel"] - 1) + 1
    size = max(
        c["size"],
        math.ceil((2 * (0 if isinstance(c["padding"], str) else c["padding"]) + 1 - span) / s) + 1,
    )
    return (
        nd,
        1,
        c["groups"] * c["cin"],
        c["groups"] * c["cout"],
        (size,) * nd,
        (c["kernel"],) * nd,
        s,
        c["padding"],
        op,
        c["groups"],
        d,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_config)
def test_property_fallback(c):
    check(_random_case(c), "torch")


@pytest.mark.interpret
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_config)
def test_property_triton(c):
    check(_random_case(c), "triton")
