"""Nearest upsampling under torch.func and graph capture, against torch, in float64.

* ``vmap`` (any vmapped dim, folded into the batch: one call per transform, not one per sample),
  ``grad``, ``jacrev``, ``jacfwd`` / ``jvp`` and ``functional_call``, on both backends. On the
  fallback the functional API calls ATen's op directly, so the primitives are called there.
* Dynamic shapes: ``torch.export`` with a dynamic batch (and dynamic spatial sizes with a scale
  factor) gives a program that runs at other sizes; ``torch.compile(dynamic=True)`` does not
  recompile when the batch changes.
"""

from __future__ import annotations

import pytest
import torch
import torch.func as tf
import torch.nn.functional as F
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend
from torch.export import Dim, export

import torchconv_ext
from torchconv_ext import functional as TF
from torchconv_ext._backend import kernels
from torchconv_ext._ops import upsample as ops
from torchconv_ext._upsample_args import upsample_geometry

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]
MODES = ("nearest", "nearest-exact")
# (per-sample shape, interpolate's size / scale arguments): the generic and the integer path.
CASES = [((2, 3, 2), dict(scale_factor=(1.5, 2.0))), ((2, 2, 3), dict(size=(3, 5)))]


def _ours(mode, **kwargs):
    """Our nearest upsampling through the forward primitive, whatever the backend."""

    def upsample(t):
        geom = upsample_geometry(
            t, kwargs.get("size"), kwargs.get("scale_factor"), mode, None, None, False
        )
        return ops.upsample_nearest_fwd(t, *geom.as_args())

    return upsample


def _theirs(mode, **kwargs):
    return lambda t: F.interpolate(t, mode=mode, **kwargs)


