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

A kernel that faults on the GPU (an illegal memory access) leaves the process's CUDA context
unusable: every later task would fail. So after each task the run asks whether the device still
works (:func:`device_works`). When it does not, that task's records say that the device faulted
in it, its suite's files are written, and the run goes on in a fresh process: the same command
re-executed in place (the same pid, so a ``timeout`` around the run still covers it) with an
internal option, ``--continue-budget`` (:class:`Continuation`), that says where the plan goes on.
The fresh process checks that its plan has the same task there, reloads the records, the
environment and the peaks from the result files, and counts the budget from the run's start.
At most :data:`MAX_RESTARTS` times: a device that faults at every task ends the run, and the
files list the faults, the restarts and the tasks not run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import suites as suite_registry
from .options import ALL_DIRECTIONS, RunOptions
from .providers import ours_backend
from .results import finalize, load
from .results import paths as result_paths
from .suites import Suite

#: Directions a budget run times: the forward, and forward + backward.
BUDGET_DIRECTIONS: tuple[str, ...] = ("fwd", "both")

#: Fresh processes a run may go on in after device faults: a device that faults at every task
#: must not cost one restart per task.
MAX_RESTARTS = 3

#: The internal option of ``python -m benchmarks`` that makes a restarted run go on.
CONTINUE_OPTION = "--continue-budget"


class BudgetExceeded(BaseException):
    """Raised by the hard stop when one timing runs past the budget and its grace. Not an
    ``Exception`` (as ``KeyboardInterrupt`` is not): the handlers that record a failing
    provider, check or case as an error and go on must let it through to the run's end."""


class Budget:
    """Seconds to spend from now, less ``spent`` (used by the process a run restarted from);
    ``expired()`` once less than ``reserve`` is left (the time kept for writing the plots and
    the index)."""

    def __init__(
        self,
        seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        reserve: float | None = None,
        spent: float = 0.0,
    ) -> None:
        self.seconds = float(seconds)
        self.clock = clock
        self.start = clock() - spent
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


@dataclass
class Continuation:
    """Where a run goes on after a device fault; the fresh process gets it as JSON, the value
    of :data:`CONTINUE_OPTION`."""

    #: the index in the plan of the first task left, and that task's label (checked)
    next: int
    label: str
    #: ``time.time()`` when the run began: the budget counts from there
    started: float
    #: the results' device folder, and the suites whose files hold the run's records
    device: str
    suites: list[str]
    #: the device faults so far, one per restart
    faults: list[dict[str, Any]]

    def to_arg(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_arg(cls, text: str) -> Continuation:
        return cls(**json.loads(text))

    def elapsed(self) -> float:
        """Seconds since the run began."""
        return time.time() - self.started

    def position(self, tasks: Sequence[Task]) -> int:
        """``next``, once ``tasks`` is checked to be the plan this continues."""
        found = tasks[self.next].label if 0 <= self.next < len(tasks) else None
        if found != self.label:
            raise ValueError(
                f"cannot continue the budget run: task {self.next} of this plan is {found!r}, "
                f"not {self.label!r} (other suites or options?)"
            )
        return self.next


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
    tasks: list[Task],
    dtype: str,
    out_dir: Path,
    log: Callable[[str], None],
    name: str = "compile-ahead",
) -> subprocess.Popen | None:
    """Start compiling the plan's kernels in the background (stand-in GPU, no device access).

    Returns the process, or ``None`` when it cannot start; its log goes to
    ``out_dir/<name>.log``, its list to ``out_dir/<name>.json``. It exits on its own or is
    ended with the run.
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
        str(out_dir / f"{name}.json"),
    ]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # never touches the GPU the run times
    env.pop("TRITON_INTERPRET", None)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        logf = open(out_dir / f"{name}.log", "w")  # noqa: SIM115 (lives with the process)
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).parents[1]
        )
    except OSError as e:
        log(f"compiling ahead could not start: {e}")
        return None
    log(f"compiling ahead in the background: {jobs} processes, log {out_dir / f'{name}.log'}")
    return proc


def wait_for_first_wave(
    proc: subprocess.Popen | None, marker: Path, budget: Budget, share: float
) -> float:
    """Wait until the key layers' kernels are compiled, as the process's log ``marker`` says,
    or until ``share`` of the budget is spent."""
    if proc is None:
        return 0.0
    t0 = budget.elapsed()
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


# --- device faults (GPU) --------------------------------------------------------------------
def device_works(device: str) -> bool:
    """Whether ``device`` still runs work. A kernel that faulted leaves the process's CUDA
    context unusable, and the error is sticky: it shows at the next synchronisation. CPUs:
    always."""
    if not device.startswith("cuda"):
        return True
    import torch

    try:
        torch.cuda.synchronize(device)
    except Exception:  # (torch raises RuntimeError or a subclass)
        return False
    return True


def first_error(records: list[dict[str, Any]]) -> str | None:
    """A task's first error, with its provider: where a device fault showed first."""
    for rec in records:
        if rec.get("error"):
            return rec["error"]
        for name, result in rec["providers"].items():
            if result.get("status") == "error":
                return f"{name}: {result.get('error')}"
    return None


