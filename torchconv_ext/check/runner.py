"""Running one case, in whichever process runs it: the interface the worker processes use.

``prepare()`` once per process (``finish()`` undoes it), then ``run_case(case, sink)`` per
case: the case's rows go to ``sink.row``, and a sweep reports which config it is on with
``sink.progress`` (so that a crash can be pinned on a config). ``healthy()`` says whether the
device can still run work: a kernel that faults leaves the CUDA context unusable, and
``run_case`` then raises :class:`BrokenDevice` so that the worker is replaced.
"""

from __future__ import annotations

import contextlib
import os
import time
import zlib
from typing import Any, Protocol

import torch

from . import evaluate, large, observe, sweep, tuners
from .cases import Case
from .device import BrokenDevice, device, healthy
from .problems import build
from .results import SKIP, from_error, from_parts, row


class Sink(Protocol):
    def row(self, row: dict[str, Any]) -> None: ...

    def progress(self, step: int, label: str) -> None: ...


def seed_of(case: Case) -> int:
    """The same inputs for a case in every run and every process."""
    return zlib.crc32(case.id.encode())


_saved_benchmark: list[bool] = []


def prepare() -> dict[str, Any]:
    """Import everything and install the launch counters (once per process)."""
    import triton_kernels  # noqa: F401  (imported now, so that the first case pays no import)

    observe.install()
    _saved_benchmark.append(torch.backends.cudnn.benchmark)
    torch.backends.cudnn.benchmark = False  # the same cuDNN algorithms in every run
    return {"pid": os.getpid(), "device": device()}


def finish() -> None:
    """Undo :func:`prepare` (for a check run inside a longer-lived process)."""
    observe.uninstall()
    torch.backends.cudnn.benchmark = _saved_benchmark.pop()


def kernel_tuners() -> dict[str, Any]:
    """The kernels' tuners, or none when they cannot be found (then nothing is pinned)."""
    try:
        return tuners.discover()
    except ImportError:
        return {}


def run_case(case: Case, sink: Sink) -> None:
    try:
        if case.kind == "sweep":
            sweep.run(case, sink, seed_of(case))
        elif case.kind == "large":
            large.run(case, sink, seed_of(case))
        else:
            sink.row(run_default(case))
    except BrokenDevice:
        raise
    except evaluate.TorchCannot as error:
        sink.row(row(case, SKIP, str(error)[:400]))
    except Exception as error:
        sink.row(from_error(case, error))
    if not healthy():
        raise BrokenDevice(f"the device failed during {case.id}")


#: Further calls of an autotuned case: the second records the launcher tapes, the third replays.
REPLAYS = 2


def run_default(case: Case) -> dict[str, Any]:
    """Forward and every gradient vs torch; the kernels' tuners pinned unless ``autotuned``."""
    start = time.time()
    problem = build(case.spec, device(), seed_of(case))
    ref = evaluate.reference(problem, case.dtype, case.layout, problem.grads, seed_of(case) + 1)
    found = {} if case.kind == "autotuned" else kernel_tuners()
    pinned = tuners.forced(found) if found else contextlib.nullcontext()
    with pinned:
        ours, windows = evaluate.run_ours(problem, ref, problem.grads, inference=True)
        # As users run it, the same call again records the launcher tapes, then replays them:
        # no atomics anywhere, so a replay gives the first call's result bit for bit.
        repeats = REPLAYS if case.kind == "autotuned" else 0
        again = [
            evaluate.run_ours(problem, ref, problem.grads, inference=True)[0]
            for _ in range(repeats)
        ]
    parts = evaluate.compare_all(ours, ref) + evaluate.ran(windows)
    parts += [evaluate.same_again(ours, later, f"call {i + 2}") for i, later in enumerate(again)]
    return from_parts(
        case,
        parts,
        launches=evaluate.launches(windows),
        pinned=sorted(found),
        seconds=round(time.time() - start, 3),
    )
