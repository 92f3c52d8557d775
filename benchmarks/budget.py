"""``python -m benchmarks --budget SECONDS``: how fast is it, in a fixed time.

A time-boxed run of the real-layer suites, ordered so that the most informative rows come
first (:func:`plan`):

1. every suite's key layers with every provider — cuDNN (``torch``, ``torch_cl``), ours eager
   and replayed from a CUDA graph (``ours``, ``ours_cl``), and ``torch.compile``;
2. the other layers, one suite after another in turn, without ``torch.compile``;
3. ``torch.compile`` for those layers.

Each task checks ours against torch first (a wrong kernel is never timed) and records each
provider's time, error or skip; one failing provider or case never stops the run. After every
task the result files of its suite are rewritten (JSON, CSV, Markdown), so a run that is cut off
keeps everything measured until then; the plots and the index follow at the end. When the
budget is spent the run stops between timings; a hard stop (``SIGALRM``) ends a single timing
that overruns the budget by more than its grace. Every file records the budget, the time used
and what was left undone.

On a GPU the run first starts a background process that compiles the kernels the plan will
launch, key layers first (:mod:`benchmarks.compile_report` on a stand-in GPU, never touching the
device), so that the timed process finds most of its kernels in Triton's cache.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import suites as suite_registry
from .options import ALL_DIRECTIONS, RunOptions
from .providers import ours_backend
from .results import finalize
from .suites import Suite

#: Directions a budget run times: the forward, and forward + backward.
BUDGET_DIRECTIONS: tuple[str, ...] = ("fwd", "both")


class BudgetExceeded(BaseException):
    """Raised by the hard stop when one timing runs past the budget and its grace. Not an
    ``Exception`` (as ``KeyboardInterrupt`` is not): the handlers that record a failing
    provider, check or case as an error and go on must let it through to the run's end."""


class Budget:
    """Seconds to spend from now; ``expired()`` once less than ``reserve`` is left (the time
    kept for writing the plots and the index)."""

    def __init__(
        self,
        seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        reserve: float | None = None,
    ) -> None:
        self.seconds = float(seconds)
        self.clock = clock
        self.start = clock()
        self.reserve = min(20.0, 0.1 * self.seconds) if reserve is None else reserve

    def elapsed(self) -> float:
        return self.clock() - self.start

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def expired(self) -> bool:
        return self.remaining() <= self.reserve


@contextlib.contextmanager
def hard_stop(budget: Budget, grace: float) -> Iterator[None]:
    """Raise :class:`BudgetExceeded` in this thread ``grace`` seconds after the budget ends.

    Python delivers the signal between bytecodes, so a timing that overruns (a long compile)
    ends there; only the main thread of a Unix process can take it, elsewhere this does nothing.
    """
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def ring(signum: int, frame: Any) -> None:
        raise BudgetExceeded(f"time budget of {budget.seconds:g} s and {grace:g} s grace spent")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, budget.remaining() + grace))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Task:
    """One unit of a budget run: a case of a suite with some of the providers."""

    step: int
    suite: Suite
    case: dict[str, Any]
    providers: list[str]

    @property
    def label(self) -> str:
        return f"{self.suite.name}:{self.case['name']} [{' '.join(self.providers)}]"


def plan(suite_names: Sequence[str], options: RunOptions) -> list[Task]:
    """The run's tasks, most informative first (see the module docstring)."""
    chosen = [suite_registry.get(n) for n in suite_names]
    main = [p for p in options.providers if p != "compile"]
    extra = [p for p in options.providers if p == "compile"]
    tasks = [
        Task(1, suite, suite.case(layer, options), list(options.providers))
        for suite in chosen
        for layer in suite.key_layers()
    ]
    rest = [
        [suite.case(layer, options) for layer in suite.layers if layer not in suite.key_layers()]
        for suite in chosen
    ]
    turns = max((len(r) for r in rest), default=0)
    ordered = [(s, r[i]) for i in range(turns) for s, r in zip(chosen, rest) if i < len(r)]
    tasks += [Task(2, s, case, main) for s, case in ordered]
    if extra:
        tasks += [Task(3, s, case, extra) for s, case in ordered]
    return [t for t in tasks if t.providers]


