"""Launcher tapes: what a launcher does for one problem, recorded once and replayed.

By the launcher contract a launcher is a function of its tensors' metadata and its plain
arguments: for the same shapes, strides, dtypes, devices and address alignments, and the same
other arguments, it makes the same kernel launches with the same scalars, and the same torch ops
(views, a workspace, a zero fill, a reduction). Only the tensors' addresses change from call to
call. Yet its Python (views, geometry, keys), the tuner's lookup and the plan's lookup cost tens
of µs on every call.

:func:`taped` wraps a launcher so that the second call of a problem records what the launcher
does (the first one compiles and tunes, plainly): the torch ops (seen by a dispatch mode) and the kernel launches (each through
its launch plan, :mod:`._plan`), as a *tape* of steps over tensor slots — the launcher's
tensors, then the tensors the recorded ops return. Later calls of the problem replay the tape:
each op called again on the new call's tensors, each launch handed to its plan with them. A view
that only gives a kernel an address (``as_5d``'s unsqueezes) is not replayed: the kernel gets
the tensor it views, which has the same address.

The tape key holds everything the launcher may read: each tensor's type, shape, strides, dtype,
device and 16-byte alignment (Triton specialises on it), every other argument by type and value,
the current device and the knobs of the plan key. What a tape cannot replay faithfully is never
taped — the launcher keeps running as it is for that problem:

* an op whose result depends on tensor values (``.item()``, ``nonzero``) or randomness, an op
  returning something other than tensors, or one reading a tensor that is neither the
  launcher's nor a recorded op's;
* a launch that does not come through ``_plan.launch`` (an autotuner's, ``kernel[grid]``
  called directly), or one no plan serves (plans off, a tuner still choosing during CUDA-graph
  capture);
* a launcher that returns a value.

Tapes are off while functorch transforms or dispatch modes are active (their tensors look
plain, and a mode may want to see every op); a recording keeps its own thread's launches only.
Under Triton's interpreter, where ``kernel[grid]`` is the whole launch, a tape replays
``kernel[grid]`` with the recorded keywords (and the ops the interpreter runs inside a launch
belong to the launch, not to the tape): every interpreter test that repeats a problem checks
replays against torch. Launch hooks (``knobs.runtime.launch_enter_hook``) turn replays off, so
profilers see the launcher's own arguments; a plan that cannot launch (a global rebound) makes
the call run the launcher in full. ``TORCHCONV_EXT_LAUNCH_PLANS=0`` turns tapes off with the
plans.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_unflatten
from triton import knobs
from triton.runtime import driver

from . import _plan
from ._common import INTERPRET

#: Whether launchers are taped (``TORCHCONV_EXT_LAUNCH_PLANS=0`` turns tapes off with the plans).
ENABLED: bool = os.environ.get("TORCHCONV_EXT_LAUNCH_PLANS", "1") != "0"
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
#: Ops whose result is their argument again as a new tensor object (nothing to replay).
_ALIASES = frozenset({torch.ops.aten.detach.default, torch.ops.aten.alias.default})


class Untapeable(Exception):
    """What the launcher did cannot be replayed from a tape."""


class _Slot(int):
    """A tensor's place in a tape (in argument templates)."""


class _Step:
    """One op (an ``OpOverload`` on slots) or one launch (a plan, a grid and arguments)."""

    __slots__ = ("fill", "kw_fill", "kwargs", "outs", "run", "template", "tree")

    def __init__(self, run: Any, template: list, outs: tuple[int, ...] = (), **more: Any):
        self.run = run  # an OpOverload, or a launch Plan
        self.template = template  # the arguments, slots where tensors go
        self.fill = tuple((i, int(v)) for i, v in enumerate(template) if type(v) is _Slot)
        self.outs = outs
        self.kwargs: dict = more.get("kwargs", {})
        self.kw_fill = tuple((k, int(v)) for k, v in self.kwargs.items() if type(v) is _Slot)
        self.tree = more.get("tree")  # a pytree spec when tensors sit inside containers

    def arguments(self, slots: list) -> list:
        args = list(self.template)
        for i, s in self.fill:
            args[i] = slots[s]
        return args

    def call_op(self, slots: list) -> None:
        args = self.arguments(slots)
        if self.tree is not None:
            a, kw = tree_unflatten(args, self.tree)
        else:
            a, kw = args, self.kwargs
            if self.kw_fill:
                kw = {**kw, **{k: slots[s] for k, s in self.kw_fill}}
        result = self.run(*a, **kw)
        if len(self.outs) == 1 and isinstance(result, torch.Tensor):
            slots[self.outs[0]] = result
        else:
            for s, r in zip(self.outs, tree_flatten(result)[0], strict=True):
                slots[s] = r


