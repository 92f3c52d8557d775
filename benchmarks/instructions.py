"""``python -m benchmarks instructions``: the CPU instructions one call executes on the host,
counted by Valgrind's callgrind — exact and repeatable where times are not.

The overhead suite (:mod:`benchmarks.overhead`) times calls in this thread's CPU time; on a
machine shared with other users those times move by 10 % and more between runs, which hides
the µs a host-path change saves. Instruction counts do not move: the same code on the same
inputs executes the same instructions, whatever else runs on the machine. They are not time
(a copy's instructions are cheaper than an interpreter's, caches and branches differ), so they
compare versions of our path and our path with ATen's, not µs with µs.

The calls are the overhead suite's (``overhead.CALLS``, each direction), ours on the stand-in
GPU exactly as that suite runs them (backend ``"triton"``, the final launcher a counting stub,
tapes recorded) and ATen's on the same CPU tensors; beside them, for each eager call, the overhead
suite's two cuts of ours: its ``Function`` floor (an ``autograd.Function`` that only allocates)
and its tape replays alone (the torch calls and planned launches the call cannot do without),
so that ours minus both is about what our own Python executes (both allocate the outputs: a
little less). One child process runs them all under
``valgrind --tool=callgrind --instr-atstart=no``: it warms each call up uncounted (compiling,
tuning, recording its tapes), then counts ``n`` calls and ``2n`` calls, switching counting on
and off around each with ``callgrind_control`` and dumping the counts after each (garbage collection off, a fixed hash
seed). Switching costs the same instructions every time, so ``(count(2n) - count(n)) / n`` is
one call's.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .standin import plain_tensors, require_compiled_kernels

#: Calls counted per segment by default (the second segment counts twice as many).
DEFAULT_CALLS = 100
#: The tools this needs, from Valgrind.
TOOLS = ("valgrind", "callgrind_control")


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], capture_output=True, check=True)


def _counted(fn: Any, n: int) -> None:
    """``n`` calls of ``fn`` counted, then dumped (callgrind numbers its dumps in order);
    garbage collection off while counting, as the overhead suite times."""
    gc.collect()
    gc.disable()
    try:
        _control("-i", "on")
        for _ in range(n):
            fn()
        _control("-i", "off")
    finally:
        gc.enable()
    _control("-d")


def child(only: Sequence[str] | None, n: int, labels: Path) -> None:
    """Inside callgrind: warm up and count every call (module doc), writing each dump's label
    — ``[op, direction, "ours" or "aten", n or 2n]`` — in order to ``labels``."""
    require_compiled_kernels()
    import torch

    import torchconv_ext

    from .overhead import CALLS, DIRECTIONS, _call_fns, captured_replays, function_floor
    from .standin import stand_in_gpu

    torch.set_num_threads(1)
    done: list[list] = []
    with stand_in_gpu("sm_90", mode="launch"), torchconv_ext.use_backend("triton"):
        for call in CALLS:
            if only and call.name not in only:
                continue
            for direction in DIRECTIONS:
                _, ours = _call_fns(call, direction, ours=True)
                _, aten = _call_fns(call, direction, ours=False)
                runs = {"ours": ours, "aten": aten}
                if not call.compiled:  # the cuts (module doc), of a call whose tapes exist
                    for _ in range(5):
                        ours()
                    replays = captured_replays(ours)
                    runs["floor"] = function_floor(call, direction)
                    runs["replays"] = lambda r=replays: [f(*t) for f, t in r]
                for which, run in runs.items():
                    # (ATen's and the floor on plain CPU tensors, as the overhead suite runs them)
                    plain = which in ("aten", "floor")
                    with plain_tensors() if plain else contextlib.nullcontext():
                        for _ in range(5):  # compile, tune, record the tapes, replay once
                            run()
                        for calls in (n, 2 * n):
                            _counted(run, calls)
                            done.append([call.name, direction, which, calls])
    labels.write_text(json.dumps(done))


def parse_parts(folder: Path) -> list[int]:
    """The instructions of each dump in ``folder``, in order (``callgrind.out.1``, ``.2``...:
    the file without a number is the program's end, counted nothing)."""
    parts = {}
    for path in folder.glob("callgrind.out.*"):
        totals = [line for line in path.read_text(errors="replace").splitlines()
                  if line.startswith("totals:")]  # fmt: skip
        parts[int(path.suffix[1:])] = int(totals[0].split()[1])
    return [parts[i] for i in sorted(parts)]


def per_call(labels: list[list], counts: list[int]) -> list[dict[str, Any]]:
    """Rows ``{call, direction, ours, aten, ratio}`` of instructions per call, from the dumps'
    labels and counts (for each call, ``n`` then ``2n`` calls)."""
    if len(labels) != len(counts):
        raise RuntimeError(f"{len(counts)} callgrind dumps for {len(labels)} counted segments")
    segments: dict[tuple, dict[int, int]] = {}
    for (op, direction, which, calls), total in zip(labels, counts, strict=True):
        segments.setdefault((op, direction, which), {})[calls] = total
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for (op, direction, which), by_calls in segments.items():
        n, twice = sorted(by_calls)
        row = rows.setdefault((op, direction), {"call": op, "direction": direction})
        row[which] = (by_calls[twice] - by_calls[n]) / (twice - n)
    for row in rows.values():
        row["ratio"] = row["ours"] / row["aten"] if row["aten"] > 0 else None
        if "floor" in row and "replays" in row:
            row["python"] = row["ours"] - row["floor"] - row["replays"]
    return list(rows.values())


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"# Host instructions per call — {doc['tag'] or 'untagged'} · {m['cpu']}",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores (counts do not depend on its load)",
        f"- torch {m['torch']}, triton {m['triton']}, python {m['python']}; commit "
        f"`{m['git_sha']}`{' (dirty)' if m['git_dirty'] else ''}, {m['date']}",
        f"- method: {doc['method']}",
        "",
        "| call | ours instructions | ATen instructions | ours/ATen | Function floor | replays "
        "| ours − floor − replays |",
        "|---|---|---|---|---|---|---|",
    ]

    def count(r: dict[str, Any], which: str) -> str:
        return f"{r[which]:,.0f}" if which in r else "–"

    for r in doc["rows"]:
        ratio = "–" if r["ratio"] is None else f"{r['ratio']:.1f}×"
        cuts = " | ".join(count(r, which) for which in ("floor", "replays", "python"))
        lines.append(
            f"| {r['call']} {r['direction']} | {r['ours']:,.0f} | {r['aten']:,.0f} | {ratio} "
            f"| {cuts} |"
        )
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    from .results import RESULTS_DIR

    p = argparse.ArgumentParser(
        prog="python -m benchmarks instructions",
        description="Host instructions per call (ours and ATen's), counted by callgrind.",
    )
    p.add_argument("--only", nargs="+", default=None, help="calls to count (default: all)")
    p.add_argument("--calls", type=int, default=DEFAULT_CALLS, help="calls per segment")
    p.add_argument("--tag", default=None, help="file name tag: instructions-<tag>.{json,md}")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results root")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)  # labels file
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.calls < 1:
        parser().error("--calls must be at least 1")
    if args.child is not None:  # inside callgrind (module doc)
        child(args.only, args.calls, args.child)
        return 0
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"instructions: needs Valgrind ({', '.join(missing)} not found)", file=sys.stderr)
        return 2
    from .overhead import machine
    from .results import write_tool

    with tempfile.TemporaryDirectory(prefix="torchconv-callgrind-") as tmp:
        labels = f"{tmp}/labels.json"
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={tmp}/callgrind.out",
            sys.executable, "-m", "benchmarks", "instructions", "--child", labels,
            "--calls", str(args.calls), *(["--only", *args.only] if args.only else []),
        ]  # fmt: skip
        # (a fixed hash seed: the same dict layouts, so the same probes, in every run)
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["PYTHONHASHSEED"] = "0"
        # Valgrind 3.19 decodes no AVX-512, which torch.compile's CPU kernels (built for the
        # host, -march=native) would use on a CPU that has it; ATen asks CPUID, which Valgrind
        # answers without it. Those kernels go to a cache of their own: the user's would
        # serve them to later runs outside Valgrind, built for the wrong vector width.
        env["TORCHINDUCTOR_CPP_MARCH"] = "x86-64-v3"
        env["TORCHINDUCTOR_CACHE_DIR"] = f"{tmp}/inductor"
        root = Path(__file__).resolve().parents[1]  # where ``-m benchmarks`` is found
        done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-4000:], done.stderr[-4000:], file=sys.stderr)
            return done.returncode
        rows = per_call(json.loads(Path(labels).read_text()), parse_parts(Path(tmp)))
    doc = {
        "tag": args.tag,
        "machine": machine(),
        "method": f"callgrind instruction counts (Ir) of {args.calls} and {2 * args.calls} "
        "calls after 5 uncounted ones, per call = the difference / "
        f"{args.calls}; ours on the stand-in sm_90 GPU as the overhead suite runs it, "
        "ATen's on the same CPU tensors; Function floor and replays: the overhead suite's cuts "
        "(an autograd.Function that only allocates; our call's tape replays alone), so ours "
        "minus both is about what our own Python executes",
        "rows": rows,
    }
    text = markdown(doc)
    print(text)
    if not args.no_write:
        stem = write_tool(args.out, "instructions", args.tag, doc, text)
        print(f"wrote {stem}.{{json,md}}")
    return 0 if doc["rows"] else 1
