"""Pooling derivatives beyond the first order, on both backends, against torch in float64.

The registered ops are differentiable themselves (gradcheck and gradgradcheck through
``torch.ops.torchconv_ext.*``, forward and backward ops), double backward works through the
functional API, and a gradient penalty — a function of the input gradient, differentiated with
respect to the weights of a later layer — gives torch's second-order gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
from torchconv_ext import functional as TF

OPS = torch.ops.torchconv_ext


def distinct(*shape: int, seed: int = 0, layout: str = "contiguous") -> torch.Tensor:
    """Well-separated float64 values (finite differences never swap a maximum)."""
    n = torch.Size(shape).numel()
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randperm(n, generator=gen).to(torch.float64) / n - 0.5).view(shape)
    if layout == "channels_last":
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)
    return x.requires_grad_()


def window_sums(t: torch.Tensor) -> torch.Tensor:
    """Sums over the 3x3 windows, stride 2, of a padded input."""
    return F.avg_pool2d(t, 3, 2, divisor_override=1)


def pyramid(t: torch.Tensor, levels, mode: str) -> torch.Tensor:
    """torch's definition of spatial pyramid pooling."""
    pool = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
    return torch.cat([pool(t, level).flatten(1) for level in levels], 1)


# (ours, torch's) for every kind of pooling, on a (N, C, 5, 4) input; several go through the
# fallback's own arithmetic (asymmetric 'same' padding, divisor_override) rather than ATen's.
PAIRS = {
    "max_pool": (
        lambda t: TF.max_pool2d(t, 3, 2, 1, dilation=(1, 2), ceil_mode=True),
        lambda t: F.max_pool2d(t, 3, 2, 1, dilation=(1, 2), ceil_mode=True),
    ),
    "max_pool_same": (
        lambda t: TF.max_pool2d(t, 2, 2, "same"),
        lambda t: F.max_pool2d(F.pad(t, (0, 0, 0, 1), value=float("-inf")), 2, 2),
    ),
    "avg_pool": (
        lambda t: TF.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False),
        lambda t: F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    ),
    "avg_pool_same": (
        lambda t: TF.avg_pool2d(t, 3, 2, "same"),
        lambda t: (
            window_sums(F.pad(t, (0, 1, 1, 1)))
            / window_sums(F.pad(torch.ones_like(t), (0, 1, 1, 1)))
        ),
    ),
    "avg_pool_divisor": (
        lambda t: TF.avg_pool2d(t, 2, 1, divisor_override=3),
        lambda t: F.avg_pool2d(t, 2, 1, divisor_override=3),
    ),
    "adaptive_max": (
        lambda t: TF.adaptive_max_pool2d(t, (2, 4)),
        lambda t: F.adaptive_max_pool2d(t, (2, 4)),
    ),
    "adaptive_avg": (
        lambda t: TF.adaptive_avg_pool2d(t, (3, 4)),
        lambda t: F.adaptive_avg_pool2d(t, (3, 4)),
    ),
    "pyramid_max": (
        lambda t: TF.spatial_pyramid_pool(t, (1, 2), "max"),
        lambda t: pyramid(t, (1, 2), "max"),
    ),
    "pyramid_avg": (
        lambda t: TF.spatial_pyramid_pool(t, (1, 3), "avg"),
        lambda t: pyramid(t, (1, 3), "avg"),
    ),
    "global": (
        lambda t: TF.global_max_pool(t) + TF.global_avg_pool(t),
        lambda t: F.adaptive_max_pool2d(t, 1).flatten(1) + t.mean((2, 3)),
    ),
}


#: One case per kernel path, for the Triton kernels under the (slow) interpreter.
TRITON_KINDS = (
    "max_pool",
    "avg_pool",
    "adaptive_max",
    "adaptive_avg",
    "pyramid_max",
    "pyramid_avg",
    "global",
)


# --------------------------------------------------------------------------------------------
# The raw ops: gradcheck and gradgradcheck, forward and backward ops
# --------------------------------------------------------------------------------------------

FIXED_GEOMETRIES = {
    # kernel_size, stride, padding, padding_end, dilation, ceil_mode, count_include_pad, divisor
    "max": [[3, 2], [2, 1], [1, 0], [1, 1], [1, 2], True, True, 0],
    "avg": [[3, 2], [2, 1], [1, 0], [1, 1], [1, 1], True, False, 0],
}


def _raw_cases(mode: str):
    """(forward op, its arguments after the input, backward op) per kind of pooling."""
    return [
        (OPS.pool_fwd, (mode, *FIXED_GEOMETRIES[mode]), OPS.pool_bwd),
        (OPS.adaptive_pool_fwd, (mode, [2, 4]), OPS.adaptive_pool_bwd),
        (OPS.pyramid_pool_fwd, (mode, [1, 2]), OPS.pyramid_pool_bwd),
    ]


