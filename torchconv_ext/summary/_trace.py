"""One run of a model with forward hooks: per-layer shapes, FLOPs, bytes and receptive fields.

Receptive fields follow tensors. The input gets the identity field; every torch function the
forward calls (seen through a ``TorchFunctionMode``) gives its outputs the union of its traced
inputs' fields when it keeps their spatial layout, else an unknown field; then, when a leaf
layer returns, its own rule (:mod:`.layers`) replaces that with the exact field. So a residual
``x + f(x)`` gets the union of both paths' fields and a ``torch.cat`` of branches the union of
the branches', while a functional ``F.max_pool2d`` or ``F.interpolate`` makes it unknown.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from .fields import Field, union, whole_field
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
    have no field and are ignored. Tensors are held by weak references, so a real run frees
    its intermediate activations as a plain forward does.
    """

    def __init__(self) -> None:
        super().__init__()
        self._fields: dict[int, tuple[weakref.ref[Tensor], Field | None]] = {}

    def traced(self, items: Sequence[Tensor]) -> list[Field | None]:
        """The fields of the traced tensors among ``items``."""
        return [field for _, field in self._traced(items)]

    def _traced(self, items: Sequence[Tensor]) -> list[tuple[Tensor, Field | None]]:
        found = (self._fields.get(id(t)) for t in items)
        # (an id whose tensor has died may be reused by another: the reference tells them apart)
        return [(t, e[1]) for t, e in zip(items, found) if e is not None and e[0]() is t]

    def assign(self, items: Sequence[Tensor], field: Field | None) -> None:
        for t in items:
            self._fields[id(t)] = (weakref.ref(t), field)

    def field(self, t: Tensor) -> Field | None:
        fields = self.traced([t])
        return fields[0] if fields else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        sources = self._traced(tensors((args, kwargs)))
        if sources:
            field = merge([f for _, f in sources])
            whole = field is not None and _pools_the_whole_map(func, args, kwargs, field.ndim)
            if whole:  # global pooling: every output sees the whole map
                covered = whole_field(replace(field, extent=tuple(args[0].shape[2:])))
                self.assign(tensors(out), replace(covered, extent=(1,) * field.ndim))
                return out
            if field is not None and _moves_pixels(func, args, kwargs, field.ndim):
                field = None
            for t in tensors(out):
                keeps = field is not None and all(
                    keeps_layout(s, t, field.ndim) for s, _ in sources
                )
                self.assign([t], field if keeps else None)
        return out


#: Functions that move or mix pixels while they may keep the shape (functional convolutions
#: and pooling with 'same' padding, flips, rolls, transpositions of the axes).
_PIXEL_MOVERS = re.compile(
    r"conv|pool|fold|roll|flip|rot90|transpose|permute|swap|movedim|moveaxis|interpolate|"
    r"upsample|grid_sample|shuffle|fft|^t_?$"
)

#: Functions that combine values along their ``dim`` argument without changing the shape.
_ALONG_DIM = {"softmax", "log_softmax", "softmin", "cumsum", "cumprod", "cummax", "cummin"}
_ALONG_DIM |= {"logcumsumexp", "sort", "argsort", "normalize", "glu"}


#: Reductions that pool a map globally when their ``dim`` holds all its spatial axes.
_REDUCTIONS = {"mean", "sum", "amax", "amin", "logsumexp", "nansum", "nanmean", "std", "var"}


def _pools_the_whole_map(func, args, kwargs, ndim: int) -> bool:
    """Whether ``func`` reduces its map argument (``(N, C, *spatial)``, ``ndim`` spatial axes)
    over all its spatial axes: our global pooling, adaptive pooling to 1, a mean over them."""
    x = args[0] if args else None
    if not isinstance(x, Tensor) or x.dim() != ndim + 2 or ndim == 0:
        return False
    name = getattr(func, "__name__", "")
    if name in {"global_avg_pool", "global_max_pool"}:
        return True
    if name.startswith("adaptive_") and "pool" in name:
        size = kwargs.get("output_size", args[1] if len(args) > 1 else None)
        return size == 1 or (isinstance(size, Sequence) and all(s == 1 for s in size))
    if name in _REDUCTIONS:
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        dims = dim if isinstance(dim, Sequence) else [dim]
        if not all(isinstance(d, int) for d in dims):
            return False
        return set(range(2, ndim + 2)) <= {d % x.dim() for d in dims}
    return False


def _moves_pixels(func, args, kwargs, ndim: int) -> bool:
    """Whether ``func`` may move a pixel's value to another position of a map with ``ndim``
    spatial axes, or mix it with its neighbours, without changing the map's shape."""
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a property: x.T, x.mT, x.H and x.mH transpose
        return getattr(getattr(func, "__self__", None), "__name__", "") in {"T", "mT", "H", "mH"}
    if _PIXEL_MOVERS.search(name):
        return True
    if name in _ALONG_DIM:
        dim = kwargs.get("dim", args[1] if len(args) > 1 else -1)
        rank = args[0].dim() if args and isinstance(args[0], Tensor) else 0
        return not isinstance(dim, int) or rank != ndim + 2 or dim % rank >= 2
    return False


def keeps_layout(source: Tensor, out: Tensor, ndim: int) -> bool:
    """Whether ``out``, computed from ``source`` whose field has ``ndim`` spatial axes, has the
    same spatial layout: the same rank and spatial sizes (a map, ``(N, C, *spatial)``: batch
    and channels may change), the same features (a flattened map), or ``source`` flattened."""
    if source.dim() == ndim + 2 and out.dim() == 2 and ndim > 0:  # flattened (N, C·H·W)
        return out.shape[0] == source.shape[0] and out.numel() == source.numel()
    if out.dim() != source.dim():
        return False
    if source.dim() == ndim + 2:
        return out.shape[2:] == source.shape[2:]
    return out.shape[1:] == source.shape[1:]


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
        # A transposed convolution given its output size: the size it returned.
        returned = tuple(outputs[0].shape) if len(args) > 1 or "output_size" in kwargs else None
        step: Step | None = layer_step(module, x, first, returned)
        if step is None:
            step = generic_step(x, outputs[0], fields)
        if step.expected is not None:
            got = tuple(outputs[0].shape[-len(step.expected) :])
            if got != step.expected:
                if not _runs_its_class_forward(module):
                    # A subclass whose own forward pads or crops (a causal or TF-'same'
                    # convolution): the layer's rule does not describe it.
                    step = Step(None, None)
                else:
                    raise RuntimeError(
                        f"summary: layer {name or '(model)'} ({type(module).__name__}) returned "
                        f"spatial size {list(got)} for input {list(x.shape)}, but the "
                        f"output-size formula gives {list(step.expected)}: the formula is "
                        "wrong for this layer"
                    )
        self.mode.assign(outputs, step.field)


def _runs_its_class_forward(module: nn.Module) -> bool:
    """Whether ``module``'s forward is torch's or ours, the one its layer rule describes."""
    forward = getattr(module.forward, "__func__", module.forward)
    return getattr(forward, "__module__", "").startswith(("torch.", "torchconv_ext."))


def _bytes(items: Sequence[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in items)
