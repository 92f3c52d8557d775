"""``convert_model``: swap every supported ``torch.nn`` layer of a model for ours.

A layer is converted by switching its class, so its parameters, buffers, hooks, device, dtype and
train/eval mode stay exactly as they are. These layers convert:

* an instance of exactly a torch class we replace (``nn.Conv2d`` → ``torchconv_ext.nn.Conv2d``);
* an instance of a subclass of one that changes no computation (e.g. only ``__init__``): it gets
  a class deriving from both ours and its own, so ``isinstance`` with its class still holds;
* a lazy layer (``nn.LazyConv2d``): it becomes our lazy layer (``torchconv_ext.nn.LazyConv2d``),
  which turns into ours of its kind, not torch's, once its first input sets its sizes (a
  subclass of one, into ours over the class it names to become);
* either of these under ``torch.nn.utils.parametrize`` (``parametrizations.weight_norm``,
  ``spectral_norm``): the parametrized class is rebuilt over ours, keeping the parametrizations,
  ``state_dict`` keys and outputs;
* a subclass whose own ``forward`` hands its input on to torch's (``super().forward``, as the
  causal convolutions of Diffusers' video autoencoders do after padding time on one side): its
  class comes first, so its forward runs as it is, and the computation it reaches is ours;
* a few other libraries' layers known to compute what ours compute with other attribute values
  or a computed weight (``_other_libraries``: timm's TensorFlow "SAME" ``Conv2dSame``,
  ``MaxPool2dSame`` and ``AvgPool2dSame`` are ours with ``padding='same'``; timm's
  ``StdConv2d`` and ``ScaledStdConv2d`` and Transformers' ``WeightStandardizedConv2d``
  convolve with their weight standardised), once each class is checked against its own forward
  on a small instance.

Other subclasses that override the computation (``forward``, or the hooks our layers replace)
are left alone, and every layer left is reported with the reason.

With ``fuse=True`` the converted model's convolutions then absorb the eval-mode batch norm and
the activation modules that consume their outputs, and the zero-padding module whose output
they alone read (``_fuse`` says which structures, and how the model's forward code is read).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.prune import BasePruningMethod
from torch.nn.utils.weight_norm import WeightNorm

from . import nn as our_nn
from ._backend import use_backend
from ._fuse import FusionEntry, fuse_model
from ._other_libraries import KnownLayer, known_layer
from .nn._base import DropIn

# Methods through which a torch layer computes: a subclass overriding one computes differently.
_COMPUTING_METHODS = ("forward", "_conv_forward", "_output_padding")
# torch.nn's modules of the layer kinds we replace: their other layers are reported as left.
_TORCH_LAYER_MODULES = (
    "torch.nn.modules.conv",
    "torch.nn.modules.pooling",
    "torch.nn.modules.upsampling",
)


@dataclass(frozen=True)
class ConversionEntry:
    """One layer of the model: its name, its class before and after, and why it was left."""

    name: str
    before: str
    after: str | None
    reason: str = ""


@dataclass
class ConversionReport:
    """What :func:`convert_model` did to the model's convolution, pooling and upsampling layers:
    ``converted`` to ours, ``already`` ours, or ``left`` on torch with the reason. Other modules
    are never touched and not listed."""

    converted: list[ConversionEntry] = field(default_factory=list)
    already: list[ConversionEntry] = field(default_factory=list)
    left: list[ConversionEntry] = field(default_factory=list)
    #: With ``fuse=True``: each convolution and what was fused into it, then every module that
    #: followed a convolution and was not fused (with the reason).
    fused: list[FusionEntry] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"converted {len(self.converted)} layer(s), left {len(self.left)}"
            + (f", {len(self.already)} already torchconv_ext's" if self.already else "")
        ]
        lines += [f"  {e.name or '(model)'}: {e.before} -> {e.after}" for e in self.converted]
        lines += [f"  left {e.name or '(model)'}: {e.before} ({e.reason})" for e in self.left]
        for e in self.fused:
            if e.reason:
                lines.append(f"  not fused {e.name}: {e.reason}")
            else:
                into = ", ".join(f"{name} ({kind})" for name, kind in e.fused)
                lines.append(f"  fused into {e.name}: {into}")
        return "\n".join(lines)


@functools.cache
def _replacements() -> dict[type[nn.Module], type[DropIn]]:
    classes = (getattr(our_nn, name) for name in our_nn.__all__)
    return {
        cls.replaces: cls for cls in classes if isinstance(cls, type) and issubclass(cls, DropIn)
    }


def _torch_base(cls: type) -> type | None:
    """The torch class we replace that ``cls`` is (or derives from), if any."""
    table = _replacements()
    return next((c for c in cls.__mro__ if c in table), None)


def _overridden(cls: type, base: type) -> list[str]:
    """Computing methods that a class between ``cls`` and ``base`` defines."""
    between = cls.__mro__[: cls.__mro__.index(base)]
    return [m for m in _COMPUTING_METHODS if any(m in c.__dict__ for c in between)]


# The classes built here, for describing them.
_SUBCLASSES: dict[type, tuple[type, type]] = {}
_PARAMETRIZED: set[type] = set()


def _hands_on(cls: type, base: type) -> bool:
    """Whether ``cls`` overrides no computing method but ``forward``, and each ``forward`` it
    defines above ``base`` reaches the base's computation: calls ``super().forward``, a class's
    forward by name (``nn.Conv2d.forward(self, x)``, a class between it and ``base``) or
    ``_conv_forward``, around which it may do anything. Read from the code, so a forward that
    reaches it only on some paths (and calls ``F.conv2d`` on others) counts too: there it still
    computes what it computed."""
    if _overridden(cls, base) != ["forward"]:
        return False
    above = cls.__mro__[: cls.__mro__.index(base)]
    callers = {"super"} | {c.__name__ for c in cls.__mro__[1 : len(above) + 1]}
    forwards = [c.__dict__["forward"] for c in above if "forward" in c.__dict__]
    return all(_calls_base_computation(getattr(f, "__code__", None), callers) for f in forwards)


def _calls_base_computation(code: types.CodeType | None, callers: set[str]) -> bool:
    """Whether ``code`` (or a function inside it) names ``_conv_forward``, or ``forward`` and
    one of ``callers`` (``super``, or a class whose forward it calls by name)."""
    if code is None:
        return False
    names = set(code.co_names)
    if "_conv_forward" in names or ("forward" in names and callers & names):
        return True
    inner = (c for c in code.co_consts if isinstance(c, types.CodeType))
    return any(_calls_base_computation(c, callers) for c in inner)


@functools.cache
def _over_subclass(ours: type, theirs: type) -> type:
    """A class running our computation that still is a ``theirs`` (their other methods stay).
    Where their ``forward`` hands its input on to torch's (:func:`_hands_on`), it stays, first in
    line, with ours beneath it; else ``forward`` is ours, also where ``theirs`` overrides it —
    with the weight a known layer computes, where it computes one."""
    known = known_layer(theirs)
    namespace: dict[str, object] = {"__module__": theirs.__module__}
    if known is None and _hands_on(theirs, _torch_base(theirs)):
        bases = (theirs, ours)
    elif known is not None and known[1].weight is not None:
        bases, computed_weight = (ours, theirs), known[1].weight

        def forward(self, input: Tensor) -> Tensor:
            return self._conv_forward(input, computed_weight(self), self.bias)

        namespace["forward"] = forward
    else:
        bases = (ours, theirs)
        namespace["forward"] = ours.forward
    converted = type(theirs.__name__, bases, namespace)
    converted.__init__ = theirs.__init__  # constructing one anew takes their arguments
    become = getattr(theirs, "cls_to_become", None)
    if become is not None:
        # A lazy layer (nn.LazyConv2d) turns into this class once its first input set its
        # sizes: ours, so that it stays ours.
        base = _torch_base(become)
        if become is base:
            converted.cls_to_become = _replacements()[base]
        elif base is not None and not _overridden(become, base):
            converted.cls_to_become = _over_subclass(_replacements()[base], become)
    converted.__reduce_ex__ = _reduce_over_subclass
    _SUBCLASSES[converted] = (ours, theirs)
    return converted


def _reduce_over_subclass(module: nn.Module, protocol: int) -> tuple:
    """Pickle (``torch.save(model)``, ``copy.deepcopy``) a module of a class built by
    :func:`_over_subclass` as that call, which the loading process repeats: the class itself
    exists only in the process that built it."""
    _, _, *state = object.__reduce_ex__(module, protocol)
    return (_new_over_subclass, _SUBCLASSES[type(module)], *state)


def _new_over_subclass(ours: type, theirs: type) -> nn.Module:
    cls = _over_subclass(ours, theirs)
    return cls.__new__(cls)


@functools.cache
def _over_parametrized(parametrized: type, converted_base: type) -> type:
    """torch's ``Parametrized<Class>`` rebuilt over ``converted_base``: same properties and
    (de)serialisation guards, our computation underneath."""
    injected = {
        k: v for k, v in parametrized.__dict__.items() if k not in ("__dict__", "__weakref__")
    }
    converted = type(f"Parametrized{converted_base.__name__}", (converted_base,), injected)
    _PARAMETRIZED.add(converted)
    return converted


def _torch_layer(cls: type) -> type | None:
    """The torch.nn convolution, pooling or upsampling class ``cls`` is or derives from."""
    return next((c for c in cls.__mro__ if c.__module__ in _TORCH_LAYER_MODULES), None)


@dataclass(frozen=True)
class _Target:
    """What a module converts to: its new class and the attributes it takes (a known layer of
    another library), or ``cls=None`` and why not (``""``: not a layer of the kinds we replace,
    or ours already)."""

    cls: type | None
    reason: str = ""
    settings: dict[str, object] = field(default_factory=dict)


def _target(module: nn.Module) -> _Target:
    cls = type(module)
    if parametrize.is_parametrized(module):
        inner = cls.__bases__[0]
        base = _torch_base(inner)
        if base is None or issubclass(inner, DropIn):
            return _Target(None)
        target = _class_target(inner, base, module)
        if target.cls is None:
            return target
        return dataclasses.replace(target, cls=_over_parametrized(cls, target.cls))
    base = _torch_base(cls)
    if issubclass(cls, DropIn):
        return _Target(None)
    if base is None:
        layer = _torch_layer(cls)
        return _Target(None, f"torchconv_ext has no {layer.__name__}" if layer else "")
    return _class_target(cls, base, module)


def _class_target(cls: type, base: type, module: nn.Module) -> _Target:
    ours = _replacements()[base]
    if not ours.accepts(module):
        return _Target(
            None, ours.refusal(module) or f"{ours.__qualname__} does not take this layer"
        )
    if cls is base:
        return _Target(ours)
    overridden = _overridden(cls, base)
    known = known_layer(cls)
    if not overridden or (known is None and _hands_on(cls, base)):
        return _Target(_over_subclass(ours, cls))
    if known is None or _overridden(cls, known[0]):
        return _Target(None, f"its class overrides {', '.join(overridden)}")
    reason = _known_layer_check(ours, *known)
    if reason:
        return _Target(None, reason)
    return _Target(_over_subclass(ours, cls), settings=known[1].settings(module))


@functools.cache
def _known_layer_check(ours: type, theirs: type, known: KnownLayer) -> str:
    """Whether ours computes what ``theirs`` computes, as ``known`` says (``""``), on a small
    instance converted on the fallback in float64 — a guard against another version of the
    other library computing otherwise."""
    reason = (
        f"torchconv_ext knows {theirs.__module__}.{theirs.__qualname__} as computing otherwise "
        "(another version of its library?)"
    )
    generator = torch.Generator().manual_seed(0)
    # (on the CPU, whatever the default device; no autograd; the global generator, which the
    # small instance's initialisation draws from, as it was: a converted model's later random
    # draws are those of the model unconverted)
    try:
        with (
            torch.random.fork_rng(devices=[]),
            torch.device("cpu"),
            torch.no_grad(),
            use_backend("torch"),
        ):
            example = known.example(theirs).double()
            converted = copy.deepcopy(example)
            converted.__class__ = _over_subclass(ours, theirs)
            for attribute, value in known.settings(example).items():
                setattr(converted, attribute, value)
            for height, width in [(7, 6), (8, 9)]:
                x = torch.randn(2, 4, height, width, dtype=torch.float64, generator=generator)
                expected, got = example(x), converted(x)
                if got.shape != expected.shape or not torch.allclose(got, expected, 1e-9, 1e-12):
                    return reason
    except Exception as error:  # its constructor or forward changed
        return f"{reason}: {type(error).__name__}: {error}"
    return ""


def _deepcopy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also copies models using the old ``torch.nn.utils.weight_norm`` or
    ``torch.nn.utils.prune``, whose computed weights are not graph leaves (their hooks recompute
    them every forward), which ``copy.deepcopy`` refuses."""
    memo: dict[int, object] = {}
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            name = _computed_by(hook)
            if name is not None and isinstance(weight := getattr(module, name, None), Tensor):
                memo[id(weight)] = weight.detach().clone()
    return copy.deepcopy(model, memo)


