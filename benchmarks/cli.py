"""The command line of ``python -m benchmarks [suite ...] [--dtype ...] [--quick] [--device D]``
(``--budget SECONDS``: :mod:`benchmarks.budget`), of ``python -m benchmarks overhead``
(:mod:`benchmarks.overhead`), of ``python -m benchmarks instructions``
(:mod:`benchmarks.instructions`), of ``python -m benchmarks cold-start``
(:mod:`benchmarks.cold_start`) and of ``python -m benchmarks real-models``
(:mod:`benchmarks.real_models`).

Kept apart from ``__main__`` so that the single-suite entry points (``python -m
benchmarks.bench_conv`` etc.) can call it without importing the package's main module.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from .budget import BUDGET_DIRECTIONS, CONTINUE_OPTION, Continuation
from .options import ALL_DIRECTIONS, DIRECTIONS, DTYPES, RunOptions
from .providers import COMPILE_MODES, PROVIDERS
from .results import RESULTS_DIR
from .suites import SUITES


def _positive_int(text: str) -> int:
    """``--batch``: a whole number above 0 (argparse names the option in its error)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return int(text)


def _writable_folder(out: Path) -> str | None:
    """Why results cannot be written under ``out`` (made here if missing), or ``None``: asked
    before the run, so that no run's results are lost at its end."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        return str(error)
    return None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time torchconv_ext against torch on real layer shapes and write results.",
    )
    p.add_argument(
        "suites",
        nargs="*",
        metavar="suite",
        help=f"suites to run (default: all): {', '.join(SUITES)}",
    )
    p.add_argument(
        "--dtype",
        default=None,
        choices=[*DTYPES, "all"],
        help="dtype(s); 'all' is fp32, fp16 and bf16 (default: all on GPU, fp32 on CPU)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: two small cases per suite, few samples (numbers mean nothing)",
    )
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR,
        help="results root; files go to OUT/<device>/<suite>-<dtype>.* "
        "(--quick: OUT/<device>/quick/)",
    )
    p.add_argument(
        "--providers",
        nargs="+",
        default=None,
        choices=list(PROVIDERS),
        help="providers to time (default: all on GPU, torch and ours on CPU)",
    )
    p.add_argument(
        "--direction",
        nargs="+",
        default=None,
        choices=list(ALL_DIRECTIONS),
        help="directions to time (default: fwd bwd both; with --budget: fwd both)",
    )
    p.add_argument(
        "--batch",
        type=_positive_int,
        default=None,
        help="batch size for every convolution layer instead of the default",
    )
    p.add_argument(
        "--no-report",
        action="store_true",
        help="write JSON and CSV only (no Markdown table, no plots)",
    )
    p.add_argument(
        "--compile-mode",
        default=None,
        choices=list(COMPILE_MODES),
        help="torch.compile mode of the 'compile' provider (default: max-autotune; with "
        "--budget: default)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="a time-boxed run: key layers first, bf16, fwd and fwd+bwd, ours also from a "
        "CUDA graph (see benchmarks/budget.py); stops cleanly when the time is spent, and goes "
        "on in a fresh process after a device fault",
    )
    # Internal, hence hidden: a budget run whose device faulted re-executes itself with it to
    # go on in a fresh process (benchmarks/budget.py); its value is a Continuation as JSON.
    p.add_argument(
        CONTINUE_OPTION, type=Continuation.from_arg, default=None, help=argparse.SUPPRESS
    )
    p.add_argument("--list", action="store_true", help="list suites and their cases, then exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["overhead"]:
        from .overhead import main as overhead

        return overhead(argv[1:])
    if argv[:1] == ["cold-start"]:
        from .cold_start import main as cold_start

        return cold_start(argv[1:])
    if argv[:1] == ["real-models"]:
        from .real_models import main as real_models

        return real_models(argv[1:])
    if argv[:1] == ["instructions"]:
        from .instructions import main as instructions

        return instructions(argv[1:])
    args = parser().parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        kind = torch.device(device).type
    except RuntimeError:
        kind = None
    if kind not in ("cuda", "cpu"):
        parser().error(f"--device: expected cuda, cuda:N or cpu, got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        parser().error("--device cuda: no CUDA device is available")
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser().error(f"unknown suite(s) {', '.join(unknown)}: choose from {', '.join(SUITES)}")
    names = args.suites or list(SUITES)
    gpu = device.startswith("cuda")
    budget = args.budget is not None
    if budget and (args.budget <= 0 or args.dtype == "all"):
        parser().error("--budget takes a positive number of seconds and one --dtype")
    resume = args.continue_budget
    if resume is not None and not budget:
        parser().error(f"{CONTINUE_OPTION} continues a --budget run only")
    dtype = args.dtype or (("bf16" if budget else "all") if gpu else "fp32")
    dtypes = ["fp32", "fp16", "bf16"] if dtype == "all" else [dtype]
    default_directions = BUDGET_DIRECTIONS if budget else DIRECTIONS
    options = RunOptions(
        device=device,
        quick=args.quick,
        providers=args.providers or [],
        directions=tuple(args.direction or default_directions),
        batch=args.batch,
        compile_mode=args.compile_mode or ("default" if budget else "max-autotune"),
        graph=budget and gpu,
    )
    if not args.list and (why := _writable_folder(args.out)):
        parser().error(f"--out {args.out}: results cannot be written there ({why})")
    if args.list:
        for name in names:
            suite = SUITES[name]
            reason = suite.unavailable()
            print(
                f"{name}: {suite.description}" + (f" (not available: {reason})" if reason else "")
            )
            if not reason:
                for case in suite.cases(options):
                    print(f"  {case['name']:<36} {case.get('shape', '')}")
        return 0
    if budget:
        from .budget import Budget, run_budget

        if gpu:  # inductor compiles in this process, so the budget's hard stop can end it
            os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
        clock = Budget(args.budget, spent=resume.elapsed() if resume else 0.0)
        run_budget(
            names,
            dtype,
            options,
            args.out,
            clock,
            report=not args.no_report,
            command=argv,
            resume=resume,
        )
        return 0
    from .runner import run

    run(names, dtypes, options, args.out, report=not args.no_report)
    return 0


def suite_main(default_suites: Sequence[str], argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.bench_<name>``: :func:`main` on ``default_suites`` unless the
    arguments name suites themselves."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a in SUITES for a in argv):
        argv = [*default_suites, *argv]
    return main(argv)
