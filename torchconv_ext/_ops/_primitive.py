"""The one autograd pattern of every op family: :class:`Primitive`.

A primitive is one computation — a convolution, a pooling forward, the gradient of either — with

* ``impl``: the computation itself, on the backend in force (Triton kernels or the fallback);
* ``fake``: its sizes, dtype and strides, for tracing;
* its derivatives, written with other primitives so that they are differentiable in turn, to any
  order: ``setup_context`` and ``backward`` (reverse mode), ``jvp`` (forward mode) and ``vmap``
  (batching; a loop over the batch when a primitive has no rule of its own).

Each primitive is registered as ``torch.ops.torchconv_ext.<name>`` (``_registration``: the
schema from ``impl``'s annotations, the fake, an autograd kernel and the batching rule): that op
is what ``torch.compile``, ``torch.export``, fake tensors and dispatch modes such as
``FlopCounterMode`` see. On CPU and CUDA tensors its kernel is ``Primitive.run`` (the
implementation through its tape, below), so a compiled graph's calls replay too. Calling the
primitive itself, ``prim(*args)``, takes the lean path when nothing traces: the implementation
directly when no gradient is wanted, else :class:`EagerFunction`, one ``autograd.Function`` for
every primitive (also the one ``torch.func`` transforms use: it carries the jvp and vmap
rules), subclassed per primitive only to name its graph nodes (``ConvBackward``). A functional op calls its primitive bound to the checked arguments (:class:`Bound`,
from ``Primitive.bind``): the same computation on a leaner eager path. Once our kernels are
loaded, eager calls run the implementation through a tape (``triton_kernels._tape``): from the
third call of a problem — the same tensor metadata, the same other arguments, backend and TF32
flag — its torch ops and kernel launches are replayed without its Python (argument unpacking,
layout rules, kernel choice, the launcher's own set-up). A backward outside a graph (no
``create_graph``) is one tape as a whole (``_taping``).

Recorded for another runtime — by ``torch.jit.trace`` or ``torch.onnx.export`` — a primitive runs
its implementation on the ATen fallback directly (``Primitive.traced``): the graph then holds
torch's own ops, which any runtime has.

Forward mode (``jvp``) exists on the primitives — so on the functional API and the modules — and
on the registered ops too (their autograd carries the primitives' ``jvp``), which take the call
under dispatch modes (``FlopCounterMode``, the tracer of ``torch.func.linearize``). In a
compiled region under a dual level of ``torch.autograd.forward_ad`` a call breaks the graph
(see :meth:`Primitive.traced`); ``torch.func``'s transforms compile.

The derivative functions have ``torch.library.register_autograd``'s signatures, and they run
under both entry points: ``setup_context(ctx, inputs, output)`` saves what ``backward(ctx,
*grads)`` needs (reading ``ctx.needs_input_grad``, one flag per input) and returns one gradient
per input; ``jvp(ctx, *tangents)`` reads the primal inputs from ``ctx.primals``; ``vmap(info,
in_dims, *args)`` returns ``(output, out_dims)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch._C._functorch import TransformType
from torch.autograd import forward_ad
from torch.autograd.profiler import record_function

from .._backend import aten_only, exporting, loaded_kernels
from ._eager_frames import runs_eagerly
from ._layout import converting_once
from ._registration import as_registered_ops as _as_registered_ops
from ._registration import forward_mode_active as _forward_mode_active
from ._registration import function_named, register, writable
from ._registration import ops_only as _ops_only
from ._taping import PLAIN_TENSORS, Attributes, backward_on_tape, impl_context
from ._taping import is_tensor as _is_tensor

_is_legacy_batched = torch._C._functorch.is_legacy_batchedtensor
_profiling = torch.autograd._profiler_enabled

#: Whether this process sees several CUDA devices (``None``: not asked yet). Only then can an
#: operand be on another device than the current one.
_several_gpus: bool | None = None


def _elsewhere(args: tuple) -> int | None:
    """The CUDA device that the first tensor of ``args`` is on, where that is not the current
    device; else ``None``. Triton launches on the current device and does not switch to its
    operands' as torch's own ops do: a layer placed on a second GPU (pipeline or model
    parallelism, ``device_map='auto'``) would launch with pointers another device owns."""
    global _several_gpus
    if _several_gpus is None:
        _several_gpus = torch.cuda.device_count() > 1
    if not _several_gpus:
        return None
    for a in args:
        if isinstance(a, torch.Tensor):
            if a.is_cuda and (index := a.get_device()) != torch.cuda.current_device():
                return index
            return None
    return None


def _any_legacy_batched(tensors: tuple) -> bool:
    """Whether a gradient or tangent is batched by torch's legacy vmap (see ``_registration.OpsOnly``)."""
    for t in tensors:  # noqa: SIM110 (a loop: cheaper than any() over a generator)
        if t is not None and _is_legacy_batched(t):
            return True
    return False


