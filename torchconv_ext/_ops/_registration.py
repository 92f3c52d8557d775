"""The primitives' registered ops, ``torch.ops.torchconv_ext.<name>``: what ``torch.compile``,
``torch.export``, fake tensors and dispatch modes see of a :class:`~._primitive.Primitive`.

Registered with ``torch.library`` directly — a schema and a kernel per dispatch key — rather
than as ``custom_op``s (:func:`register` says why).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ._layout import converting_once

if TYPE_CHECKING:
    from ._primitive import Primitive

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


def register(prim: Primitive, vmap: Callable[..., tuple]) -> torch._ops.OpOverload:
    """``torch.ops.torchconv_ext.<name>`` for ``prim``: the schema from ``impl``'s annotations,
    the fake, the kernel on CPU and CUDA tensors (``prim.run``: a compiled graph's call replays
    as an eager call does), autograd (:class:`OpFunction`) and the batching rule ``vmap``.

    A call without gradient on plain tensors — a compiled graph's — runs ``prim.run`` straight
    from the autograd kernel: one Python kernel, where a ``custom_op`` passes three Python
    layers (its autograd kernel, a redispatch, its device kernel's wrapper) that cost a
    compiled graph about as much as the call itself."""
    name = prim.name
    schema = torch.library.infer_schema(prim.impl, mutates_args=())
    _LIBRARY.define(name + schema, tags=(torch.Tag.pt2_compliant_tag,))
    op = getattr(torch.ops.torchconv_ext, name).default
    after_autograd = torch._C._after_autograd_keyset

    # (Dynamo never traces into a kernel: a frame it skips still calls them.)
    @torch._disable_dynamo
    def device_kernel(*args: Any) -> Any:
        return prim.run(*args)

    @torch._disable_dynamo
    def autograd_kernel(keys: torch._C.DispatchKeySet, *args: Any) -> Any:
        if torch._C.is_grad_enabled() and torch._C._any_requires_grad(*args):
            return OpFunction.apply(prim, keys & after_autograd, *args)
        if keys.raw_repr() in _PLAIN_KEYS:
            return prim.run(*args)
        with torch._C._AutoDispatchBelowAutograd():  # fake tensors, modes, subclasses
            return op.redispatch(keys & after_autograd, *args)

    for device_key in ("CPU", "CUDA"):
        _LIBRARY.impl(name, device_kernel, device_key)
    _LIBRARY.impl(name, autograd_kernel, "Autograd", with_keyset=True)
    torch.library.register_fake(op, prim.fake, lib=_LIBRARY)
    torch.library.register_vmap(op, vmap, lib=_LIBRARY)
    return op


class OpFunction(torch.autograd.Function):
    """The registered op's autograd where it records a graph (``torch.compile``'s joint graph,
    a plain call of the op): the forward below autograd — the fake while tracing, else the
    kernel — and the primitive's derivatives. ``apply(prim, keys, *args)``."""

    @staticmethod
    def forward(ctx, prim: Primitive, keys: torch._C.DispatchKeySet, *args: Any) -> Any:
        with torch._C._AutoDispatchBelowAutograd():
            output = prim.op.redispatch(keys, *args)
        ctx.prim = prim
        prim.setup_context(ctx, args, output)
        return output

    @staticmethod
    def backward(ctx, *grads: Any) -> tuple:
        # The derivatives index inputs without the leading primitive and keys (for this call:
        # a backward may run again, with ``retain_graph``).
        needs = ctx.needs_input_grad
        ctx.needs_input_grad = needs[2:]
        try:
            return (None, None, *converting_once(ctx.prim.backward, ctx, *grads))
        finally:
            ctx.needs_input_grad = needs