class Store:
    """The records of every suite so far, merged per (case, direction), in layer order."""

    def __init__(self, peak: dict[str, Any]) -> None:
        self.peak = peak
        self.by_suite: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}

    def add(self, suite: Suite, records: list[dict[str, Any]]) -> None:
        table = self.by_suite.setdefault(suite.name, {})
        for rec in records:
            key = (rec["name"], rec["direction"])
            old = table.get(key)
            if old is None:
                table[key] = rec
            else:  # a later step adds providers to a case checked earlier
                old["providers"].update(rec["providers"])
                if old["status"] == "ok" and rec["status"] != "ok":
                    old.update(status=rec["status"], check=rec["check"], error=rec.get("error"))
            finalize(table[key], self.peak)

    def ok(self, suite: Suite, case: dict[str, Any]) -> bool:
        """Whether an earlier step found the case correct (or has not seen it)."""
        table = self.by_suite.get(suite.name, {})
        recs = [r for (name, _), r in table.items() if name == case["name"]]
        return all(r["status"] == "ok" for r in recs)

    def records(self, suite: Suite) -> list[dict[str, Any]]:
        order = {layer.name: i for i, layer in enumerate(suite.layers)}
        table = self.by_suite.get(suite.name, {})
        return sorted(
            table.values(),
            key=lambda r: (order.get(r["name"], len(order)), ALL_DIRECTIONS.index(r["direction"])),
        )


# --- compiling ahead (GPU) -------------------------------------------------------------------
def start_prewarm(
    tasks: list[Task], dtype: str, out_dir: Path, log: Callable[[str], None]
) -> subprocess.Popen | None:
    """Start compiling the plan's kernels in the background (stand-in GPU, no device access).

    Returns the process, or ``None`` when it cannot start; its log goes to
    ``out_dir/compile-ahead.log``. It exits on its own or is ended with the run.
    """
    layers: list[str] = []  # suite:name, in the order the run times them
    for t in tasks:
        name = f"{t.suite.name}:{t.case['name']}"
        if name not in layers and any(p.startswith("ours") for p in t.providers):
            layers.append(name)
    first = len({f"{t.suite.name}:{t.case['name']}" for t in tasks if t.step == 1})
    suites = sorted({t.suite.name for t in tasks})
    jobs = max(1, (os.cpu_count() or 2) - 4)  # leave cores to the timed process
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.compile_report",
        "--ahead",
        "--suite",
        *suites,
        "--dtype",
        dtype,
        "--jobs",
        str(jobs),
        "--first-wave",
        str(first),
        "--layers",
        *layers,
        "--json",
        str(out_dir / "compile-ahead.json"),
    ]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # never touches the GPU the run times
    env.pop("TRITON_INTERPRET", None)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        logf = open(out_dir / "compile-ahead.log", "w")  # noqa: SIM115 (lives with the process)
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).parents[1]
        )
    except OSError as e:
        log(f"compiling ahead could not start: {e}")
        return None
    log(f"compiling ahead in the background: {jobs} processes, log {out_dir / 'compile-ahead.log'}")
    return proc


def wait_for_first_wave(
    proc: subprocess.Popen | None, out_dir: Path, budget: Budget, share: float
) -> float:
    """Wait (at most ``share`` of the budget) until the key layers' kernels are compiled."""
    if proc is None:
        return 0.0
    t0 = budget.elapsed()
    marker = out_dir / "compile-ahead.log"
    while budget.elapsed() < share * budget.seconds and proc.poll() is None:
        with contextlib.suppress(OSError):
            if "wave 1 compiled" in marker.read_text():
                break
        time.sleep(0.5)
    return budget.elapsed() - t0


def stop_prewarm(proc: subprocess.Popen | None) -> str:
    if proc is None:
        return "not started"
    if proc.poll() is not None:
        return f"finished (exit {proc.returncode})"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    return "still compiling when the run ended: stopped"


