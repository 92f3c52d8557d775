"""``convert_model(fuse=True)``: fold eval-mode batch norm into the convolution before it (or,
where every tap reads it, into the one after it), fuse the activation after it into the
convolution's epilogue, and fold a zero pad before a convolution into its padding.

Recognised structure: a convolution whose output goes only to a batch norm (in eval mode),
whose output goes only to an activation — or a convolution straight into an activation:

    Conv{1,2,3}d or ConvTranspose{1,2,3}d  →  [BatchNorm{1,2,3}d or SyncBatchNorm, in eval
    mode]  →  [activation]

where each step is a module's call on the step before alone (an ``nn.Identity`` between two
steps passes it on). The convolution is one of ours by then (``convert_model`` converted it;
one with an activation already, one under another class's forward or one with hooks is not
fused, and no batch norm folds into a parametrized one or one convolving with a weight it
computes — the activation after it still fuses —, which the report says of the batch norm or
activation after it); the batch norm is a torch class, or a subclass computing torch's batch
norm and then at most an activation — timm's ``BatchNormAct2d``, whose activation is fused with
it (``_fuse_steps``) — and tracks running statistics over the convolution's output channels; the
activation is ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.PReLU`` (one weight, or one per output
channel), ``nn.ELU``, ``nn.GELU``, ``nn.SiLU``, ``nn.ReLU6``, ``nn.Hardswish``,
``nn.Hardsigmoid``, ``nn.Mish`` or ``nn.Sigmoid`` — or another library's module whose forward is
one such function call (Transformers' ``GELUActivation``, timm's ``GELU``).

A zero pad before a convolution,

    ZeroPad{1,2,3}d or ConstantPad{1,2,3}d of 0  →  Conv{1,2,3}d

becomes its padding (``(before, after)`` pairs, which our convolution applies in its index
arithmetic: no padded copy of the input), where the convolution pads with zeros, by a padding
that does not depend on the input's size (not TensorFlow's ``'same'`` with a stride), and runs
its own forward without hooks (``_fuse_steps.padding_step``; the report says why otherwise).

A batch norm (eval mode, no activation of its own) before a convolution,

    BatchNorm{1,2,3}d or SyncBatchNorm  →  Conv{1,2,3}d

where it did not fold into a convolution before it (timm's MaxViT and CoAtNet normalise each
block's input so, before a 1×1 convolution), folds into the convolution's weight and bias:
each input channel's weights times the batch norm's scale, and the bias plus every weight
times its input channel's shift. That is exact where every tap reads the batch norm's output:
not where the convolution pads with zeros (a tap on the padding reads 0, not the shift; a
padding mode other than zeros reads the normalised input), nor for a transposed convolution
(``_fuse_steps.input_fold_refusal``; the report says why otherwise).

A batch norm (eval mode) that alone reads the channel concatenation of convolutions' outputs,
each read by the concatenation alone,

    torch.cat([Conv(...), Conv(...), ...], 1)  →  [BatchNorm]  →  [activation]

(timm's ``MixedConv2d``, in MixNet) folds into each convolution — the batch norm of its own
channels — and the activation after it (or the batch norm's own) fuses into each; not a
PReLU, whose weight would be split between them (``_fold_batch_norm_into_parts``).

Who consumes which output is read from the model's forward code, recorded by ``torch.fx``'s
symbolic tracing (our layers, torch's and every batch norm are leaves: their own forwards are
not traced). There
each module must be called once: a shared module (torchvision's ResNet blocks call one
``self.relu`` two or three times) would change at its other uses, so it is reported and left —
unless it is an activation each of whose calls alone consumes a convolution's output (MONAI's
blocks call one after each convolution's batch norm): then it fuses into every one of them. A
module registered under a second name (an alias) is one module, fused and replaced under every
name, where every name lies inside the traced forward; an alias elsewhere could be called where
the trace does not look, so such a module is left. Only a forward of one input is read — one with more could take another
path on a call than in its trace (``if mask is None``) — and where a forward takes more or
cannot be traced (it branches on values, say), its children are read one by one, and the
consecutive children of an ``nn.Sequential`` running torch's forward — which hands each output
to the next child alone — as such a chain (a subclass's own forward may not); the report names
each convolution such a forward calls directly, since what consumes its output is then not known
(``example_inputs`` records it). What the forward code read does is what counts: code not read
that calls a module directly — another method of the model, or a forward that does not trace
reaching into a child's modules (``self.block[1](x)``) — gets the fused computation there too (a
folded batch norm or a fused activation is an identity there); ``example_inputs`` records such
calls, and leaves those modules.

With ``example_inputs`` (``convert_model(fuse=True, example_inputs=x)``) the chains are recorded
from one run of the model instead (``_fuse_record``): for forward code ``torch.fx`` cannot trace,
and right for inputs that take the example's path through it. There a module the run calls
several times is as one called once where each of its calls is in the same chain (a block run
once per chunk of a video, as Diffusers' Wan and CogVideoX run theirs): every step fused is
then fused into each call.

Each absorbed module is replaced by ``nn.Identity`` (as ``torch.ao.quantization.fuse_modules``
does), so the model keeps its classes, its forward code, the names and ``state_dict`` keys of
its other layers; a fused PReLU's weight moves to the convolution as ``activation_weight``.
Modules with hooks are never fused (the hook would stop seeing its module run). An activation
written in the forward code (``F.relu(x)``) is not a module to replace: it stays, after the
folded batch norm.

Batch norm in training mode is never folded (its statistics change with every batch). A folded
model computes what the original computes in eval mode; switching it back to ``train()`` does
not bring the batch norm back, so ``fuse=True`` is for inference.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn

from ._fuse_record import CONCATENATIONS, Concat, concatenated_along_channels, recorded_chains
from ._fuse_steps import (
    Activation,
    activation_of,
    batch_norm_step,
    conv_refusal,
    fold_batch_norm,
    fold_batch_norm_before,
    fold_padding,
    has_hooks,
    input_fold_refusal,
    is_batch_norm,
    is_fusable_conv,
    is_leaf,
    is_zero_pad,
    padding_step,
    passes_through,
    traced,
    weight_refusal,
)
from .nn._base import Traced


@dataclass(frozen=True)
class FusionEntry:
    """A convolution (``name``) and the modules fused into it, each ``(name, class name)``;
    or, with a ``reason``, a module that followed a convolution (or padded or normalised its
    input) and was not fused."""

    name: str
    fused: tuple[tuple[str, str], ...] = ()
    reason: str = ""


# --- chains: a convolution and the modules that consume its output, one after another ---------


#: A chain's modules by their names under the module it was found in (the first step may be a
#: concatenation of module calls: :class:`Concat`).
Chain = list["str | Concat"]


def _sole_consumer(node: torch.fx.Node) -> torch.fx.Node | None:
    """The module call that alone consumes ``node``'s output, and consumes nothing else."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    if user.op == "call_module" and user.args == (node,) and not user.kwargs:
        return user
    return None


