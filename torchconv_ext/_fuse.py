"""``convert_model(fuse=True)``: fold eval-mode batch norm into the convolution before it, and
fuse the activation after it into the convolution's epilogue.

Recognised structure: a convolution whose output goes only to a batch norm (in eval mode),
whose output goes only to an activation — or a convolution straight into an activation:

    Conv{1,2,3}d or ConvTranspose{1,2,3}d  →  [BatchNorm{1,2,3}d or SyncBatchNorm, in eval
    mode]  →  [activation]

where each step is a module's call on the step before alone (an ``nn.Identity`` between two
steps passes it on). The convolution is one of ours by then (``convert_model`` converted it; a
parametrized one, or one with an activation already, is not fused); the batch norm is exactly a
torch class (a subclass with a forward of its own, such as a batch norm with an activation
inside, computes more) and tracks running statistics over the convolution's output channels;
the activation is ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.PReLU`` (one weight, or one per output
channel), ``nn.ELU``, ``nn.GELU``, ``nn.SiLU``, ``nn.ReLU6``, ``nn.Hardswish``,
``nn.Hardsigmoid``, ``nn.Mish`` or ``nn.Sigmoid``.

Who consumes which output is read from the model's forward code, recorded by ``torch.fx``'s
symbolic tracing (our layers and torch's are leaves: their own forwards are not traced). There
each module must be called once: a shared module (torchvision's ResNet blocks call one
``self.relu`` two or three times) would change at its other uses, so it is reported and left. A
module registered under a second name (an alias) is one module, fused and replaced under every
name, where every name lies inside the traced forward; an alias elsewhere could be called where
the trace does not look, so such a module is left. Only a forward of one input is read — one with more could take another
path on a call than in its trace (``if mask is None``) — and where a forward takes more or
cannot be traced (it branches on values, say), its children are read one by one, and the
consecutive children of an ``nn.Sequential`` — which hands each output to the next child alone
— as such a chain. What the forward code does is what counts: a convolution that other code
calls directly (another method of the model) gets the fused computation there too.

With ``example_inputs`` (``convert_model(fuse=True, example_inputs=x)``) the chains are recorded
from one run of the model instead (``_fuse_record``): for forward code ``torch.fx`` cannot trace,
and right for inputs that take the example's path through it.

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

import inspect
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn
from torch.nn.parameter import is_lazy
from torch.nn.utils import parametrize

from ._fuse_record import recorded_chains
from .nn._base import Traced
from .nn.conv import _ConvMixin
from .nn.conv_transpose import _ConvTransposeMixin

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class FusionEntry:
    """A convolution (``name``) and the modules fused into it, each ``(name, class name)``;
    or, with a ``reason``, a module that followed a convolution and was not fused."""

    name: str
    fused: tuple[tuple[str, str], ...] = ()
    reason: str = ""


def _activation_of(module: nn.Module, out_channels: int) -> tuple[str, dict | None] | None:
    """``(activation, activation_args)`` of an activation module we fuse, else ``None``."""
    kind = type(module)
    if kind is nn.ReLU:
        return "relu", None
    if kind is nn.LeakyReLU:
        return "leaky_relu", {"negative_slope": module.negative_slope}
    if kind is nn.PReLU and module.num_parameters in (1, out_channels):
        return "prelu", {"weight": module.weight}
    if kind is nn.ELU:
        return "elu", {"alpha": module.alpha}
    if kind is nn.GELU:
        return "gelu", {"approximate": module.approximate}
    if kind is nn.SiLU:
        return "silu", None
    simple = {nn.ReLU6: "relu6", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid",
              nn.Mish: "mish", nn.Sigmoid: "sigmoid"}  # fmt: skip
    return (simple[kind], None) if kind in simple else None


def _has_hooks(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def _is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, _BATCH_NORMS)


def _batch_norm_refusal(bn: nn.Module, conv: _ConvMixin) -> str:
    """Why ``bn`` cannot be folded into ``conv`` (``""``: it can)."""
    if type(bn) not in _BATCH_NORMS:
        return f"{type(bn).__name__} is not exactly a torch batch norm (it may compute more)"
    if bn.training:
        return "batch norm in training mode"
    if bn.running_mean is None or bn.running_var is None:
        return "batch norm without running statistics"
    if bn.num_features != conv.out_channels:
        return f"batch norm over {bn.num_features} channels, convolution has {conv.out_channels}"
    if _has_hooks(bn):
        return "the batch norm has hooks"
    return ""


@torch.no_grad()
def fold_batch_norm(conv: nn.Module, bn: nn.Module) -> None:
    """``conv``'s weight and bias replaced by those of ``bn(conv(x))`` in eval mode:
    ``w·s`` and ``(b - mean)·s + beta`` with ``s = gamma / sqrt(var + eps)``, computed in
    float64 and rounded once to the parameters' dtype."""
    weight = conv.weight
    var, mean = bn.running_var.double(), bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    taps = [1] * (weight.dim() - 2)
    if isinstance(conv, nn.modules.conv._ConvTransposeNd):
        # (C_in, C_out / groups, *kernel): output channel g·C_out/groups + j is column j of
        # group g's rows
        grouped = weight.double().unflatten(0, (conv.groups, -1))
        folded = (grouped * scale.view(conv.groups, 1, -1, *taps)).flatten(0, 1)
    else:
        folded = weight.double() * scale.view(-1, 1, *taps)
    conv.weight = nn.Parameter(folded.to(weight.dtype), requires_grad=weight.requires_grad)
    conv.bias = nn.Parameter(shift.to(weight.dtype), requires_grad=weight.requires_grad)