def _check_raw(fwd, args, bwd, *, backward_op: bool) -> None:
    # fast_mode: random projections of the Jacobians (full ones take ~20x longer)
    x = distinct(1, 2, 4, 5, layout="channels_last")
    out, idx = fwd(x.detach(), *args)
    grad_out = distinct(*out.shape, seed=1)
    bwd_args = args if fwd is not OPS.adaptive_pool_fwd else args[:1]
    check_fwd = lambda t: fwd(t, *args)[0]
    check_bwd = lambda g: bwd(g, x.detach(), idx, *bwd_args)
    assert torch.autograd.gradcheck(check_fwd, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(check_fwd, (x,), fast_mode=True)
    if backward_op:
        assert torch.autograd.gradcheck(check_bwd, (grad_out,), fast_mode=True)
        assert torch.autograd.gradgradcheck(check_bwd, (grad_out,), fast_mode=True)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_raw_ops_gradcheck_and_gradgradcheck(mode):
    """Every forward and backward op, to second order, on the fallback."""
    with torchconv_ext.use_backend("torch"):
        for fwd, args, bwd in _raw_cases(mode):
            _check_raw(fwd, args, bwd, backward_op=True)


@pytest.mark.interpret
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_raw_ops_gradgradcheck_triton(mode):
    """The kernels under the forward op's checks (fixed windows; the second order reaches the
    backward op's own derivative. The other kinds, whose derivatives are the same code, are
    compared with torch below; the interpreter is slow)."""
    fwd, args, bwd = _raw_cases(mode)[0]
    with torchconv_ext.use_backend("triton"):
        _check_raw(fwd, args, bwd, backward_op=False)


def test_backward_op_gradient_wrt_input_is_zero():
    """The backward ops read their ``input`` for its shape only: its gradient is zero (torch
    says the same for its own pooling backward)."""
    x = distinct(1, 2, 5, 4)
    for mode in ("max", "avg"):
        for fwd, args, bwd in _raw_cases(mode):
            out, idx = fwd(x.detach(), *args)
            bwd_args = args if fwd is not OPS.adaptive_pool_fwd else args[:1]
            grad = bwd(torch.ones_like(out), x, idx, *bwd_args)
            (grad_x,) = torch.autograd.grad(grad.sum(), x)
            assert torch.equal(grad_x, torch.zeros_like(x))


# --------------------------------------------------------------------------------------------
# The functional API: double backward and a gradient penalty, against torch
# --------------------------------------------------------------------------------------------


def test_functional_gradgradcheck():
    x = distinct(1, 2, 5, 4)
    with torchconv_ext.use_backend("torch"):
        for name, (ours, _) in PAIRS.items():
            assert torch.autograd.gradgradcheck(ours, (x,), fast_mode=True), name


def test_double_backward_matches_torch():
    """d/dx and d/d(grad_output) of the input gradient, as torch gives them (for max pooling
    the former is zero, not an error)."""
    x = distinct(2, 2, 5, 4)
    for name, (ours, theirs) in PAIRS.items():
        results = []
        for fn in (ours, theirs):
            with torchconv_ext.use_backend("torch"):
                out = fn(x)
                grad_out = torch.linspace(-1, 1, out.numel(), dtype=torch.float64)
                grad_out = grad_out.view(out.shape).requires_grad_()
                (grad_x,) = torch.autograd.grad(out, x, grad_out, create_graph=True)
                probe = torch.cos(torch.arange(x.numel(), dtype=torch.float64)).view(x.shape)
                results.append(torch.autograd.grad((grad_x * probe).sum(), (x, grad_out)))
        torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12, msg=name)


# Every case on the fallback, one per kernel path on the Triton kernels.
PENALTY_CASES = [(kind, "torch") for kind in PAIRS] + [
    pytest.param(kind, "triton", marks=pytest.mark.interpret) for kind in TRITON_KINDS
]