def _computed_by(hook: object) -> str | None:
    """The attribute a forward pre-hook computes from parameters of its own, if it is one of
    torch's that do (the old weight norm, a pruning)."""
    if isinstance(hook, WeightNorm):
        return hook.name
    if isinstance(hook, BasePruningMethod):
        return hook._tensor_name
    return None


def _describe(cls: type) -> str:
    """A class as a reader knows it: ``torch.nn.Conv2d``, ``torchconv_ext.nn.Conv2d``,
    ``mymodels.MyConv`` or ``… (parametrized)``."""
    if parametrize.is_parametrized.__module__ == cls.__module__ or cls in _PARAMETRIZED:
        return f"{_describe(cls.__bases__[0])} (parametrized)"
    if cls in _SUBCLASSES:
        ours, theirs = _SUBCLASSES[cls]
        if cls.__bases__[0] is theirs:  # their forward around ours
            return f"{_describe(ours)} under the forward of {_describe(theirs)}"
        return f"{_describe(ours)} as {_describe(theirs)}"
    module = cls.__module__
    for package in ("torch.nn", "torchconv_ext.nn"):
        if module.startswith(package + "."):
            module = package
    return f"{module}.{cls.__qualname__}"


def _example_arguments(example_inputs: Tensor | tuple | None, fuse: bool) -> tuple | None:
    """``example_inputs`` as the forward's positional arguments."""
    if example_inputs is None:
        return None
    if not fuse:
        raise ValueError("convert_model: example_inputs is read only with fuse=True")
    if isinstance(example_inputs, Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, tuple):
        return example_inputs
    raise TypeError(
        "convert_model: example_inputs must be a tensor or a tuple of the forward's positional "
        f"arguments, got {type(example_inputs).__name__}"
    )