def _is_fusable_conv(module: nn.Module) -> bool:
    return (
        isinstance(module, (_ConvMixin, _ConvTransposeMixin))
        and module.activation is None
        and not parametrize.is_parametrized(module)
        and not _has_hooks(module)
        and not is_lazy(module.weight)  # (a lazy layer before its first input: no weight yet)
    )


# --- chains: a convolution and the modules that consume its output, one after another ---------

#: A chain's modules by their names under the module it was found in.
Chain = list[str]


class _LeafTracer(torch.fx.Tracer):
    """``torch.fx``'s tracer with our modules as leaves too (torch's are already)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, Traced) or super().is_leaf_module(m, module_qualified_name)


def _is_leaf(module: nn.Module) -> bool:
    """Whether ``module`` is one step of a chain, its own forward not read."""
    return _LeafTracer().is_leaf_module(module, "")


def _one_input(module: nn.Module) -> bool:
    """Whether ``module``'s forward takes one positional argument and nothing else: then its
    trace is the path every call takes (or tracing fails where the path depends on the value).
    With more, a trace could follow another path than a call does — ``if mask is None`` on a
    traced argument is false, on a call's default true — so such a forward is not read."""
    try:
        parameters = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    return (
        len(parameters) == 1
        and parameters[0].kind
        in (parameters[0].POSITIONAL_ONLY, parameters[0].POSITIONAL_OR_KEYWORD)
        and parameters[0].default is parameters[0].empty
    )


def _traced(module: nn.Module) -> torch.fx.Graph | None:
    """``module``'s forward as a ``torch.fx`` graph, or ``None`` where it is not read: its
    forward takes more than one input (:func:`_one_input`) or cannot be traced."""
    if not _one_input(module):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _LeafTracer().trace(module)
    except Exception:  # control flow on values, a container without forward, ...
        return None


