"""Tapes: what a launcher or an op's implementation does for one problem, recorded once and
replayed.

By the launcher contract a launcher is a function of its tensors' metadata and its plain
arguments: for the same shapes, strides, dtypes, devices and address alignments, and the same
other arguments, it makes the same kernel launches with the same scalars, and the same torch calls
(views, a workspace, a zero fill, a reduction). Only the tensors' addresses change from call to
call. An op's implementation (``torchconv_ext``'s primitives) is the same kind of function, with
results, once the global state it reads is named (its backend, the TF32 flag: ``context``). Yet
their Python (views, geometry, layout rules, keys), the tuner's lookup and the plan's lookup cost
tens of µs on every call.

:func:`taped` wraps such a function so that the second call of a problem records what it does
(the first one compiles and tunes, plainly): its torch calls (seen by a torch function mode, so
``torch.empty`` and ``Tensor.contiguous`` as called, not the ATen ops beneath them, which are
several times slower to call one by one from Python) and its kernel launches (each through its
launch plan, :mod:`._plan`), as a *tape* of steps over tensor slots — the call's tensors, then
the tensors the recorded calls return. Later calls of the problem replay the tape: each torch
call made again on the new call's tensors, each launch made with them, and the result's slots
returned — all in one Python function generated from the tape (straight-line calls on local
variables: no interpretation of steps). A planned launch is a call of Triton's launcher itself
with its plan's constant parts (``Plan.launch_parts``), what the plan checks at each launch —
the globals its kernel uses — and the current stream read once at the top of the replay. A
view that only gives a kernel an address (``as_5d``'s unsqueezes) is not replayed: the kernel
gets the tensor it views, which has the same address. What must be
decided afresh on every call — a lookup in the weight cache, whose answer changes with the
weight's version — goes through :func:`replayed_whole`: the tape calls it again.

The tape key holds everything the function may read: each tensor's type, shape, strides, dtype,
device and 16-byte alignment (Triton specialises on it), every other argument by type and value,
the current device, autocast's state, ``context()`` and the knobs of the plan key. A caller
that knows more of its arguments than that can shorten the key (``vouched``, on every taped
function): a bound primitive's opening fixed its operands' types, shapes, dtypes and devices and
every other argument, so its calls — and their backwards — find their tape by the bound object,
the tensors' strides and alignment and the global state alone, through a shortcut to the tape
the full key found (about a tenth of a convolution's host time, forward and backward). What a
tape cannot replay faithfully is never taped — the function keeps running as it is for that
problem:

* a call running an ATen op whose result depends on tensor values (``.item()``, ``nonzero``) or
  randomness, a call that runs ops yet returns no tensor (``out[0] = v``), one returning
  tensors mixed with other values, or one reading a tensor that is neither the function's nor a
  recorded call's;
* a launch that does not come through ``_plan.launch`` (an autotuner's, ``kernel[grid]``
  called directly), or one no plan serves (plans off, a tuner still choosing during CUDA-graph
  capture);
* a launcher that returns a value (with ``returns``: a result other than tensors and ``None``).

Tapes are off while functorch transforms, dispatch modes or torch function modes (a device
context) are active (their tensors look plain, and a mode may want to see every call or change
what a factory makes); a recording keeps its own thread's launches only, and nested tapes run
plainly inside a recording (the outer tape holds their steps). Under Triton's interpreter, where
``kernel[grid]`` is the whole launch, a tape replays ``kernel[grid]`` with the recorded keywords
(and the calls the interpreter makes inside a launch belong to the launch, not to the tape):
every interpreter test that repeats a problem checks replays against torch. Launch hooks
(``knobs.runtime.launch_enter_hook``) turn replays off, so profilers see the launcher's own
arguments; a plan that cannot launch (a global rebound) makes the call run the function in full.
``TORCHCONV_EXT_LAUNCH_PLANS=0`` turns tapes off with the plans.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import keyword
import operator
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_unflatten
from triton import knobs
from triton.runtime import driver

from . import _plan
from ._common import INTERPRET, env_flag

#: Whether launchers are taped (``TORCHCONV_EXT_LAUNCH_PLANS=0`` turns tapes off with the plans).
ENABLED: bool = env_flag("TORCHCONV_EXT_LAUNCH_PLANS", True)
#: Tapes kept before the table is cleared (a tape is per problem, so this bounds memory only).
CAPACITY = 4096
#: Op tags whose results depend on tensor values or randomness: never taped.
_UNTAPEABLE_TAGS = frozenset(
    {
        torch.Tag.data_dependent_output,
        torch.Tag.dynamic_output_shape,
        torch.Tag.nondeterministic_seeded,
    }
)

#: Per key: a Tape, or the number of plain calls seen so far (an int below RECORD_AT).
_tapes: dict[tuple, Any] = {}
#: The call of a problem that is recorded (the first one tunes and compiles, plainly).
RECORD_AT = 2
_recording: _Recorder | None = None
#: The plans' generation the tapes were made in (tapes hold plans: cleared with them).
_generation = -1
_stats = {"replayed": 0, "recorded": 0, "untapeable": 0}
#: Per shortened key (``taped``'s ``vouched``): the replay of the tape its full key found.
_shortcuts: dict[tuple, Callable[..., Any]] = {}
#: What a short key maps over its tensors, all C: strides, and addresses ``& 15`` (alignment).
_strides = torch.Tensor.stride
_address = torch.Tensor.data_ptr
_FIFTEENS = itertools.repeat(15)


class Untapeable(Exception):
    """What the launcher did cannot be replayed from a tape."""


class _Slot(int):
    """A tensor's place in a tape (in argument templates)."""


