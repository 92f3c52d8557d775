"""The steps of a chain ``convert_model(fuse=True)`` fuses, module by module: which modules are
leaves (``torch.fx`` reads no further), which pass a value on, which activation a module or a
traced call computes (torch's activation modules, and other libraries' modules whose forward
is one activation call, such as Transformers' ``GELUActivation``), what a batch norm computes
in eval mode, and folding it into a convolution; and the zero padding a convolution takes over
from the constant-padding module before it.

A batch norm is torch's own class (``BatchNorm{1,2,3}d``, ``SyncBatchNorm``), or a subclass whose
forward, traced in eval mode, is torch's batch norm over its own statistics followed by nothing
but identities and one activation: timm's ``BatchNormAct2d`` (EfficientNet, MobileNetV3, RegNet,
DenseNet, CSPDarknet and most of timm's other networks normalise with it). A subclass computing
anything else is left.
"""

from __future__ import annotations

import builtins
import inspect
import operator
import warnings
import weakref
from dataclasses import dataclass, replace
from functools import reduce

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parameter import is_lazy
from torch.nn.utils import parametrize

from ._args import Padding, expand_pairs, string_padding
from ._padding import f_pad_order
from .nn._base import Traced
from .nn.conv import _ConvMixin
from .nn.conv_transpose import _ConvTransposeMixin

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

#: ``(activation, activation_args)`` as a convolution's ``set_activation`` takes them.
Activation = tuple[str, "dict | None"]


