"""Measure a recipe as a user runs it and write the numbers, with the machine, to a JSON file.

    python -m recipes.measure --runs 2 --out recipes/results/vgg11_digits_<machine>.json
    python -m recipes.measure --runs 1 --threads 1 --extra=--model.backend=torch --out ...

Each run is the command a user types (``python -m recipes fit --config <config> [extra]``),
started from the repository root as a separate process and timed from start to exit; the
per-epoch validation metrics come from the run's ``metrics.csv``, and the best checkpoint is
then tested (``python -m recipes test``). The file records the CPU model, core count and
instruction set torch uses, the torch and Lightning versions, the git commit, the load average
around each run, and whether repeated runs gave identical metrics. Every number the READMEs
quote comes from such a file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()


def machine() -> dict:
    import lightning
    import torch

    info = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    return info


def _metrics(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _per_epoch(rows: list[dict[str, str]], key: str) -> list[float]:
    values = {int(float(r["epoch"])): float(r[key]) for r in rows if r.get(key)}
    return [round(values[e], 6) for e in sorted(values)]


def _run(command: list[str], env: dict[str, str]) -> tuple[float, str, tuple[float, float]]:
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{shlex.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout, (load_before, os.getloadavg()[0])


def _field(output: str, name: str) -> str:
    match = re.search(rf"^  {name}\s+(.*)$", output, re.M)
    if match is None:
        sys.exit(f"no '{name}' in the run's summary:\n{output[-2000:]}")
    return match.group(1)


def measure_once(config: str, extra: list[str], threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "recipes", "fit", "--config", config, *extra]
    seconds, out, load = _run(command, env)
    folder = REPO / _field(out, "run folder")
    best = _field(out, r"best val_acc").split(": ", 1)[1]
    rows = _metrics(folder)
    test_cmd = [sys.executable, "-m", "recipes", "test", "--config", config, *extra]
    _, test_out, _ = _run([*test_cmd, "--ckpt_path", best], env)
    test_acc = float(re.search(r"test_acc (\d\.\d+)", test_out).group(1))
    val_acc = _per_epoch(rows, "val_acc")
    prefix = f"OMP_NUM_THREADS={threads} " if threads else ""
    return {
        "command": prefix + shlex.join(["python", *command[1:]]),
        "wall_seconds": round(seconds, 1),
        "load_average_before_after": [round(x, 2) for x in load],
        "val_acc_per_epoch": val_acc,
        "val_loss_per_epoch": _per_epoch(rows, "val_loss"),
        "train_loss_per_epoch": _per_epoch(rows, "train_loss_epoch"),
        "final_val_acc": val_acc[-1],
        "best_val_acc": max(val_acc),
        "best_checkpoint": Path(best).name,
        "test_acc_of_best_checkpoint": test_acc,
        "run_folder": str(folder.relative_to(REPO)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recipes.measure", description=__doc__)
    parser.add_argument("--config", default="recipes/configs/vgg11_digits.yaml")
    parser.add_argument("--runs", type=int, default=2, help="repeats of each setting")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="*",
        default=[0],
        help="OMP_NUM_THREADS values to run with (0: not set)",
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        help="an option for the recipe (repeatable): --extra=--model.backend=torch",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--notes", default="")
    args = parser.parse_args(argv)
    extra = [part for option in args.extra for part in option.split("=", 1)]
    code = ("recipes/*.py", "recipes/**/*.py", "recipes/configs", "torchconv_ext", "triton_kernels")
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", *code)
    result = {
        "what": "python -m recipes fit as a user runs it, timed from start to exit, then "
        "python -m recipes test on the best checkpoint",
        "git_commit": _git("rev-parse", "HEAD"),
        "git_code_unchanged": not dirty,  # no uncommitted change to what the run executes
        "date": date.today().isoformat(),
        "machine": machine(),
        "runs": [],
    }
    for threads in args.threads:
        for i in range(args.runs):
            print(f"threads={threads or 'default'} run {i + 1}/{args.runs} ...", flush=True)
            result["runs"].append(measure_once(args.config, extra, threads or None))
    groups: dict[str, list[dict]] = {}
    for run in result["runs"]:
        groups.setdefault(run["command"], []).append(run)
    result["identical_metrics_across_repeats"] = {
        command: all(
            (r["val_acc_per_epoch"], r["val_loss_per_epoch"], r["train_loss_per_epoch"])
            == (
                runs[0]["val_acc_per_epoch"],
                runs[0]["val_loss_per_epoch"],
                runs[0]["train_loss_per_epoch"],
            )
            for r in runs
        )
        for command, runs in groups.items()
        if len(runs) > 1
    }
    if args.notes:
        result["notes"] = args.notes
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
