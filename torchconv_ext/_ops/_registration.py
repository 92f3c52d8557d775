"""The primitives' registered ops, ``torch.ops.torchconv_ext.<name>``: what ``torch.compile``,
``torch.export``, fake tensors and dispatch modes see of a :class:`~._primitive.Primitive`.

Registered with ``torch.library`` directly — a schema and a kernel per dispatch key — rather
than as ``custom_op``s (:func:`register` says why).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch._functorch.utils import enable_single_level_autograd_function
from torch.autograd import forward_ad

from .._memory import empty_in_layout, suggested_format
from ._eager_frames import runs_eagerly
from ._layout import converting_once

if TYPE_CHECKING:
    from ._primitive import Primitive

_Function = TypeVar("_Function", bound=type)

_LIBRARY = torch.library.Library("torchconv_ext", "FRAGMENT")
#: The dispatch keys of a registered op's call on plain CPU or CUDA tensors, as its autograd
#: kernel sees them: nothing traces, batches or wraps the call.
#: (Their raw bits: a key set is not hashable.)
_PLAIN_KEYS = frozenset(
    (torch._C.DispatchKeySet(backend) | torch._C.DispatchKeySet(autograd)).raw_repr()
    for backend, autograd in [
        (torch._C.DispatchKey.CPU, torch._C.DispatchKey.AutogradCPU),
        (torch._C.DispatchKey.CUDA, torch._C.DispatchKey.AutogradCUDA),
    ]
)


class OpsOnly(threading.local):
    """Per thread: whether the primitives called now must stay registered ops — in a
    registered op's batching rule (functorch still looks active there, and the eager Function
    would re-enter vmap), in its derivatives under a functorch transform (where the eager
    Function would hand the call to functorch again, from inside an autograd kernel), and in a
    backward of gradients batched by torch's legacy vmap
    (``autograd.grad(is_grads_batched=True)``, ``jacobian(vectorize=True)``: tensors without
    storage, which only the dispatcher's per-sample loop unwraps). A class default, as a missing
    attribute's ``getattr`` costs 0.5 µs."""

    active = False


ops_only = OpsOnly()


def as_registered_ops(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, its primitive calls going through the registered ops."""
    previous = ops_only.active
    ops_only.active = True
    try:
        return fn(*args)
    finally:
        ops_only.active = previous


def _derivative(fn: Callable[..., Any], *args: Any) -> Any:
    """A registered op's derivative ``fn(*args)``: under a functorch transform its primitive
    calls go through the registered ops (see :class:`OpsOnly`)."""
    if torch._C._are_functorch_transforms_active():
        return as_registered_ops(fn, *args)
    return fn(*args)


def writable(output: Any, inputs: tuple) -> Any:
    """An autograd Function's ``output`` (a tensor or a tuple of them) as results callers may
    write in place, as they may ATen's: an output that is a view of a tensor made inside the
    call (a 1-d pooling computed in 2-d, then squeezed) is handed on as an alias that is no
    view (autograd refuses in-place writes to views made inside a Function). A view of an
    input stays one, and autograd's refusal with it."""
    if type(output) is not tuple:
        return _writable(output, inputs) if output._is_view() else output
    for o in output:  # (a loop, no generator: this runs on every eager call with gradients)
        if o._is_view():
            return tuple([_writable(o, inputs) for o in output])
    return output


def _writable(t: torch.Tensor, inputs: tuple) -> torch.Tensor:
    if not t._is_view():
        return t
    storage = t.untyped_storage().data_ptr()
    for a in inputs:
        if isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() == storage:
            return t
    return t.detach()


def forward_mode_active() -> bool:
    """Whether a call may carry tangents: a dual level of ``torch.autograd.forward_ad`` is
    open, or a functorch transform (``jvp``, ``linearize``) may be."""
    return forward_ad._current_level >= 0 or torch._C._are_functorch_transforms_active()


def function_named(base: _Function, name: str) -> _Function:
    """``base``, an ``autograd.Function``, subclassed under the name of op ``name`` —
    ``conv_fwd``: ``Conv``, ``conv_bwd_input``: ``ConvBwdInput`` — so that the nodes it makes in
    an autograd graph say which op made them, as torch's do (``grad_fn``, anomaly mode's
    messages, graph drawings: ``ConvBackward``)."""
    title = "".join(part.title() for part in name.removesuffix("_fwd").split("_"))
    return type(title, (base,), {"__module__": base.__module__, "__qualname__": title})


def register(prim: Primitive, vmap: Callable[..., tuple]) -> torch._ops.OpOverload:
    """``torch.ops.torchconv_ext.<name>`` for ``prim``: the schema from ``impl``'s annotations,
    the fake, the kernel on CPU and CUDA tensors (``prim.run_unnamed``: a compiled graph's call
    replays as an eager call does), autograd (:class:`OpFunction`, named after the op) and the
    batching rule
    ``vmap``.

    A call without gradient on plain tensors — a compiled graph's — runs ``prim.run_unnamed``
    straight from the autograd kernel: one Python kernel, where a ``custom_op`` passes three Python
    layers (its autograd kernel, a redispatch, its device kernel's wrapper) that cost a
    compiled graph about as much as the call itself."""
    name = prim.name
    function = function_named(OpFunction, name)
    schema = torch.library.infer_schema(prim.impl, mutates_args=())
    _LIBRARY.define(name + schema, tags=(torch.Tag.pt2_compliant_tag,))
    op = getattr(torch.ops.torchconv_ext, name).default
    after_autograd = torch._C._after_autograd_keyset

    # (Dynamo never traces into a kernel: a frame it skips still calls them.)
    @runs_eagerly
    def device_kernel(*args: Any) -> Any:
        return prim.run_unnamed(*args)

    @runs_eagerly
    def autograd_kernel(keys: torch._C.DispatchKeySet, *args: Any) -> Any:
        if (
            torch._C.is_grad_enabled() and torch._C._any_requires_grad(*args)
        ) or forward_mode_active():
            return function.apply(prim, keys & after_autograd, *args)
        if keys.raw_repr() in _PLAIN_KEYS:
            return prim.run_unnamed(*args)
        with torch._C._AutoDispatchBelowAutograd():  # fake tensors, modes, subclasses
            return op.redispatch(keys & after_autograd, *args)

    for device_key in ("CPU", "CUDA"):
        _LIBRARY.impl(name, device_kernel, device_key)
    _LIBRARY.impl(name, autograd_kernel, "Autograd", with_keyset=True)
    torch.library.register_fake(op, prim.fake, lib=_LIBRARY)
    torch.library.register_vmap(op, vmap, lib=_LIBRARY)
    return op


# --- a compiled backward's incoming gradients, laid out as traced -------------------------------

_LIBRARY.define(
    "settle_layout(Tensor grad, bool channels_last) -> Tensor", tags=(torch.Tag.pt2_compliant_tag,)
)


def _settle_layout(grad: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return empty_in_layout(grad.shape, grad, channels_last).copy_(grad)


for _device_key in ("CPU", "CUDA"):
    _LIBRARY.impl("settle_layout", _settle_layout, _device_key)
torch.library.register_fake("torchconv_ext::settle_layout", _settle_layout, lib=_LIBRARY)
torch.library.register_autograd(
    "torchconv_ext::settle_layout", lambda ctx, grad: (grad, None), lib=_LIBRARY
)


def settled(grad: torch.Tensor) -> torch.Tensor:
    """A compiled backward's incoming gradient, copied in its memory format where that format
    is all its strides say: with dynamic sizes, AOTAutograd promises a graph's tangent only
    dense in the traced one's memory format, and where a size-1 dim makes it dense in both
    (one channel, say), ATen's layout rule — ours — reads that dim's stride, which the graph's
    caller may set otherwise than the trace did: the op's result would not have the strides
    its fake promised (Inductor checks them). A copy by an op of ours, which a compiled graph
    keeps (it would take a view or copy of its own to change nothing)."""
    if not grad._has_symbolic_sizes_strides or grad.dim() not in (4, 5) or 1 not in grad.shape:
        return grad
    channels_last = torch.channels_last if grad.dim() == 4 else torch.channels_last_3d
    if not (grad.is_contiguous() and grad.is_contiguous(memory_format=channels_last)):
        return grad
    return torch.ops.torchconv_ext.settle_layout(grad, suggested_format(grad) is channels_last)


class OpFunction(torch.autograd.Function):
    """The registered op's autograd where it records a graph (``torch.compile``'s joint graph,
    a plain call of the op) or forward mode may be on: the forward below autograd — the fake
    while tracing, else the kernel — and the primitive's derivatives, reverse and forward
    mode. ``apply(prim, keys, *args)``."""

    @staticmethod
    def forward(prim: Primitive, keys: torch._C.DispatchKeySet, *args: Any) -> Any:
        with torch._C._AutoDispatchBelowAutograd():
            return writable(prim.op.redispatch(keys, *args), args)

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: Any) -> None:
        # (a separate setup_context: functorch transforms take no other autograd.Function)
        prim, args = inputs[0], inputs[2:]
        ctx.prim = prim
        if forward_mode_active():
            ctx.primals = args
        prim.setup_context(ctx, args, output)

    @staticmethod
    def jvp(ctx, _prim_tangent: None, _keys_tangent: None, *tangents: Any) -> Any:
        if ctx.prim.jvp is None:
            raise RuntimeError(f"{ctx.prim!r} has no forward-mode derivative")
        return _derivative(ctx.prim.jvp, ctx, *tangents)

    @classmethod
    def apply(cls, *args: Any) -> Any:
        # An autograd kernel, as ATen's: under a functorch transform the transform's layer has
        # already handed the call to autograd on this level (``Function.apply`` would hand it
        # to functorch again, which has no rule for that inside an autograd kernel).
        if torch._C._are_functorch_transforms_active():
            with enable_single_level_autograd_function():
                return super(torch.autograd.Function, cls).apply(*args)
        return super(torch.autograd.Function, cls).apply(*args)

    @staticmethod
    def backward(ctx, *grads: Any) -> tuple:
        # The derivatives index inputs without the leading primitive and keys (for this call:
        # a backward may run again, with ``retain_graph``).
        needs = ctx.needs_input_grad
        ctx.needs_input_grad = needs[2:]
        grads = tuple(g if g is None else settled(g) for g in grads)
        try:
            return (None, None, *_derivative(converting_once, ctx.prim.backward, ctx, *grads))
        finally:
            ctx.needs_input_grad = needs
