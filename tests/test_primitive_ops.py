"""The op layer's one autograd pattern (``_ops._primitive.Primitive``), on a toy bilinear op.

Every op family builds on it, so its entry points are checked here once: eager calls, the
registered op, gradients to second order, torch.func transforms, compile, opcheck and dispatch
modes.
"""

import pytest
import torch
import torch.func as tf
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from torchconv_ext._ops._primitive import EagerFunction, Primitive


def _impl(x: Tensor, w: Tensor, k: int) -> Tensor:
    return x * w * k


def _fake(x, w, k):
    return torch.empty_like(x)


def _setup(ctx, inputs, output):
    x, w, k = inputs
    ctx.save_for_backward(x, w)
    ctx.k = k


def _backward(ctx, grad):
    x, w = ctx.saved_tensors
    grad_x = SCALE(grad, w, ctx.k) if ctx.needs_input_grad[0] else None
    grad_w = SCALE(grad, x, ctx.k).sum_to_size(w.shape) if ctx.needs_input_grad[1] else None
    return grad_x, grad_w, None


def _jvp(ctx, tangent_x, tangent_w, _):
    x, w, k = ctx.primals
    parts = []
    if tangent_x is not None:
        parts.append(SCALE(tangent_x, w, k))
    if tangent_w is not None:
        parts.append(SCALE(x, tangent_w, k))
    return sum(parts[1:], parts[0])


SCALE = Primitive(
    "test_toy_scale", _impl, fake=_fake, setup_context=_setup, backward=_backward, jvp=_jvp
)
OP = torch.ops.torchconv_ext.test_toy_scale


def _inputs():
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    return x, w


@pytest.mark.parametrize("entry", [SCALE, OP], ids=["primitive", "registered_op"])
def test_gradients_to_second_order(entry):
    x, w = _inputs()
    assert torch.autograd.gradcheck(lambda a, b: entry(a, b, 3), (x, w))
    assert torch.autograd.gradgradcheck(lambda a, b: entry(a, b, 3), (x, w))


def test_eager_calls_skip_autograd_when_no_gradient_is_wanted(monkeypatch):
    calls = []
    monkeypatch.setattr(EagerFunction, "forward", lambda *a: calls.append(a) or _impl(*a[1:]))
    x, w = _inputs()
    SCALE(x.detach(), w.detach(), 2)
    with torch.no_grad():
        SCALE(x, w, 2)
    assert calls == []
    SCALE(x, w, 2)
    assert len(calls) == 1


def test_torch_func_transforms():
    xs = torch.randn(4, 3, dtype=torch.float64)
    w = torch.randn(3, dtype=torch.float64)
    torch.testing.assert_close(tf.vmap(lambda a: SCALE(a, w, 2))(xs), xs * w * 2)
    torch.testing.assert_close(tf.vmap(lambda a: OP(a, w, 2))(xs), xs * w * 2)
    per_sample = tf.vmap(tf.grad(lambda a: SCALE(a, w, 2).sum()))(xs)
    torch.testing.assert_close(per_sample, (w * 2).expand(4, 3))
    ones = torch.ones(3, dtype=torch.float64)
    _, tangent = tf.jvp(lambda a: SCALE(a, w, 2), (xs[0],), (ones,))
    torch.testing.assert_close(tangent, w * 2)
    torch.testing.assert_close(tf.jacfwd(lambda a: SCALE(a, w, 2))(xs[0]), torch.diag(w * 2))
    torch.testing.assert_close(tf.jacrev(lambda a: SCALE(a, w, 2))(xs[0]), torch.diag(w * 2))


def test_the_registered_op_carries_tangents():
    """Forward mode through the registered op — called directly, or by the primitive under a
    dispatch mode (``FlopCounterMode``; ``make_fx``, which ``torch.func.linearize`` traces
    with) — gives the primitive's tangent, never drops it."""
    from torch.autograd import forward_ad

    x, w = (t.detach() for t in _inputs())
    tangent = torch.randn_like(x)
    for call in (lambda d: OP(d, w, 2), lambda d: SCALE(d, w, 2)):
        with forward_ad.dual_level(), FlopCounterMode(display=False):
            out = forward_ad.unpack_dual(call(forward_ad.make_dual(x, tangent)))
        torch.testing.assert_close(out.tangent, tangent * w * 2)
    _, tangent_of = tf.linearize(lambda a: SCALE(a, w, 2), x)
    torch.testing.assert_close(tangent_of(tangent), tangent * w * 2)
    assert torch.autograd.gradcheck(
        lambda a, b: OP(a, b, 3), _inputs(), check_forward_ad=True, check_backward_ad=False
    )