# --- the run ---------------------------------------------------------------------------------
def run_budget(
    suite_names: Sequence[str],
    dtype: str,
    options: RunOptions,
    out_root: Path,
    budget: Budget,
    *,
    report: bool = True,
    prewarm: bool | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Path]]:
    """Run the plan until the budget is spent; return the paths written per suite."""
    import torchconv_ext

    from .runner import format_record, make_doc, sanity_banner, start, summary_line, write_doc

    env, peak = start(options, log)
    sanity = sanity_banner(options, env) is not None
    available = []
    for name in suite_names:
        reason = suite_registry.get(name).unavailable()
        if reason:
            log(f"[{name}] not available: {reason}")
        else:
            available.append(name)
    tasks = plan(available, options)
    out_dir = Path(out_root) / env["device"]
    prewarm = options.gpu if prewarm is None else prewarm
    proc = start_prewarm(tasks, dtype, out_dir, log) if prewarm else None
    waited = wait_for_first_wave(proc, out_dir, budget, share=0.25)
    if proc is not None:
        log(f"waited {waited:.0f} s for the key layers' kernels to compile")
    log(
        f"budget {budget.seconds:g} s: {len(tasks)} tasks planned "
        f"({sum(t.step == 1 for t in tasks)} key-layer tasks first)"
    )
    store = Store(peak)
    written: dict[str, dict[str, Path]] = {}
    done = 0
    stopped = ""  # why the run stopped before its plan was done

    def save(suite: Suite, *, state: str, plots: bool = False) -> None:
        """Rewrite ``suite``'s files; ``state``: running (more to come), finished, stopped."""
        info = {
            "seconds": budget.seconds,
            "elapsed_s": round(budget.elapsed(), 1),
            "state": state,
            "tasks_done": done,
            "tasks_planned": len(tasks),
            "tasks_left": len(tasks) - done,
            "stopped_early": state == "stopped",
            "stop_reason": stopped or None,
            "not_run": [t.label for t in tasks[done:]],
            "compile_ahead": prewarm_state,
        }
        doc = make_doc(suite, dtype, options, env, peak, store.records(suite), budget=info)
        written[suite.name] = write_doc(doc, out_root, report=report, plots=plots, log=log)
        if plots:
            log(f"{summary_line(doc)} -> {written[suite.name]['json']}")

    prewarm_state = "running" if proc is not None else "not started"
    backend = torchconv_ext.use_backend(ours_backend(options.device))
    with backend, hard_stop(budget, grace=max(10.0, 0.05 * budget.seconds)):
        try:
            for task in tasks:
                if budget.expired():
                    stopped = f"budget spent after {budget.elapsed():.0f} s"
                    break
                if not store.ok(task.suite, task.case):
                    done += 1  # a case found wrong is not timed again
                    continue
                log(f"[{task.suite.name} {dtype}] step {task.step}: {task.label}")
                sink: list[dict[str, Any]] = []
                try:
                    task.suite.run_case(
                        task.case,
                        dtype,
                        options,
                        providers=task.providers,
                        stop=budget.expired,
                        sink=sink,
                    )
                except BudgetExceeded as e:
                    stopped = str(e)
                except Exception as e:  # a broken case is recorded, the run goes on
                    for rec in sink:
                        rec.update(status="error", error=f"{type(e).__name__}: {e}"[:300])
                if proc is not None and proc.poll() is None:
                    for rec in sink:  # its host times shared the CPU with the compiles
                        rec["background_compile"] = True
                store.add(task.suite, sink)
                for rec in sink:
                    log(format_record(rec, sanity))
                skipped = any(
                    p.get("status") == "skipped" for r in sink for p in r["providers"].values()
                )
                if skipped and not stopped:
                    stopped = f"budget spent during {task.label}"
                done += 0 if stopped else 1
                save(task.suite, state="stopped" if stopped else "running")
                if stopped:
                    break
        except BudgetExceeded as e:  # rang between timings: what is stored stays
            stopped = str(e)
    prewarm_state = stop_prewarm(proc)
    log(
        f"{done} of {len(tasks)} tasks done in {budget.elapsed():.0f} s"
        + (f"; stopped: {stopped}" if stopped else "")
    )
    final = "finished" if done == len(tasks) else "stopped"
    stopped = stopped or ("" if final == "finished" else "budget spent")
    for name in available:
        suite = suite_registry.get(name)
        if suite.name in store.by_suite:
            save(suite, state=final, plots=report)
    if report and written:
        from .report import write_index

        write_index(out_root)
    return list(written.values())
