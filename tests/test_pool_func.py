"""Pooling under torch.func: vmap, grad, jacrev, jacfwd / jvp and functional_call on every kind
of pooling, both backends, against torch in float64.

vmap runs each primitive's own batching rule, which folds the vmapped dim into the batch (or
channel) dim — one call, no copy where the strides allow it.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.func as tf
import torch.nn.functional as F
from torch import nn

import torchconv_ext
from torchconv_ext import functional as TF
from torchconv_ext._ops import pool as pool_ops

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]


def distinct(*shape: int, seed: int = 0) -> torch.Tensor:
    """Well-separated float64 values: no ties, so every maximum is unique."""
    n = torch.Size(shape).numel()
    gen = torch.Generator().manual_seed(seed)
    return (torch.randperm(n, generator=gen).to(torch.float64) / n - 0.5).view(shape)


def pyramid(t: torch.Tensor, levels, mode: str) -> torch.Tensor:
    pool = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
    return torch.cat([pool(t, level).flatten(1) for level in levels], 1)


# (ours, torch's) on a (C, H, W) or (N, C, H, W) input; max pooling returns its indices too.
PAIRS = {
    "max_pool": (
        lambda t: TF.max_pool2d(t, 3, 2, 1, ceil_mode=True, return_indices=True),
        lambda t: F.max_pool2d(t, 3, 2, 1, ceil_mode=True, return_indices=True),
    ),
    "max_pool_same": (
        lambda t: TF.max_pool2d(t, 2, 2, "same"),
        lambda t: F.max_pool2d(F.pad(t, (0, 0, 0, 1), value=float("-inf")), 2, 2),
    ),
    "avg_pool": (
        lambda t: TF.avg_pool2d(t, 2, 1, 1, count_include_pad=False),
        lambda t: F.avg_pool2d(t, 2, 1, 1, count_include_pad=False),
    ),
    "avg_pool_valid": (
        lambda t: TF.avg_pool2d(t, 2, 2, "valid", divisor_override=3),
        lambda t: F.avg_pool2d(t, 2, 2, divisor_override=3),
    ),
    "adaptive_max": (
        lambda t: TF.adaptive_max_pool2d(t, (2, 3), return_indices=True),
        lambda t: F.adaptive_max_pool2d(t, (2, 3), return_indices=True),
    ),
    "adaptive_avg": (
        lambda t: TF.adaptive_avg_pool2d(t, (3, 2)),
        lambda t: F.adaptive_avg_pool2d(t, (3, 2)),
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
BATCHED_ONLY = {"pyramid_max", "pyramid_avg", "global"}  # (N, C, *spatial) inputs only


def _values(out):
    """The differentiable result (max pooling's output, without its indices)."""
    return out[0] if isinstance(out, tuple) else out


def _check(got, want, msg):
    got, want = (v if isinstance(v, tuple) else (v,) for v in (got, want))
    for g, w in zip(got, want):
        exact = not w.is_floating_point()
        tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g, w, **tol, msg=lambda m: f"{msg}: {m}")