@pytest.mark.parametrize("transform", ["grad", "vmap_grad", "jacrev", "jvp"])
def test_torch_func_transforms_compile(transform):
    """A functorch transform inside ``torch.compile`` differentiates the registered op: its
    autograd runs on the transform's level (as an ATen op's does), its derivatives through
    the registered ops."""
    xs = torch.randn(4, 3, dtype=torch.float64)
    w = torch.randn(3, dtype=torch.float64)
    tangent = torch.randn(3, dtype=torch.float64)

    def program(scale):
        loss = lambda a, b: scale(a, b, 2).square().sum()
        return {
            "grad": lambda: tf.grad(loss, argnums=(0, 1))(xs[0], w),
            "vmap_grad": lambda: tf.vmap(tf.grad(loss, argnums=1), in_dims=(0, None))(xs, w),
            "jacrev": lambda: tf.jacrev(lambda b: scale(xs[0], b, 2))(w),
            "jvp": lambda: tf.jvp(lambda a: scale(a, w, 2), (xs[0],), (tangent,)),
        }[transform]

    def definition(a, b, k):
        return a * b * k

    torch._dynamo.reset()
    got = torch.compile(program(SCALE), backend="aot_eager", fullgraph=True)()
    torch.testing.assert_close(got, program(definition)())


def test_forward_ad_in_a_compiled_region_runs_outside_the_graph():
    """A dual level entered inside a compiled region is entered by the graph without
    ``forward_ad``'s Python state: under any dual level the op runs outside the graph (a graph
    break, refused by ``fullgraph=True``), never dropping the tangent."""
    from torch.autograd import forward_ad

    x, w = (t.detach() for t in _inputs())
    tangent = torch.randn_like(x)

    def tangent_of(a, t):
        with forward_ad.dual_level():
            return forward_ad.unpack_dual(SCALE(forward_ad.make_dual(a, t), w, 2)).tangent

    torch._dynamo.reset()
    got = torch.compile(tangent_of, backend="aot_eager")(x, tangent)
    torch.testing.assert_close(got, tangent * w * 2)
    torch._dynamo.reset()
    with pytest.raises(Exception, match="forward-mode AD"):
        torch.compile(tangent_of, backend="aot_eager", fullgraph=True)(x, tangent)
    torch._dynamo.reset()
    compiled = torch.compile(lambda a: SCALE(a, w, 2), backend="aot_eager")
    with forward_ad.dual_level():
        out = forward_ad.unpack_dual(compiled(forward_ad.make_dual(x, tangent)))
    torch.testing.assert_close(out.tangent, tangent * w * 2)


def test_a_profile_names_eager_calls_as_their_registered_ops():
    """The eager path skips the dispatcher, which names an op's call in a profile: the
    primitive names its forward and backward itself, once each (the registered op's calls
    are named by the dispatcher alone)."""
    x, w = _inputs()
    bound = SCALE.bind(2)
    with torch.profiler.profile() as profile:
        SCALE(x, w, 2).sum().backward()
        bound(x, w).sum().backward()
        with torch.no_grad():
            SCALE(x, w, 2)
        OP(x.detach(), w.detach(), 2)
    names = [e.name for e in profile.events() if "test_toy_scale" in e.name]
    # 4 calls, and each backward's 2 (the toy's derivative calls the primitive twice)
    assert names.count("torchconv_ext::test_toy_scale") == 4 + 2 * 2
    assert names.count("torchconv_ext::test_toy_scale_backward") == 2


def test_functionalize_takes_the_registered_op():
    """``torch.func.functionalize`` has no rule for an ``autograd.Function``: the primitive
    hands it the registered op (what ``make_fx`` then records)."""
    x, w = _inputs()
    f = torch.func.functionalize(lambda a, b: SCALE(a, b, 2))
    torch.testing.assert_close(f(x, w), x * w * 2)
    graph = torch.fx.experimental.proxy_tensor.make_fx(f)(x.detach(), w.detach())
    assert OP.default in {node.target for node in graph.graph.nodes}


def test_tracing_uses_the_registered_op():
    x, w = _inputs()
    compiled = torch.compile(lambda a, b: SCALE(a, b, 2), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, w), x * w * 2)
    torch.library.opcheck(OP.default, (x, w, 3))
    seen = []

    class Spy(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    with Spy():
        SCALE(x, w, 3)
    assert OP.default in seen
    with FlopCounterMode(display=False):
        SCALE(x, w, 3)


def test_the_registered_op_calls_the_kernel_straight_only_on_plain_tensors(monkeypatch):
    """The registered op's autograd kernel: a call without gradient on plain tensors (a compiled
    graph's) runs the primitive's kernel itself; fake tensors go below autograd to the fake; a
    call that needs gradients records the primitive's derivatives, and its backward can run
    again (``retain_graph``) with the same result."""
    from torchconv_ext._ops._registration import OpFunction

    below = []
    guard = torch._C._AutoDispatchBelowAutograd
    monkeypatch.setattr(torch._C, "_AutoDispatchBelowAutograd", lambda: below.append(1) or guard())
    x, w = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(OP(x, w, 2), x * w * 2)
    assert below == []
    mode = torch._subclasses.FakeTensorMode()
    fake_x, fake_w = mode.from_tensor(x.detach()), mode.from_tensor(w.detach())
    with mode:
        fake = OP(fake_x, fake_w, 2)
    assert type(fake) is torch._subclasses.FakeTensor and fake.shape == x.shape
    assert below == [1]
    y = OP(x, w, 3)
    assert issubclass(type(y.grad_fn)._forward_cls, OpFunction)
    first = torch.autograd.grad(y.sum(), (x, w), retain_graph=True)
    again = torch.autograd.grad(y.sum(), (x, w))
    for got, expected in zip(first, (w * 3, x * 3), strict=True):
        torch.testing.assert_close(got, expected)
    torch.testing.assert_close(again, first)