def mark_fault(task: Task, index: int, records: list[dict[str, Any]], budget: Budget) -> dict:
    """Pin a device fault on the task it happened in: its records fail with it, keeping the
    timings they hold. Returns the fault for the run's files."""
    first = first_error(records)
    note = f"device fault in this task ({task.label}): the device stopped working"
    if first:
        note += f"; first error: {first}"
    for rec in records:
        rec.update(status="error", error=note[:300])
    return {
        "task": task.label,
        "index": index,
        "elapsed_s": round(budget.elapsed(), 1),
        "first_error": first,
    }


def restart_refused(command: Sequence[str] | None, restarts: int, budget: Budget) -> str | None:
    """Why a run whose device faulted cannot go on in a fresh process, or ``None``."""
    if command is None:
        return "this run cannot restart itself"
    if restarts >= MAX_RESTARTS:
        return f"no restart left ({MAX_RESTARTS} used)"
    if budget.expired():
        return "budget spent"
    return None


def restart_command(command: Sequence[str], resume: Continuation) -> list[str]:
    """``python -m benchmarks`` with the run's arguments going on at ``resume`` (in place of
    where an earlier restart went on)."""
    args = list(command)
    if CONTINUE_OPTION in args:
        at = args.index(CONTINUE_OPTION)
        del args[at : at + 2]
    return [sys.executable, "-m", "benchmarks", *args, CONTINUE_OPTION, resume.to_arg()]


def restart(command: Sequence[str], resume: Continuation, log: Callable[[str], None]) -> None:
    """Go on in a fresh process: this one re-executed, so that it keeps its pid and a
    ``timeout`` around the run still covers it. Returns only by raising ``OSError``."""
    argv = restart_command(command, resume)
    log(f"restart {len(resume.faults)} of at most {MAX_RESTARTS}: {shlex.join(argv)}")
    sys.stdout.flush()  # (exec drops what Python has not written yet)
    sys.stderr.flush()
    os.execv(argv[0], argv)


