"""Who consumes which output, recorded from one run of the model on example inputs: what
``convert_model(fuse=True, example_inputs=...)`` reads where ``torch.fx`` cannot read the forward
code (Hugging Face's MobileNets compute TensorFlow's padding from the input's size, and
``torch.fx`` cannot turn a traced size into an ``int``).

During the run, global module hooks record each call of a leaf module (ours and ``torch.nn``'s,
as ``torch.fx`` sees them) with the tensors it took and the one it returned, and a
``TorchFunctionMode`` records every other use of a tensor by the forward code (an addition, a
view, a padding; reading a size is no use). A value is a tensor as a leaf module returned it: an
in-place module (``nn.ReLU(inplace=True)``) or ``nn.Identity`` returns the same tensor as a new
value. A leaf call alone consumes a value when it takes that value as its one argument and
nothing else takes it — no other call, no code, not the model's output.

The run follows the example's path through the forward code: a model that branches on its input's
values or sizes may take another path on another input, as with ``torch.jit.trace``. A tensor
kept aside without a torch operation (set as an attribute, say) is not seen. The module hooks
are global: a module another thread calls meanwhile counts as called again (it is left), and
that thread's calls form no chain.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as module_hooks
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree

#: Tensor methods and properties that read metadata only, not values.
_METADATA = frozenset(
    {"size", "dim", "stride", "numel", "is_contiguous", "shape", "dtype", "device", "ndim",
     "layout", "is_cuda", "requires_grad", "__len__", "nelement", "element_size"}
)  # fmt: skip


def _name_of(func: Callable) -> str:
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a property's getter: Tensor.shape.__get__
        name = getattr(getattr(func, "__self__", None), "__name__", "")
    return name


def _tensors_in(obj: Any, seen: set[int] | None = None, depth: int = 0) -> Iterator[Tensor]:
    """Every tensor in ``obj``: containers, dataclasses (Hugging Face's outputs) and objects'
    attributes, a few levels deep."""
    seen = set() if seen is None else seen
    if isinstance(obj, Tensor):
        yield obj
        return
    if depth > 8 or id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, nn.Module)):
        return
    seen.add(id(obj))
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    elif dataclasses.is_dataclass(obj):
        children = [getattr(obj, f.name, None) for f in dataclasses.fields(obj)]
    else:
        children = list(getattr(obj, "__dict__", {}).values())
    for child in children:
        yield from _tensors_in(child, seen, depth + 1)


@dataclasses.dataclass(frozen=True)
class Concat:
    """A chain's first step that is no module's call: the channel concatenation of module
    calls (by name, in its order) whose outputs it alone consumes — timm's ``MixedConv2d``
    concatenates its mixed-kernel convolutions so, before MixNet's batch norms."""

    parts: tuple[str, ...]


#: The functions that concatenate along a dim (``dim`` their second argument).
CONCATENATIONS = (torch.cat, torch.concat)


def concatenated_along_channels(args: tuple, kwargs: dict) -> list | None:
    """The sequence a concatenation's arguments concatenate along dim 1, else ``None``."""
    parts = args[0] if args else kwargs.get("tensors")
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    return list(parts) if dim == 1 and isinstance(parts, (list, tuple)) else None


@dataclasses.dataclass
class _Call:
    """One call of a leaf module outside any other leaf: its module, the values it took, its
    one argument's value (``None`` unless it took exactly one tensor and nothing else) and the
    value it returned (``None`` unless one tensor). Or a concatenation along channels by the
    forward code (``module`` ``None``, ``inputs`` the values it took in order)."""

    module: nn.Module | None
    inputs: list[int]
    sole_input: int | None
    output: int | None


class _Recorder(TorchFunctionMode):
    def __init__(self, is_leaf: Callable[[nn.Module], bool]) -> None:
        super().__init__()
        self.is_leaf = is_leaf
        self.thread = threading.get_ident()  # (the hooks are global: other threads' calls pass)
        self.depth = 0  # leaf calls open (their insides are theirs, not the forward code's)
        self.calls: list[_Call] = []
        self.module_calls: Counter = Counter()  # every call of every module, by id
        self.code_uses: Counter = Counter()  # by value
        self.values: dict[int, int] = {}  # id(tensor) -> its current value
        self.alive: list[Tensor] = []  # every value's tensor, kept so no id is reused

    def value(self, tensor: Tensor) -> int | None:
        return self.values.get(id(tensor))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.depth or _name_of(func) in _METADATA:
            return func(*args, **kwargs)
        for leaf in _pytree.tree_leaves((args, kwargs)):
            if isinstance(leaf, Tensor) and (v := self.value(leaf)) is not None:
                self.code_uses[v] += 1
        result = func(*args, **kwargs)
        if func in CONCATENATIONS and isinstance(result, Tensor):
            parts = concatenated_along_channels(args, kwargs) or []
            values = [self.value(t) if isinstance(t, Tensor) else None for t in parts]
            if len(values) > 1 and None not in values:
                self.alive.append(result)
                self.values[id(result)] = len(self.alive) - 1
                self.calls.append(_Call(None, values, None, len(self.alive) - 1))
        return result

    def before(self, module: nn.Module, args: tuple) -> None:
        self.module_calls[id(module)] += 1  # (from any thread: a module called there is shared)
        if threading.get_ident() != self.thread:
            return
        if self.is_leaf(module):
            self.depth += 1

    def after(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if threading.get_ident() != self.thread or not self.is_leaf(module):
            return
        self.depth -= 1
        if self.depth:
            return
        taken = [t for t in _pytree.tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
        inputs = [v for t in taken if (v := self.value(t)) is not None]
        sole = self.value(args[0]) if len(args) == 1 and not kwargs and len(taken) == 1 else None
        out = None
        if isinstance(output, Tensor):  # a new value, even where the same tensor came back
            self.alive.append(output)
            out = self.values[id(output)] = len(self.alive) - 1
        self.calls.append(_Call(module, inputs, sole, out))


def record_calls(
    model: nn.Module, example_inputs: tuple, is_leaf: Callable[[nn.Module], bool]
) -> tuple[list[_Call], Counter, Counter, set[int]]:
    """Run ``model(*example_inputs)`` once without gradients, recording: the leaf calls; each
    module's number of calls (by ``id``); each value's uses by the forward code; the values in
    the model's output. Buffers (batch norms' running statistics in training mode) and the random
    number generators are as they were afterwards."""
    recorder = _Recorder(is_leaf)
    buffers = [(b, b.clone()) for b in model.buffers()]
    devices = sorted({t.device.index or 0 for t in _tensors_in(example_inputs) if t.is_cuda})
    handles = [
        module_hooks.register_module_forward_pre_hook(recorder.before),
        module_hooks.register_module_forward_hook(recorder.after, with_kwargs=True),
    ]
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad(), recorder:
            output = model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
    outputs = {v for t in _tensors_in(output) if (v := recorder.value(t)) is not None}
    return recorder.calls, recorder.module_calls, recorder.code_uses, outputs


def recorded_chains(
    model: nn.Module,
    example_inputs: tuple,
    is_leaf: Callable[[nn.Module], bool],
    passes_through: Callable[[nn.Module], bool],
) -> tuple[dict[tuple[str, ...], tuple[int, ...]], Counter]:
    """Every chain of the run (a leaf call or a concatenation of leaf calls' outputs along
    channels, then up to two leaf calls each consuming the one before alone, through
    identities), by the modules' names in ``model``, in the order first
    run, each with ``runs``: ``runs[k]`` is how many times its first ``k + 1`` modules ran in a
    row (a block called once per chunk runs its chains once per chunk); and how often each
    named module was called."""
    calls, module_calls, code_uses, outputs = record_calls(model, example_inputs, is_leaf)
    names = {id(m): name for name, m in model.named_modules()}
    consumers: dict[int, list[int]] = {}  # by leaf calls (a concatenation's use is the code's)
    for i, call in enumerate(calls):
        for v in set(call.inputs) if call.module is not None else ():
            consumers.setdefault(v, []).append(i)

    def sole_consumer(call: _Call) -> _Call | None:
        v = call.output
        if v is None or code_uses[v] or v in outputs or len(consumers.get(v, ())) != 1:
            return None
        (i,) = consumers[v]
        return calls[i] if calls[i].sole_input == v else None

    producers = {call.output: call for call in calls if call.output is not None}

    def concatenation(call: _Call) -> Concat | None:
        """A concatenation's call as a chain's first step: each of its values a named module's
        output that it alone consumes, once."""
        parts = [producers.get(v) for v in call.inputs]
        if len(set(call.inputs)) != len(call.inputs) or any(
            p is None
            or p.module is None
            or id(p.module) not in names
            or code_uses[v] != 1
            or v in outputs
            or v in consumers
            for p, v in zip(parts, call.inputs)
        ):
            return None
        parted = tuple(names[id(p.module)] for p in parts)
        return Concat(parted) if len(set(parted)) == len(parted) else None

    chains: dict[tuple, None] = {}  # (in order, once each)
    prefixes: Counter = Counter()
    for call in calls:
        # (a module made in the forward is nameless: nothing to change)
        first = concatenation(call) if call.module is None else names.get(id(call.module))
        if first is None:
            continue
        chain = [first]
        while len(chain) < 3 and (call := sole_consumer(call)) is not None:
            if id(call.module) not in names:
                break
            if not passes_through(call.module):
                chain.append(names[id(call.module)])
        chains[tuple(chain)] = None
        prefixes.update(tuple(chain[: k + 1]) for k in range(len(chain)))
    counts = Counter({names[i]: n for i, n in module_calls.items() if i in names})
    runs = {c: tuple(prefixes[c[: k + 1]] for k in range(len(c))) for c in chains}
    return runs, counts