def _concatenation(node: torch.fx.Node) -> Concat | None:
    """``node`` as a chain's first step if it concatenates, along dim 1, the outputs of two or
    more module calls that it alone consumes, each once; else ``None``."""
    if node.op != "call_function" or node.target not in CONCATENATIONS:
        return None
    parts = concatenated_along_channels(node.args, node.kwargs)
    if parts is None or len(parts) < 2 or len(set(parts)) != len(parts):
        return None
    if not all(
        isinstance(p, torch.fx.Node) and p.op == "call_module" and len(p.users) == 1 for p in parts
    ):
        return None
    names = tuple(p.target for p in parts)
    return Concat(names) if len(set(names)) == len(names) else None


def _graph_chains(graph: torch.fx.Graph, root: nn.Module) -> tuple[list[Chain], Counter]:
    """Every chain of ``root``'s traced forward (a module's call or a concatenation of module
    calls, then up to two module calls each consuming the one before alone, through
    identities), and how often each module name is called."""
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    chains = []
    for node in graph.nodes:
        first = node.target if node.op == "call_module" else _concatenation(node)
        if first is None:
            continue
        chain = [first]
        while len(chain) < 3 and (node := _sole_consumer(node)) is not None:
            if not passes_through(root.get_submodule(node.target)):
                chain.append(node.target)
        chains.append(chain)
    return chains, calls