#: Every primitive by its op name (what ``torch.ops.torchconv_ext.<name>`` calls).
PRIMITIVES: dict[str, Primitive] = {}


def _dispatch_modes() -> bool:
    """Whether a dispatch mode is active other than the guard of a tape being recorded (whose
    primitives run eagerly, so that the tape sees their torch calls and launches)."""
    n = torch._C._len_torch_dispatch_stack()
    if n != 1:
        return n > 1
    kernels = loaded_kernels()
    return kernels is None or not kernels.recording()


_DIFFERENTIATING = (TransformType.Grad, TransformType.Jvp)


def _functionalizing() -> bool:
    """Whether ``torch.func.functionalize`` transforms the call, and no functorch ``grad`` or
    ``jvp`` does: an ``autograd.Function`` has no functionalize rule, a registered op does (but
    its autograd, run below functorch's differentiating transforms, has no rule for those)."""
    if not torch._C._are_functorch_transforms_active():
        return False
    keys = {i.key() for i in torch._C._functorch.get_interpreter_stack() or ()}
    return TransformType.Functionalize in keys and keys.isdisjoint(_DIFFERENTIATING)


def _differentiating(grad: bool) -> bool:
    """Whether a call's derivatives may be taken (``grad``: an operand requires grad): autograd
    records it, forward-mode AD is on, or a functorch ``grad``/``jvp`` transform is active —
    ``vmap`` alone takes none."""
    if (grad and torch.is_grad_enabled()) or forward_ad._current_level >= 0:
        return True
    if torch.compiler.is_compiling() or not torch._C._are_functorch_transforms_active():
        return False  # (a compiled graph's transforms are Dynamo's: the op's derivatives serve)
    stack = torch._C._functorch.get_interpreter_stack() or ()
    return any(i.key() in _DIFFERENTIATING for i in stack)


def _decomposed(prim: Primitive, args: tuple, grad: bool) -> Any:
    """``prim``'s decomposition of this call where it has one and derivatives may be taken,
    else ``None``."""
    if prim.decomposed is None or not _differentiating(grad):
        return None
    return prim.decomposed(*args)


