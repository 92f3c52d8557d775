"""``python -m torchconv_ext check``: does every kernel work on this device?"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .._backend import env_flag
from .._memory import POISON
from . import environment, report
from .cases import INTERPRETER_SKIPS, Case, plan, select
from .compare import ATOL, SLACK
from .device import device, interpreter
from .results import FAIL, FAILING, SKIP, row
from .workers import run_cases

DEFAULT_OUT = "torchconv_ext_check.json"
GPU_BUDGET, INTERPRETER_BUDGET = 210.0, 900.0
LARGE_RESERVE = 60.0  # seconds kept for the >2^31 cases, which run last in one process

DESCRIPTION = """\
Check every Triton kernel of torchconv_ext on this device against torch: convolution (forward,
grad-input, grad-weight; GEMM, depthwise, transposed, 3-D), max/avg/adaptive/global/pyramid
pooling and nearest/nearest-exact upsampling, forward and backward, in bf16, fp16, fp32 (TF32
on and off) and fp64, NCHW and channels_last, at real layer shapes; every autotune config of
the conv GEMM kernels forced alone; one case per family past 2^31 elements.

Without CUDA it runs the same checks on tiny shapes under Triton's interpreter (on the CPU:
a check of the kernels' logic, not a GPU check). Prints a table, writes a JSON report, and
exits with 1 if any check failed or did not run in the time budget. Its autotuned cases tune
into a temporary cache (timed while workers share the device): the user's tuned configs are
neither read nor overwritten."""

#: The tuner's cache directory variable (``triton_kernels._tuning.CACHE_DIR_ENV``; not imported
#: from there, since this module must import where triton is absent).
_CACHE_DIR_ENV = "TORCHCONV_EXT_CACHE_DIR"


def _processes(text: str) -> int:
    """``--workers``: a whole number, 0 or more (argparse names the option in its error)."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    """``--budget`` and ``--case-timeout``: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def build_parser(prog: str = "python -m torchconv_ext check") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, metavar="PATH", help=f"JSON report (default: {DEFAULT_OUT})"
    )
    parser.add_argument("--quick", action="store_true", help="fewer shapes and settings")
    parser.add_argument(
        "--only",
        action="append",
        metavar="SUBSTR",
        help="run only cases whose name contains SUBSTR (case-insensitive; repeat for more); "
        "see --list",
    )
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    parser.add_argument(
        "--workers",
        type=_processes,
        default=min(16, os.cpu_count() or 1),
        metavar="N",
        help="worker processes that compile and run cases in parallel (default: min(16, CPU "
        "count)); 0 runs everything in this process",
    )
    parser.add_argument(
        "--budget",
        type=_seconds,
        metavar="SECONDS",
        help="overall time limit; cases not finished by then are reported 'not run', which "
        "fails the check (every op's cases start before the per-config sweep's; default: "
        f"{GPU_BUDGET:.0f} on a GPU, {INTERPRETER_BUDGET:.0f} under the interpreter)",
    )
    parser.add_argument(
        "--case-timeout",
        type=_seconds,
        default=150.0,
        metavar="SECONDS",
        help="a case (a sweep: one config) running longer fails and its worker is replaced "
        "(default: 150)",
    )
    return parser


def _reexec_with_interpreter(argv: list[str]) -> None:
    """``TRITON_INTERPRET`` is read when ``triton_kernels`` is imported: restart with it set."""
    print("no CUDA device: restarting under Triton's interpreter (TRITON_INTERPRET=1)", flush=True)
    sys.stderr.flush()
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    os.execve(sys.executable, [sys.executable, "-m", "torchconv_ext", "check", *argv], env)


