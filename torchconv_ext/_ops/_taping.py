"""The primitives on tapes (``triton_kernels._tape``): what an implementation's tape key holds
besides its arguments (:func:`impl_context`), and the backward of one eager call outside a graph
as one tape (:func:`backward_on_tape`): the derivative function and every gradient primitive it
calls, keyed by the ctx's saved tensors, attributes and ``needs_input_grad`` and the incoming
gradients.
"""

from __future__ import annotations

import functools
import marshal
import operator
from collections.abc import Callable
from typing import Any

import torch

from .. import _backend
from .._backend import get_backend, loaded_kernels
from ._eager_frames import runs_eagerly
from ._layout import converting_once

#: The tensor types a tape takes as plain tensors (subclasses never are).
PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)
#: ``t is not None``, called from C (a filter over a ctx's tensors without a Python frame each).
is_tensor = functools.partial(operator.is_not, None)
_is_none = functools.partial(operator.is_, None)


def impl_context() -> tuple:
    """What implementations read besides their arguments: the backend and whether fp32
    convolutions may use TF32 (part of their tapes' keys)."""
    # (``get_backend()`` once chosen, read inline: tapes ask on every call)
    backend = _backend._current or get_backend()
    return backend, torch._C._get_cudnn_allow_tf32()  # = torch.backends.cudnn.allow_tf32


#: ``backward_from_saved`` on a tape, once our kernels are loaded.
_taped_backward: Callable[..., Any] | None = None


class Attributes:
    """What ``setup_context`` put on a ctx besides tensors, hashable by value: a part of the
    backward tape's key. Raises ``TypeError`` for a value that cannot be compared so."""

    __slots__ = ("key", "values")

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        try:  # ints, floats, strings, lists...: marshal's bytes tell their types and values
            self.key: Any = marshal.dumps(values, 2)  # (version 2: no back-references)
        except ValueError:  # other objects (dtypes...)
            self.key = tuple((name, _frozen(v)) for name, v in values.items())
            self.key.__hash__()

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return type(other) is Attributes and self.key == other.key


def _frozen(v: Any) -> Any:
    """``v`` hashable, telling apart values of different types (``1``, ``True``, ``1.0``);
    ints and strings stand for themselves (no other frozen form equals them)."""
    t = type(v)
    if t is int or t is str:
        return v
    if t is list or t is tuple:
        return (t, *map(_frozen, v))
    if isinstance(v, torch.Tensor):
        raise TypeError("a tensor inside a ctx attribute")
    return (t, v)


class _SavedContext:
    """The ctx a backward sees when it runs from its tape: needs_input_grad, the saved tensors
    and the attributes ``setup_context`` set, as the real ctx holds them."""

    def __init__(self, needs: tuple, saved: tuple, attributes: dict[str, Any]) -> None:
        self.needs_input_grad = needs
        self.saved_tensors = saved
        self.__dict__.update(attributes)


def backward_from_saved(backward, needs, attributes, named, n_saved, n_tensors, *args):
    """``backward(ctx, *grads)`` on a ctx made of its parts: ``args`` are the ctx's tensors
    (``n_tensors``: the ``n_saved`` saved ones, then tensor attributes not saved too) and the
    incoming gradients; ``named`` pairs each tensor attribute with its place among them."""
    tensors = args[:n_tensors]
    values = {**attributes.values, **{name: tensors[i] for name, i in named}}
    ctx = _SavedContext(needs, tensors[:n_saved], values)
    return converting_once(backward, ctx, *args[n_tensors:])


@runs_eagerly
def backward_on_tape(ctx, grads: tuple) -> tuple:
    """``ctx.prim.backward(ctx, *grads)`` outside a graph, replayed from one tape per problem
    once our kernels are loaded: the derivative's Python and each gradient primitive's own
    set-up run on the second call only (a conv's input, weight and bias gradients are then one
    replay instead of three primitive calls).

    The backward of a bound call with static attributes (``ctx.bound``) takes a shorter key
    once its tape exists: its bound object and ``needs_input_grad`` fix everything but the
    tensors' strides and alignment (the bound call's tensors have the shapes, dtypes and
    devices of its opening, and autograd hands gradients in its outputs' — see
    ``_tape.taped``'s ``vouched``), and the ctx's layout — which of its attributes are tensors
    — is learned once per bound object and ``needs_input_grad``."""
    global _taped_backward
    backward = ctx.prim.backward
    if _taped_backward is None:
        kernels = loaded_kernels()
        if kernels is None:
            return converting_once(backward, ctx, *grads)
        _taped_backward = kernels.taped(backward_from_saved, returns=True, context=impl_context)
    bound = getattr(ctx, "bound", None)  # (set for a primitive with static attributes)
    if bound is not None and bound.attributes:
        needs = ctx.needs_input_grad
        layout = bound.backward_layouts.get(needs)
        if layout is not None:
            extras, named, n_saved, n_tensors = layout
            tensors = [*ctx.saved_tensors, *map(ctx.__getattribute__, extras)]
            present = [*filter(is_tensor, tensors)]
            missing = False
            for g in grads:
                # (incoming gradients have the outputs' dtype, shape and device, but may be
                # subclasses, or None: an output nothing read, where its primitive leaves them
                # unmaterialised)
                if type(g) in PLAIN_TENSORS:
                    present.append(g)
                elif g is None:
                    missing = True
                else:
                    break
            else:
                # (which gradients are None is part of the claim: the tape's tensors are others)
                claim = (bound, needs, *map(_is_none, grads)) if missing else (bound, needs)
                return _taped_backward.vouched(
                    claim, present, backward, needs, bound.attributes, named, n_saved, n_tensors,
                    *tensors, *grads,
                )  # fmt: skip
    saved = ctx.saved_tensors
    tensors, named, plain, extras = list(saved), [], {}, []
    for name, v in vars(ctx).items():
        if type(v) in PLAIN_TENSORS:
            # A tensor both saved and an attribute is passed once (a tape never records a
            # tensor passed twice).
            same = [i for i, t in enumerate(tensors) if t is v]
            if not same:
                tensors.append(v)
                extras.append(name)
            named.append((name, same[0] if same else len(tensors) - 1))
        elif name != "prim" and name != "bound":
            plain[name] = v
    # A bound call's static attributes are the same on every call of its Bound: made a key once.
    attributes = None if bound is None else bound.attributes
    if attributes is None:
        try:
            attributes = Attributes(plain)
        except TypeError:  # an attribute that cannot be part of a key: no tape
            attributes = False
        if bound is not None:
            bound.attributes = attributes
    if attributes is False:
        return converting_once(backward, ctx, *grads)
    needs = ctx.needs_input_grad
    layout = (tuple(named), len(saved), len(tensors))
    if bound is not None:
        bound.backward_layouts[needs] = (tuple(extras), *layout)
    return _taped_backward(backward, needs, attributes, *layout, *tensors, *grads)