class Primitive:
    """One differentiable computation, registered as ``torch.ops.torchconv_ext.<name>``.

    Args:
        name: the op's name in the ``torchconv_ext`` namespace.
        impl: the computation; its type annotations give the op's schema.
        fake: sizes, dtype and strides of ``impl``'s result, for tracing.
        setup_context, backward: reverse mode, as ``torch.library.register_autograd`` takes them.
        jvp: forward mode, ``jvp(ctx, *tangents)`` (the primal inputs are ``ctx.primals``).
        vmap: batching rule, as ``torch.library.register_vmap`` takes it (default: a loop).
        decomposed: what a call computes instead where its derivatives may be taken
            (autograd records it, eager or compiled; forward mode; an eager ``grad``/``jvp``
            transform; not ``vmap`` alone): ``decomposed(*args)``, a composition of
            differentiable ops, or ``None`` where the primitive's own derivatives serve. The
            registered op keeps those derivatives.
        bound_decomposition: ``decomposed`` for a bound call (:class:`Bound`), made once per
            bound object: ``bound_decomposition(*static)`` is ``None`` where the decomposition
            does not apply to calls with those trailing arguments, else a function of the
            leading ones computing ``decomposed(*leading, *static)`` — on bound primitives of
            its own, so that its parts take the lean path too (``Bound.recorded``).
        static_attributes: whether every attribute ``setup_context`` sets, tensors aside, is a
            function of the non-tensor arguments and of the operands' sizes, dtypes and devices
            — what a bound object fixes (:class:`Bound`) — and never of their layouts or
            values: a bound call's backward then takes them from its :class:`Bound`, compared
            once.
    """

    def __init__(
        self,
        name: str,
        impl: Callable[..., Any],
        *,
        fake: Callable[..., Any],
        setup_context: Callable[..., None],
        backward: Callable[..., tuple],
        jvp: Callable[..., Any] | None = None,
        vmap: Callable[..., tuple] | None = None,
        decomposed: Callable[..., Any] | None = None,
        bound_decomposition: Callable[..., Callable[..., Any] | None] | None = None,
        static_attributes: bool = False,
    ) -> None:
        self.name = name
        self.qualified_name = f"torchconv_ext::{name}"
        PRIMITIVES[name] = self
        self.impl = impl
        self.fake = fake
        self.setup_context = setup_context
        self.backward = backward
        self.jvp = jvp
        self.vmap = vmap or self._vmap_by_loop
        self.decomposed = decomposed
        self.bound_decomposition = bound_decomposition
        self.static_attributes = static_attributes
        # Its own subclasses of the two Functions, named after it (:func:`_functions`).
        self.function, bound_function = _functions(name)
        self.apply_bound = super(torch.autograd.Function, bound_function).apply
        self._taped: Callable[..., Any] | None = None  # impl on a tape, once kernels load
        self._taped_bound: Callable[..., Any] | None = None  # the same for bound calls
        self.op = register(self, self._op_vmap)

    def __repr__(self) -> str:
        return f"Primitive({self.qualified_name})"

    def __call__(self, *args: Any) -> Any:
        # The hot path: in one pass over the arguments, whether the registered op must take the
        # call (under torch.compile, a dispatch mode, tensor subclasses, `OpsOnly`) and whether
        # autograd must record it (else the implementation runs bare).
        if (
            torch.compiler.is_compiling()
            or (torch._C._len_torch_dispatch_stack() and _dispatch_modes())
            or _ops_only.active
            or torch._C._get_tracing_state() is not None  # (jit_tracing(), inline)
        ):
            return self.traced(*args)
        grad = False
        for a in args:
            if isinstance(a, torch.Tensor):
                if type(a) not in PLAIN_TENSORS:
                    return self.traced(*args)
                grad = grad or a.requires_grad
        if (grad and torch.is_grad_enabled()) or _forward_mode_active():
            if _functionalizing():
                return self.traced(*args)
            if (out := _decomposed(self, args, grad)) is not None:
                return out
            return self.function.apply(self, *args)
        return self.run(*args)

    def traced(self, *args: Any) -> Any:
        """A call something records: the registered op, or — recorded for another runtime
        (``_backend.exporting``) — the implementation on torch's ATen ops, called directly,
        whose every ATen call the graph records (and autograd differentiates)."""
        if exporting():
            with aten_only():
                return self.impl(*args)
        if (
            forward_ad._current_level >= 0
            and torch.compiler.is_compiling()
            and not torch._C._are_functorch_transforms_active()  # (torch.func.jvp's is traced)
        ):
            # A graph enters a dual level it traces without forward_ad's Python state, which
            # the registered op's autograd reads to carry tangents: run the call outside it
            # (under a level entered before the graph too: a trace cannot tell them apart).
            torch._dynamo.graph_break(
                f"{self.qualified_name}: forward-mode AD (torch.autograd.forward_ad) in a "
                "compiled region runs outside the graph (torch.func.jvp compiles)"
            )
        if self.decomposed is not None:
            grad = any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)
            if (out := _decomposed(self, args, grad)) is not None:
                return out
        return self.op(*args)

    def run(self, *args: Any) -> Any:
        """``impl(*args)`` for an eager call: through its tape once our kernels are loaded
        (module doc), named in a profile as the registered op is (the eager path skips the
        dispatcher, which names an op's call)."""
        if _profiling():
            with record_function(self.qualified_name):
                return self.run_unnamed(*args)
        return self.run_unnamed(*args)

    @runs_eagerly
    def run_unnamed(self, *args: Any) -> Any:
        """:meth:`run`, without a range of its own in a profile (the registered op's kernels:
        the dispatcher names the call)."""
        if _several_gpus is not False and (index := _elsewhere(args)) is not None:
            with torch.cuda.device(index):  # (the tape's key holds the current device)
                return self.run_unnamed(*args)
        taped = self._taped
        if taped is None or taped.launcher is not self.impl:  # (``impl`` may be replaced)
            kernels = loaded_kernels()
            if kernels is None:
                return self.impl(*args)
            taped = self._taped = kernels.taped(self.impl, returns=True, context=impl_context)
        return taped(*args)

    def bind(self, *static: Any) -> Bound:
        """This primitive with its trailing arguments ``static`` fixed (see :class:`Bound`)."""
        return Bound(self, static)

    def run_bound(self, bound: Bound, leading: tuple) -> Any:
        """``run(*leading, *bound.static)``, on a tape whose key holds ``bound`` itself (its
        identity) in place of the static arguments' values."""
        if _profiling():
            with record_function(self.qualified_name):
                return self._run_bound(bound, leading)
        return self._run_bound(bound, leading)

    @runs_eagerly
    def _run_bound(self, bound: Bound, leading: tuple) -> Any:
        if _several_gpus is not False and (index := _elsewhere(leading)) is not None:
            with torch.cuda.device(index):
                return self._run_bound(bound, leading)
        taped = self._taped_bound
        if taped is None or taped.impl is not self.impl:  # (``impl`` may be replaced)
            kernels = loaded_kernels()
            if kernels is None:
                return self.impl(*leading, *bound.static)
            impl = self.impl

            def bound_impl(bound: Bound, *leading: Any) -> Any:
                return impl(*leading, *bound.static)

            taped = kernels.taped(bound_impl, returns=True, context=impl_context)
            taped.impl = impl
            self._taped_bound = taped
        # (the bound object fixes its operands' types, shapes, dtypes and devices: its
        # opening's key holds them)
        tensors = [*filter(_is_tensor, leading)]  # (C-level: no comprehension's frame)
        return taped.vouched(bound, tensors, bound, *leading)

    def _op_vmap(self, info, in_dims: tuple, *args: Any) -> tuple:
        return _as_registered_ops(self.vmap, info, in_dims, *args)

    def _vmap_by_loop(self, info, in_dims: tuple, *args: Any) -> tuple:
        """The batching rule of last resort: one call per batch element, results stacked."""
        size = info.batch_size
        results = []
        for i in range(size):
            sliced = [a if d is None else a.select(d, i) for a, d in zip(args, in_dims)]
            results.append(self(*sliced))
        if isinstance(results[0], tuple):
            stacked = tuple(torch.stack(parts) for parts in zip(*results))
            return stacked, (0,) * len(stacked)
        return torch.stack(results), 0


