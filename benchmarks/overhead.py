"""``python -m benchmarks overhead``: the host time of one call of ours, measured without a GPU.

Each call of the public functional API (``conv2d`` forward and forward+backward, plain, with a
fused ReLU and inside ``torch.compile``, ``conv_transpose2d``, ``max_pool2d``, ``avg_pool2d``,
``adaptive_avg_pool2d``, ``interpolate``)
runs on tiny CPU tensors — an input that requires grad, weights as ``nn.Parameter`` objects as a
layer passes them — under a stand-in GPU (:mod:`benchmarks.standin`, ``mode="launch"``):
backend ``"triton"``, a stand-in Triton driver reporting an sm_90 target, no
``TRITON_INTERPRET``. Everything up to the C launch runs — functional, autograd, op dispatch,
our launcher, Triton's autotuner and argument binder — and the final launcher only counts.

The breakdown comes from timing the same call with progressively deeper layers replaced by
no-ops, at Triton's level, through public names, or at the two classes of ``triton_kernels``
that stand between its launchers and Triton (its tuner and its launch plans):

* ``binder``     Triton's ``JITFunction.run`` (argument binding and specialisation, kernel-cache
                 lookup, grid, and the stubbed launcher call) where a launch goes through it,
                 and ``triton_kernels._plan.Plan.run`` where a launch plan replaces it (the
                 current stream, the launch metadata and hooks, and the stubbed launcher call)
                 = total − (both stubbed); about 0 once a problem repeats, since a tape's
                 replay calls Triton's launcher itself (see ``op``);
* ``tuner``      Triton's ``Autotuner.run`` / ``Heuristics.run`` and ``triton_kernels``' own
                 ``Tuner.launch`` (config lookup, grid, and the launch plan's lookup) =
                 (binder stubbed) − (tuners stubbed too); launchers that launch without a
                 tuner look their plan up in ``launcher``;
* ``launcher``   our launchers, ``triton_kernels.<name>`` for the names in its ``__all__`` =
                 (autotuner stubbed) − (launchers stubbed too); about 0 once a problem repeats,
                 since the primitives' tapes replay without calling them (see ``op``);
* ``op``         the registered ops ``torch.ops.torchconv_ext.*`` the call reaches (found with a
                 dispatch mode), each body timed alone with the launchers stubbed, as the eager
                 path runs it (``Primitive.run``, no dispatcher): a repeated problem replays the
                 implementation's tape (``triton_kernels._tape``: its key, the recorded torch
                 calls — output allocation, layout conversions, the weight-cache lookup — and
                 the planned launches, made inline), so our launchers', the tuner's and the
                 binder's time is here too;
* ``autograd``   graph recording — and for forward+backward, the engine and the backward
                 formulas — = (launchers stubbed) − (the forward under ``torch.no_grad``) −
                 (the backward's ops);
* ``functional`` the rest: (the forward under ``torch.no_grad``, launchers stubbed) − (the
                 forward's ops): argument parsing and ``autograd.Function.apply``.

For forward+backward, ``op`` times the backward's primitives one call each, while an eager
backward outside a graph replays them as one tape (``_taping.backward_on_tape``): what that
saves shows as a smaller ``autograd``.

``replays`` is another cut: the tape replays the call makes, each timed alone on the tensors it
got (the generated replay functions: the recorded torch calls — allocation, layout copies, the
weight-cache lookup — and the planned launches up to the stubbed launcher), and how many tapes.
It is the part of the call that is work the call needs, not Python of ours: host µs − replays
is the functional API, ``autograd.Function``, autograd's engine and the tape keys.

``Function`` is a floor: the least any differentiable op written in Python pays for the call —
an ``autograd.Function`` (applied as ours are, without torch's argument binding) taking the same
operands, whose forward only allocates the outputs (as ATen's call returns them) and saves the
operands, and whose backward only allocates the gradients. Ours minus it minus ``replays`` is
about what our own Python costs (both allocate the outputs, so a µs or two less).

A layer the call does not go through (no registered op on the eager path, a launcher bound
before it could be stubbed) reads 0 and is named in the notes. Beside ours, ATen's own
per-call time of the same call on the same tiny tensors, and the ratio.

Statistic: every variant is timed in ``--rounds`` interleaved rounds (so a load spike from the
machine's other users hits all variants alike); a round takes ``--blocks`` blocks of ``n`` calls
(``n`` sized to about ``--block-ms`` per block, garbage collection off) and keeps the median
per-call time of its blocks; the result is the minimum over rounds of those medians. Times are
this thread's CPU time (``time.thread_time``), so time the scheduler hands to the machine's
other users is not counted; what load still adds (caches, memory bandwidth) only ever adds, so
the minimum of medians is the least disturbed estimate.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .standin import plain_tensors, require_compiled_kernels

#: Targets the project works towards, host µs per call.
TARGETS_US: dict[tuple[str, str], float] = {
    ("conv2d", "fwd"): 25.0,
    ("conv2d", "fwd+bwd"): 75.0,
    ("conv2d+relu", "fwd"): 25.0,
    ("conv2d+relu", "fwd+bwd"): 75.0,
    ("conv2d+silu", "fwd"): 25.0,
    ("conv2d+silu", "fwd+bwd"): 75.0,
    ("conv_transpose2d", "fwd"): 25.0,
    ("conv_transpose2d", "fwd+bwd"): 75.0,
    ("max_pool2d", "fwd"): 15.0,
    ("avg_pool2d", "fwd"): 15.0,
    ("adaptive_avg_pool2d", "fwd"): 15.0,
    ("interpolate", "fwd"): 15.0,
}
DIRECTIONS = ("fwd", "fwd+bwd")
LAYERS = ("functional", "autograd", "op", "launcher", "tuner", "binder")


@dataclass(frozen=True)
class Call:
    """One public call on tiny tensors: operand shapes and keyword arguments, and an
    activation ours fuses (``activation=``, what ``convert_model(fuse=True)`` calls) where
    ATen applies ``torch.nn.functional.<activation>`` to its result."""

    op: str
    shapes: tuple[tuple[int, ...], ...]
    kwargs: dict[str, Any]
    activation: str | None = None
    #: Inside ``torch.compile`` (ours and ATen's alike): the compiled graph calls our registered
    #: op where eager calls go to the primitive (``torchconv_ext._ops._primitive``).
    compiled: bool = False

    @property
    def name(self) -> str:
        """The call's label in reports, targets and ``--only``: ``conv2d``, ``conv2d+relu``,
        ``compiled-conv2d``."""
        name = self.op if self.activation is None else f"{self.op}+{self.activation}"
        return f"compiled-{name}" if self.compiled else name

    def operands(self) -> list[Any]:
        """The input (a tensor that requires grad) and, after it, the weights as a layer holds
        them: ``nn.Parameter`` objects (what ``nn.Conv2d`` passes to ``conv2d``)."""
        import torch

        g = torch.Generator().manual_seed(0)
        input, *weights = (torch.randn(s, generator=g) for s in self.shapes)
        return [input.requires_grad_(), *map(torch.nn.Parameter, weights)]


CALLS: tuple[Call, ...] = (
    # 16 channels: the implicit GEMM's tap loop, most layers' path (narrower convolutions first
    # copy their input into windows, ``triton_kernels.conv_window``: one launch more).
    Call("conv2d", ((1, 16, 6, 6), (16, 16, 3, 3), (16,)), {"padding": 1}),
    Call("conv2d", ((1, 16, 6, 6), (16, 16, 3, 3), (16,)), {"padding": 1}, activation="relu"),
    # SiLU: fused in inference; while gradients are recorded, our convolution, then torch's SiLU.
    Call("conv2d", ((1, 16, 6, 6), (16, 16, 3, 3), (16,)), {"padding": 1}, activation="silu"),
    Call("conv_transpose2d", ((1, 16, 6, 6), (16, 16, 2, 2), (16,)), {"stride": 2}),
    Call("max_pool2d", ((1, 4, 6, 6),), {"kernel_size": 3, "stride": 2, "padding": 1}),
    Call("avg_pool2d", ((1, 4, 6, 6),), {"kernel_size": 3, "stride": 2, "padding": 1}),
    Call("adaptive_avg_pool2d", ((1, 4, 6, 6),), {"output_size": 1}),
    Call("interpolate", ((1, 4, 6, 6),), {"scale_factor": 2, "mode": "nearest"}),
    # Last: once torch.compile has run, the process's later eager backwards cost a little more.
    Call("conv2d", ((1, 16, 6, 6), (16, 16, 3, 3), (16,)), {"padding": 1}, compiled=True),
)


# --- timing ----------------------------------------------------------------------------------
#: The clock: this thread's CPU time, so that time the scheduler gives the machine's other
#: processes is not counted (the measured path is single-threaded Python and C++; on an idle
#: machine it equals wall time).
CLOCK: Callable[[], float] = time.thread_time


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    """Mean time of one call over a block of ``n`` calls, garbage collection off."""
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t0 = CLOCK()
        for _ in range(n):
            fn()
        return (CLOCK() - t0) / n * 1e6
    finally:
        if gc_was:
            gc.enable()


def calls_per_block(fn: Callable[[], Any], block_ms: float) -> int:
    """How many calls fill about ``block_ms`` milliseconds."""
    us = min(per_call_us(fn, 3) for _ in range(3))
    return max(5, int(block_ms * 1e3 / max(us, 0.1)))


def min_of_medians(
    variants: dict[str, tuple[Callable[[], Any], Callable[[], Any]]],
    *,
    rounds: int,
    blocks: int,
    block_ms: float,
) -> dict[str, dict[str, Any]]:
    """Time each variant ``(setup context factory, call)`` in interleaved rounds.

    Returns, per variant, ``us`` (the minimum over rounds of each round's median block) and the
    round medians themselves.
    """
    sizes: dict[str, int] = {}
    medians: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (context, fn) in variants.items():
            with context():
                if name not in sizes:
                    fn()
                    sizes[name] = calls_per_block(fn, block_ms)
                medians[name].append(
                    statistics.median(per_call_us(fn, sizes[name]) for _ in range(blocks))
                )
    return {
        name: {"us": min(ms), "round_medians_us": ms, "calls_per_block": sizes[name]}
        for name, ms in medians.items()
    }


# --- the layers, stubbed ---------------------------------------------------------------------
@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextlib.contextmanager
def _stubbed(owner: Any, names: Sequence[str], counter: dict[str, int] | None = None) -> Iterator:
    """Replace ``owner.<name>`` by a no-op (counting its calls) for the duration."""
    saved = {n: vars(owner)[n] for n in names if n in vars(owner)}

    def make(name: str) -> Callable[..., None]:
        def stub(*args: Any, **kwargs: Any) -> None:
            if counter is not None:
                counter[name] = counter.get(name, 0) + 1

        return stub

    for n in saved:
        setattr(owner, n, make(n))
    try:
        yield
    finally:
        for n, v in saved.items():
            setattr(owner, n, v)


def launcher_names() -> list[str]:
    """The public launchers of ``triton_kernels``: the functions of its ``__all__`` that launch
    (``*_forward`` / ``*_backward*``), not plain values or the predicates the ops consult
    (``prefers_channels_last``: stubbing it would skip the op's layout conversions)."""
    import triton_kernels

    return [
        n
        for n in triton_kernels.__all__
        if callable(getattr(triton_kernels, n, None)) and ("forward" in n or "backward" in n)
    ]


@contextlib.contextmanager
def stubbed_below(layer: str, counter: dict[str, int] | None = None) -> Iterator[None]:
    """Stub every layer from the binder up to ``layer`` (``binder``, ``tuner``, ``launcher``)."""
    from triton.runtime.autotuner import Autotuner, Heuristics
    from triton.runtime.jit import JITFunction

    import triton_kernels
    from triton_kernels._plan import Plan
    from triton_kernels._tuning import Tuner

    with contextlib.ExitStack() as stack:
        stack.enter_context(_stubbed(JITFunction, ["run"]))
        stack.enter_context(_stubbed(Plan, ["run"]))
        if layer in ("tuner", "launcher"):
            stack.enter_context(_stubbed(Autotuner, ["run"]))
            stack.enter_context(_stubbed(Heuristics, ["run"]))
            stack.enter_context(_stubbed(Tuner, ["launch"]))
        if layer == "launcher":
            stack.enter_context(_stubbed(triton_kernels, launcher_names(), counter))
        yield


def registered_ops(fn: Callable[[], Any]) -> list[tuple[Any, tuple, dict]]:
    """The ``torch.ops.torchconv_ext`` calls ``fn()`` makes: ``(op, args, kwargs)``, args
    detached (each is later timed alone, outside autograd)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: list[tuple[Any, tuple, dict]] = []

    def detach(v: Any) -> Any:
        return v.detach() if isinstance(v, torch.Tensor) else v

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if getattr(func, "namespace", "") == "torchconv_ext":
                seen.append(
                    (func, tuple(map(detach, args)), {k: detach(v) for k, v in kwargs.items()})
                )
            return func(*args, **kwargs)

    with Recorder():
        fn()
    return seen


def captured_replays(fn: Callable[[], Any]) -> list[tuple[Callable, list]]:
    """Run ``fn`` once and return the tape replays it made: each tape's replay function
    (the recorded torch calls and planned launches, nothing else) with the tensors it got."""
    from triton_kernels import _tape

    seen: list[tuple[Callable, list]] = []
    replay = _tape.Tape.replay

    def watched(tape: Any, tensors: list) -> Any:
        seen.append((tape.replay_steps, list(tensors)))
        return replay(tape, tensors)

    def watching(steps: Callable) -> Callable:
        def watched_steps(*tensors: Any) -> Any:
            seen.append((steps, list(tensors)))
            return steps(*tensors)

        return watched_steps

    # A full key's tape replays through ``Tape.replay``; a shortcut calls the replay itself.
    shortcuts = dict(_tape._shortcuts)
    _tape._shortcuts.update({short: watching(steps) for short, steps in shortcuts.items()})
    _tape.Tape.replay = watched
    try:
        fn()
    finally:
        _tape.Tape.replay = replay
        for short, steps in shortcuts.items():
            if short in _tape._shortcuts:
                _tape._shortcuts[short] = steps
    return seen


def op_body(op: Any) -> Callable[..., Any]:
    """What the eager path runs of a registered op: its primitive's implementation, through its
    tape (the op itself, dispatcher included, where no primitive is known by its name)."""
    from torchconv_ext._ops._primitive import PRIMITIVES

    prim = PRIMITIVES.get(op.name().split("::")[-1].split(".")[0])
    return prim.run if prim is not None else op


def function_floor(call: Call, direction: str) -> Callable[[], Any]:
    """The call's floor (module doc): an ``autograd.Function`` that only allocates, on the
    call's operands, run in ``direction`` as the call is."""
    import torch

    operands = call.operands()
    forward, _ = _call_fns(call, "fwd", ours=False)
    with torch.no_grad():
        results = forward()
    single = isinstance(results, torch.Tensor)
    outputs = [(r.shape, r.stride(), r.dtype) for r in ([results] if single else results)]

    class Floor(torch.autograd.Function):
        @staticmethod
        def forward(*operands: torch.Tensor) -> Any:
            made = [torch.empty_strided(s, st, dtype=d) for s, st, d in outputs]
            return made[0] if single else tuple(made)

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx: Any, *grads: torch.Tensor) -> tuple:
            needs = ctx.needs_input_grad
            return tuple(
                torch.empty_like(t) if n else None for t, n in zip(ctx.saved_tensors, needs)
            )

    apply = super(torch.autograd.Function, Floor).apply
    if direction == "fwd":
        return lambda: apply(*operands)
    if single:
        gy = torch.randn_like(results)
        return lambda: torch.autograd.grad(apply(*operands), operands, gy)
    gy = torch.randn_like(results[0])
    return lambda: torch.autograd.grad(apply(*operands)[0], operands, gy)


# --- one call --------------------------------------------------------------------------------
def _call_fns(call: Call, direction: str, ours: bool) -> tuple[Callable, Callable]:
    """``(forward, run)``: the forward alone and the timed call of ``direction``."""
    import torch
    import torch.nn.functional as F

    import torchconv_ext.functional as TF

    op = getattr(TF if ours else F, call.op)
    operands = call.operands()
    if call.activation is None:
        forward = lambda: op(*operands, **call.kwargs)
    elif ours:
        forward = lambda: op(*operands, **call.kwargs, activation=call.activation)
    else:
        activation = getattr(F, call.activation)
        forward = lambda: activation(op(*operands, **call.kwargs))
    if call.compiled:
        forward = torch.compile(forward, fullgraph=True)
    if direction == "fwd":
        return forward, forward
    gy = torch.randn_like(forward().detach())
    return forward, lambda: torch.autograd.grad(forward(), operands, gy)


def measure_call(call: Call, direction: str, args: argparse.Namespace, state: Any) -> dict:
    """Total, breakdown and ATen time of one call in one direction (see the module docstring)."""
    import torch

    from triton_kernels import _tape

    # Another row's timed op bodies record tapes with the launchers stubbed: a compiled
    # graph's op call would replay them. Each row records its own.
    _tape.clear_tapes()
    forward, run = _call_fns(call, direction, ours=True)
    if call.compiled:
        return measure_compiled_call(call, direction, args, state, run)
    launches, replays, replayed_launches = _warm_up(run, state)
    counter: dict[str, int] = {}
    _tape.ENABLED = False  # replays call no launcher: which ones the call reaches, plainly
    try:
        with stubbed_below("launcher", counter):
            run()
    finally:
        _tape.ENABLED = True
    with stubbed_below("launcher"):
        ops = registered_ops(run)  # the forward's ops come first (tapes off: a mode is active)
        n_fwd_ops = len(registered_ops(forward))

    def no_grad_forward() -> Any:
        with torch.no_grad():
            return forward()

    variants: dict[str, tuple[Callable, Callable]] = {
        "total": (_nothing, run),
        "no_binder": (lambda: stubbed_below("binder"), run),
        "no_tuner": (lambda: stubbed_below("tuner"), run),
        "no_launcher": (lambda: stubbed_below("launcher"), run),
        "no_grad_forward": (lambda: stubbed_below("launcher"), no_grad_forward),
    }
    for i, (op, op_args, op_kwargs) in enumerate(ops):
        body = op_body(op)
        variants[f"op{i}"] = (
            lambda: stubbed_below("launcher"),
            lambda body=body, a=op_args, k=op_kwargs: body(*a, **k),
        )
    variants["replays"] = (_nothing, lambda: [replay(*tensors) for replay, tensors in replays])
    _, aten_run = _call_fns(call, direction, ours=False)
    variants["aten"] = (plain_tensors, aten_run)
    variants["function"] = (plain_tensors, function_floor(call, direction))
    t = min_of_medians(variants, rounds=args.rounds, blocks=args.blocks, block_ms=args.block_ms)
    us = {k: v["us"] for k, v in t.items()}
    op_fwd = sum(us[f"op{i}"] for i in range(n_fwd_ops))
    op_all = sum(us[f"op{i}"] for i in range(len(ops)))
    breakdown = {
        "functional": us["no_grad_forward"] - op_fwd,
        "autograd": us["no_launcher"] - us["no_grad_forward"] - (op_all - op_fwd),
        "op": op_all,
        "launcher": us["no_tuner"] - us["no_launcher"],
        "tuner": us["no_binder"] - us["no_tuner"],
        "binder": us["total"] - us["no_binder"],
    }
    notes = []
    if not ops:
        notes.append("no registered op on the eager path: its time is in 'functional'")
    if not counter:
        notes.append("no launcher could be stubbed (bound before the call): in 'op'")
    return _row(call, direction, t, breakdown, launches, replays, replayed_launches, notes,
                ops=[str(op) for op, _, _ in ops], launchers=sorted(counter))  # fmt: skip


def _warm_up(run: Callable[[], Any], state: Any) -> tuple[int, list, int]:
    """``(launches, replays, replayed launches)``: the first call compiles (a compiled call
    traces its graph too) and tunes on the stand-in; tapes are recorded on real calls (one
    recorded with a layer stubbed would replay the stub): the next calls record them, and the
    last one replays them."""
    from triton_kernels import _tape

    before = state.launched
    run()
    launches = state.launched - before
    for _ in range(_tape.RECORD_AT):
        run()
    before = state.launched
    replays = captured_replays(run)
    return launches, replays, state.launched - before


def measure_compiled_call(
    call: Call, direction: str, args: argparse.Namespace, state: Any, run: Callable[[], Any]
) -> dict:
    """Total, replays and ATen time of a compiled call. No breakdown: stubbing a layer or
    recording the ops with a dispatch mode would make ``torch.compile`` trace again."""
    launches, replays, replayed_launches = _warm_up(run, state)
    _, aten_run = _call_fns(call, direction, ours=False)
    variants: dict[str, tuple[Callable, Callable]] = {
        "total": (_nothing, run),
        "replays": (_nothing, lambda: [replay(*tensors) for replay, tensors in replays]),
        "aten": (plain_tensors, aten_run),
    }
    t = min_of_medians(variants, rounds=args.rounds, blocks=args.blocks, block_ms=args.block_ms)
    notes = ["compiled: no breakdown (stubs and dispatch modes would retrace the graph)"]
    return _row(call, direction, t, dict.fromkeys(LAYERS), launches, replays, replayed_launches,
                notes, ops=[], launchers=[])  # fmt: skip


def _row(
    call: Call,
    direction: str,
    t: dict[str, dict[str, Any]],
    breakdown: dict[str, float | None],
    launches: int,
    replays: list,
    replayed_launches: int,
    notes: list[str],
    *,
    ops: list[str],
    launchers: list[str],
) -> dict:
    """One row of the report: the timings ``t`` of a call in one direction, against its target
    and ATen's, with what the call went through (a failure of the Triton path in the notes)."""
    us = {k: v["us"] for k, v in t.items()}
    if launches == 0:
        notes.append("NO KERNEL LAUNCH REACHED: the call did not take the Triton path")
    if not replays:
        notes.append("NO TAPE REPLAYED: the call ran its Python in full")
    if replayed_launches != launches:
        notes.append(f"A REPLAYED CALL LAUNCHED {replayed_launches} KERNELS, THE FIRST {launches}")
    target = TARGETS_US.get((call.name, direction))
    return {
        "call": call.name,
        "direction": direction,
        "shapes": [list(s) for s in call.shapes],
        "kwargs": call.kwargs,
        "host_us": us["total"],
        "target_us": target,
        "meets_target": None if target is None else us["total"] <= target,
        "aten_us": us["aten"],
        "ratio_to_aten": us["total"] / us["aten"] if us["aten"] > 0 else None,
        "function_us": us.get("function"),
        "breakdown_us": breakdown,
        "replays_us": us["replays"],
        "tapes_per_call": len(replays),
        "launches_per_call": launches,
        "registered_ops": ops,
        "launchers_called": launchers,
        "timings": t,
        "notes": notes,
    }


# --- report ----------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """CPU model, cores, versions, commit and load: where and with what the numbers came."""
    import torch
    import triton

    from .results import _cpu_name, git_dirty, git_sha

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "git_sha": git_sha(),
        "git_dirty": git_dirty(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _f(v: float | None, fmt: str = ".1f") -> str:
    return "–" if v is None else format(v, fmt)


def row_text(r: dict[str, Any]) -> str:
    """One console/Markdown row: call, host µs against its target, ATen, ratio, breakdown."""
    target = r["target_us"]
    verdict = "–" if target is None else ("ok" if r["meets_target"] else "OVER")
    parts = [
        f"{r['call']} {r['direction']}",
        _f(r["host_us"]),
        f"≤ {target:g} {verdict}" if target else "–",
        _f(r["aten_us"]),
        _f(r["ratio_to_aten"], ".1f") + "×" if r["ratio_to_aten"] else "–",
        _f(r.get("function_us")),
        f"{_f(r['replays_us'])} ({r['tapes_per_call']})",
        *(_f(r["breakdown_us"][k]) for k in LAYERS),
        str(r["launches_per_call"]),
    ]
    return "| " + " | ".join(parts) + " |"


HEADER = (
    "| call | host µs | target | ATen µs | ours/ATen | Function µs | replays (tapes) | "
    + " | ".join(LAYERS)
    + " | launches |\n|"
    + "---|" * (8 + len(LAYERS))
)


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"# Host overhead per call — {doc['tag'] or 'current'} · {m['cpu']}",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), load average "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg'] or [])} at the start",
        f"- torch {m['torch']}, triton {m['triton']}, python {m['python']}; commit "
        f"`{m['git_sha']}`" + (" + local changes" if m["git_dirty"] else "") + f", {m['date']}",
        f"- stand-in GPU target {doc['target']}: {doc['method']['stand_in']}",
        f"- statistic: {doc['method']['statistic']}",
        f"- autotuner: {doc['method']['tuner']}",
        "- breakdown (µs, per call): functional, autograd, op = registered ops' bodies as eager "
        "calls run them (no dispatcher), launcher = our "
        "launchers, tuner = Triton's autotuner and ours (config and launch-plan lookup), "
        "binder = Triton's JIT run or the launch plan's direct call (about 0 where a tape "
        "replays: it calls Triton's launcher itself; see `benchmarks/overhead.py`); noise can "
        "make a small part negative",
        "- Function: the floor of a differentiable op written in Python — an "
        "autograd.Function on the same operands that only allocates the outputs and the "
        "gradients (`benchmarks/overhead.py`); – for a compiled call",
        "- replays: the call's tape replays timed alone — the torch calls (allocation, layout "
        "copies, weight-cache lookups) and planned launches the call cannot do without — and "
        "how many tapes; host µs − replays is Python around them (the functional API, "
        "autograd's Function and engine, tape keys)",
        "",
        HEADER,
        *(row_text(r) for r in doc["rows"]),
        "",
    ]
    notes = [f"- {r['call']} {r['direction']}: {n}" for r in doc["rows"] for n in r["notes"]]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    from .results import RESULTS_DIR

    p = argparse.ArgumentParser(
        prog="python -m benchmarks overhead",
        description="Host time of one call of ours up to the kernel launch, on a stand-in GPU.",
    )
    p.add_argument("--only", nargs="+", default=None, help="calls to measure (default: all)")
    p.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    p.add_argument("--blocks", type=int, default=7, help="blocks per round (default 7)")
    p.add_argument("--block-ms", type=float, default=5.0, help="length of a block (default 5 ms)")
    p.add_argument("--target", default="sm_90", help="stand-in GPU target (default sm_90)")
    p.add_argument("--tag", default=None, help="file name tag: overhead-<tag>.{json,md}")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results root")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    require_compiled_kernels()
    import torch

    import torchconv_ext

    from .results import write_tool
    from .standin import stand_in_gpu

    calls = [c for c in CALLS if not args.only or c.name in args.only]
    torch.set_num_threads(1)
    doc: dict[str, Any] = {
        "tag": args.tag,
        "target": args.target,
        "machine": machine(),
        "method": {
            "stand_in": "CPU tensors (an input that requires grad, weights as nn.Parameter), "
            "backend 'triton', no TRITON_INTERPRET; Triton compiles "
            "real code for the target and only its final launcher (C argument packing and "
            "cuLaunchKernel) is a counting stub, so that part of a GPU launch is not included",
            "statistic": f"minimum over {args.rounds} interleaved rounds of the median of "
            f"{args.blocks} blocks of about {args.block_ms:g} ms each, in this thread's CPU time "
            "(time.thread_time: time given to other processes is not counted), garbage "
            "collection off, one torch thread",
            "tuner": "Triton's autotuner's benchmark step returns a config's position as its "
            "time, so the first config after the kernel's pruning wins, and torchconv_ext's "
            "tuner takes the config it launches untuned; the winner is cached per key and "
            "the timed calls take the cached path (the launch plan made on the first call, the "
            "tapes recorded on the second), as on a GPU",
        },
        "rows": [],
    }
    print(
        f"host overhead per call on {doc['machine']['cpu']} ({doc['machine']['cores']} cores), "
        f"stand-in {args.target}, torch {doc['machine']['torch']}, triton "
        f"{doc['machine']['triton']}"
    )
    print(HEADER)
    with stand_in_gpu(args.target, mode="launch") as state, torchconv_ext.use_backend("triton"):
        for call in calls:
            for direction in DIRECTIONS:
                try:
                    row = measure_call(call, direction, args, state)
                except Exception as e:  # one call that fails is reported, the others go on
                    print(f"| {call.name} {direction} | error: {type(e).__name__}: {e} |")
                    continue
                doc["rows"].append(row)
                print(row_text(row), flush=True)
    print(f"statistic: {doc['method']['statistic']}")
    for r in doc["rows"]:
        for n in r["notes"]:
            print(f"note: {r['call']} {r['direction']}: {n}")
    if not args.no_write:
        stem = write_tool(args.out, "overhead", args.tag, doc, markdown(doc))
        print(f"wrote {stem}.{{json,md}}")
    return 0 if doc["rows"] else 1