def _coverage(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A failure for each tuner that no sweep case reached."""
    found = {name for r in rows for name in r.get("tuners_found", ())}
    covered = {r["tuner"] for r in rows if r.get("tuner")}
    out = []
    for name in sorted(found - covered):
        case = Case("conv-config", f"tuner {name}", "all", "all", "sweep")
        out.append(row(case, FAIL, f"no sweep case ran tuner {name}: its configs went unchecked"))
    return out


def _printer(start: float):
    def on_row(r: dict[str, Any]) -> None:
        if r["status"] in FAILING:
            print(f"[{time.time() - start:5.0f}s] {r['status'].upper()}: {r['id']}", flush=True)
            print(f"        {r['reason']}", flush=True)

    return on_row


@contextlib.contextmanager
def _temporary_tuning_cache():
    """The tuners' disk cache in a fresh directory while the cases run (in this process and
    the workers it spawns, which read the variable), removed after: configs tuned while many
    workers share the device would otherwise persist as the user's."""
    before = os.environ.get(_CACHE_DIR_ENV)
    with tempfile.TemporaryDirectory(prefix="torchconv_ext-check-tuning-") as directory:
        os.environ[_CACHE_DIR_ENV] = directory
        try:
            yield
        finally:
            if before is None:
                del os.environ[_CACHE_DIR_ENV]
            else:
                os.environ[_CACHE_DIR_ENV] = before


def main(argv: list[str] | None = None, *, reexec: bool = False) -> int:
    """Run the check; 0 when everything passed, 1 when anything failed or did not run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    cuda = device() == "cuda"
    if not cuda and not interpreter():
        if reexec:
            _reexec_with_interpreter(argv)
        print(
            "no CUDA device, and TRITON_INTERPRET=1 was not set before torchconv_ext imported "
            "its kernels: run `TRITON_INTERPRET=1 python -m torchconv_ext check`",
            file=sys.stderr,
        )
        return 2
    cases = select(plan(cuda=cuda, quick=args.quick), args.only)
    if args.list:
        print("\n".join(c.id for c in cases))
        return 0
    if not cases:
        print(f"no case matches --only {args.only}: see --list", file=sys.stderr)
        return 2
    try:  # fail now, not after the run, if the report cannot be written
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a"):  # (a folder there cannot be opened: touch() would take it)
            pass
    except OSError as error:
        print(f"cannot write the report to {args.out}: {error}", file=sys.stderr)
        return 2
    # Outputs are NaN-filled before our kernels write them (in the worker processes, which
    # import torchconv_ext afresh; this process read the variable at import): an element a
    # kernel misses shows as NaN.
    os.environ.setdefault("TORCHCONV_EXT_POISON", "1")
    poisoned = env_flag("TORCHCONV_EXT_POISON", True) if args.workers > 0 else POISON

    start = time.time()
    env = environment.describe()
    print("\n".join(report.header(env)), flush=True)
    budget = args.budget if args.budget is not None else GPU_BUDGET if cuda else INTERPRETER_BUDGET
    deadline = start + budget
    skipped = [c for c in cases if c.skip]
    large = [c for c in cases if c.kind == "large" and not c.skip]
    rest = [c for c in cases if c.kind != "large" and not c.skip]
    print(
        f"{len(rest) + len(large)} cases, {args.workers} worker processes, budget {budget:.0f} s",
        flush=True,
    )

    rows = [row(c, SKIP, c.skip) for c in skipped]
    common = dict(case_timeout=args.case_timeout, on_row=_printer(start))
    with _temporary_tuning_cache():
        rows += run_cases(
            rest,
            workers=args.workers,
            deadline=deadline - (LARGE_RESERVE if large else 0.0),
            **common,
        )
        if large:
            print(f"[{time.time() - start:5.0f}s] the >2^31-element cases, in one process",
                  flush=True)  # fmt: skip
            rows += run_cases(large, workers=min(args.workers, 1), deadline=deadline, **common)
    if not args.only:
        rows += _coverage(rows)

    summary = report.summary(rows)
    document = {
        "check": "python -m torchconv_ext check",
        **env,
        "outputs_nan_poisoned": poisoned,
        "options": {
            "quick": args.quick,
            "only": args.only,
            "workers": args.workers,
            "budget_s": budget,
            "case_timeout_s": args.case_timeout,
        },
        "rule": report.RULE,
        "slack": SLACK,
        "atol_relative_to_max_ref": ATOL,
        "not_checked_here": INTERPRETER_SKIPS if not cuda else {},
        "elapsed_s": round(time.time() - start, 1),
        "summary": summary,
        "cases": rows,
    }
    report.write_json(args.out, document)
    print()
    print("\n".join(report.header(env)))
    print("\n".join(report.table(rows)))
    details = report.details(rows)
    if details:
        print()
        print("\n".join(details))
    print()
    print(f"{report.verdict(summary)} in {time.time() - start:.0f} s; report: {args.out}")
    return 0 if summary["passed"] else 1