class EagerFunction(torch.autograd.Function):
    """The eager entry point of every :class:`Primitive`: ``prim.function.apply(prim, *args)``
    (``prim.function``: this class, subclassed under the primitive's name).

    Derivatives are the primitive's own; the primitive rides along as the first input (it gets
    no gradient), so one explicit class serves every op.
    """

    @staticmethod
    def forward(prim: Primitive, *args: Any) -> Any:
        return writable(prim.run(*args), args)

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: Any) -> None:
        prim = ctx.prim = inputs[0]
        args = inputs[1:]
        # The primitive's derivatives index inputs without the leading primitive.
        ctx.needs_input_grad = ctx.needs_input_grad[1:]
        if type(output) is tuple:
            ctx.mark_non_differentiable(*[o for o in output if not o.is_floating_point()])
        if _forward_mode_active():
            ctx.primals = args
        prim.setup_context(ctx, args, output)

    @staticmethod
    def backward(ctx, *grads: Any) -> tuple:
        if _profiling():
            with record_function(ctx.prim.qualified_name + "_backward"):
                return EagerFunction._backward(ctx, grads)
        return EagerFunction._backward(ctx, grads)

    @staticmethod
    def _backward(ctx, grads: tuple) -> tuple:
        # (``_any_legacy_batched`` and ``_forward_mode_active`` inline: every eager backward
        # asks, and each call is a Python frame)
        if any(map(_is_legacy_batched, filter(_is_tensor, grads))):
            return (None, *_as_registered_ops(converting_once, ctx.prim.backward, ctx, *grads))
        if (
            torch.is_grad_enabled()  # a graph of the backward
            or forward_ad._current_level >= 0
            or torch._C._are_functorch_transforms_active()
        ):
            return (None, *converting_once(ctx.prim.backward, ctx, *grads))
        return (None, *backward_on_tape(ctx, grads))

    @staticmethod
    def jvp(ctx, _prim_tangent: None, *tangents: Any) -> Any:
        if ctx.prim.jvp is None:
            raise RuntimeError(f"{ctx.prim!r} has no forward-mode derivative")
        if _any_legacy_batched(tangents):  # (gradcheck's check_batched_forward_grad)
            return _as_registered_ops(ctx.prim.jvp, ctx, *tangents)
        return ctx.prim.jvp(ctx, *tangents)

    @staticmethod
    def vmap(info, in_dims: tuple, prim: Primitive, *args: Any) -> tuple:
        return prim.vmap(info, in_dims[1:], *args)

    @classmethod
    def apply(cls, *args: Any) -> Any:
        # torch's apply binds the arguments to forward's signature on every call (tens of µs);
        # our calls are positional and complete, so outside functorch transforms skip that.
        if torch._C._are_functorch_transforms_active():
            return super().apply(*args)
        return super(torch.autograd.Function, cls).apply(*args)