def _runs_in_order(module: nn.Module) -> bool:
    """Whether ``module`` computes as ``nn.Sequential`` does, each child on the output of the
    one before alone: a Sequential whose forward is torch's (a subclass may compute otherwise)."""
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _sequential_chains(seq: nn.Sequential) -> list[Chain]:
    """Each child of ``seq`` and the (up to) two after it, identities aside: a Sequential
    hands each output to the next child alone."""
    names = [name for name, child in seq._modules.items() if not passes_through(child)]
    return [names[i : i + 3] for i in range(len(names))]


@dataclass(frozen=True)
class _Scope:
    """Where chains were read: ``root``, named ``prefix`` in ``model``; ``calls`` counts each
    module's calls in ``root``'s traced forward (``None``: not traced, a Sequential's children
    read in order); ``names`` lists every name each module (by ``id``) has in ``model``;
    ``unread`` says why ``root``'s forward was not read (its chains are its convolutions alone:
    what consumes their outputs is not known)."""

    model: nn.Module
    prefix: str
    root: nn.Module
    calls: Counter | None
    names: dict[int, list[str]]
    unread: str = ""

    def path(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def shared(self, name: str, times: int = 1) -> str:
        """Why the module ``name`` (under ``root``), in a chain that ran ``times`` times, must
        not change; ``""``: it may."""
        if self.aliased(name):
            return "registered more than once in the model"
        if self.called_again(name, times):
            return f"called {self.calls[name]} times in the forward"
        return ""

    def either_shared(self, name: str, conv: str, times: int = 1) -> str:
        """Why the module ``name`` or the convolution ``conv`` it would fuse with (in a chain
        that ran ``times`` times) must not change; ``""``: neither."""
        if reason := self.shared(name, times):
            return reason
        if reason := self.shared(conv, times):
            return f"the convolution {self.path(conv)} is {reason}"
        return ""

    def aliased(self, name: str) -> bool:
        """Whether the module ``name`` has a second name outside the trace (or in a Sequential,
        which may call it again): it may be called where the trace does not look."""
        names = self.names[id(self.root.get_submodule(name))]
        return len(names) > 1 and (self.calls is None or not all(map(self._inside, names)))

    def called_again(self, name: str, times: int = 1) -> bool:
        """Whether the forward read calls the module ``name`` other than in a chain that ran
        ``times`` times."""
        return self.calls is not None and self.calls[name] > times

    def _inside(self, name: str) -> bool:
        return not self.prefix or name == self.prefix or name.startswith(self.prefix + ".")

    def replace(self, name: str) -> None:
        """Replace the module ``name`` by ``nn.Identity`` (in its train/eval mode) under every
        name it has."""
        module = self.root.get_submodule(name)
        identity = nn.Identity().train(module.training)
        for full in self.names[id(module)]:
            parent, _, leaf = full.rpartition(".")
            self.model.get_submodule(parent)._modules[leaf] = identity


def _chains(
    model: nn.Module, example_inputs: tuple | None
) -> Iterator[tuple[_Scope, Chain, tuple[int, ...]]]:
    """``(scope, chain, runs)`` for every chain of ``model``, ``runs[k]`` how many times its
    first ``k + 1`` modules ran in a row: recorded from a run on ``example_inputs`` where given
    (``_fuse_record``: a block called once per chunk runs its chains as many times); else traced
    where a forward traces, else child by child (a Sequential's children as chains), once
    each. A module registered under several names (an alias: MONAI's DynUNet reaches its
    blocks through a second, nested structure) counts as one module, traced by whichever name
    the trace meets it."""
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    if example_inputs is not None:
        chains, calls = recorded_chains(model, example_inputs, is_leaf, passes_through)
        scope = _Scope(model, "", model, calls, names)
        yield from ((scope, list(chain), runs) for chain, runs in chains.items())
        return

    def visit(prefix: str, module: nn.Module) -> Iterator[tuple[_Scope, Chain, tuple[int, ...]]]:
        if not module._modules or isinstance(module, Traced):
            return  # nothing in it to fuse (a leaf)
        graph = traced(module)
        calls, unread = None, ""
        if not isinstance(graph, str):
            chains, calls = _graph_chains(graph, module)
        elif _runs_in_order(module):
            chains = _sequential_chains(module)
        else:
            unread = f"{type(module).__name__}'s forward {graph}"
            chains = [[name] for name, child in module.named_children() if is_fusable_conv(child)]
        scope = _Scope(model, prefix, module, calls, names, unread)
        for chain in chains:
            yield scope, chain, (1,) * len(chain)
        if isinstance(graph, str):
            for name, child in module.named_children():
                yield from visit(f"{prefix}.{name}" if prefix else name, child)

    yield from visit("", model)


@dataclass
class _SharedActivation:
    """An activation module the forward calls several times (MONAI's blocks call one after each
    convolution's batch norm), and the convolutions whose output one of its calls alone
    consumes, each with how many of its calls do: where those are all of its calls, it fuses
    into every one of them; else into none (its other calls need it)."""

    scope: _Scope
    name: str
    activation: Activation
    convs: dict[str, int]

    def fuse(self, entries: list[FusionEntry]) -> None:
        """Fuse it into all its convolutions, or say why not; ``entries`` gets either."""
        module = self.scope.root.get_submodule(self.name)
        path = self.scope.path(self.name)
        if sum(self.convs.values()) < self.scope.calls[self.name]:
            _add(entries, FusionEntry(path, reason=self.scope.shared(self.name)))
            return
        for conv in self.convs:
            self.scope.root.get_submodule(conv).set_activation(*self.activation)
            _add(entries, FusionEntry(self.scope.path(conv), ((path, type(module).__name__),)))
        self.scope.replace(self.name)


def _fuse_chain(
    scope: _Scope, chain: Chain, runs: tuple[int, ...], shared: dict[str, _SharedActivation]
) -> list[FusionEntry]:
    """Fuse what follows the convolution ``chain[0]`` (names under ``scope.root``) into it, in
    place, where the chain up to that step is each of its modules' every call (``runs[k]``:
    how many times its first ``k + 1`` modules ran in a row); what was fused, or what was not
    and why. An activation the forward calls in other chains too is noted in ``shared`` instead
    (:class:`_SharedActivation`)."""
    if isinstance(chain[0], Concat):
        return _fold_batch_norm_into_parts(scope, chain[0].parts, chain[1:], runs)
    first = scope.root.get_submodule(chain[0])
    if is_zero_pad(first) and len(chain) > 1:
        return _fold_padding(scope, chain[0], chain[1], runs[1])
    if is_batch_norm(first) and len(chain) > 1:
        return _fold_batch_norm_before(scope, chain[0], chain[1], runs[1])
    conv = first
    refusal = conv_refusal(conv)
    if refusal is None:
        return []
    if refusal:  # said of the batch norm or activation after it, if one is
        after = scope.root.get_submodule(chain[1]) if len(chain) > 1 else None
        if after is None or not (is_batch_norm(after) or activation_of(after, conv.out_channels)):
            return []
        reason = f"the convolution {scope.path(chain[0])} {refusal}"
        return [FusionEntry(scope.path(chain[1]), reason=reason)]
    if scope.unread:
        reason = f"what consumes its output is not read ({scope.unread}): example_inputs= "
        reason += "records it from a run"
        return [FusionEntry(scope.path(chain[0]), reason=reason)]
    fused: list[tuple[str, str]] = []
    rest = chain[1:]
    if rest and is_batch_norm(bn := scope.root.get_submodule(rest[0])):
        step = batch_norm_step(bn, conv.out_channels)
        reason = step if isinstance(step, str) else ""
        if not reason and (weight := weight_refusal(conv)):
            reason = f"the convolution {scope.path(chain[0])} {weight}"
        reason = reason or scope.either_shared(rest[0], chain[0], runs[1])
        if reason:
            # (what follows a batch norm left in place is not the convolution's output)
            return [FusionEntry(scope.path(rest[0]), reason=reason)]
        fold_batch_norm(conv, step)
        fused.append((scope.path(rest[0]), type(bn).__name__))
        scope.replace(rest.pop(0))
        if step.activation is not None:  # (computed inside the batch norm module: the end)
            conv.set_activation(*step.activation)
            fused[-1] = (fused[-1][0], f"{fused[-1][1]} with {step.activation_name}")
            return _entry(scope, chain[0], fused)
    if rest:
        times = runs[len(chain) - len(rest)]  # (the chain's runs up to the activation)
        module = scope.root.get_submodule(rest[0])
        found = activation_of(module, conv.out_channels)
        if found is not None and not has_hooks(module):
            reason = scope.either_shared(rest[0], chain[0], times)
            if (
                scope.called_again(rest[0], times)
                and not scope.aliased(rest[0])
                and not scope.shared(chain[0], times)
                and found[0] != "prelu"  # (its weight would move into every convolution)
            ):
                key = scope.path(rest[0])
                use = shared.setdefault(key, _SharedActivation(scope, rest[0], found, {}))
                use.convs[chain[0]] = times
                return _entry(scope, chain[0], fused)
            if reason:
                return [
                    *_entry(scope, chain[0], fused),
                    FusionEntry(scope.path(rest[0]), (), reason),
                ]
            conv.set_activation(*found)
            fused.append((scope.path(rest[0]), type(module).__name__))
            scope.replace(rest[0])
    return _entry(scope, chain[0], fused)


def _fold_padding(scope: _Scope, pad_name: str, conv_name: str, times: int) -> list[FusionEntry]:
    """Fold the zero pad ``pad_name`` into the convolution ``conv_name`` it alone feeds, each
    of their calls (the chain ran ``times`` times)."""
    pad = scope.root.get_submodule(pad_name)
    padding = padding_step(pad, scope.root.get_submodule(conv_name), scope.path(conv_name))
    if padding is None:
        return []
    reason = padding if isinstance(padding, str) else ""
    reason = reason or scope.either_shared(pad_name, conv_name, times)
    if reason:
        return [FusionEntry(scope.path(pad_name), reason=reason)]
    fold_padding(scope.root.get_submodule(conv_name), padding)
    scope.replace(pad_name)
    return _entry(scope, conv_name, [(scope.path(pad_name), type(pad).__name__)])


def _fold_batch_norm_before(
    scope: _Scope, bn_name: str, conv_name: str, times: int
) -> list[FusionEntry]:
    """Fold the batch norm ``bn_name`` into the convolution ``conv_name`` that alone reads its
    output, each of their calls (the chain ran ``times`` times), where the batch norm did not
    fold into a convolution before it (that fold, exact whatever the padding, came first: the
    chains are read in order)."""
    bn, conv = scope.root.get_submodule(bn_name), scope.root.get_submodule(conv_name)
    refusal = input_fold_refusal(conv)
    if refusal is None:
        return []
    step = batch_norm_step(bn, conv.in_channels)
    if refusal:
        reason = f"the convolution {scope.path(conv_name)} after it {refusal}"
    elif isinstance(step, str):
        reason = step
    elif step.activation is not None:
        reason = f"its activation ({step.activation_name}) comes before the convolution"
    else:
        reason = scope.either_shared(bn_name, conv_name, times)
    if reason:
        return [FusionEntry(scope.path(bn_name), reason=reason)]
    fold_batch_norm_before(conv, step)
    scope.replace(bn_name)
    return _entry(scope, conv_name, [(scope.path(bn_name), f"{type(bn).__name__} before it")])


def _fold_batch_norm_into_parts(
    scope: _Scope, parts: tuple[str, ...], rest: Chain, runs: tuple[int, ...]
) -> list[FusionEntry]:
    """Fold the batch norm ``rest[0]``, which alone reads the channel concatenation of the
    convolutions ``parts``, into each of them — the batch norm of its own channels — and the
    activation after it (or its own) into each, where every part is one of our convolutions
    that may change and the batch norm and activation run there alone (``runs[k]``: how many
    times the chain's first ``k + 1`` steps ran in a row)."""
    if not rest:
        return []
    bn, convs = scope.root.get_submodule(rest[0]), [scope.root.get_submodule(p) for p in parts]
    if not is_batch_norm(bn) or any(conv_refusal(conv) is None for conv in convs):
        return []  # (not a batch norm over our convolutions)
    bn_path, reason = scope.path(rest[0]), ""
    for name, conv in zip(parts, convs):
        if why := conv_refusal(conv) or weight_refusal(conv) or scope.shared(name, runs[0]):
            reason = reason or f"the convolution {scope.path(name)} it concatenates {why}"
    step = batch_norm_step(bn, sum(conv.out_channels for conv in convs))
    reason = reason or (step if isinstance(step, str) else scope.shared(rest[0], runs[1]))
    if reason:
        return [FusionEntry(bn_path, reason=reason)]
    activation, after = step.activation, None
    if activation is not None and activation[0] == "prelu":  # (one weight for every part)
        reason = "its PReLU's weight would be split between the convolutions it concatenates"
        return [FusionEntry(bn_path, reason=reason)]
    fused = [(bn_path, f"{type(bn).__name__} over the concatenation")]
    if activation is not None:
        fused[0] = (bn_path, f"{fused[0][1]}, with {step.activation_name}")
    elif len(rest) > 1:
        module = scope.root.get_submodule(rest[1])
        found = activation_of(module, step.mean.numel())
        if (
            found is not None
            and found[0] != "prelu"
            and not has_hooks(module)
            and not scope.shared(rest[1], runs[2])
        ):
            activation, after = found, rest[1]
            fused.append((scope.path(after), type(module).__name__))
    start = 0
    for conv in convs:
        fold_batch_norm(conv, step.channels(start, start + conv.out_channels))
        start += conv.out_channels
        if activation is not None:
            conv.set_activation(*activation)
    scope.replace(rest[0])
    if after is not None:
        scope.replace(after)
    return [FusionEntry(scope.path(name), tuple(fused)) for name in parts]


def _entry(scope: _Scope, conv: str, fused: list[tuple[str, str]]) -> list[FusionEntry]:
    return [FusionEntry(scope.path(conv), tuple(fused))] if fused else []


def fuse_model(model: nn.Module, example_inputs: tuple | None = None) -> list[FusionEntry]:
    """Fuse every recognised chain (module docstring) of ``model`` in place; return what was
    fused, and what followed a convolution but was not fused, with why. With
    ``example_inputs`` (the forward's positional arguments) the chains are recorded from one run
    of ``model`` on them instead of read from its code."""
    entries: list[FusionEntry] = []
    shared: dict[str, _SharedActivation] = {}
    for scope, chain, runs in list(_chains(model, example_inputs)):
        for entry in _fuse_chain(scope, chain, runs, shared):
            _add(entries, entry)
    for activation in shared.values():
        activation.fuse(entries)
    return entries


def _add(entries: list[FusionEntry], entry: FusionEntry) -> None:
    """Add ``entry`` to ``entries``: once (a shared module after two convolutions is refused
    once), and what is fused into a convolution in one entry (the padding before it, then what
    follows it). A module not fused is reported once, with the first reason found (a batch
    norm's fold into the convolution before it, then into the one after it), and not at all
    where it fused after all (into the convolution after it)."""
    refused = {e.name for e in entries if e.reason}
    fused = {name for e in entries for name, _ in e.fused}
    if entry in entries or (entry.reason and entry.name in refused) or entry.name in fused:
        return
    taken = {name for name, _ in entry.fused}
    entries[:] = [e for e in entries if e.fused or e.name not in taken]
    into = next((i for i, e in enumerate(entries) if e.fused and e.name == entry.name), None)
    if into is not None and entry.fused:
        entry = FusionEntry(entry.name, entries.pop(into).fused + entry.fused)
    entries.append(entry)
