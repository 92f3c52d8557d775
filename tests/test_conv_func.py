"""Convolution under torch.func, both backends, against torch in float64: the batching rules of
the primitives, per-sample gradients of a small CNN, forward mode and Jacobians.

The batching rules are backend-independent code, checked branch by branch on the fallback; on
the Triton kernels their folded launches run inside the per-sample gradients (batch and groups
folds) and the Jacobians (channel folds)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.func as tf
import torch.nn.functional as F
from torch import nn

import torchconv_ext
from tests.references.conv import reference_conv
from torchconv_ext import functional as TF
from torchconv_ext import nn as tnn
from torchconv_ext._backend import kernels
from torchconv_ext._fallback import conv as fallback
from torchconv_ext._ops.conv import conv_bwd_input, conv_bwd_weight, conv_bwd_weight_bias, conv_fwd

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]
B = 3  # vmapped batch size

# 1-d, stride 2, padding (1, 2), 2 groups, reflect: x (2, 4, 7), w (6, 2, 3) -> y (2, 6, 4).
_GEOMETRY = ((2,), (1,), (2,), (1,), 2, "reflect")


def _t(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64)


def _primitive_calls():
    """Each primitive as a function of its tensors, with one batch of ``B`` operands each."""
    torch.manual_seed(0)
    x, w, b, gy, bias_t = _t(B, 2, 4, 7), _t(B, 6, 2, 3), _t(B, 6), _t(B, 2, 6, 4), _t(B, 4)
    return {
        "fwd": (lambda x, w, b: conv_fwd(x, w, b, *_GEOMETRY), (x, w, b)),
        "bwd_input": (
            lambda gy, w, b: conv_bwd_input(gy, w, b, [7], False, *_GEOMETRY),
            (gy, w, bias_t),
        ),
        "bwd_weight": (lambda gy, x: conv_bwd_weight(gy, x, [3], False, *_GEOMETRY), (gy, x)),
        "bwd_weight_bias": (
            lambda gy, x: conv_bwd_weight_bias(gy, x, [3], False, *_GEOMETRY),
            (gy, x),
        ),
    }


def _in_dims_cases():
    """Every subset of batched operands (each rule's branches), and all batched at dim 1."""
    for name, (_, operands) in _primitive_calls().items():
        subsets = list(itertools.product((None, 0), repeat=len(operands)))[1:]
        for dims in [*subsets, (1,) * len(operands)]:
            yield pytest.param(name, dims, id=f"{name}-{'-'.join(map(str, dims))}")


def _vmapped_operands(operands, dims):
    """Unbatched operands drop the batch; batched ones carry it at ``dim``."""
    return [t[0] if d is None else t.movedim(0, d) for t, d in zip(operands, dims)]


@pytest.mark.parametrize("name,dims", list(_in_dims_cases()))
def test_batching_rules_match_a_loop(name, dims, monkeypatch):
    """Every combination of batched operands: one folded call, equal to a loop over the batch."""
    fn, operands = _primitive_calls()[name]
    args = _vmapped_operands(operands, dims)
    calls = []
    for launcher in ("conv_forward", "conv_backward_input", "conv_backward_weight"):
        original = getattr(fallback, launcher)
        monkeypatch.setattr(fallback, launcher, lambda *a, f=original: calls.append(1) or f(*a))
    with torchconv_ext.use_backend("torch"):
        out = tf.vmap(fn, in_dims=dims)(*args)
        assert len(calls) == 1  # the rule folded the batch, no loop
        loop = [
            fn(*(a if d is None else a.select(d, i) for a, d in zip(args, dims))) for i in range(B)
        ]
    if isinstance(out, tuple):  # (grad_weight, grad_bias)
        expected = tuple(torch.stack(parts) for parts in zip(*loop))
    else:
        expected = torch.stack(loop)
    torch.testing.assert_close(out, expected)


def test_registered_ops_batch_too():
    """``torch.ops.torchconv_ext.*`` carry the same batching rules (export, compile)."""
    _, (x, w, b) = _primitive_calls()["fwd"]
    ops = torch.ops.torchconv_ext
    with torchconv_ext.use_backend("torch"):
        out = tf.vmap(lambda x, w: ops.conv_fwd(x, w, b[0], *_GEOMETRY))(x, w)
        expected = torch.stack([conv_fwd(x[i], w[i], b[0], *_GEOMETRY) for i in range(B)])
    torch.testing.assert_close(out, expected)


# --- a small CNN: ours vs torch's layers ------------------------------------------------------


def _models():
    """A CNN of our layers with arguments torch lacks (so every layer runs our primitives on
    both backends) and the same CNN of torch's layers, sharing parameters."""
    torch.manual_seed(1)
    ref = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"),
        nn.Tanh(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2, padding_mode="circular"),
        nn.Tanh(),
        nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1),
    ).double()
    ours = torchconv_ext.convert_model(ref)
    # 'same' of a 4-tap, stride-2 transposed convolution is padding 1: torch's module above.
    ours[4] = tnn.ConvTranspose2d(4, 2, 4, stride=2, padding="same").double()
    ours[4].load_state_dict(ref[4].state_dict())
    return ours, ref