class Bound:
    """A primitive with its trailing non-tensor arguments fixed: ``prim.bind(*static)`` called
    with the leading operands (tensors or ``None``) is ``prim(*leading, *static)``.

    A functional op's opening binds once per call signature (``functional._common.Openings``)
    and calls the bound primitive from then on, which is leaner in eager mode: autograd's
    Function sees only the operands (:class:`BoundFunction`), and the tape's key holds the
    bound object instead of the static values (each hashed on every call) — shortened further
    to the bound object and the operands' strides and alignment (``taped``'s ``vouched``),
    since the opening's key fixed their types, shapes, dtypes and devices: a bound object is
    called with the operands its opening derives from the call's alone. Anything but a plain
    eager call — tracing, dispatch modes, forward mode, functorch transforms — takes the
    primitive's own path. ``static`` is never modified (its lists are the op's arguments).
    """

    __slots__ = ("attributes", "backward_layouts", "decomposition", "no_grads", "prim", "static")

    def __init__(self, prim: Primitive, static: tuple) -> None:
        self.prim = prim
        self.static = static
        # The primitive's decomposition for this bound object (``bound_decomposition``; None:
        # none applies), made on the first call that records a graph.
        self.decomposition: Callable[..., Any] | bool | None = False
        self.no_grads = (False,) * len(static)  # needs_input_grad of the static arguments
        # The ctx attributes of a primitive with ``static_attributes``, once a backward has
        # made them a key (``backward_on_tape``; ``False``: they cannot be one), and per
        # ``needs_input_grad`` which of them are tensors.
        self.attributes: Attributes | bool | None = None
        self.backward_layouts: dict[tuple, tuple] = {}

    def __repr__(self) -> str:
        return f"{self.prim!r}.bind{self.static!r}"

    def recorded(self, *leading: Any) -> Any:
        """``self(*leading)`` recorded by autograd, for a bound decomposition's parts: called
        from :meth:`__call__`, which has checked these operands and the global state, they
        skip the checks (the primitive must have no decomposition of its own)."""
        return self.prim.apply_bound(self, *leading)

    def __call__(self, *leading: Any) -> Any:
        if (
            torch.compiler.is_compiling()
            or torch._C._len_torch_dispatch_stack()
            or _ops_only.active
            or forward_ad._current_level >= 0  # (``_forward_mode_active()``, inline)
            or torch._C._are_functorch_transforms_active()
            or torch._C._get_tracing_state() is not None  # (jit_tracing(), inline)
        ):
            return self.prim(*leading, *self.static)
        grad = False
        for a in leading:
            if a is not None:
                if type(a) not in PLAIN_TENSORS:
                    return self.prim(*leading, *self.static)
                grad = grad or a.requires_grad
        if grad and torch.is_grad_enabled():
            if self.prim.decomposed is not None:
                if self.prim.bound_decomposition is None:
                    if (out := _decomposed(self.prim, (*leading, *self.static), True)) is not None:
                        return out
                else:
                    if self.decomposition is False:
                        self.decomposition = self.prim.bound_decomposition(*self.static)
                    if self.decomposition is not None:
                        return self.decomposition(*leading)
            return self.prim.apply_bound(self, *leading)
        if _profiling():
            return self.prim.run_bound(self, leading)
        return self.prim._run_bound(self, leading)  # (unnamed in no profile: no frame for it)