def _kinds(backend: str) -> list[str]:
    return list(PAIRS) if backend == "torch" else list(TRITON_KINDS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_matches_torch(backend):
    """The vmapped dim in front (folds into the batch), behind the batch (folds into channels)
    and last (neither is a view: folded by a copy); one placement per case on the Triton
    kernels (the folding is the same code on both backends)."""
    xs = distinct(3, 2, 2, 5, 6)  # (B, N, C, H, W)
    placements = [(xs, 0), (xs.movedim(0, 1), 1), (xs.movedim(0, -1), -1)]
    for i, name in enumerate(_kinds(backend)):
        ours, theirs = PAIRS[name]
        for batched, dim in placements if backend == "torch" else placements[i % 3 : i % 3 + 1]:
            with torchconv_ext.use_backend(backend):
                got = tf.vmap(ours, in_dims=dim)(batched)
            _check(got, tf.vmap(theirs, in_dims=dim)(batched), f"{name} in_dims={dim}")


@pytest.mark.parametrize("fold", [0, 1], ids=["into_batch", "into_channels"])
def test_vmap_folds_without_copy(monkeypatch, fold):
    """One implementation call on a view of the vmapped tensor — the vmapped dim merged with
    the batch dim, or with the channel dim when it lies between them in memory."""
    batched = distinct(3, 2, 2, 5, 6) if fold == 0 else distinct(2, 3, 2, 5, 6)
    seen = []
    impl = pool_ops.pool_fwd.impl

    def spy(input, *args):
        seen.append((tuple(input.shape), input.untyped_storage().data_ptr()))
        return impl(input, *args)

    monkeypatch.setattr(pool_ops.pool_fwd, "impl", spy)
    same = lambda t: TF.max_pool2d(t, 2, padding="same")
    with torchconv_ext.use_backend("torch"):
        got = tf.vmap(same, in_dims=fold)(batched)
    reference = lambda t: F.max_pool2d(F.pad(t, (0, 0, 0, 1), value=float("-inf")), 2)
    want = torch.stack([reference(sample) for sample in batched.unbind(fold)])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    folded = (6, 2, 5, 6) if fold == 0 else (2, 6, 5, 6)  # (B·N, C, …) or (N, B·C, …)
    assert seen == [(folded, batched.untyped_storage().data_ptr())]


@pytest.mark.parametrize("backend", BACKENDS)
def test_jacobians_and_jvp_match_torch(backend):
    """jacrev (reverse mode under vmap: a vmapped backward with an unbatched input), jacfwd
    (forward mode under vmap) and a plain jvp, on an unbatched input where torch allows one.
    The Triton kernels run jacrev only: the jvp rules are backend-independent and their
    kernel calls are the forward's (vmapped in test_vmap_matches_torch)."""
    for name in _kinds(backend):
        ours, theirs = PAIRS[name]
        x = distinct(1, 1, 3, 4) if name in BATCHED_ONLY else distinct(1, 3, 4)
        tangent = distinct(*x.shape, seed=3)
        results = []
        for fn, use in ((ours, backend), (theirs, "torch")):
            values = lambda t: _values(fn(t))
            with torchconv_ext.use_backend(use):
                found = (tf.jacrev(values)(x),)
                if backend == "torch":
                    found += (tf.jacfwd(values)(x), *tf.jvp(values, (x,), (tangent,)))
            results.append(found)
        _check(results[0], results[1], name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vmapped", [0, 1])
def test_3d_adaptive_max_pooling_under_jacrev_and_vmap(backend, vmapped):
    """3-d adaptive max pooling's vmapped backward hands ATen's 3-d CPU kernel (the fallback)
    indices it reads as if contiguous (other strides gave wrong gradients): the indices of
    one sample, expanded over jacrev's vmapped dim, have a zero stride, which crashed it."""
    x = distinct(1, 3, 3, 4, 3)
    ours, theirs = (functools.partial(m.adaptive_max_pool3d, output_size=2) for m in (TF, F))
    with torchconv_ext.use_backend(backend):
        got = tf.jacrev(ours)(x)
    torch.testing.assert_close(got, tf.jacrev(theirs)(x), rtol=0, atol=0)
    xs, grads = distinct(2, 3, 2, 4, 5, 4, seed=1), distinct(2, 3, 2, 2, 2, 2, seed=2)
    xs, grads = xs.movedim(0, vmapped), grads.movedim(0, vmapped)

    def vjp(fn):
        return lambda t, g: torch.func.vjp(fn, t)[1](g)[0]

    with torchconv_ext.use_backend(backend):
        got = tf.vmap(vjp(ours), in_dims=vmapped)(xs, grads)
    want = tf.vmap(vjp(theirs), in_dims=vmapped)(xs, grads)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_sample_gradients_and_hessian_vector_products(backend):
    """vmap(grad(·)) over a batch (a vmapped backward with a batched input), and the
    forward-over-reverse Hessian-vector product (the backward primitives' jvp rules; the
    fallback only, the rules are backend-independent)."""
    xs = distinct(3, 1, 2, 5, 6)
    tangent = distinct(1, 2, 5, 6, seed=4)
    kinds = list(PAIRS) if backend == "torch" else ["max_pool", "adaptive_avg", "pyramid_max"]
    for name in kinds:
        results = []
        for fn, use in (PAIRS[name][0], backend), (PAIRS[name][1], "torch"):
            loss = lambda t: _values(fn(t)).pow(2).sum()
            with torchconv_ext.use_backend(use):
                found = (tf.vmap(tf.grad(loss))(xs),)
                if backend == "torch":
                    found += (tf.jvp(tf.grad(loss), (xs[0],), (tangent,))[1],)
            results.append(found)
        _check(results[0], results[1], name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_call_through_a_converted_model(backend):
    """functional_call on a model whose pooling layers are ours: gradients w.r.t. the
    parameters (torch.func.grad) equal the torch model's."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.GroupNorm(1, 2),  # parameters before the pooling: their gradients pass through it
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Tanh(),
        nn.AvgPool2d(2, 1, padding=1, count_include_pad=False),
        nn.AdaptiveMaxPool2d((2, 2)),
        nn.Flatten(),
        nn.Linear(8, 2),
    ).double()
    ours = torchconv_ext.convert_model(model)
    x = distinct(2, 2, 5, 6)
    params = {k: v.detach() for k, v in model.named_parameters()}
    grads = []
    for net, use in ((ours, backend), (model, "torch")):
        loss = lambda p: tf.functional_call(net, p, (x,)).pow(2).sum()
        with torchconv_ext.use_backend(use):
            grads.append(tf.grad(loss)(params))
    _check(tuple(grads[0].values()), tuple(grads[1].values()), "functional_call")


def test_vmap_of_the_registered_ops():
    """The registered ops carry the same batching rules (torch.compile and export see those)."""
    ops = torch.ops.torchconv_ext
    xs = distinct(3, 2, 2, 5, 6)
    out, idx = tf.vmap(lambda t: ops.adaptive_pool_fwd(t, "max", [2, 3]))(xs)
    want, want_idx = tf.vmap(lambda t: F.adaptive_max_pool2d(t, (2, 3), True))(xs)
    _check((out, idx), (want, want_idx), "adaptive_pool_fwd")
    grad_out = distinct(3, 2, 2, 2, 3, seed=5)  # vmapped; input and indices are not
    grad = tf.vmap(lambda g: ops.adaptive_pool_bwd(g, xs[0], idx[0], "max"))(grad_out)
    one_by_one = [ops.adaptive_pool_bwd(g, xs[0], idx[0], "max") for g in grad_out]
    _check(grad, torch.stack(one_by_one), "adaptive_pool_bwd")


_IN_PLACE_CALLS = {
    "adaptive_avg": lambda f, x: f.adaptive_avg_pool1d(x, 3),
    "adaptive_max": lambda f, x: f.adaptive_max_pool1d(x, 3),
    "max": lambda f, x: f.max_pool1d(x, 3, 2, ceil_mode=True),
    "avg": lambda f, x: f.avg_pool1d(x, 3, 2, padding=1),
    "interpolate": lambda f, x: f.interpolate(x, scale_factor=2),
}


@pytest.mark.parametrize("backend", [*BACKENDS, "auto"])
@pytest.mark.parametrize(
    ("name", "batched"),
    [(name, True) for name in _IN_PLACE_CALLS]
    + [(name, False) for name in _IN_PLACE_CALLS if name != "interpolate"],  # (batched only)
)
def test_results_and_gradients_can_be_written_in_place(name, batched, backend):
    """As torch's: a 1-d result (computed in 2-d, then squeezed) and its input gradient taken
    with ``create_graph`` may be written in place, and the gradients see the writes."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    x = x if batched else x[0]

    def run(f):
        leaf = x.clone().requires_grad_()
        out = _IN_PLACE_CALLS[name](f, leaf)
        out.mul_(2)
        (grad,) = torch.autograd.grad(out.square().sum(), leaf, create_graph=True)
        grad.add_(1)
        return out, grad, torch.autograd.grad(grad.square().sum(), leaf, allow_unused=True)

    with torchconv_ext.use_backend(backend):
        got = run(TF)
    torch.testing.assert_close(got, run(F))