def _batched(f):
    """``f`` on one ``(C, *spatial)`` sample (a batch of one)."""
    return lambda t: f(t.unsqueeze(0)).squeeze(0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,kwargs", CASES, ids=["scale", "size"])
def test_transforms_match_torch(backend, shape, kwargs):
    xs = torch.randn(3, *shape, dtype=torch.float64)
    for mode in MODES:
        ours, theirs = _batched(_ours(mode, **kwargs)), _batched(_theirs(mode, **kwargs))
        with torchconv_ext.use_backend(backend):
            got = [
                tf.vmap(ours)(xs),
                tf.vmap(tf.grad(lambda t: ours(t).square().sum()))(xs),
                tf.jacrev(ours)(xs[0]),
                tf.jacfwd(ours)(xs[0]),
                tf.jvp(ours, (xs[0],), (xs[1],))[1],
            ]
        expected = [
            tf.vmap(theirs)(xs),
            tf.vmap(tf.grad(lambda t: theirs(t).square().sum()))(xs),
            tf.jacrev(theirs)(xs[0]),
            tf.jacfwd(theirs)(xs[0]),
            tf.jvp(theirs, (xs[0],), (xs[1],))[1],
        ]
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("in_dim", [0, 1, 4])
def test_vmap_folds_the_vmapped_dim_into_the_batch(monkeypatch, in_dim):
    """Any vmapped dim, forward and backward: one call of each op, on N·B samples."""
    calls = []
    for name in ("nearest_forward", "nearest_backward"):
        real = getattr(ops.fallback, name)
        spy = lambda t, *args, real=real, name=name: (
            calls.append((name, t.shape[0])) or real(t, *args)
        )
        monkeypatch.setattr(ops.fallback, name, spy)
    xs = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64).movedim(0, in_dim)
    ours, theirs = _ours("nearest", scale_factor=1.5), _theirs("nearest", scale_factor=1.5)
    with torchconv_ext.use_backend("torch"):
        per_sample = tf.vmap(tf.grad(lambda t: ours(t).square().sum()), in_dims=in_dim)(xs)
        values = tf.vmap(ours, in_dims=in_dim)(xs)
    folded = 2 * 3  # vmapped size × N
    assert calls == [
        ("nearest_forward", folded),
        ("nearest_backward", folded),
        ("nearest_forward", folded),
    ]
    torch.testing.assert_close(values, tf.vmap(theirs, in_dims=in_dim)(xs))
    expected = tf.vmap(tf.grad(lambda t: theirs(t).square().sum()), in_dims=in_dim)(xs)
    torch.testing.assert_close(per_sample, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_call_per_sample_weight_gradients(backend):
    """Per-sample gradients of the weights of a conv after our ``nn.Upsample``."""
    torch.manual_seed(0)
    up = dict(scale_factor=2, mode="nearest-exact")
    ours = nn.Sequential(torchconv_ext.nn.Upsample(**up), nn.Conv2d(2, 1, 3, dtype=torch.float64))
    theirs = nn.Sequential(nn.Upsample(**up), nn.Conv2d(2, 1, 3, dtype=torch.float64))
    theirs.load_state_dict(ours.state_dict())
    params = {k: v.detach() for k, v in ours.named_parameters()}
    xs = torch.randn(3, 2, 2, 3, dtype=torch.float64)

    def per_sample(model):
        loss = lambda p, x: tf.functional_call(model, p, (x.unsqueeze(0),)).square().sum()
        return tf.vmap(tf.grad(loss), in_dims=(None, 0))(params, xs)

    with torchconv_ext.use_backend(backend):
        got = per_sample(ours)
    expected = per_sample(theirs)
    for name in params:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Dynamic shapes: export and compile
# ---------------------------------------------------------------------------------------------


class _Interpolate(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs

    def forward(self, x):
        return TF.interpolate(x, **self.kwargs)


EXPORT_CASES = [
    (dict(scale_factor=2), (0, 2, 3)),
    (dict(scale_factor=(1.5, 0.7), mode="nearest-exact"), (0, 2, 3)),
    (dict(size=(5, 7)), (0,)),
    (dict(scale_factor=1.5, output_size_rounding="round"), (0, 2)),
]


@pytest.mark.interpret
@pytest.mark.parametrize("kwargs,dynamic", EXPORT_CASES)
def test_export_with_dynamic_sizes_runs_at_other_sizes(kwargs, dynamic):
    """Exported with our op (Triton backend), run at other sizes on both backends."""
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    # (Spatial sizes from 3: torch's own op cannot export 0.7 × 2 = 1 either.)
    spec = {d: Dim(f"d{d}", min=2 if d == 0 else 3, max=64) for d in dynamic}
    with torchconv_ext.use_backend("triton"):
        program = export(_Interpolate(**kwargs), (x,), dynamic_shapes=(spec,))
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert torch.ops.torchconv_ext.upsample_nearest_fwd.default in targets
    for sizes in ((3, 3, 4, 5), (5, 3, 7, 9)):
        shape = [s if d in dynamic else x.shape[d] for d, s in enumerate(sizes)]
        other = torch.randn(shape, dtype=torch.float64)
        expected = _reference(other, kwargs)
        for backend in ("triton", "torch"):
            with torchconv_ext.use_backend(backend):
                out = program.module()(other)
            assert torch.equal(out, expected), (backend, out.shape, expected.shape)


def _reference(x, kwargs):
    if kwargs.get("output_size_rounding") == "round":  # torch's op at our size, torch's scale
        s = kwargs["scale_factor"]
        size = [round(n * s) for n in x.shape[2:]]
        return torch.ops.aten.upsample_nearest2d(x, size, s, s)
    return F.interpolate(x, **kwargs)


@pytest.mark.parametrize(
    "backend,kwargs",
    [
        ("torch", dict(scale_factor=1.5, output_size_rounding="round")),
        pytest.param("triton", dict(scale_factor=2), marks=pytest.mark.interpret),
    ],
)
def test_compile_dynamic_does_not_recompile_for_a_new_batch(backend, kwargs):
    kernels()  # imported before tracing: the lazy import would otherwise guard the first graph
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    f = lambda t: TF.interpolate(t, **kwargs)
    compiled = torch.compile(f, backend=counter, dynamic=True, fullgraph=True)
    with torchconv_ext.use_backend(backend):
        for i, n in enumerate((2, 4, 6)):
            # Sizes no two dims share (duck sizing would tie them together).
            x = torch.randn(n, 3, 5, 7, dtype=torch.float64, requires_grad=True)
            out = compiled(x)
            if i == 0:
                frames = counter.frame_count
            (grad,) = torch.autograd.grad(out.square().sum(), x)
            xe = x.detach().requires_grad_()
            expected = f(xe)
            (expected_grad,) = torch.autograd.grad(expected.square().sum(), xe)
            assert torch.equal(out, expected) and torch.equal(grad, expected_grad)
    assert counter.frame_count == frames
