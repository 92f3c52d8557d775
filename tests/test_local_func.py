"""Locally connected / tiled convolution under torch.func (fallback: the batching rules are
backend-independent code): every batching branch against a loop, per-sample gradients and
forward mode against the float64 definition."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.func as tf

import torchconv_ext
from tests.references.local import reference_local
from torchconv_ext import functional as TF
from torchconv_ext._fallback import local as fallback
from torchconv_ext._ops.local import local_conv_bwd_input, local_conv_bwd_weight, local_conv_fwd

B = 3  # vmapped batch size
# 1-d, 2 tiles, stride 2, padding (1, 2), 2 groups, reflect: x (2, 4, 7), w (2, 6, 2, 3) ->
# y (2, 6, 4).
_GEOMETRY = ((2,), (1,), (2,), (1,), 2, "reflect")


def _t(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64)


def _primitive_calls():
    torch.manual_seed(0)
    x, w, b, gy = _t(B, 2, 4, 7), _t(B, 2, 6, 2, 3), _t(B, 2, 6), _t(B, 2, 6, 4)
    return {
        "fwd": (lambda x, w, b: local_conv_fwd(x, w, b, *_GEOMETRY), (x, w, b)),
        "bwd_input": (
            lambda gy, w: local_conv_bwd_input(gy, w, [7], False, *_GEOMETRY),
            (gy, w),
        ),
        "bwd_weight": (
            lambda gy, x: local_conv_bwd_weight(gy, x, [2], [3], *_GEOMETRY),
            (gy, x),
        ),
    }


def _in_dims_cases():
    for name, (_, operands) in _primitive_calls().items():
        subsets = list(itertools.product((None, 0), repeat=len(operands)))[1:]
        for dims in [*subsets, (1,) * len(operands)]:
            yield pytest.param(name, dims, id=f"{name}-{'-'.join(map(str, dims))}")


@pytest.mark.parametrize("name,dims", list(_in_dims_cases()))
def test_batching_rules_match_a_loop(name, dims, monkeypatch):
    """Every combination of batched operands: one folded call, equal to a loop."""
    fn, operands = _primitive_calls()[name]
    args = [t[0] if d is None else t.movedim(0, d) for t, d in zip(operands, dims)]
    calls = []
    for launcher in ("local_forward", "local_backward_input", "local_backward_weight"):
        original = getattr(fallback, launcher)
        monkeypatch.setattr(fallback, launcher, lambda *a, f=original: calls.append(1) or f(*a))
    with torchconv_ext.use_backend("torch"):
        out = tf.vmap(fn, in_dims=dims)(*args)
        assert len(calls) == 1  # folded, no loop
        expected = torch.stack(
            [
                fn(*(a if d is None else a.select(d, i) for a, d in zip(args, dims)))
                for i in range(B)
            ]
        )
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)


def _model(conv, params, x):
    w1, b1, w2 = params
    return conv(torch.tanh(conv(x, w1, b1, "same")), w2, None, 0).square().sum()


def _ours(x, w, b, padding):
    return TF.conv1d_tiled(x, w, b, 1, padding, padding_mode="circular")


def _definition(x, w, b, padding):
    return reference_local(x, w, b, 1, padding, 1, 1, "circular")


def _params():
    torch.manual_seed(1)
    return [_t(2, 3, 2, 3), _t(2, 3), _t(3, 2, 3, 2)], _t(B, 2, 6)


def test_per_sample_gradients_match_definition():
    params, xs = _params()
    with torchconv_ext.use_backend("torch"):
        ours = tf.vmap(tf.grad(lambda p, x: _model(_ours, p, x[None])), (None, 0))(params, xs)
    theirs = tf.vmap(tf.grad(lambda p, x: _model(_definition, p, x[None])), (None, 0))(params, xs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_forward_mode_and_hessian_match_definition():
    params, xs = _params()
    tangents = [torch.randn_like(p) for p in params]
    results = []
    for conv in (_ours, _definition):
        with torchconv_ext.use_backend("torch"):
            f = lambda *p: _model(conv, p, xs)
            _, jvp = tf.jvp(f, tuple(params), tuple(tangents))
            hvp = tf.jvp(tf.grad(f, argnums=0), tuple(params), tuple(tangents))[1]
        results.append([jvp, hvp])
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-10, rtol=1e-8)
