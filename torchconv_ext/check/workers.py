"""Running cases in parallel worker processes, each case isolated and time-limited.

Triton compiles every kernel variant on first use, on the CPU; run one at a time, compiling
dominates the check. Workers (``spawn``ed processes, each with its own CUDA context; Triton's
on-disk cache is shared) take cases one at a time from the parent, by tier (``Case.tier``:
every op before the config sweeps), longest first within it, and stay on cases that launch
the same kernels. The parent owns all bookkeeping, so nothing a worker does
can hang the check:

* a worker that dies (a crash, a segfault, a faulting kernel) costs the case it was running:
  that case fails with the exit code and the end of the worker's log, a sweep resumes after
  the config it died on, and a fresh worker takes over the rest;
* a case running past ``case_timeout`` seconds fails and its worker is killed;
* at the ``deadline`` every case still waiting or running is reported "not run".

``workers=0`` runs the cases in this process instead (no isolation; for tests and debugging).
The code that runs a case is a module (``runner``) with ``prepare()``, ``run_case(case, sink)``
and optionally ``healthy()`` and ``finish()``; see ``runner.py``.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from .cases import Case, resumed
from .results import FAIL, NOT_RUN, row

HEAVY = 10.0  # cases at least this costly start first, before any grouping by kernels
START_TIMEOUT = 180.0  # seconds for a worker to import everything and report ready


@dataclass(eq=False)  # workers are told apart by identity
class _Worker:
    index: int
    process: Any
    conn: Any
    log: str
    spawned: float
    ready: bool = False
    case: Case | None = None
    started: float = 0.0
    rows: int = 0  # rows received for the case
    step: int | None = None  # the sweep config in progress
    step_label: str = ""
    step_reported: bool = False  # whether that config's row arrived
    group: str = ""
    retiring: bool = False


# --------------------------------------------------------------------------------------------
# The worker side
# --------------------------------------------------------------------------------------------


class _PipeSink:
    def __init__(self, conn) -> None:
        self.conn = conn

    def row(self, r: dict[str, Any]) -> None:
        self.conn.send(("row", r))

    def progress(self, step: int, label: str) -> None:
        self.conn.send(("progress", step, label))


def _worker_main(conn, runner: str, log: str, threads: int) -> None:
    """Body of a worker process: its output goes to ``log`` (read back when it dies)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)
    import faulthandler

    faulthandler.enable()
    try:
        import torch

        torch.set_num_threads(threads)
        module = importlib.import_module(runner)
        info = module.prepare()
    except BaseException:
        traceback.print_exc()
        conn.send(("fatal", traceback.format_exc()[-1500:]))
        return
    conn.send(("ready", info))
    healthy = getattr(module, "healthy", lambda: True)
    sink = _PipeSink(conn)
    while True:
        try:
            case = conn.recv()
        except EOFError:  # the parent is gone
            return
        if case is None:
            return
        conn.send(("start", case.id))
        try:
            module.run_case(case, sink)
        except Exception as error:  # BrokenDevice, or a runner that lets an error out
            conn.send(("retire", f"{type(error).__name__}: {error}"))
            return
        conn.send(("done", case.id))
        if not healthy():
            conn.send(("retire", "the device failed; a fresh worker takes over"))
            return


# --------------------------------------------------------------------------------------------
# The parent side
# --------------------------------------------------------------------------------------------


def _order(cases: list[Case]) -> deque[Case]:
    return deque(sorted(cases, key=lambda c: (c.tier, -c.cost, c.group)))


def _take(pending: deque[Case], group: str) -> Case:
    """The next case: the first tier's longest; among its short ones, one of ``group`` if any."""
    first = pending[0]
    if first.cost < HEAVY:
        for i, case in enumerate(pending):
            if case.tier != first.tier:
                break
            if case.group == group:
                del pending[i]
                return case
    return pending.popleft()


def _tail(path: str, limit: int = 1500) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-limit:]
    except OSError:
        return ""