class Tape:
    """The replayable steps of one problem: ops (in order, on slots) and launches."""

    __slots__ = ("device", "has_ops", "n_slots", "steps")

    def __init__(self, steps: list[tuple[str, _Step, Any]], n_slots: int, device: int) -> None:
        self.steps = steps
        self.has_ops = any(kind == "op" for kind, _, _ in steps)
        self.n_slots = n_slots
        self.device = device

    def replay(self, tensors: list[torch.Tensor]) -> None:
        """Run the steps on ``tensors`` (the launcher's, in slot order). Raises
        :class:`_plan.Unplanned` when a plan cannot launch (nothing of that launch ran; the
        caller then runs the launcher in full, which rewrites whatever earlier steps wrote)."""
        slots = tensors + [None] * (self.n_slots - len(tensors))
        grad = self.has_ops and torch.is_grad_enabled()
        if grad:  # the recorded ops ran below autograd
            torch._C._set_grad_enabled(False)
        try:
            for kind, step, grid in self.steps:
                if kind == "launch":
                    step.run.run(self.device, grid, tuple(step.arguments(slots)))
                else:
                    step.call_op(slots)
        finally:
            if grad:
                torch._C._set_grad_enabled(True)


def _holds_tensors(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and any(
        isinstance(u, torch.Tensor) for u in tree_flatten(v)[0]
    )


class _Recorder(TorchDispatchMode):
    """Records the ops and launches of one launcher call as tape steps over slots."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        self.tensors = list(tensors)  # held, so no id is reused while recording
        self.n_inputs = len(tensors)
        self.slot = {id(t): i for i, t in enumerate(tensors)}
        self.view_of: dict[int, int] = {}  # slot -> the slot it views at the same address
        self.keep: list[torch.Tensor] = []  # aliases, held so that their ids stay theirs
        self.steps: list[list] = []
        self.failed: str | None = None
        self.thread = threading.get_ident()  # launches of other threads are not this call's

    def _slots(self, values: list) -> list:
        out = []
        for v in values:
            if isinstance(v, torch.Tensor):
                s = self.slot.get(id(v))
                if s is None:
                    raise Untapeable("a tensor that is none of the launcher's or its ops'")
                out.append(_Slot(s))
            else:
                out.append(v)
        return out

    def _new_slot(self, t: torch.Tensor) -> int:
        self.slot[id(t)] = len(self.tensors)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        # Ops inside a launch are the launch's own (the interpreter's copies): it repeats them.
        if self.failed is None and not _plan.inside_launch():
            try:
                self._record_op(func, args, kwargs, result)
            except Untapeable as e:
                self.failed = f"{func}: {e}"
        return result

    def _record_op(self, func, args, kwargs, result) -> None:
        if _UNTAPEABLE_TAGS.intersection(func.tags):
            raise Untapeable("its result depends on values")
        outs = tree_flatten(result)[0]
        if not all(isinstance(r, torch.Tensor) for r in outs):
            raise Untapeable("it returns something other than tensors")
        source = self.slot.get(id(args[0])) if args else None
        if func in _ALIASES and source is not None and source >= self.n_inputs:
            # A new tensor object on the same data and metadata as one made inside (factory
            # functions return one under a dispatch mode): the replay hands on its source.
            self.keep.append(outs[0])
            self.slot[id(outs[0])] = source
            return
        if any(_holds_tensors(v) for v in (*args, *kwargs.values())):
            flat, tree = tree_flatten((args, kwargs))
            step = _Step(func, self._slots(flat), tree=tree)
        else:
            values = self._slots([*args, *kwargs.values()])
            step = _Step(func, values[: len(args)], kwargs=dict(zip(kwargs, values[len(args) :])))
        step.outs = tuple(self._new_slot(r) for r in outs)
        if func.is_view and len(step.outs) == 1:
            first = step.template[0] if step.template else None
            source = self.tensors[first] if type(first) is _Slot else None
            if source is not None and source.data_ptr() == outs[0].data_ptr():
                self.view_of[step.outs[0]] = first
        self.steps.append(["op", step, None])

    def launched(self, plan: Any, device: int, grid: tuple, args: tuple) -> None:
        if self.failed is not None or threading.get_ident() != self.thread:
            return
        if plan is None:
            self.failed = "a launch without a plan"
            return
        try:
            template = self._slots(list(args))
        except Untapeable as e:
            self.failed = f"launch: {e}"
            return
        # A view at its source's address gives the kernel nothing its source does not.
        for i, v in enumerate(template):
            if type(v) is _Slot:
                while v in self.view_of:
                    v = _Slot(self.view_of[v])
                template[i] = v
        self.steps.append(["launch", _Step(plan, template), tuple(grid)])

    def tape(self, device: int) -> Tape:
        # Keep the launches, the ops that are not views, and the views a kept step reads.
        needed: set[int] = set()
        kept = []
        for kind, step, grid in reversed(self.steps):
            if kind == "op" and step.run.is_view and not needed.intersection(step.outs):
                continue
            needed.update(s for _, s in (*step.fill, *step.kw_fill))
            kept.append((kind, step, grid))
        kept.reverse()
        return Tape(kept, len(self.tensors), device)


#: Whether this Triton has the fpsan knob (read once: ``getattr`` with a default is slow).
_FPSAN = hasattr(knobs.compilation, "fpsan_homomorphic_casts")


def _key(launcher: Callable, args: tuple, kwargs: dict, tensors: list) -> tuple:
    """The problem of a call (module doc), collecting its tensors into ``tensors``. Raises
    :class:`Untapeable` for a tensor subclass; an unhashable argument makes the key unhashable."""
    parts = [
        id(launcher),
        _current_device(),
        knobs.runtime.debug,
        knobs.compilation.instrumentation_mode,
        knobs.compilation.fpsan_homomorphic_casts if _FPSAN else None,
        tuple(kwargs),
    ]
    for v in (*args, *kwargs.values()):
        t = type(v)
        if t is torch.Tensor or t is torch.nn.Parameter:
            tensors.append(v)
            parts += (v.shape, v.stride(), v.dtype, v.device, not v.data_ptr() & 15)
        elif isinstance(v, torch.Tensor):
            raise Untapeable("a tensor subclass")
        elif t is list:  # the primitives' int[] arguments
            parts += (t, tuple(v))
        else:
            parts += (t, v)
    return tuple(parts)


def _current_device() -> int:
    # The interpreter has no driver (its launches run on the tensors' own device).
    return -1 if INTERPRET else driver.active.get_current_device()


def _capturing(tensors: list[torch.Tensor]) -> bool:
    return (
        any(t.device.type == "cuda" for t in tensors) and torch.cuda.is_current_stream_capturing()
    )


def taped(launcher: Callable[..., Any]) -> Callable[..., Any]:
    """``launcher``, replayed from a tape from the third call of a problem on (module doc)."""

    @functools.wraps(launcher)
    def run(*args: Any, **kwargs: Any) -> Any:
        if (
            not ENABLED
            or _recording is not None
            or torch._C._are_functorch_transforms_active()  # wrapped tensors look plain
            or torch._C._len_torch_dispatch_stack()  # a mode may want to see every op
            or _plan.hooked(knobs.runtime.launch_enter_hook)
            or _plan.hooked(knobs.runtime.launch_exit_hook)
        ):
            return launcher(*args, **kwargs)
        global _generation
        if _generation != _plan.generation():
            _tapes.clear()
            _generation = _plan.generation()
        tensors: list[torch.Tensor] = []
        try:
            key = _key(launcher, args, kwargs, tensors)
            tape = _tapes.get(key, 0)
        except (Untapeable, TypeError):  # a subclass, an unhashable argument: never taped
            return launcher(*args, **kwargs)
        if type(tape) is Tape:
            try:
                tape.replay(tensors)
            except _plan.Unplanned:
                _tapes[key] = -1
                return launcher(*args, **kwargs)
            _stats["replayed"] += 1
            return None
        if tape < 0:  # untapeable
            return launcher(*args, **kwargs)
        if tape + 1 < RECORD_AT or _capturing(tensors):
            _tapes[key] = tape + 1
            return launcher(*args, **kwargs)
        return _record(key, launcher, args, kwargs, tensors)

    run.launcher = launcher  # type: ignore[attr-defined]
    return run


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


def _record(key: tuple, launcher: Callable, args: tuple, kwargs: dict, tensors: list) -> Any:
    """Run ``launcher`` once, recording it; its result is returned as it is."""
    global _recording
    recorder = _Recorder(tensors)
    _recording = recorder
    _plan.observe(recorder.launched)
    try:
        with _watching_launches(recorder), recorder:
            result = launcher(*args, **kwargs)
    finally:
        _recording = None
        _plan.observe(None)
    if result is not None:
        recorder.failed = "the launcher returned a value"
    if len(_tapes) >= CAPACITY:
        _tapes.clear()
    if recorder.failed is None:
        _tapes[key] = recorder.tape(_current_device())
        _stats["recorded"] += 1
    else:
        _tapes[key] = -1
        _stats["untapeable"] += 1
    return result


def clear_tapes() -> None:
    """Forget every tape and count (the next calls of each problem record afresh)."""
    _tapes.clear()
    _stats.update(replayed=0, recorded=0, untapeable=0)


def tape_info() -> dict[str, int]:
    """``{"tapes", "replayed", "recorded", "untapeable"}``: tapes held, and calls each way."""
    return {"tapes": sum(type(t) is Tape for t in _tapes.values()), **_stats}


__all__ = ["Tape", "clear_tapes", "tape_info", "taped"]