class BoundFunction(EagerFunction):
    """:class:`EagerFunction` for a :class:`Bound` call: ``apply(bound, *leading)``. Its
    backward is the primitive's (the static arguments' gradients, all ``None``, are dropped
    by autograd); forward mode and functorch never reach it."""

    @staticmethod
    def forward(bound: Bound, *leading: Any) -> Any:
        prim = bound.prim
        if _profiling():
            return writable(prim.run_bound(bound, leading), leading)
        out = prim._run_bound(bound, leading)
        # (``writable``'s test for one tensor, inline: a view is rare, this call is not)
        return writable(out, leading) if type(out) is tuple or out._is_view() else out

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: Any) -> None:
        bound = inputs[0]
        prim = ctx.prim = bound.prim
        ctx.needs_input_grad = ctx.needs_input_grad[1:] + bound.no_grads
        # (No marks: in reverse mode, the only mode here, autograd leaves integer outputs
        # — pooling's indices — without gradient by their dtype.)
        prim.setup_context(ctx, (*inputs[1:], *bound.static), output)
        if prim.static_attributes:
            ctx.bound = bound


def _node_apply(ctx, *grads: Any) -> tuple:
    """What autograd's engine calls to run the backward of one of our nodes: the backward
    itself (torch's ``BackwardCFunction.apply`` first chooses between ``backward`` and ``vjp``
    in Python frames of its own on every call; ours define ``backward`` only), named in a
    profile."""
    if _profiling():
        return EagerFunction.backward(ctx, *grads)
    return EagerFunction._backward(ctx, grads)


def _functions(name: str) -> tuple[type[EagerFunction], type[BoundFunction]]:
    """Primitive ``name``'s own :class:`EagerFunction` and :class:`BoundFunction`, both named
    after it (``_registration.function_named``)."""
    functions = []
    for base in (EagerFunction, BoundFunction):
        function = function_named(base, name)
        function._backward_cls.apply = _node_apply  # type: ignore[attr-defined]
        functions.append(function)
    return functions[0], functions[1]


def sum_tangents(parts: list) -> Any:
    """A tangent made of zero to two parts (``None`` for none): a bilinear op's
    ``op(ȧ, b) + op(a, ḃ)``."""
    return None if not parts else parts[0] if len(parts) == 1 else parts[0] + parts[1]


def affine_forward_jvp(op: Callable[..., Any], input, weight, geometry, t_input, t_weight, t_bias):
    """The tangent of ``op(input, weight, bias, *geometry)``, bilinear in input and weight plus a
    bias: ``op(ṫ_input, weight, ṫ_bias) + op(input, ṫ_weight, 0)`` (the bias tangent rides on
    whichever part runs)."""
    parts = []
    if t_input is not None:
        parts.append(op(t_input, weight, t_bias, *geometry))
        t_bias = None
    if t_weight is not None or t_bias is not None:
        t_weight = torch.zeros_like(weight) if t_weight is None else t_weight
        parts.append(op(input, t_weight, t_bias, *geometry))
    return sum_tangents(parts)