def _per_sample_grads(model, xs, targets):
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, x, target):
        out = tf.functional_call(model, p, (x.unsqueeze(0),))
        return F.mse_loss(out, target.unsqueeze(0))

    return tf.vmap(tf.grad(loss), in_dims=(None, 0, 0))(params, xs, targets)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_sample_gradients_match_torch(backend, monkeypatch):
    """``vmap(grad(loss))`` over single examples: each layer's per-sample weight gradients in
    one folded call."""
    ours, ref = _models()
    xs, targets = _t(B, 2, 4, 4), _t(B, 2, 4, 4)
    # The weight-gradient computations, counted where they run.
    module, name = (
        (fallback, "conv_backward_weight")
        if backend == "torch"
        else (kernels(), "conv_backward_weight")
    )
    calls = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or original(*a, **k))
    with torchconv_ext.use_backend(backend):
        got = _per_sample_grads(ours, xs, targets)
    assert len(calls) == 3  # one per convolution layer, not one per sample
    expected = _per_sample_grads(ref, xs, targets)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], msg=key)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jvp_jacfwd_and_jacrev_match_torch(backend):
    """Forward mode (the jvp rules, in every operand) and both Jacobians (the batching rules
    over the basis) of a convolution with a padding mode and a transposed convolution with
    ``padding='same'``."""
    torch.manual_seed(2)
    x, w, b = _t(1, 2, 5), _t(4, 1, 3), _t(4)
    wt, bt = _t(4, 2, 4), _t(2)

    def ours(x, w, b, wt, bt):
        y = TF.conv1d(x, w, b, 2, 1, 1, 2, padding_mode="replicate")
        return TF.conv_transpose1d(y, wt, bt, 2, "same")

    def theirs(x, w, b, wt, bt):
        y = reference_conv(x, w, b, 2, 1, 1, 2, "replicate")
        return F.conv_transpose1d(y, wt, bt, 2, 1)

    primals = (x, w, b, wt, bt)
    tangents = tuple(torch.randn_like(p) for p in primals)
    every = tuple(range(len(primals)))

    def transforms(fn):
        return [
            tf.jvp(fn, primals, tangents),
            tf.jacfwd(fn, argnums=1)(*primals),  # the weight: 12 tangents in one batch
            tf.jacrev(fn, argnums=every)(*primals),
        ]

    with torchconv_ext.use_backend(backend):
        got = transforms(ours)
    torch.testing.assert_close(got, transforms(theirs))


def test_hessian_matches_torch():
    """Forward over reverse mode: the jvp rules of the gradient primitives (with a bias: the
    weight's and bias's gradients of one primitive, ``conv_bwd_weight_bias``)."""
    torch.manual_seed(3)
    x, w, b = _t(1, 2, 5), _t(2, 2, 3), _t(2)

    def loss(conv, w, b=None):
        return conv(x, w, b).tanh().sum()

    def ours(a, w, b):
        return TF.conv1d(a, w, b, 1, "same", 2, padding_mode="circular")

    def theirs(a, w, b):
        return reference_conv(a, w, b, 1, "same", 2, 1, "circular")

    for params in ((w,), (w, b)):
        argnums = tuple(range(len(params)))
        with torchconv_ext.use_backend("torch"):
            got = tf.hessian(lambda *p: loss(ours, *p), argnums)(*params)
        expected = tf.hessian(lambda *p: loss(theirs, *p), argnums)(*params)
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_per_sample_gradients_and_jvp_match_torch(backend):
    """``torch.func`` transforms inside ``torch.compile(fullgraph=True)``: per-sample gradients
    (``vmap(grad)``) and a jvp through a convolution and a max pooling."""
    torch.manual_seed(3)
    xs, w, tangent = _t(3, 1, 2, 6, 6), _t(4, 2, 3, 3), _t(1, 2, 6, 6)

    def programs(f):
        def loss(x, w):
            return f.max_pool2d(f.conv2d(x, w, padding=1), 2).square().sum()

        def net(x):
            return f.max_pool2d(f.conv2d(x, w, padding=1), 2)

        return (
            lambda: tf.vmap(tf.grad(loss, argnums=1), in_dims=(0, None))(xs, w),
            lambda: tf.jvp(net, (xs[0],), (tangent,)),
        )

    for ours, theirs in zip(programs(TF), programs(F)):
        torch._dynamo.reset()
        with torchconv_ext.use_backend(backend):
            got = torch.compile(ours, backend="aot_eager", fullgraph=True)()
        torch.testing.assert_close(got, theirs())


@pytest.mark.parametrize("backend", BACKENDS)
def test_transforms_over_a_compiled_function_match_torch(backend):
    """``torch.func`` transforms entered outside ``torch.compile``: Dynamo skips every frame
    under them and tries each one those call, which must not reach into our launchers (they
    run eagerly: ``_ops._eager_frames``). A transposed convolution, a module's bound call with
    a padding mode and a pooling; ``grad`` and ``vmap(grad)``."""
    torch.manual_seed(4)
    x, w = _t(2, 2, 5, 5), _t(2, 2, 3, 3)
    ours = tnn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect").double()
    ref = nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect").double()
    ref.load_state_dict(ours.state_dict())

    def loss_with(f, conv):
        return lambda w, x: f.max_pool2d(conv(f.conv_transpose2d(x, w, stride=2)), 2).square().sum()

    def transforms(loss):
        return tf.grad(loss)(w, x), tf.vmap(tf.grad(loss), in_dims=(None, 0))(w, x[:, None])

    expected = transforms(loss_with(F, ref))
    torch._dynamo.reset()
    with torchconv_ext.use_backend(backend):
        got = transforms(torch.compile(loss_with(TF, ours), backend="aot_eager"))
    torch.testing.assert_close(got, expected)