def _sole_consumer(node: torch.fx.Node) -> torch.fx.Node | None:
    """The module call that alone consumes ``node``'s output, and consumes nothing else."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    if user.op == "call_module" and user.args == (node,) and not user.kwargs:
        return user
    return None


def _passes_through(module: nn.Module) -> bool:
    """Whether a chain goes on through ``module``: an ``nn.Identity`` (what timm leaves for a
    switched-off drop-block or anti-aliasing step, and what fusing leaves) without hooks."""
    return type(module) is nn.Identity and not _has_hooks(module)


def _graph_chains(graph: torch.fx.Graph, root: nn.Module) -> tuple[list[Chain], Counter]:
    """Every chain of ``root``'s traced forward (a module's call, then up to two module calls
    each consuming the one before alone, through identities), and how often each module name
    is called."""
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    chains = []
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        chain = [node.target]
        while len(chain) < 3 and (node := _sole_consumer(node)) is not None:
            if not _passes_through(root.get_submodule(node.target)):
                chain.append(node.target)
        chains.append(chain)
    return chains, calls


def _sequential_chains(seq: nn.Sequential) -> list[Chain]:
    """Each child of ``seq`` and the (up to) two after it, identities aside: a Sequential
    hands each output to the next child alone."""
    names = [name for name, child in seq._modules.items() if not _passes_through(child)]
    return [names[i : i + 3] for i in range(len(names))]


@dataclass(frozen=True)
class _Scope:
    """Where chains were read: ``root``, named ``prefix`` in ``model``; ``calls`` counts each
    module's calls in ``root``'s traced forward (``None``: not traced, a Sequential's children
    read in order); ``names`` lists every name each module (by ``id``) has in ``model``."""

    model: nn.Module
    prefix: str
    root: nn.Module
    calls: Counter | None
    names: dict[int, list[str]]

    def path(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def shared(self, name: str) -> str:
        """Why the module ``name`` (under ``root``) must not change; ``""``: it may."""
        names = self.names[id(self.root.get_submodule(name))]
        if len(names) > 1 and (self.calls is None or not all(map(self._inside, names))):
            # A second name outside the trace (or in a Sequential, which may call it again)
            # may be called where the trace does not look.
            return "registered more than once in the model"
        if self.calls is not None and self.calls[name] > 1:
            return f"called {self.calls[name]} times in the forward"
        return ""

    def _inside(self, name: str) -> bool:
        return not self.prefix or name == self.prefix or name.startswith(self.prefix + ".")

    def replace(self, name: str) -> None:
        """Replace the module ``name`` by ``nn.Identity`` under every name it has."""
        for full in self.names[id(self.root.get_submodule(name))]:
            parent, _, leaf = full.rpartition(".")
            self.model.get_submodule(parent)._modules[leaf] = nn.Identity()


def _chains(model: nn.Module, example_inputs: tuple | None) -> Iterator[tuple[_Scope, Chain]]:
    """``(scope, chain)`` for every chain of ``model``: recorded from a run on
    ``example_inputs`` where given (``_fuse_record``); else traced where a forward traces, else
    child by child (a Sequential's children as chains). A module registered under several names
    (an alias: MONAI's DynUNet reaches its blocks through a second, nested structure) counts as
    one module, traced by whichever name the trace meets it."""
    names: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
    if example_inputs is not None:
        chains, calls = recorded_chains(model, example_inputs, _is_leaf, _passes_through)
        scope = _Scope(model, "", model, calls, names)
        yield from ((scope, chain) for chain in chains)
        return

    def visit(prefix: str, module: nn.Module) -> Iterator[tuple[_Scope, Chain]]:
        if not module._modules or isinstance(module, Traced):
            return  # nothing in it to fuse (a leaf)
        graph = _traced(module)
        calls = None
        if graph is not None:
            chains, calls = _graph_chains(graph, module)
        else:
            chains = _sequential_chains(module) if isinstance(module, nn.Sequential) else []
        scope = _Scope(model, prefix, module, calls, names)
        for chain in chains:
            yield scope, chain
        if graph is None:
            for name, child in module.named_children():
                yield from visit(f"{prefix}.{name}" if prefix else name, child)

    yield from visit("", model)


def _fuse_chain(scope: _Scope, chain: Chain) -> list[FusionEntry]:
    """Fuse what follows the convolution ``chain[0]`` (names under ``scope.root``) into it, in
    place; what was fused, or what was not and why."""
    conv = scope.root.get_submodule(chain[0])
    if not _is_fusable_conv(conv):
        return []
    fused: list[tuple[str, str]] = []
    rest = chain[1:]
    if rest and _is_batch_norm(bn := scope.root.get_submodule(rest[0])):
        reason = _batch_norm_refusal(bn, conv) or scope.shared(rest[0]) or scope.shared(chain[0])
        if reason:
            # (what follows a batch norm left in place is not the convolution's output)
            return [FusionEntry(scope.path(rest[0]), reason=reason)]
        fold_batch_norm(conv, bn)
        fused.append((scope.path(rest[0]), type(bn).__name__))
        scope.replace(rest.pop(0))
    if rest:
        module = scope.root.get_submodule(rest[0])
        found = _activation_of(module, conv.out_channels)
        if found is not None and not _has_hooks(module):
            reason = scope.shared(rest[0]) or scope.shared(chain[0])
            if reason:
                return [
                    *_entry(scope, chain[0], fused),
                    FusionEntry(scope.path(rest[0]), (), reason),
                ]
            conv.set_activation(*found)
            fused.append((scope.path(rest[0]), type(module).__name__))
            scope.replace(rest[0])
    return _entry(scope, chain[0], fused)


def _entry(scope: _Scope, conv: str, fused: list[tuple[str, str]]) -> list[FusionEntry]:
    return [FusionEntry(scope.path(conv), tuple(fused))] if fused else []


def fuse_model(model: nn.Module, example_inputs: tuple | None = None) -> list[FusionEntry]:
    """Fuse every recognised chain (module docstring) of ``model`` in place; return what was
    fused, and what followed a convolution but was not fused, with why. With
    ``example_inputs`` (the forward's positional arguments) the chains are recorded from one run
    of ``model`` on them instead of read from its code."""
    entries: list[FusionEntry] = []
    for scope, chain in list(_chains(model, example_inputs)):
        # (a shared module after two convolutions is refused once)
        entries += [e for e in _fuse_chain(scope, chain) if e not in entries]
    return entries