def run_cases(
    cases: list[Case],
    *,
    workers: int,
    deadline: float,
    case_timeout: float,
    runner: str = "torchconv_ext.check.runner",
    on_row: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run ``cases`` and return their rows (every case gets at least one)."""
    rows: list[dict[str, Any]] = []

    def emit(r: dict[str, Any]) -> None:
        rows.append(r)
        if on_row:
            on_row(r)

    if not cases:
        return rows
    if workers <= 0:
        _run_here(cases, runner, deadline, emit)
    else:
        _Pool(cases, workers, runner, deadline, case_timeout, emit, log).run()
    return rows


class _ListSink:
    def __init__(self, emit) -> None:
        self.emit = emit
        self.count = 0

    def row(self, r: dict[str, Any]) -> None:
        self.count += 1
        self.emit(r)

    def progress(self, step: int, label: str) -> None:
        pass


def _run_here(cases, runner, deadline, emit) -> None:
    module = importlib.import_module(runner)
    module.prepare()
    try:
        for case in _order(cases):
            if time.time() >= deadline:
                emit(row(case, NOT_RUN, "the time budget was used up before this case started"))
                continue
            sink = _ListSink(emit)
            try:
                module.run_case(case, sink)
            except Exception as error:  # a broken device: its case has reported already
                if not sink.count:
                    emit(row(case, FAIL, f"{type(error).__name__}: {error}"))
    finally:
        getattr(module, "finish", lambda: None)()


class _Pool:
    def __init__(self, cases, workers, runner, deadline, case_timeout, emit, log) -> None:
        self.pending = _order(cases)
        self.total = len(cases)
        self.wanted = min(workers, len(cases))
        self.spawns_left = self.wanted + max(4, self.wanted)  # replacements, not a crash loop
        self.runner, self.deadline, self.case_timeout = runner, deadline, case_timeout
        self.emit, self.log = emit, log
        self.ctx = mp.get_context("spawn")
        self.live: list[_Worker] = []
        self.logdir = tempfile.mkdtemp(prefix="torchconv_ext-check-")
        self.threads = max(1, (os.cpu_count() or 1) // self.wanted)
        self.start_failures: list[str] = []
        self.done = 0
        self.next_index = 0
        self.last_note = time.time()

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        try:
            for _ in range(self.wanted):
                self._spawn()
            while self.pending or any(w.case for w in self.live):
                if time.time() >= self.deadline:
                    self._out_of_time()
                    return
                self._dispatch()
                if not self.live and self.pending and not self._spawn():
                    self._give_up()
                    return
                self._wait()
                self._check_clocks()
                self._note_progress()
        finally:
            for w in list(self.live):
                self._kill(w)
            shutil.rmtree(self.logdir, ignore_errors=True)  # what mattered is in the rows

    def _spawn(self) -> bool:
        if self.spawns_left <= 0 or self.deadline - time.time() < 15:
            return False
        self.spawns_left -= 1
        index, self.next_index = self.next_index, self.next_index + 1
        log = os.path.join(self.logdir, f"worker-{index}.log")
        parent, child = self.ctx.Pipe()
        args = (child, self.runner, log, self.threads)
        process = self.ctx.Process(target=_worker_main, args=args, name=f"check-worker-{index}")
        process.start()
        child.close()
        self.live.append(_Worker(index, process, parent, log, time.time()))
        return True

    def _kill(self, w: _Worker) -> None:
        if w in self.live:
            self.live.remove(w)
        if w.process.is_alive():
            w.process.kill()
        w.process.join(timeout=10)
        w.conn.close()

    # -- handing out work --------------------------------------------------------------------

    def _dispatch(self) -> None:
        for w in self.live:
            if not w.ready or w.case or w.retiring:
                continue
            if not self.pending:
                w.retiring = True
                self._send(w, None)
                continue
            w.case = _take(self.pending, w.group)
            w.group, w.started, w.rows, w.step = w.case.group, time.time(), 0, None
            self._send(w, w.case)

    def _send(self, w: _Worker, message) -> None:
        with contextlib.suppress(OSError):  # it died: the next wait sees it
            w.conn.send(message)

    # -- listening ---------------------------------------------------------------------------

    def _wait(self) -> None:
        handles = {w.conn: w for w in self.live}
        handles.update({w.process.sentinel: w for w in self.live})
        timeout = max(0.05, min(1.0, self.deadline - time.time()))
        for handle in wait(list(handles), timeout=timeout):
            w = handles[handle]
            if w not in self.live:
                continue
            if handle is w.conn:
                self._receive(w)
            elif not w.conn.poll():
                self._lost(w, "exited")

    def _receive(self, w: _Worker) -> None:
        while w in self.live and w.conn.poll():
            try:
                message = w.conn.recv()
            except (EOFError, OSError):
                self._lost(w, "exited")
                return
            kind = message[0]
            if kind == "ready":
                w.ready = True
            elif kind == "row":
                self.emit(message[1])
                w.rows += 1
                if w.step is not None and message[1].get("config_index") == w.step:
                    w.step_reported = True
            elif kind == "progress":  # a sweep moves to its next config: alive, on the clock
                w.step, w.step_label, w.step_reported = message[1], message[2], False
                w.started = time.time()
            elif kind == "done":
                w.case = None
                self.done += 1
            elif kind == "fatal":
                self.start_failures.append(message[1])
                self._lost(w, "could not start")
            elif kind == "retire":
                self._lost(w, message[1])

    def _lost(self, w: _Worker, why: str) -> None:
        """A worker is gone (or going): fail its case, resume a sweep, replace the worker."""
        self._kill(w)
        code = w.process.exitcode
        if not w.ready and not self.start_failures:
            self.start_failures.append(f"exit code {code}: {_tail(w.log)}")
        if w.case is not None:
            self._fail_running(w, f"worker process {why} (exit code {code})")
        if self.pending:
            self._spawn()

    def _fail_running(self, w: _Worker, why: str) -> None:
        """The case of a lost worker fails (unless its rows are in); a sweep resumes after the
        config it was on."""
        case, step = w.case, w.step
        if step is None:
            if w.rows == 0:
                reason = f"{why} while running this case"
                self.emit(row(case, FAIL, reason, log_tail=_tail(w.log)))
            self.done += 1
            return
        if not w.step_reported:
            reason = f"{why} while running config {step + 1} ({w.step_label})"
            fields = dict(id=f"{case.id} | config {step + 1}: {w.step_label}", config_index=step)
            self.emit(row(case, FAIL, reason, log_tail=_tail(w.log), **fields))
        self.pending.appendleft(resumed(case, step + 1))

    # -- clocks ------------------------------------------------------------------------------

    def _check_clocks(self) -> None:
        now = time.time()
        for w in list(self.live):
            if w.case is not None and now - w.started > self.case_timeout:
                self._lost(w, f"killed after the case timeout of {self.case_timeout:.0f} s")
            elif not w.ready and now - w.spawned > START_TIMEOUT:
                self.start_failures.append(f"no ready signal in {START_TIMEOUT:.0f} s")
                self._lost(w, "did not start in time")

    def _out_of_time(self) -> None:
        for w in list(self.live):
            if w.case is not None:
                reason = "the time budget was used up while this case was running"
                self.emit(row(w.case, NOT_RUN, reason))
            self._kill(w)
        for case in self.pending:
            self.emit(row(case, NOT_RUN, "the time budget was used up before this case started"))
        self.pending.clear()

    def _give_up(self) -> None:
        why = self.start_failures[-1] if self.start_failures else "no worker could be started"
        for case in self.pending:
            self.emit(row(case, NOT_RUN, f"no worker process could run it: {why}"[:800]))
        self.pending.clear()

    def _note_progress(self) -> None:
        if time.time() - self.last_note >= 15:
            self.last_note = time.time()
            busy = sum(1 for w in self.live if w.case)
            self.log(
                f"  ... {self.done}/{self.total} cases done, {busy} running, "
                f"{len(self.pending)} waiting"
            )