def reload(
    resume: Continuation,
    dtype: str,
    options: RunOptions,
    out_root: Path,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any], Store]:
    """The environment, peaks and records of the run a fresh process goes on with: from the
    files it wrote (measured again only when none can be read)."""
    from .runner import make_doc, start

    docs = []
    for name in resume.suites:
        path = result_paths(out_root, resume.device, name, dtype, options.quick)["json"]
        try:
            docs.append(load(path))
        except (OSError, ValueError) as error:
            log(f"[{name}] the records written before the restart cannot be read: {error}")
    if docs:
        # The document's own keys left out, what remains is the run's environment.
        suite = suite_registry.get(docs[0]["suite"])
        own = make_doc(suite, dtype, options, {}, {}, [], budget=None)
        env = {k: v for k, v in docs[0].items() if k not in own}
        peak = docs[0]["peak"]
        if options.gpu:  # (as start() sets it)
            import torch

            torch.backends.cudnn.benchmark = True
        log(f"device {env['device_name']} ({env['device']}): environment and peaks reloaded")
    else:
        env, peak = start(options, log)
    store = Store(peak)
    for doc in docs:
        store.add(suite_registry.get(doc["suite"]), doc["records"])
    return env, peak, store


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
    command: Sequence[str] | None = None,
    resume: Continuation | None = None,
) -> list[dict[str, Path]]:
    """Run the plan until the budget is spent; return the paths written per suite.

    ``command``: the ``python -m benchmarks`` arguments of the run, to go on with in a fresh
    process after a device fault (without them a fault ends the run); ``resume``: where a run
    so restarted goes on.
    """
    import torchconv_ext

    from .runner import format_record, make_doc, sanity_banner, start, summary_line, write_doc

    available = []
    for name in suite_names:
        reason = suite_registry.get(name).unavailable()
        if reason:
            log(f"[{name}] not available: {reason}")
        else:
            available.append(name)
    tasks = plan(available, options)
    if resume is None:
        first, faults, started = 0, [], time.time() - budget.elapsed()
        env, peak = start(options, log)
        store = Store(peak)
    else:
        first, faults, started = resume.position(tasks), list(resume.faults), resume.started
        env, peak, store = reload(resume, dtype, options, out_root, log)
        log(f"going on after a device fault, at task {first + 1}: {resume.label}")
    restarts = len(faults)  # (each fault so far started a fresh process)
    sanity = sanity_banner(options, env) is not None
    out_dir = Path(out_root) / env["device"]
    prewarm = options.gpu if prewarm is None else prewarm
    ahead = "compile-ahead" + (f"-{restarts + 1}" if restarts else "")
    proc = start_prewarm(tasks[first:], dtype, out_dir, log, ahead) if prewarm else None
    if proc is not None and any(t.step == 1 for t in tasks[first:]):
        waited = wait_for_first_wave(proc, out_dir / f"{ahead}.log", budget, share=0.25)
        log(f"waited {waited:.0f} s for the key layers' kernels to compile")
    log(
        f"budget {budget.seconds:g} s: {len(tasks)} tasks planned "
        f"({sum(t.step == 1 for t in tasks)} key-layer tasks first)"
    )
    written: dict[str, dict[str, Path]] = {}
    done = first
    stopped = ""  # why the run stopped before its plan was done
    restarting = False  # the device faulted: the run goes on in a fresh process

    def save(suite: Suite, *, state: str, plots: bool = False) -> None:
        """Rewrite ``suite``'s files; ``state``: running (more to come), restarting (after a
        device fault), finished, stopped."""
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
            "restarts": restarts,
            "faults": faults,
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
            for index, task in enumerate(tasks[first:], start=first):
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
                fault = not stopped and not device_works(options.device)
                if fault:
                    faults.append(mark_fault(task, index, sink, budget))
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
                if fault and not stopped and done < len(tasks):
                    refused = restart_refused(command, restarts, budget)
                    if refused:
                        stopped = f"device fault in {task.label}; {refused}"
                    restarting = not refused
                state = "stopped" if stopped else "restarting" if restarting else "running"
                save(task.suite, state=state)
                if stopped or fault:
                    break
        except BudgetExceeded as e:  # rang between timings: what is stored stays
            stopped = str(e)
    # From here on the hard stop's timer is off (an armed one would outlive an exec).
    prewarm_state = stop_prewarm(proc)
    if restarting and not stopped:
        resume = Continuation(
            next=done,
            label=tasks[done].label,
            started=started,
            device=env["device"],
            suites=list(store.by_suite),
            faults=faults,
        )
        try:
            restart(command or [], resume, log)  # (a restart implies a command)
        except OSError as error:  # this process ends the run
            stopped = f"device fault in {faults[-1]['task']}; could not restart: {error}"
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