class _Step:
    """One torch call or call replayed whole (a function on slots), or one launch (a plan, a
    grid and arguments)."""

    __slots__ = ("bare", "kwargs", "outs", "run", "template", "tree", "view")

    def __init__(self, run: Any, template: list, **more: Any):
        self.run = run  # a torch function or method, a function, or a launch Plan
        self.template = template  # the arguments, slots where tensors go
        self.outs: tuple[int, ...] = ()  # the slots of the tensors it returns
        self.bare = True  # it returns one tensor (not in a container)
        self.kwargs: dict = more.get("kwargs", {})
        self.tree = more.get("tree")  # a pytree spec when tensors sit inside containers
        self.view = False  # a call that only made a new view of its argument

    def reads(self) -> list[int]:
        return [int(v) for v in (*self.template, *self.kwargs.values()) if type(v) is _Slot]


class Tape:
    """The replayable steps of one problem — ops and calls in order, and launches — compiled
    into one Python function over slots (``s0``, ``s1``... the call's tensors, then the
    tensors the steps return), so a replay runs nothing but those calls."""

    __slots__ = ("replay_steps", "source", "steps")

    def __init__(
        self,
        steps: list[tuple[str, _Step, Any]],
        n_inputs: int,
        device: int,
        result: tuple[Any, tuple[int, ...]] | None,
    ) -> None:
        """``result``: ``(form, slots)`` — form ``"tensor"``, ``"tuple"`` (of tensors and
        ``None``s) or a pytree spec; slot -1 is ``None``."""
        self.steps = steps
        self.source, namespace = _replay_source(steps, n_inputs, device, result)
        exec(compile(self.source, "<tape>", "exec"), namespace)
        self.replay_steps = namespace["replay"]

    def replay(self, tensors: list[torch.Tensor]) -> Any:
        """Run the steps on ``tensors`` (the call's, in slot order) and return the result.
        Raises :class:`_plan.Unplanned` when a plan cannot launch (nothing of that launch ran;
        the caller then runs the function in full, which rewrites whatever earlier steps
        wrote)."""
        return self.replay_steps(*tensors)


