"""Nearest upsampling's derivatives: the raw ops and the primitives on both backends, in float64.

* gradcheck and gradgradcheck through the registered ops ``upsample_nearest_fwd`` /
  ``upsample_nearest_bwd`` themselves (each differentiable through the other);
* derivatives to third order (``create_graph=True``) and a gradient penalty through a small
  network, against torch's ``F.interpolate``;
* the primitives on the fallback against torch over ranks, layouts, modes and geometries (the
  functional API sends these calls to ATen directly, so they are checked here);
* the launchers writing a channels-fastest output whose channel stride is not 1.

The Triton kernels run under the interpreter (tiny shapes, ``fast_mode`` gradchecks).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchconv_ext
import triton_kernels.upsample as kernels
from torchconv_ext._ops.upsample import upsample_nearest_bwd, upsample_nearest_fwd
from torchconv_ext._upsample_args import source_scales, upsample_geometry
from triton_kernels._common import as_5d, channels_inner

OPS = torch.ops.torchconv_ext
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]

# (input shape, output_size, scales, exact): the generic kernels (sizes, fractional scales, up
# and down) and the integer fast path (out = 2·in, scale 2), 1-d to 3-d.
RAW_CASES = [
    ((1, 2, 3, 2), [5, 1], [0.0, 0.0], False),
    ((1, 1, 2, 2, 2), [4, 4, 2], [2.0, 2.0, 1.0], True),
    ((2, 1, 3), [5], [1.7], True),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", RAW_CASES, ids=["2d-size", "3d-int", "1d-scale-exact"])
def test_raw_ops_gradcheck_and_gradgradcheck(backend, case):
    shape, out_size, scales, exact = case
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    go = torch.randn([*shape[:2], *out_size], dtype=torch.float64, requires_grad=True)
    fwd = lambda t: OPS.upsample_nearest_fwd(t, out_size, scales, exact)
    bwd = lambda t: OPS.upsample_nearest_bwd(t, list(shape), scales, exact)
    fast = backend == "triton"  # every interpreter launch costs: random projections there
    with torchconv_ext.use_backend(backend):
        assert torch.autograd.gradcheck(fwd, (x,), fast_mode=fast)
        assert torch.autograd.gradgradcheck(fwd, (x,), fast_mode=fast)
        assert torch.autograd.gradcheck(bwd, (go,), fast_mode=fast)
        if not fast:  # (on Triton the same two kernels as fwd's gradgradcheck)
            assert torch.autograd.gradgradcheck(bwd, (go,))


@pytest.mark.parametrize("backend", BACKENDS)
def test_primitives_are_each_others_adjoints(backend):
    """<fwd(x), y> == <x, bwd(y)>: the identity every derivative here rests on."""
    for shape, out_size, scales, exact in RAW_CASES:
        x = torch.randn(shape, dtype=torch.float64)
        y = torch.randn([*shape[:2], *out_size], dtype=torch.float64)
        with torchconv_ext.use_backend(backend):
            lhs = (upsample_nearest_fwd(x, out_size, scales, exact) * y).sum()
            rhs = (x * upsample_nearest_bwd(y, list(shape), scales, exact)).sum()
        torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


def _third_order(interp, x):
    """Gradients of order 1, 2 and 3 of a non-linear function of the upsampled ``x``."""
    y = interp(x)
    (g1,) = torch.autograd.grad((y**3).sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad((g1**2).sum(), x, create_graph=True)
    (g3,) = torch.autograd.grad((g2 * x).sum(), x)
    return g1, g2, g3


def _geometry(x, mode, size=None, scale_factor=None, recompute_scale_factor=None):
    return upsample_geometry(x, size, scale_factor, mode, None, recompute_scale_factor, False)


def _upsample(mode, **kwargs):
    """Nearest upsampling through the forward primitive (on either backend)."""
    return lambda t: upsample_nearest_fwd(t, *_geometry(t, mode, **kwargs).as_args())


@pytest.mark.parametrize(
    "backend,mode",
    [
        ("torch", "nearest"),
        ("torch", "nearest-exact"),
        pytest.param("triton", "nearest", marks=pytest.mark.interpret),
    ],
)
def test_derivatives_to_third_order_match_torch(backend, mode):
    base = torch.randn(1, 2, 3, 2, dtype=torch.float64)
    x = base.clone().requires_grad_()
    with torchconv_ext.use_backend(backend):
        ours = _third_order(_upsample(mode, scale_factor=(1.5, 2.0)), x)
    theirs = _third_order(
        lambda t: F.interpolate(t, scale_factor=(1.5, 2.0), mode=mode),
        base.clone().requires_grad_(),
    )
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


class _Decoder(nn.Module):
    """conv → nearest upsampling → conv, the upsampling given as a function."""

    def __init__(self, interp):
        super().__init__()
        self.interp = interp
        self.head = nn.Conv2d(2, 3, 1, dtype=torch.float64)
        self.tail = nn.Conv2d(3, 2, 3, padding=1, dtype=torch.float64)

    def forward(self, x):
        return self.tail(torch.tanh(self.interp(self.head(x))))


def _penalty_grads(model, x):
    """Gradients, w.r.t. every weight, of a gradient penalty on the input gradient."""
    loss = model(x).square().sum()
    (grad_x,) = torch.autograd.grad(loss, x, create_graph=True)
    penalty = grad_x.square().sum()
    return torch.autograd.grad(penalty, list(model.parameters()))


@pytest.mark.parametrize(
    "backend,mode",
    [
        ("torch", "nearest"),
        ("torch", "nearest-exact"),
        pytest.param("triton", "nearest-exact", marks=pytest.mark.interpret),
    ],
)
def test_gradient_penalty_matches_torch(backend, mode):
    """Second-order gradients through the upsampling reach the weights before and after it."""
    torch.manual_seed(0)
    theirs = _Decoder(lambda t: F.interpolate(t, scale_factor=(1.5, 2), mode=mode))
    ours = _Decoder(_upsample(mode, scale_factor=(1.5, 2)))
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        got = _penalty_grads(ours, x.clone().requires_grad_())
    expected = _penalty_grads(theirs, x.clone().requires_grad_())
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# The primitives on the fallback, against torch
# ---------------------------------------------------------------------------------------------


def _layout(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "channels_fastest":
        return x.movedim(1, -1).contiguous().movedim(-1, 1)
    if name == "strided":
        return x.repeat_interleave(2, dim=-1)[..., ::2]
    return x


FALLBACK_GRID = [
    ((2, 3, 7), dict(scale_factor=2.05)),
    ((2, 3, 7), dict(size=3)),
    ((2, 3, 5, 4), dict(scale_factor=(0.5, 1.5))),
    ((2, 3, 5, 4), dict(size=(9, 7))),
    ((1, 2, 3, 4, 2), dict(scale_factor=1.5, recompute_scale_factor=True)),
    ((1, 2, 3, 4, 2), dict(scale_factor=(1, 2, 3))),
]


@pytest.mark.parametrize("shape,kwargs", FALLBACK_GRID)
def test_primitives_on_the_fallback_are_torchs_op(shape, kwargs):
    """Values, strides and gradients equal torch's, bitwise, for every layout and mode."""
    base = torch.randn(shape, dtype=torch.float64)
    for lay in ("contiguous", "channels_fastest", "strided"):
        for mode in ("nearest", "nearest-exact"):
            x = _layout(base, lay).requires_grad_()
            geom = _geometry(x, mode, **kwargs)
            with torchconv_ext.use_backend("torch"):
                ours = upsample_nearest_fwd(x, *geom.as_args())
            theirs = F.interpolate(x, mode=mode, **kwargs)
            assert torch.equal(ours, theirs) and ours.stride() == theirs.stride()
            go = torch.randn_like(theirs)
            with torchconv_ext.use_backend("torch"):
                (g_ours,) = torch.autograd.grad(ours, x, go)
            (g_theirs,) = torch.autograd.grad(theirs, x, go)
            assert torch.equal(g_ours, g_theirs) and g_ours.stride() == g_theirs.stride()


