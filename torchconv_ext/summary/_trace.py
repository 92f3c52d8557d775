"""One run of a model with forward hooks: per-layer shapes, FLOPs, bytes and receptive fields.

Receptive fields follow tensors. The input gets the identity field; every torch function the
forward calls (seen through a ``TorchFunctionMode``) gives its outputs the union of its traced
inputs' fields; then, when a leaf layer returns, its own rule (:mod:`.layers`) replaces that
with the exact field. So a residual ``x + f(x)`` gets the union of both paths' fields and a
``torch.cat`` of branches the union of the branches'.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from .fields import Field, union
from .layers import Step, generic_step, layer_step


@dataclass(frozen=True)
class LayerSummary:
    """One layer call: where it sits, its output, its cost and its output's receptive field.

    ``params`` counts the layer's parameters (its sublayers' too), ``flops`` the FLOPs of the
    call as ``torch.utils.flop_counter`` counts them, ``output_bytes`` the bytes of every tensor
    it returns; ``field`` is ``None`` where the receptive field is unknown.
    """

    name: str
    type: str
    depth: int
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    params: int
    flops: int
    output_bytes: int
    field: Field | None


@dataclass(frozen=True)
class ModuleCall:
    """A module's call that returned a tensor, to find it again (the effective field)."""

    module: nn.Module
    index: int  # which call of this module
    name: str
    output_shape: tuple[int, ...]
    field: Field | None


def tensors(tree) -> list[Tensor]:
    return [t for t in tree_leaves(tree) if isinstance(t, Tensor)]


class FieldMode(TorchFunctionMode):
    """Carries receptive fields through every torch function the forward calls.

    A traced tensor maps to its field (``None``: unknown); untraced tensors (weights, constants)
    have no field and are ignored.
    """

    def __init__(self) -> None:
        super().__init__()
        self._fields: dict[int, tuple[Tensor, Field | None]] = {}

    def traced(self, items: Sequence[Tensor]) -> list[Field | None]:
        """The fields of the traced tensors among ``items``."""
        found = (self._fields.get(id(t)) for t in items)
        return [entry[1] for t, entry in zip(items, found) if entry is not None and entry[0] is t]

    def assign(self, items: Sequence[Tensor], field: Field | None) -> None:
        for t in items:
            self._fields[id(t)] = (t, field)  # the tensor is kept, so its id is not reused

    def field(self, t: Tensor) -> Field | None:
        fields = self.traced([t])
        return fields[0] if fields else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        fields = self.traced(tensors((args, kwargs)))
        if fields:
            self.assign(tensors(out), merge(fields))
        return out


def merge(fields: Sequence[Field | None]) -> Field | None:
    """The union of ``fields``; unknown if any is, or if their numbers of axes differ."""
    if any(f is None for f in fields) or len({f.ndim for f in fields}) != 1:
        return None
    return union(fields)


class Tracer:
    """Hooks on every module of ``model`` that record :class:`LayerSummary` rows.

    ``depth``: list leaf layers down to this nesting depth and the modules at exactly this
    depth (with their sublayers' totals); ``None`` lists every leaf layer.
    """

    def __init__(self, model: nn.Module, depth: int | None, counter: FlopCounterMode):
        self.depth = depth
        self.counter = counter
        self.mode = FieldMode()
        self.names = {m: n for n, m in model.named_modules()}
        self.layers: list[LayerSummary] = []
        self.calls: list[ModuleCall] = []  # in the order they return
        self.leaf_output_bytes = 0
        self._calls: Counter[nn.Module] = Counter()
        self._stack: list[int] = []

    @contextlib.contextmanager
    def hooks(self) -> Iterator[None]:
        handles = []
        try:
            for module in self.names:
                handles.append(module.register_forward_pre_hook(self._pre))
                handles.append(module.register_forward_hook(self._post, with_kwargs=True))
            yield
        finally:
            for h in handles:
                h.remove()

    def _pre(self, module: nn.Module, args) -> None:
        self._stack.append(self.counter.get_total_flops())

    def _post(self, module: nn.Module, args, kwargs, output) -> None:
        flops = self.counter.get_total_flops() - self._stack.pop()
        name = self.names[module]
        depth = 0 if not name else name.count(".") + 1
        leaf = next(iter(module.children()), None) is None
        inputs, outputs = tensors((args, kwargs)), tensors(output)
        index = self._calls[module]  # every call counts, as the effective field's hook counts
        self._calls[module] += 1
        if leaf and inputs and outputs:
            self._apply_rule(module, name, args, kwargs, inputs, outputs)
        if leaf:
            self.leaf_output_bytes += _bytes(outputs)
        field = self.mode.field(outputs[0]) if outputs else None
        if outputs:
            self.calls.append(ModuleCall(module, index, name, tuple(outputs[0].shape), field))
        listed = (leaf and (self.depth is None or depth <= self.depth)) or depth == self.depth
        if listed:
            self.layers.append(
                LayerSummary(
                    name=name,
                    type=type(module).__name__,
                    depth=depth,
                    input_shape=tuple(inputs[0].shape) if inputs else None,
                    output_shape=tuple(outputs[0].shape) if outputs else None,
                    params=sum(p.numel() for p in module.parameters()),
                    flops=flops,
                    output_bytes=_bytes(outputs),
                    field=field,
                )
            )

    def _apply_rule(self, module, name, args, kwargs, inputs, outputs) -> None:
        fields = self.mode.traced(inputs)
        if not fields:
            return  # not computed from the model's input
        x, first = inputs[0], self.mode.field(inputs[0])
        explicit_size = len(args) > 1 or "output_size" in kwargs
        step: Step | None = layer_step(module, x, first, explicit_size)
        if step is None:
            step = generic_step(x, outputs[0], fields)
        if step.expected is not None:
            got = tuple(outputs[0].shape[-len(step.expected) :])
            if got != step.expected:
                raise RuntimeError(
                    f"summary: layer {name or '(model)'} ({type(module).__name__}) returned "
                    f"spatial size {list(got)} for input {list(x.shape)}, but the output-size "
                    f"formula gives {list(step.expected)}: the formula is wrong for this layer"
                )
        self.mode.assign(outputs, step.field)


def _bytes(items: Sequence[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in items)