def convert_model_with_report(
    model: nn.Module,
    *,
    inplace: bool = False,
    fuse: bool = False,
    example_inputs: Tensor | tuple | None = None,
) -> tuple[nn.Module, ConversionReport]:
    """:func:`convert_model`, also returning the :class:`ConversionReport`."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"convert_model: model must be a torch.nn.Module, got {type(model).__name__}"
        )
    example_args = _example_arguments(example_inputs, fuse)
    if not inplace:
        model = _deepcopy(model)
    report = ConversionReport()
    for name, module in model.named_modules():
        target = _target(module)
        before = _describe(type(module))
        if target.cls is not None:
            after = _describe(target.cls) + "".join(
                f", {attribute}={value!r}"
                for attribute, value in target.settings.items()
                if getattr(module, attribute) != value
            )
            module.__class__ = target.cls
            for attribute, value in target.settings.items():
                setattr(module, attribute, value)
            report.converted.append(ConversionEntry(name, before, after))
        elif target.reason:
            report.left.append(ConversionEntry(name, before, None, target.reason))
        elif isinstance(module, DropIn):
            report.already.append(ConversionEntry(name, before, before))
    if fuse:
        report.fused = fuse_model(model, example_args)
    return model, report


def convert_model(
    model: nn.Module,
    *,
    inplace: bool = False,
    verbose: bool = False,
    fuse: bool = False,
    example_inputs: Tensor | tuple | None = None,
) -> nn.Module:
    """Return ``model`` with every supported ``torch.nn`` layer replaced by ours.

    See the module docstring for what converts (exact torch layers, subclasses that change no
    computation, parametrized layers, timm's TensorFlow "SAME" and weight-standardised layers)
    and what is left. With ``inplace=False`` (default) a deep
    copy is converted and ``model`` itself is not changed. ``verbose=True`` prints what was
    converted and what was left, and why (:func:`convert_model_with_report` returns it).

    ``fuse=True`` (default ``False``) also folds every eval-mode ``BatchNorm{1,2,3}d`` (or
    ``SyncBatchNorm``) that alone consumes a convolution's output (a transposed one's too) into
    the convolution's weight and bias, and fuses an ``nn.ReLU`` / ``LeakyReLU`` / ``PReLU`` / ``ELU`` / ``GELU`` /
    ``SiLU`` / ``ReLU6`` / ``Hardswish`` / ``Hardsigmoid`` / ``Mish`` / ``Sigmoid`` module that
    alone consumes the result into the convolution's epilogue
    (``activation=``); an ``nn.ZeroPad{1,2,3}d`` (or ``ConstantPad`` of 0) whose output
    only a convolution reads becomes that convolution's padding (``(before, after)`` pairs:
    no padded copy); a batch norm whose output only a convolution reads, one that does not pad
    with zeros (a 1×1 one, say), folds into it where it did not fold into the convolution
    before it. The absorbed modules become ``nn.Identity``. Who consumes what is read
    from the model's forward code with ``torch.fx`` (where it traces; else from the order of
    the children of an ``nn.Sequential`` running torch's forward; code not read that calls a
    module directly sees the fused computation); modules called more than once (but an activation each of
    whose calls alone consumes a convolution's output), or registered again outside the
    traced forward, are left. The result computes what ``model`` computes in eval mode (training-mode batch norm is never
    folded); it is meant for inference (see ``torchconv_ext._fuse``).

    ``example_inputs`` (with ``fuse=True``: a tensor, or a tuple of the forward's positional
    arguments; a small one serves) reads who consumes what from one run of the model on them
    instead, for forward code ``torch.fx`` cannot trace (sizes turned into Python numbers, as
    in Hugging Face's MobileNets). As with ``torch.jit.trace``, the fused model is right for
    inputs that take the example's path through the forward code. The run changes no buffer.
    """
    model, report = convert_model_with_report(
        model, inplace=inplace, fuse=fuse, example_inputs=example_inputs
    )
    if verbose:
        print(report)
    return model