def _replay_source(
    steps: list[tuple[str, _Step, Any]],
    n_inputs: int,
    device: int,
    result: tuple[Any, tuple[int, ...]] | None,
) -> tuple[str, dict[str, Any]]:
    """The source of a tape's ``replay(s0, s1, ...)`` and the namespace it runs in (every
    value other than a slot is a name there: functions, plans, grids, constants)."""
    namespace: dict[str, Any] = {"flatten": tree_flatten, "unflatten": tree_unflatten}

    def name(v: Any) -> str:
        key = f"c{len(namespace)}"
        namespace[key] = v
        return key

    def value(v: Any) -> str:
        return f"s{int(v)}" if type(v) is _Slot else name(v)

    # Planned launches call Triton's launcher inline, after their checks, made once before any
    # step: the stream, and the globals the kernels use (each once: ``_global_checks``).
    prologue: list[str] = []
    body: list[str] = []
    used: dict[int, tuple[dict, dict[str, Any]]] = {}  # per namespace: the globals and values
    for kind, step, grid in steps:
        values = ", ".join(value(v) for v in step.template)
        if kind == "launch" and type(step.run) is _plan.Plan:
            if not prologue:
                namespace["Unplanned"] = _plan.Unplanned
                # (``_plan.current_stream(device)`` inline: one Python frame less per replay)
                active = f"({name(driver)}._active or {name(driver)}.active)"
                prologue.append(f"stream = {active}.get_current_stream({device!r})")
            for global_name, space, v in step.run.globals:
                used.setdefault(id(space), (space, {}))[1].setdefault(global_name, v)
            launcher, sizes, middle, tail = step.run.launch_parts(grid)
            arguments = [*sizes, _STREAM, *middle, *step.template, *tail]
            body.append(f"{name(launcher)}({_splatted(arguments, name)})")
            continue
        if kind == "launch":  # (the interpreter's: ``kernel[grid]`` with the recorded keywords)
            launched = f"({values},)" if values else "()"
            body.append(f"{name(step.run)}.run({name(device)}, {name(grid)}, {launched})")
            continue
        if step.tree is not None:
            body.append(f"a, kw = unflatten([{values}], {name(step.tree)})")
            call = f"{name(step.run)}(*a, **kw)"
        else:
            if not all(k.isidentifier() and not keyword.iskeyword(k) for k in step.kwargs):
                raise Untapeable("a keyword that is not a name")
            keywords = [f"{k}={value(v)}" for k, v in step.kwargs.items()]
            call = f"{name(step.run)}({', '.join([values, *keywords] if values else keywords)})"
        outs = ", ".join(f"s{s}" for s in step.outs)
        body.append(f"{outs} = {call}" if step.bare else f"{outs}, = flatten({call})[0]")
    if result is None:
        body.append("return None")
    else:
        form, outs = result
        values = ", ".join("None" if s < 0 else f"s{s}" for s in outs)
        if form == "tensor":
            body.append(f"return {values}")
        elif form == "tuple":
            body.append(f"return ({values},)")
        else:  # a pytree spec
            body.append(f"return unflatten([{values}], {name(form)})")
    prologue += _global_checks(used.values(), name)
    if any(kind != "launch" for kind, _, _ in steps):
        # The recorded ops ran below autograd (the op's Function records the graph).
        namespace.update(grad_enabled=torch.is_grad_enabled, set_grad=torch._C._set_grad_enabled)
        body = [
            "grad = grad_enabled()",
            "if grad:",
            "    set_grad(False)",
            "try:",
            *(f"    {line}" for line in body),
            "finally:",
            "    if grad:",
            "        set_grad(True)",
        ]
    params = ", ".join(f"s{i}" for i in range(n_inputs))
    lines = [f"def replay({params}):", *(f"    {line}" for line in [*prologue, *body])]
    return "\n".join(lines), namespace


#: Where a launch's arguments take the stream the replay reads at its top.
_STREAM = object()


def _splatted(arguments: list, name: Callable[[Any], str]) -> str:
    """A launch's arguments as call source: slots and the stream by name, each run of constants
    unpacked from one tuple (a launch passes some 80 values, mostly constants: one load per run
    rather than one per value)."""
    parts: list[str] = []
    run: list[Any] = []
    for v in [*arguments, _STREAM]:  # (a last stream that only closes the last run)
        if type(v) is not _Slot and v is not _STREAM:
            run.append(v)
            continue
        if len(run) > 1:
            parts.append(f"*{name(tuple(run))}")
        elif run:
            parts.append(name(run[0]))
        run = []
        parts.append(f"s{int(v)}" if type(v) is _Slot else "stream")
    return ", ".join(parts[:-1])