# ---------------------------------------------------------------------------------------------
# Launchers: channels fastest without a unit channel stride
# ---------------------------------------------------------------------------------------------


def _channels_fastest_view(shape, stride_c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A NaN-filled ``(N, C, H, W)`` view whose channels vary fastest with stride ``stride_c``,
    and the buffer under it."""
    n, c, h, w = shape
    buf = torch.full((n, h, w, c * stride_c), float("nan"))
    return buf[..., ::stride_c].permute(0, 3, 1, 2), buf


@pytest.mark.interpret
@pytest.mark.parametrize(
    "kwargs", [dict(size=(5, 7)), dict(scale_factor=2)], ids=["generic", "int"]
)
def test_launchers_take_channels_fastest_tensors_with_channel_stride(kwargs):
    """``CHANNELS_INNER`` asks only that channels vary fastest: tensors with channel stride 2
    take that tile order and give torch's values and gradients (integer values: exact sums)."""
    values = torch.randint(-8, 8, (2, 3, 3, 4)).float()
    x, _ = _channels_fastest_view(values.shape, 2)
    x.copy_(values)
    expected = F.interpolate(values, **kwargs)
    geom = _geometry(values, "nearest", **kwargs)
    scale = source_scales(values.shape[2:], geom.output_size, geom.scales)

    out, out_buf = _channels_fastest_view(expected.shape, 2)
    assert channels_inner(as_5d(out)) and out.stride(1) == 2
    kernels.upsample_nearest_forward(x, out, scale, exact=False)
    assert torch.equal(out, expected)
    assert out_buf[..., 1::2].isnan().all()  # the gaps between channels are not written

    grad_out = torch.randint(-8, 8, expected.shape).float()
    xr = values.clone().requires_grad_()
    (expected_grad,) = torch.autograd.grad(F.interpolate(xr, **kwargs), xr, grad_out)
    grad_in, grad_buf = _channels_fastest_view(values.shape, 2)
    assert channels_inner(as_5d(grad_in))
    kernels.upsample_nearest_backward(grad_out, grad_in, scale, exact=False)
    assert torch.equal(grad_in, expected_grad)
    assert grad_buf[..., 1::2].isnan().all()