@pytest.mark.parametrize(("kind", "backend"), PENALTY_CASES)
def test_gradient_penalty_reaches_later_layers(kind, backend):
    """penalty = ||d out / d x||² with a layer after the pooling (a 1x1 convolution, or a linear
    layer on pooled vectors) and a linear layer after that: its gradient w.r.t. both layers'
    weights equals torch's."""
    ours, theirs = PAIRS[kind]
    x = distinct(2, 2, 5, 4)
    pooled = theirs(x).shape
    gen = torch.Generator().manual_seed(2)
    first_shape = (3, 2, 1, 1) if len(pooled) == 4 else (3, pooled[1])
    first = torch.randn(first_shape, dtype=torch.float64, generator=gen).requires_grad_()
    width = 3 * (pooled[2] * pooled[3] if len(pooled) == 4 else 1)
    last = torch.randn(4, width, dtype=torch.float64, generator=gen).requires_grad_()

    def net(pool, t):
        y = pool(t)
        y = F.conv2d(y, first) if y.dim() == 4 else F.linear(y, first)
        return F.linear(torch.tanh(y.flatten(1)), last)

    results = []
    for fn, use in ((ours, backend), (theirs, "torch")):
        with torchconv_ext.use_backend(use):
            (grad_x,) = torch.autograd.grad(net(fn, x).sum(), x, create_graph=True)
            results.append(torch.autograd.grad(grad_x.pow(2).sum(), (first, last)))
    assert results[0][0].abs().sum() > 0 and results[0][1].abs().sum() > 0
    torch.testing.assert_close(results[0], results[1], rtol=1e-10, atol=1e-12)


def test_gradient_penalty_through_adaptive_avg_pool_and_linear():
    """The classic case: adaptive_avg_pool2d, flatten, a linear layer (the default backend)."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 7, 6, dtype=torch.float64, requires_grad=True)
    linear = torch.nn.Linear(4 * 4, 5).double()
    grads = []
    for pool in (TF.adaptive_avg_pool2d, F.adaptive_avg_pool2d):
        out = linear(pool(x, 2).flatten(1))
        (grad_x,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        grads.append(torch.autograd.grad(grad_x.pow(2).sum(), (linear.weight, linear.bias)))
    assert grads[0][0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)


def test_third_order_matches_torch():
    """Every derivative is written with differentiable pieces: the third order exists too."""
    x = distinct(1, 2, 5, 4)
    for name in ("avg_pool", "adaptive_max", "pyramid_avg"):
        ours, theirs = PAIRS[name]
        results = []
        for fn in (ours, theirs):
            with torchconv_ext.use_backend("torch"):
                out = fn(x)
                (g1,) = torch.autograd.grad(out.pow(3).sum(), x, create_graph=True)
                (g2,) = torch.autograd.grad(g1.pow(2).sum(), x, create_graph=True)
                results.append(torch.autograd.grad(g2.sin().sum(), x))
        torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_windows_that_miss_the_input_send_nothing_through_any_derivative(backend):
    """A dilated window can step over a small input: its index (its first tap's, past the
    row) is no input element, so its jvp and every gradient through it is zero, while the
    windows that hold input elements keep theirs."""
    x = distinct(1, 2, 3, 2)
    # 'same' pads the width by 1 and 2: taps -1 and 2 (none in the row), then 0 and 3
    kernel, dilation, pads = 2, (1, 3), [1, 2, 0, 1]

    def pool(t):
        return TF.max_pool2d(t, kernel, 1, "same", dilation)

    def reference(t):
        return F.max_pool2d(F.pad(t, pads, value=float("-inf")), kernel, 1, 0, dilation)

    tangent = torch.randn(x.shape, dtype=torch.float64)
    gy = torch.randn(1, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    results = []
    for call, on in ((pool, backend), (reference, "torch")):
        with torchconv_ext.use_backend(on):
            y, t_y = torch.func.jvp(call, (x.detach(),), (tangent,))
            (g,) = torch.autograd.grad(call(x), x, gy, create_graph=True)
            (gg,) = torch.autograd.grad((g * tangent).sum(), gy)
        results.append((y, t_y, g, gg))
    assert (results[1][0][..., 0] == float("-inf")).all() and results[1][0][..., 1].isfinite().all()
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_torchs_own_padding_with_windows_that_miss_the_input(backend):
    """torch's arguments can make such windows too (padding 1, dilation 2 over a 1-wide row):
    ours computes them on either backend — CPU torch's backward would write their gradient
    out of bounds —, and an ordinary dilated call still goes to torch's op on the fallback."""
    x = distinct(1, 2, 3, 1)
    tangent = torch.randn(x.shape, dtype=torch.float64)

    def pool(t):
        return TF.max_pool2d(t, (1, 2), 1, (0, 1), (1, 2))

    with torchconv_ext.use_backend(backend):
        y, t_y = torch.func.jvp(pool, (x.detach(),), (tangent,))
        gy = torch.randn(y.shape, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(pool(x), x, gy, create_graph=True)
        (gg,) = torch.autograd.grad((g * tangent).sum(), gy)
        z = distinct(1, 2, 6, 6).detach()
        ordinary = TF.max_pool2d(z, 2, 1, 1, 2, return_indices=True)
    assert (y == float("-inf")).all()
    assert not t_y.any() and not g.any() and not gg.any()
    want = F.max_pool2d(z, 2, 1, 1, 2, return_indices=True)
    assert torch.equal(ordinary[0], want[0]) and torch.equal(ordinary[1], want[1])
