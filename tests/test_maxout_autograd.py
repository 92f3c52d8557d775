"""Maxout derivatives to any order and under torch.func, both backends.

The gradient goes to each group's winner; its derivative w.r.t. the incoming gradient is the
gather at the winners (as for max pooling), so every order exists. The batching rules shift the
maxout dim past the vmapped one.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.func as tf

import torchconv_ext
from tests.references.maxout import reference_maxout
from torchconv_ext import functional as TF
from torchconv_ext._ops.maxout import maxout_bwd, maxout_fwd

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]


def _distinct(*shape: int) -> torch.Tensor:
    """Values with no ties (finite differences need a unique winner)."""
    n = torch.Size(shape).numel()
    return (torch.randperm(n, dtype=torch.float64) / n).view(shape).requires_grad_()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_and_gradgradcheck(backend):
    torch.manual_seed(0)
    x = _distinct(2, 6, 4, 2)
    with torchconv_ext.use_backend(backend):
        assert torch.autograd.gradcheck(lambda t: TF.maxout(t, 3, 1), [x], fast_mode=True)
        assert torch.autograd.gradgradcheck(lambda t: TF.maxout(t, 2, 2), [x], fast_mode=True)
        _, indices = maxout_fwd(x.detach(), 3, 1)
        gy = torch.randn(2, 2, 4, 2, dtype=torch.float64, requires_grad=True)
        bwd = lambda g: maxout_bwd(g, indices, 3, 1, False)
        assert torch.autograd.gradgradcheck(bwd, [gy], fast_mode=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_order_through_a_network_matches_definition(backend):
    """A gradient penalty through conv → maxout: the second derivative gathers at the winners."""
    torch.manual_seed(1)
    x = torch.randn(2, 2, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    results = []
    for maxout in (lambda y: TF.maxout(y, 3), lambda y: reference_maxout(y, 3, 1)[0]):
        with torchconv_ext.use_backend(backend):
            loss = maxout(torch.nn.functional.conv1d(x, w)).square().sum()
            (gx,) = torch.autograd.grad(loss, x, create_graph=True)
            results.append(torch.autograd.grad(gx.square().sum(), [x, w]))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=1e-8)


def test_forward_mode_matches_definition():
    x = _distinct(2, 6, 4)
    t = torch.randn_like(x)
    _, ours = tf.jvp(lambda v: TF.maxout(v, 2, 1), (x.detach(),), (t,))
    _, theirs = tf.jvp(lambda v: reference_maxout(v, 2, 1)[0], (x.detach(),), (t,))
    torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batching_rules_match_a_loop(backend):
    torch.manual_seed(2)
    xs = _distinct(3, 2, 6, 2).detach()
    with torchconv_ext.use_backend(backend):
        for dim in (0, 1):
            f = lambda v: TF.maxout(v, 2, 1)
            out = tf.vmap(f, in_dims=dim)(xs.movedim(0, dim))
            torch.testing.assert_close(out, torch.stack([f(v) for v in xs]))
        # The backward, with each operand batched or not.
        values, indices = maxout_fwd(xs, 2, 2)
        gys = torch.randn_like(values)
        for dims in list(itertools.product((None, 0), repeat=2))[1:]:
            args = [t[0] if d is None else t for t, d in zip((gys, indices), dims)]
            g = lambda go, idx: maxout_bwd(go, idx, 2, 1, False)
            out = tf.vmap(g, in_dims=dims)(*args)
            loop = [g(*(a if d is None else a[i] for a, d in zip(args, dims))) for i in range(3)]
            torch.testing.assert_close(out, torch.stack(loop))


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    """Schema, fake tensors (sizes and strides of the real results, channels-last here) and the
    autograd registration of both registered ops."""
    x = _distinct(2, 6, 3, 2).detach().contiguous(memory_format=torch.channels_last)
    with torchconv_ext.use_backend(backend):
        values, indices = maxout_fwd(x, 3, 1)
        assert values.is_contiguous(memory_format=torch.channels_last)
        torch.library.opcheck(torch.ops.torchconv_ext.maxout_fwd, (x.requires_grad_(), 3, 1))
        gy = torch.randn_like(values)
        torch.library.opcheck(torch.ops.torchconv_ext.maxout_bwd, (gy, indices, 3, 1, True))