def _global_checks(used: Iterable[tuple[dict, dict[str, Any]]], name: Callable) -> list[str]:
    """The replay's check that no global its kernels use was rebound or deleted since they were
    compiled, compared by value as Triton compares them at each launch: all the names of one
    namespace read at once (``operator.itemgetter``) and compared as a tuple, rather than one
    ``get`` per name (about 40 ns each, and a kernel reads some 20)."""
    reads = []
    for space, values in used:
        names = tuple(values)
        # (itemgetter of one name returns the bare value: that one is read into a 1-tuple)
        read = (
            f"{name(operator.itemgetter(*names))}({name(space)})"
            if len(names) > 1
            else f"({name(space)}[{names[0]!r}],)"
        )
        reads.append(f"{read} == {name(tuple(values.values()))}")
    if not reads:
        return []
    return [
        "try:",
        f"    fresh = {' and '.join(reads)}",
        "except Exception:  # (a global deleted, or one that will not compare)",
        "    fresh = False",
        "if not fresh:",
        "    raise Unplanned('a global the kernel uses was rebound or deleted')",
    ]


def _holds_tensors(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and any(
        isinstance(u, torch.Tensor) for u in tree_flatten(v)[0]
    )


class _OpGuard(TorchDispatchMode):
    """Below the recorder: counts the ATen ops each recorded call runs and fails the recording
    on one whose result depends on values or randomness."""

    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()
        self.recorder = recorder
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if _UNTAPEABLE_TAGS.intersection(func.tags) and not _plan.inside_launch():
            self.recorder.fail(f"{func}: its result depends on values")
        return func(*args, **(kwargs or {}))


class _Recorder(TorchFunctionMode):
    """Records the torch calls and launches of one call as tape steps over slots.

    It sees torch's Python API (``torch.empty``, ``Tensor.contiguous``...), so a replay makes
    the same calls through the same fast bindings; reads of metadata (``shape``, ``stride()``)
    return no tensor, run no op and are not recorded.
    """

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        self.tensors = list(tensors)  # held, so no id is reused while recording
        self.n_inputs = len(tensors)
        self.slot = {id(t): i for i, t in enumerate(tensors)}
        self.view_of: dict[int, int] = {}  # slot -> the slot it views at the same address
        self.steps: list[list] = []
        self.failed: str | None = None
        self.thread = threading.get_ident()  # launches of other threads are not this call's
        self.in_call = 0  # inside a call recorded whole (:func:`replayed_whole`)
        self.guard = _OpGuard(self)

    def fail(self, why: str) -> None:
        if self.failed is None:
            self.failed = why

    def _slots(self, values: list) -> list:
        out = []
        for v in values:
            if isinstance(v, torch.Tensor):
                s = self.slot.get(id(v))
                if s is None:
                    raise Untapeable("a tensor that is none of the call's or its steps'")
                out.append(_Slot(s))
            else:
                out.append(v)
        return out

    def _new_slot(self, t: torch.Tensor) -> int:
        self.slot[id(t)] = len(self.tensors)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.failed is not None or self.in_call or _plan.inside_launch():
            return func(*args, **kwargs)
        ops = self.guard.ops
        result = func(*args, **kwargs)
        try:
            self._record(func, args, kwargs, result, ran_ops=self.guard.ops > ops)
        except Untapeable as e:
            self.fail(f"{getattr(func, '__name__', func)}: {e}")
        return result

    def _record(self, func, args, kwargs, result, ran_ops: bool) -> None:
        if type(func) is torch._ops.OpOverload:
            func = func._op  # (what its ``__call__`` calls, without that Python frame)
        outs = tree_flatten(result)[0]
        tensors_out = [r for r in outs if isinstance(r, torch.Tensor)]
        if not tensors_out:
            if ran_ops:  # an op whose effect the result does not carry (``__setitem__``)
                raise Untapeable("it returns no tensor, yet runs ops")
            return  # a read of metadata
        if len(tensors_out) != len(outs):
            raise Untapeable("it returns tensors and other values")
        if any(_holds_tensors(v) for v in (*args, *kwargs.values())):
            flat, tree = tree_flatten((args, kwargs))
            step = _Step(func, self._slots(flat), tree=tree)
        else:
            values = self._slots([*args, *kwargs.values()])
            step = _Step(func, values[: len(args)], kwargs=dict(zip(kwargs, values[len(args) :])))
        # A result that is an argument itself (an in-place op) keeps that argument's slot.
        known = [self.slot.get(id(r)) for r in outs]
        step.outs = tuple(s if s is not None else self._new_slot(r) for s, r in zip(known, outs))
        step.bare = isinstance(result, torch.Tensor)
        first = step.template[0] if step.template else None
        if len(outs) == 1 and known[0] is None and type(first) is _Slot and outs[0]._is_view():
            step.view = True
            if self.tensors[first].data_ptr() == outs[0].data_ptr():
                self.view_of[step.outs[0]] = first
        self.steps.append(["op", step, None])

    def record_call(self, fn: Callable, args: tuple, result: Any) -> None:
        """A call replayed whole: ``fn`` called again on the slots of ``args``."""
        if self.failed is not None:
            return
        name = getattr(fn, "__name__", None) or repr(fn)  # (a partial has no name)
        if not isinstance(result, torch.Tensor):
            self.fail(f"{name} returned something other than a tensor")
            return
        try:
            step = _Step(fn, self._slots(list(args)))
        except Untapeable as e:
            self.fail(f"{name}: {e}")
            return
        step.outs = (self._new_slot(result),)
        self.steps.append(["call", step, None])

    def launched(self, plan: Any, device: int, grid: tuple, args: tuple) -> None:
        if self.failed is not None or threading.get_ident() != self.thread or self.in_call:
            return  # (a call replayed whole launches what it needs again at each replay)
        if plan is None:
            self.fail("a launch without a plan")
            return
        try:
            template = self._slots(list(args))
        except Untapeable as e:
            self.fail(f"launch: {e}")
            return
        # A view at its source's address gives the kernel nothing its source does not.
        for i, v in enumerate(template):
            if type(v) is _Slot:
                while v in self.view_of:
                    v = _Slot(self.view_of[v])
                template[i] = v
        self.steps.append(["launch", _Step(plan, template), tuple(grid)])

    def tape(self, device: int, result: Any) -> Tape:
        """The tape, returning ``result``'s tensors and ``None``s (``None``: nothing)."""
        result_slots = None
        if result is not None:
            flat, spec = tree_flatten(result)
            if not all(r is None or isinstance(r, torch.Tensor) for r in flat):
                raise Untapeable("a result other than tensors")
            slots = self._slots([r for r in flat if r is not None])[::-1]
            outs = tuple(-1 if r is None else int(slots.pop()) for r in flat)
            if isinstance(result, torch.Tensor):
                result_slots = ("tensor", outs)
            elif type(result) is tuple and all(
                r is None or isinstance(r, torch.Tensor) for r in result
            ):
                result_slots = ("tuple", outs)
            else:
                result_slots = (spec, outs)
        # Keep the launches, the calls that are not views, and the views a kept step or the
        # result reads.
        needed: set[int] = {s for s in result_slots[1] if s >= 0} if result_slots else set()
        kept = []
        for kind, step, grid in reversed(self.steps):
            if step.view and not needed.intersection(step.outs):
                continue
            needed.update(step.reads())
            kept.append((kind, step, grid))
        kept.reverse()
        return Tape(kept, self.n_inputs, device, result_slots)


#: Whether this Triton has the fpsan knob (read once: ``getattr`` with a default is slow).
_FPSAN = hasattr(knobs.compilation, "fpsan_homomorphic_casts")


_TENSOR, _PARAMETER = torch.Tensor, torch.nn.Parameter
#: Per tuple of argument types: where the tensors are and where the lists are (the primitives'
#: int[] arguments), found once per tuple (a call's types are its key's first half).
_ARGUMENT_KINDS: dict[tuple, tuple[tuple[int, ...], tuple[int, ...]]] = {}


def _argument_kinds(types: tuple) -> tuple[tuple[int, ...], tuple[int, ...]]:
    kinds = _ARGUMENT_KINDS.get(types)
    if kinds is None:
        tensors, lists = [], []
        for i, t in enumerate(types):
            if t is _TENSOR or t is _PARAMETER:
                tensors.append(i)
            elif issubclass(t, torch.Tensor):
                raise Untapeable("a tensor subclass")
            elif t is list:
                lists.append(i)
        kinds = _ARGUMENT_KINDS[types] = (tuple(tensors), tuple(lists))
    return kinds


def _key(fn: Callable, context: Any, args: tuple, kwargs: dict, tensors: list) -> tuple:
    """The problem of a call (module doc), collecting its tensors into ``tensors``: the
    arguments' types, then their values — a tensor's shape, strides, dtype, device and 16-byte
    alignment in its place, a list as a tuple. Raises :class:`Untapeable` for a tensor
    subclass or one without strides or storage; an unhashable argument makes the key
    unhashable."""
    if kwargs:
        args = (*args, *kwargs.values())
    types = tuple(map(type, args))
    tensor_at, list_at = _ARGUMENT_KINDS.get(types) or _argument_kinds(types)
    values = list(args)
    try:
        for i in tensor_at:
            v = args[i]
            tensors.append(v)
            values[i] = (v.shape, v.stride(), v.dtype, v.device, not v.data_ptr() & 15)
    except RuntimeError as e:  # no strides or no storage (MKL-DNN, sparse, batched tensors)
        raise Untapeable(str(e)) from None
    for i in list_at:
        values[i] = tuple(args[i])
    return (
        id(fn),
        _context_key(context),
        # Replayed ops pass through autocast again: the same state gives the same ops.
        _autocast_state() if torch._C._is_any_autocast_enabled() else None,
        tuple(kwargs),
        types,
        tuple(values),
    )


def _autocast_state() -> tuple:
    return tuple(
        (torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in ("cuda", "cpu")
    )


def _current_device() -> int:
    # The interpreter has no driver (its launches run on the tensors' own device).
    return -1 if INTERPRET else driver.active.get_current_device()


def _capturing(tensors: list[torch.Tensor]) -> bool:
    return (
        any(t.device.type == "cuda" for t in tensors) and torch.cuda.is_current_stream_capturing()
    )


#: torch's state queries that every call asks (bound once: module globals, one lookup each).
_transforms_active = torch._C._are_functorch_transforms_active
_dispatch_modes = torch._C._len_torch_dispatch_stack
_function_modes = torch._C._is_torch_function_mode_enabled
_autocasting = torch._C._is_any_autocast_enabled


def _standing_aside() -> bool:
    """Whether tapes stand aside for the call being made (module doc): they are off, this
    thread records one, or a transform, a mode or a launch hook is active."""
    runtime = knobs.runtime  # (a launch hook set: ``_plan.hooked`` of each, inline)
    enter, exit_ = runtime.launch_enter_hook, runtime.launch_exit_hook
    return (
        not ENABLED
        or _recording is not None
        or _transforms_active()  # wrapped tensors look plain
        or _dispatch_modes()  # a mode may want to see every op
        or _function_modes()  # (a device context, too)
        or (enter is not None and bool(getattr(enter, "calls", True)))
        or (exit_ is not None and bool(getattr(exit_, "calls", True)))
    )


def _check_generation() -> None:
    """Forget the tapes (and the shortcuts to them) made with plans since cleared."""
    global _generation
    if _generation != _plan.generation():
        _tapes.clear()
        _shortcuts.clear()
        _generation = _plan.generation()


def taped(
    fn: Callable[..., Any], *, returns: bool = False, context: Callable[[], Any] | None = None
) -> Callable[..., Any]:
    """``fn``, replayed from a tape from the third call of a problem on (module doc).

    ``fn`` is a launcher (it returns nothing) or, with ``returns``, a computation returning
    tensors (an op's implementation), whose replay returns the tensors its tape made.
    ``context()`` is whatever global state ``fn`` reads besides its arguments (a backend
    choice, a precision flag): part of the tape key.

    The result's ``vouched(claim, tensors, *args)`` is ``run(*args)`` with a shorter key, for a
    caller that knows more of its arguments than the tape key can assume: ``claim`` is a
    hashable value that fixes the types of ``args``, their values other than tensors, and each
    tensor's shape, dtype and device, whenever a call is given it; ``tensors`` are the tensors
    among ``args``, in order. The key is then ``claim`` and the tensors' strides and
    alignment (with the device, knobs and ``context()``, as in the tape key), and it leads
    straight to the tape the full key found the last time (a shortcut).
    """

    def lookup(args: tuple, kwargs: dict) -> tuple[tuple, Any, list[torch.Tensor]]:
        """``(key, tape or count, tensors)`` of a call; raises ``Untapeable`` or ``TypeError``
        for one never taped."""
        tensors: list[torch.Tensor] = []
        key = _key(fn, context, args, kwargs, tensors)
        return key, _tapes.get(key, 0), tensors

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        if _standing_aside():
            return fn(*args, **kwargs)
        _check_generation()
        try:
            key, tape, tensors = lookup(args, kwargs)
        except (Untapeable, TypeError):  # a subclass, an unhashable argument: never taped
            return fn(*args, **kwargs)
        return _run(key, tape, fn, returns, args, kwargs, tensors)

    def vouched(claim: Any, tensors: list[torch.Tensor], *args: Any) -> Any:
        if _standing_aside() or _autocasting():
            return run(*args)  # (autocast's state is in the full key only)
        if _generation != _plan._generation:
            _check_generation()
        try:
            # (C-level maps: each tensor's strides, then each one's address modulo 16 — the
            # alignment Triton specialises on)
            short = (
                fn,
                claim,
                _context_key(context),
                *map(_strides, tensors),
                *map(operator.and_, map(_address, tensors), _FIFTEENS),
            )
            replay = _shortcuts.get(short)
        except RuntimeError:  # a tensor without strides or storage: never taped
            return fn(*args)
        if replay is not None:
            try:
                result = replay(*tensors)
            except _plan.Unplanned:
                _shortcuts.pop(short, None)
                return run(*args)  # (which finds the tape unplanned and runs ``fn``)
            _stats["replayed"] += 1
            return result
        try:
            key, tape, found = lookup(args, {})
        except (Untapeable, TypeError):
            return fn(*args)
        result = _run(key, tape, fn, returns, args, {}, found)
        tape = _tapes.get(key)
        # (the tensors compared too: a caller's mistake there makes no shortcut, never a wrong
        # replay)
        if type(tape) is Tape and _same_tensors(found, tensors):
            if len(_shortcuts) >= CAPACITY:
                _shortcuts.clear()
            _shortcuts[short] = tape.replay_steps
        return result

    run.launcher = fn  # type: ignore[attr-defined]
    run.vouched = vouched  # type: ignore[attr-defined]
    return run


def _context_key(context: Callable[[], Any] | None) -> tuple:
    """The part of a tape key that is not the call's arguments (see :func:`_key`)."""
    compilation = knobs.compilation
    return (
        # (``_current_device()``; the driver as ``driver.active`` caches it: no property call)
        -1 if INTERPRET else (driver._active or driver.active).get_current_device(),
        knobs.runtime.debug,
        compilation.instrumentation_mode,
        compilation.fpsan_homomorphic_casts if _FPSAN else None,
        context() if context is not None else None,
    )


def _same_tensors(found: list[torch.Tensor], tensors: list[torch.Tensor]) -> bool:
    return len(found) == len(tensors) and all(a is b for a, b in zip(found, tensors))


def _run(
    key: tuple, tape: Any, fn: Callable, returns: bool, args: tuple, kwargs: dict, tensors: list
) -> Any:
    """A call whose key found ``tape`` (a Tape, or the count of plain calls so far, -1 for an
    untapeable problem): replayed, recorded or run plainly."""
    if type(tape) is Tape:
        try:
            result = tape.replay(tensors)
        except _plan.Unplanned:
            _tapes[key] = -1
            return fn(*args, **kwargs)
        _stats["replayed"] += 1
        return result
    if tape < 0:  # untapeable
        return fn(*args, **kwargs)
    if tape + 1 < RECORD_AT or _capturing(tensors):
        _tapes[key] = tape + 1
        return fn(*args, **kwargs)
    if len(set(map(id, tensors))) != len(tensors):
        # One tensor in two places would be one slot for both, which another call's two
        # tensors are not: record another call (replaying such a call is right).
        return fn(*args, **kwargs)
    return _record(key, fn, returns, args, kwargs, tensors)


def recording() -> bool:
    """Whether this thread is recording a tape (its op guard is then on the dispatch stack)."""
    recorder = _recording
    return recorder is not None and threading.get_ident() == recorder.thread


def replayed_whole(fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    """``fn(*args)``, which a tape being recorded takes as one step: replays call ``fn`` again
    (instead of repeating the ops it ran this time). For what must be decided afresh on each
    call: a cache lookup (a weight repacked once per version). ``fn`` returns one tensor; its
    torch calls and launches are its own (a replay runs whichever it needs then).

    ``fn.for_replays(*args)``, where ``fn`` has it, is what the tape calls instead: ``fn`` for
    the calls whose arguments are like ``args`` as far as the tape key tells (each tensor's
    type, shape, strides, dtype, device and alignment; every other value), with what those fix
    decided once."""
    recorder = _recording
    if recorder is None or threading.get_ident() != recorder.thread:
        return fn(*args)
    recorder.in_call += 1
    try:
        result = fn(*args)
    finally:
        recorder.in_call -= 1
    specialise = getattr(fn, "for_replays", None)
    recorder.record_call(fn if specialise is None else specialise(*args), args, result)
    return result


def _jit_runs() -> list[tuple[Any, str]]:
    """Where Triton launches a kernel: ``JITFunction.run`` and the interpreter's ``run``."""
    from triton.runtime.jit import JITFunction

    owners = [JITFunction]
    try:
        from triton.runtime.interpreter import InterpretedFunction

        owners.append(InterpretedFunction)
    except ImportError:
        pass
    return [(owner, "run") for owner in owners]


@contextlib.contextmanager
def _watching_launches(recorder: _Recorder) -> Iterator[None]:
    """Fail the recording on any Triton launch that does not come through ``_plan.launch`` (an
    autotuner's, a kernel called directly): the tape would not see it."""
    saved = [(owner, name, vars(owner)[name]) for owner, name in _jit_runs()]

    def watch(original: Callable) -> Callable:
        @functools.wraps(original)
        def run(*args: Any, **kwargs: Any) -> Any:
            if (
                threading.get_ident() == recorder.thread
                and not _plan.inside_launch()
                and not kwargs.get("warmup", False)
            ):
                recorder.failed = "a launch outside the launch plans"
            return original(*args, **kwargs)

        return run

    for owner, name, original in saved:
        setattr(owner, name, watch(original))
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def _record(
    key: tuple, fn: Callable, returns: bool, args: tuple, kwargs: dict, tensors: list
) -> Any:
    """Run ``fn`` once, recording it; its result is returned as it is."""
    global _recording
    recorder = _Recorder(tensors)
    _recording = recorder
    _plan.observe(recorder.launched)
    try:
        with _watching_launches(recorder), recorder, recorder.guard:
            result = fn(*args, **kwargs)
    finally:
        _recording = None
        _plan.observe(None)
    if result is not None and not returns:
        recorder.failed = "the launcher returned a value"
    if len(_tapes) >= CAPACITY:
        _tapes.clear()
        _shortcuts.clear()
    tape = None
    if recorder.failed is None:
        try:
            tape = recorder.tape(_current_device(), result if returns else None)
        except Untapeable as e:
            recorder.failed = str(e)
    if tape is not None:
        _tapes[key] = tape
        _stats["recorded"] += 1
    else:
        _tapes[key] = -1
        _stats["untapeable"] += 1
    return result


def clear_tapes() -> None:
    """Forget every tape and count (the next calls of each problem record afresh)."""
    _tapes.clear()
    _shortcuts.clear()
    _stats.update(replayed=0, recorded=0, untapeable=0)


def tape_info() -> dict[str, int]:
    """``{"tapes", "replayed", "recorded", "untapeable"}``: tapes held, and calls each way."""
    return {"tapes": sum(type(t) is Tape for t in _tapes.values()), **_stats}


__all__ = ["Tape", "clear_tapes", "recording", "replayed_whole", "tape_info", "taped"]
