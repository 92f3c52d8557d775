"""``python -m benchmarks cold-start``: what the first call of each layer costs the host.

The first call of a problem tunes every kernel it launches: each candidate config that fits is
compiled (Triton's compiler and ``ptxas``, on the CPU), pruned on what it uses and, on a GPU,
timed; the winner is remembered. On a fresh machine — Triton's cache and ours empty — compiling
is nearly all of it, minutes for a network. This measures that part without a GPU: for each
chosen layer in turn, one forward and backward of ours at the layer's GPU training size runs on
a stand-in sm_90 GPU (:mod:`benchmarks.standin`, ``mode="launch"``, ``tuning="compile"``): every
candidate is compiled and pruned as on a GPU, the first survivor is taken instead of timing them,
and the final launch only counts. The stand-in loads no binary, so pruning sees shared memory
only (registers and spills read 0): a GPU prunes more after compiling the same candidates.

Each ``--threads`` count (how many threads compile a tuning's candidates,
``TORCHCONV_EXT_COMPILE_THREADS``) runs in a fresh process with empty caches and goes through
the layers in order, so a later layer pays only for kernels no earlier one compiled; times are
wall-clock seconds per layer and in all.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .standin import require_compiled_kernels

#: The default layers: a ResNet-50's distinct convolutions, as a training start meets them.
DEFAULT_LAYERS = ("resnet50",)
LAYOUTS = {"nchw": False, "cl": True}


def first_calls(
    layers: Sequence[str], dtype: str, layout: str, target: str
) -> list[dict[str, Any]]:
    """Run each layer's first forward + backward on the stand-in (this process); one row each."""
    require_compiled_kernels()
    import torch

    import torchconv_ext

    from .options import DTYPES, RunOptions
    from .standin import stand_in_gpu
    from .suites import SUITES
    from .workload import grad_operands, make_workload, prepared

    gpu_sizes = RunOptions(device="cuda")  # the training batch, as a GPU run times it
    rows = []
    stand_in = stand_in_gpu(target, mode="launch", tuning="compile")
    with stand_in as state, torchconv_ext.use_backend("triton"):
        for suite_name, name in (entry.split(":", 1) for entry in layers):
            suite = SUITES[suite_name]
            layer = next(x for x in suite.layers if x.name == name)
            big = type(layer).from_dict(suite.case(layer, gpu_sizes))
            wl = make_workload(big, DTYPES[dtype], "cpu", random=False)
            operands, gy = prepared(wl, LAYOUTS[layout])
            launched = state.launched
            t0 = time.perf_counter()
            y = wl.ours(*operands)
            inputs = grad_operands(operands)
            if inputs:
                torch.autograd.grad(y, inputs, gy)
            seconds = time.perf_counter() - t0
            rows.append(
                {
                    "layer": f"{suite_name}:{name}",
                    "seconds": round(seconds, 2),
                    "launches": state.launched - launched,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def selected_layers(names: Sequence[str]) -> list[str]:
    """``suite:layer`` entries for ``names``: exact entries, or fragments of conv-suite names."""
    from .suites import SUITES

    out: list[str] = []
    for entry in names:
        if ":" in entry:
            found = [entry]
        else:
            found = [f"conv:{x.name}" for x in SUITES["conv"].layers if entry in x.name]
        if not found:
            raise SystemExit(f"no layer matches {entry!r}")
        out += [f for f in found if f not in out]
    return out


def measure(threads: int, args: argparse.Namespace, layers: list[str]) -> dict[str, Any]:
    """One fresh process with empty Triton and tuning caches and ``threads`` compile threads."""
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env.update(
            TRITON_CACHE_DIR=str(Path(tmp) / "triton"), TORCHCONV_EXT_COMPILE_THREADS=str(threads)
        )
        command = [
            sys.executable,
            "-m",
            "benchmarks.cold_start",
            "--child",
            "--dtype",
            args.dtype,
            "--layout",
            args.layout,
            "--target",
            args.target,
            *layers,
        ]
        t0 = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"the {threads}-thread run failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {
        "threads": threads,
        "rows": rows,
        "seconds": round(sum(r["seconds"] for r in rows), 2),
        "process_seconds": round(wall, 2),
    }


def markdown(doc: dict[str, Any]) -> str:
    m, runs = doc["machine"], doc["runs"]
    head = " | ".join(f"{r['threads']} thread{'s' * (r['threads'] > 1)} s" for r in runs)
    lines = [
        f"# First call of each layer (tuning compiles) · {m['cpu']}",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable); torch "
        f"{m['torch']}, triton {m['triton']}; commit `{m['git_sha']}`"
        + (" + local changes" if m["git_dirty"] else "")
        + f", {m['date']}",
        f"- `python -m benchmarks cold-start {' '.join(doc['argv'])}`: {doc['dtype']}, "
        f"{doc['layout']} operands, stand-in {doc['target']}; see `benchmarks/cold_start.py`",
        "- each run: a fresh process, empty Triton and tuning caches, the layers in this order "
        "(a later layer pays only for kernels no earlier one compiled); wall-clock seconds of "
        "one forward + backward at the layer's GPU training size, every tuning's candidates "
        "compiled and pruned, none timed",
        "",
        f"| layer | launches | {head} |",
        "|---|---|" + "---|" * len(runs),
    ]
    for i, row in enumerate(runs[0]["rows"]):
        times = " | ".join(f"{r['rows'][i]['seconds']:.1f}" for r in runs)
        lines.append(f"| {row['layer']} | {row['launches']} | {times} |")
    totals = " | ".join(f"**{r['seconds']:.1f}**" for r in runs)
    lines += [f"| all | | {totals} |", ""]
    if len(runs) > 1:
        base = runs[0]["seconds"]
        lines += [
            "Speed-up over "
            + f"{runs[0]['threads']} thread{'s' * (runs[0]['threads'] > 1)}: "
            + ", ".join(f"{r['threads']} threads {base / r['seconds']:.2f}×" for r in runs[1:]),
            "",
        ]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    from .results import RESULTS_DIR

    p = argparse.ArgumentParser(
        prog="python -m benchmarks cold-start",
        description="Host seconds of each layer's first call (its tunings' compiles), on a "
        "stand-in GPU, with empty caches.",
    )
    p.add_argument(
        "layers",
        nargs="*",
        default=list(DEFAULT_LAYERS),
        help="suite:layer entries or fragments of conv-suite layer names (default: resnet50)",
    )
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="compile thread counts, one fresh process each (default: 1 and the usable CPUs)",
    )
    p.add_argument("--dtype", default="bf16", help="operand dtype (default bf16)")
    p.add_argument("--layout", default="cl", choices=list(LAYOUTS), help="operand layout")
    p.add_argument("--target", default="sm_90", help="stand-in GPU target (default sm_90)")
    p.add_argument("--tag", default=None, help="file name tag: cold-start-<tag>.{json,md}")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results root")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.child:
        first_calls(args.layers, args.dtype, args.layout, args.target)
        return 0
    from .overhead import machine
    from .results import write_tool

    layers = selected_layers(args.layers)
    threads = args.threads or sorted({1, len(os.sched_getaffinity(0))})
    runs = []
    for n in threads:
        print(f"{n} compile thread(s): {len(layers)} layers, fresh process, empty caches")
        runs.append(measure(n, args, layers))
        for row in runs[-1]["rows"]:
            print(f"  {row['layer']}: {row['seconds']:.1f} s ({row['launches']} launches)")
        print(f"  all: {runs[-1]['seconds']:.1f} s")
    doc = {
        "argv": argv,
        "dtype": args.dtype,
        "layout": args.layout,
        "target": args.target,
        "machine": machine(),
        "runs": runs,
    }
    text = markdown(doc)
    print(text)
    if not args.no_write:
        stem = write_tool(args.out, "cold-start", args.tag, doc, text)
        print(f"wrote {stem}.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