def has_hooks(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def conv_refusal(module: nn.Module) -> str | None:
    """Why nothing is fused into ``module``, one of our convolutions (``""``: it may be;
    ``None``: not one of ours). Fusing sets its epilogue, so its output must be our
    convolution's: not under another class's forward (a subclass handing its input on to ours),
    nor seen by hooks. A batch norm's fold also rewrites its weight: see
    :func:`weight_refusal`."""
    if not isinstance(module, (_ConvMixin, _ConvTransposeMixin)):
        return None
    if module.fused_activation is not None:
        return "has an activation already"
    if under := _their_forward(module):
        return under
    if is_lazy(module.weight):  # (before has_hooks: its initialising hook)
        return "has no weight before its first input"
    if has_hooks(module):
        return "has hooks"
    return ""


def weight_refusal(conv: nn.Module) -> str:
    """Why no batch norm folds into the weight of ``conv``, one of our convolutions (``""``: it
    may): one computed on every call — by a parametrization, or by the layer (a weight-
    standardised convolution) — is not the parameter a fold rewrites. An activation still
    fuses: the epilogue does not touch the weight."""
    if parametrize.is_parametrized(conv):
        return "is parametrized"
    if _their_forward(conv) == "":
        return "uses a weight it computes on every call"
    return ""


def _their_forward(conv: nn.Module) -> str | None:
    """Where one of our convolutions runs a forward other than ours: why (under another
    class's forward), or ``""`` (ours, with a weight it computes); else ``None``."""
    ours = next(c for c in type(conv).__mro__ if "replaces" in vars(c))
    if type(conv).forward is ours.forward:
        return None
    if type(conv).__bases__[0] is not ours:  # (their class first: their forward)
        return f"runs under the forward of {type(conv).__name__}"
    return ""


def is_fusable_conv(module: nn.Module) -> bool:
    return conv_refusal(module) == ""


def is_batch_norm(module: nn.Module) -> bool:
    """A batch norm class or subclass (:func:`batch_norm_step` says what it computes)."""
    return isinstance(module, BATCH_NORMS)


def passes_through(module: nn.Module) -> bool:
    """Whether a chain goes on through ``module``: an ``nn.Identity`` (what timm leaves for a
    switched-off drop-block or anti-aliasing step, and what fusing leaves) without hooks."""
    return type(module) is nn.Identity and not has_hooks(module)


def activation_of(module: nn.Module, out_channels: int) -> Activation | None:
    """The activation of a module we fuse, else ``None``."""
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
    if kind in simple:
        return simple[kind], None
    return _wrapped_activation(module)


#: Each activation-wrapping module's activation (``None``: it is not one), by module.
_WRAPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _wrapped_activation(module: nn.Module) -> Activation | None:
    """The activation of a module of another library whose forward is one activation function
    call on its input (timm's ``GELU``, Transformers' ``GELUActivation``), read from its trace;
    else ``None``."""
    if (
        module._modules
        or isinstance(module, Traced)
        or type(module).__module__.startswith("torch.")
    ):
        return None
    if module not in _WRAPPED:
        _WRAPPED[module] = None  # (while it is traced: not a leaf)
        graph = traced(module)
        nodes = [] if isinstance(graph, str) else [n for n in graph.nodes if n.op != "get_attr"]
        if len(nodes) == 3 and [n.op for n in nodes][::2] == ["placeholder", "output"]:
            input, call, output = nodes
            found = _activation_call(call)
            if found is not None and call.args[0] is input and output.args == (call,):
                _WRAPPED[module] = found
    return _WRAPPED[module]


# Activation functions a traced forward may call on a value (timm's activation classes call
# these): each one's kind and its parameters after the input, in order (some are builtins,
# without a signature to read).
_FUNCTIONS = {
    F.relu: ("relu", ("inplace",)), torch.relu: ("relu", ()), F.relu6: ("relu6", ("inplace",)),
    F.silu: ("silu", ("inplace",)), F.mish: ("mish", ("inplace",)), torch.sigmoid: ("sigmoid", ()),
    F.hardswish: ("hardswish", ("inplace",)), F.hardsigmoid: ("hardsigmoid", ("inplace",)),
    F.leaky_relu: ("leaky_relu", ("negative_slope", "inplace")),
    F.elu: ("elu", ("alpha", "inplace")), F.gelu: ("gelu", ("approximate",)),
}  # fmt: skip
_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid"}


def _activation_call(node: torch.fx.Node) -> Activation | None:
    """The activation a traced call computes on its first argument alone, else ``None``."""
    if node.op == "call_method" and node.target in _METHODS and len(node.args) == 1:
        return (_METHODS[node.target], None) if not node.kwargs else None
    if node.op != "call_function" or node.target not in _FUNCTIONS or not node.args:
        return None
    kind, parameters = _FUNCTIONS[node.target]
    if len(node.args) - 1 > len(parameters) or set(node.kwargs) - set(parameters):
        return None
    given = {**dict(zip(parameters, node.args[1:])), **node.kwargs}
    given.pop("inplace", None)  # (the result is the same)
    if any(isinstance(v, torch.fx.Node) for v in given.values()):
        return None
    return kind, given or None


# --- tracing ----------------------------------------------------------------------------------


class LeafTracer(torch.fx.Tracer):
    """``torch.fx``'s tracer with our modules, every batch norm (subclasses too) and other
    libraries' activation modules as leaves: a chain sees each as one step."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            isinstance(m, (Traced, *BATCH_NORMS))
            or super().is_leaf_module(m, module_qualified_name)
            or _wrapped_activation(m) is not None
        )


def is_leaf(module: nn.Module) -> bool:
    """Whether ``module`` is one step of a chain, its own forward not read."""
    return LeafTracer().is_leaf_module(module, "")


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


def traced(module: nn.Module) -> torch.fx.Graph | str:
    """``module``'s forward as a ``torch.fx`` graph, or why it is not read: its forward takes
    more than one input (:func:`_one_input`) or cannot be traced."""
    if not _one_input(module):
        return "takes more than one argument"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return LeafTracer().trace(module)
    except Exception as error:  # control flow on values, a container without forward, ...
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"does not trace with torch.fx ({type(error).__name__}: {message[:120]})"


# --- batch norms --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchNormStep:
    """What a batch norm computes in eval mode: ``(x - mean) / sqrt(var + eps) · weight + bias``
    (``weight`` and ``bias`` ``None``: 1 and 0), then ``activation`` (``None``: none), described
    as ``activation_name`` in the report."""

    mean: Tensor
    var: Tensor
    weight: Tensor | None
    bias: Tensor | None
    eps: float
    activation: Activation | None = None
    activation_name: str = ""

    def channels(self, start: int, stop: int) -> BatchNormStep:
        """The step over its channels ``[start, stop)`` alone."""

        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[start:stop]

        return replace(
            self,
            mean=cut(self.mean),
            var=cut(self.var),
            weight=cut(self.weight),
            bias=cut(self.bias),
        )


#: Calls a batch norm's forward may make besides its output's path: checks of the input.
_CHECKS = {torch._assert, builtins.getattr, builtins.isinstance, operator.eq, operator.ne,
           operator.lt, operator.le, operator.gt, operator.ge, operator.not_, operator.getitem}  # fmt: skip
_SIZES = {"dim", "size"}  # (methods)
_BATCH_NORM_ARGS = inspect.signature(F.batch_norm)


def batch_norm_step(bn: nn.Module, out_channels: int) -> BatchNormStep | str:
    """What ``bn`` (a :func:`is_batch_norm` module in eval mode) computes, or why it is not
    folded into a convolution of ``out_channels`` channels."""
    if bn.training:
        return "batch norm in training mode"
    if has_hooks(bn):
        return "the batch norm has hooks"
    if type(bn) in BATCH_NORMS:
        if bn.running_mean is None or bn.running_var is None:
            return "batch norm without running statistics"
        step = BatchNormStep(bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)
    else:
        step = _subclass_step(bn, out_channels)
        if isinstance(step, str):
            return step
    if step.mean.shape != (out_channels,):
        return f"batch norm over {step.mean.numel()} channels, convolution has {out_channels}"
    return step


def _subclass_step(bn: nn.Module, out_channels: int) -> BatchNormStep | str:
    """A batch-norm subclass's eval-mode trace read as torch's batch norm, then identities and
    at most one activation (a module, or a function call); checks of the input aside."""
    refusal = f"{type(bn).__name__} computes more than a batch norm and an activation"
    graph = traced(bn)
    if isinstance(graph, str):
        return f"{type(bn).__name__}'s forward is not read: it {graph}"
    (input,) = [n for n in graph.nodes if n.op == "placeholder"]
    norms = [n for n in graph.nodes if n.op == "call_function" and n.target is F.batch_norm]
    if len(norms) != 1:
        return refusal
    (norm,) = norms
    try:
        args = _BATCH_NORM_ARGS.bind(*norm.args, **norm.kwargs)
    except TypeError:
        return refusal
    args.apply_defaults()
    a = args.arguments
    tensors = [_attribute(bn, a[k]) for k in ("running_mean", "running_var", "weight", "bias")]
    if (
        a["input"] is not input
        or a["training"] is not False
        or isinstance(a["eps"], torch.fx.Node)
        or any(t is False for t in tensors)
        or tensors[0] is None
        or tensors[1] is None
    ):
        return refusal
    # The output's path: identities, then at most one activation, each on the value alone.
    path, value, activation, name = {input, norm}, norm, None, ""
    while True:
        if len(value.users) != 1:
            return refusal
        (user,) = value.users
        if user.op == "output":
            if user.args != (value,):  # (a tuple, say)
                return refusal
            break
        if user.op == "call_module" and user.args == (value,) and not user.kwargs:
            module = bn.get_submodule(user.target)
            if passes_through(module):
                path.add(value := user)
                continue
            found = activation_of(module, out_channels) if not has_hooks(module) else None
            described = f"{user.target} ({type(module).__name__})"
        else:
            found = _activation_call(user)
            if found is not None and user.args[0] is not value:
                found = None
            described = getattr(user.target, "__name__", str(user.target))
        if found is None or activation is not None:
            return refusal
        activation, name = found, described
        path.add(value := user)
    for node in graph.nodes:  # anything else only checks the input: no output, no effect
        if node in path or node.op in ("output", "get_attr"):
            continue
        checks = node.target in _CHECKS if node.op == "call_function" else node.target in _SIZES
        if node.op not in ("call_function", "call_method") or not checks:
            return refusal
    mean, var, weight, bias = tensors
    return BatchNormStep(mean, var, weight, bias, float(a["eps"]), activation, name)


def _attribute(module: nn.Module, arg: object) -> Tensor | bool | None:
    """The tensor a traced argument reads (``module``'s own attribute), ``None`` for none,
    ``False`` for anything else."""
    if arg is None:
        return None
    if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
        value = reduce(getattr, arg.target.split("."), module)
        return value if isinstance(value, Tensor) else False
    return False


def _scale_and_shift(step: BatchNormStep) -> tuple[Tensor, Tensor]:
    """The batch norm ``step`` as ``x·scale + shift`` per channel, in float64:
    ``scale = gamma / sqrt(var + eps)``, ``shift = beta - mean·scale``."""
    scale = torch.rsqrt(step.var.double() + step.eps)
    if step.weight is not None:
        scale = scale * step.weight.double()
    shift = -step.mean.double() * scale
    if step.bias is not None:
        shift = shift + step.bias.double()
    return scale, shift


def _set_parameters(conv: nn.Module, weight: Tensor, bias: Tensor) -> None:
    """``conv``'s weight and bias replaced by the float64 ``weight`` and ``bias``, rounded once
    to the weight's dtype (a bias-free convolution gets a bias)."""
    dtype, requires_grad = conv.weight.dtype, conv.weight.requires_grad
    conv.weight = nn.Parameter(weight.to(dtype), requires_grad=requires_grad)
    conv.bias = nn.Parameter(bias.to(dtype), requires_grad=requires_grad)


@torch.no_grad()
def fold_batch_norm(conv: nn.Module, step: BatchNormStep) -> None:
    """``conv``'s weight and bias replaced by those of the batch norm ``step`` after it:
    ``w·scale`` and ``b·scale + shift`` (:func:`_scale_and_shift`), computed in float64 and
    rounded once to the parameters' dtype."""
    scale, shift = _scale_and_shift(step)
    weight = conv.weight.double()
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    taps = [1] * (weight.dim() - 2)
    if isinstance(conv, nn.modules.conv._ConvTransposeNd):
        # (C_in, C_out / groups, *kernel): output channel g·C_out/groups + j is column j of
        # group g's rows
        grouped = weight.unflatten(0, (conv.groups, -1))
        folded = (grouped * scale.view(conv.groups, 1, -1, *taps)).flatten(0, 1)
    else:
        folded = weight * scale.view(-1, 1, *taps)
    _set_parameters(conv, folded, shift)


# --- batch norm before a convolution ------------------------------------------------------------


def input_fold_refusal(conv: nn.Module) -> str | None:
    """Why a batch norm whose output only ``conv`` reads does not fold into ``conv``'s weight
    and bias (``""``: it does; ``None``: ``conv`` is not one of our convolutions).

    Folded, each tap sums ``w·(x·scale + shift)`` as ``(w·scale)·x`` plus a bias holding every
    tap's ``w·shift``: right where every tap reads the batch norm's output, so not where the
    convolution pads with zeros (a tap on the padding reads 0, not ``shift``; reflected,
    replicated and circular padding read the normalised input) nor for a transposed
    convolution (its output's edges sum fewer taps). Its forward must be ours, its input seen
    by no hook, its weight a parameter (:func:`weight_refusal`)."""
    if isinstance(conv, _ConvTransposeMixin):
        return "is transposed (its output's edges sum fewer taps than its middle)"
    if not isinstance(conv, _ConvMixin):
        return None
    if under := _their_forward(conv):
        return under
    if is_lazy(conv.weight):
        return "has no weight before its first input"
    if has_hooks(conv):
        return "has hooks"
    if refusal := weight_refusal(conv):
        return refusal
    if conv.padding_mode == "zeros" and _pads(conv):
        return "pads with zeros (a tap on the padding reads 0, not the batch norm's shift)"
    return ""


def _pads(conv: nn.Module) -> bool:
    """Whether ``conv`` pads its input on any side (``'same'`` does unless every kernel dim is
    1: with a stride it pads by the input's size, with none by ``dilation·(kernel - 1)``)."""
    if conv.padding == "same":
        return any(k > 1 for k in conv.kernel_size)
    if conv.padding == "valid":
        return False
    before, after = expand_pairs(conv.padding, len(conv.kernel_size))
    return any(before) or any(after)


@torch.no_grad()
def fold_batch_norm_before(conv: nn.Module, step: BatchNormStep) -> None:
    """``conv``'s weight and bias replaced so that it computes, on the input of the batch norm
    ``step`` before it, what it computed on the batch norm's output (where
    :func:`input_fold_refusal` allows): each input channel's weights times its ``scale``, and
    the bias plus every weight times its input channel's ``shift``; in float64, rounded once."""
    scale, shift = _scale_and_shift(step)
    weight = conv.weight.double()
    # (C_out, C_in / groups, *kernel): input channel g·C_in/groups + j is column j of the rows
    # of group g's outputs
    grouped = weight.unflatten(0, (conv.groups, -1))
    per_input = (conv.groups, 1, -1) + (1,) * (weight.dim() - 2)
    folded = (grouped * scale.view(per_input)).flatten(0, 1)
    bias = (grouped * shift.view(per_input)).flatten(0, 1).flatten(1).sum(1)
    if conv.bias is not None:
        bias = bias + conv.bias.double()
    _set_parameters(conv, folded, bias)


# --- zero padding before a convolution ----------------------------------------------------------

#: torch's constant-padding modules: with the constant 0, one before a convolution is padding
#: the convolution can apply itself (in its index arithmetic: no padded copy of the input).
CONSTANT_PADS = (nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
                 nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d)  # fmt: skip


def is_zero_pad(module: nn.Module) -> bool:
    return type(module) in CONSTANT_PADS and module.value == 0


def padding_step(pad: nn.Module, conv: nn.Module, conv_name: str) -> Padding | str | None:
    """The ``padding`` of ``conv`` (named ``conv_name``) that also applies the zero padding of
    ``pad`` before it: one ``(before, after)`` pair (an int where they are equal) per spatial
    dim; or why they do not fold; ``None`` where ``conv`` is not one of our convolutions."""
    if not isinstance(conv, _ConvMixin):
        return None
    if under := _their_forward(conv):  # (their forward may read the input's size)
        return f"the convolution {conv_name} {under}"
    if has_hooks(conv):  # (a pre-hook would see the input unpadded)
        return f"the convolution {conv_name} has hooks"
    if has_hooks(pad):
        return "has hooks"
    if conv.padding_mode != "zeros":
        return f"the convolution {conv_name} pads with padding_mode={conv.padding_mode!r}"
    n, pads = len(conv.kernel_size), pad.padding  # (F.pad's order: the last dim first)
    if len(pads) // 2 > n:
        return f"pads {len(pads) // 2} dims, the convolution {conv_name} convolves {n}"
    if min(pads) < 0:
        return "crops (negative padding)"
    if conv.padding == "same" and max(conv.stride) > 1:
        return (
            f"the convolution {conv_name} pads by its input's size (padding='same' with a stride)"
        )
    if isinstance(conv.padding, str):  # (with stride 1, padding that is the same for any size)
        ones = (1,) * n
        before, after = string_padding("", conv.padding, ones, conv.kernel_size, ones,
                                       conv.dilation, error=ValueError)  # fmt: skip
    else:
        before, after = expand_pairs(conv.padding, n)
    lead = (0,) * (n - len(pads) // 2)
    before = [b + p for b, p in zip(before, lead + pads[-2::-2])]
    after = [a + p for a, p in zip(after, lead + pads[::-2])]
    return tuple(b if b == a else (b, a) for b, a in zip(before, after))


def fold_padding(conv: nn.Module, padding: Padding) -> None:
    """Give ``conv`` the ``padding`` of :func:`padding_step`, and torch's ``F.pad`` form of it
    (what torch's layer pads with in a padding mode other than zeros)."""
    conv.padding = padding
    conv._reversed_padding_repeated_twice = f_pad_order(
        *expand_pairs(padding, len(conv.kernel_size))
    )
