"""``python -m benchmarks.compile_report``: the GPU code of the benchmarks, without a GPU.

1. **Capture.** Every benchmark case (a suite's layers at their training size) runs ours —
   forward and backward, NCHW and channels_last, in each ``--dtype`` — on uninitialised CPU
   tensors under a stand-in GPU (:mod:`benchmarks.standin`, ``mode="capture"``): every kernel
   launch is recorded at Triton's level (``Autotuner`` / ``Heuristics`` / ``JITFunction``) and
   not run.
2. **Compile.** Each recorded launch is compiled for the target (``--target``, ``sm_90`` by
   default) with Triton's own compiler, once for *every* autotune config of its kernel, through
   ``warmup`` — Triton's real specialisation path — in ``--jobs`` processes.
3. **Read.** From each binary: registers per thread, stack frame and spills (``cuobjdump
   -res-usage``; ``ptxas -v`` for the exact spill bytes when there is a stack frame), shared
   memory (Triton's metadata, against the target's limit); from its PTX: ``wgmma``, ``mma.sync``,
   ``cp.async`` copy sizes, TMA (``cp.async.bulk.tensor``) and the widths of global loads and
   stores.

``--check`` captures the launches of ``python -m torchconv_ext check`` on a GPU instead (every
op family in every dtype and layout it checks: :mod:`benchmarks.check_capture`), so that a
variant the GPU check would fail to compile shows up first here.

Rows are kernel (with its variant constexprs) × config × dtype × layout; launches that Triton
specialises differently (say, a size divisible by 16 or not) are compiled apart and folded into
their row as its worst case (most registers, spills, shared memory). Written to
``benchmarks/results/compile-report/<target>.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from triton_kernels._common import COMPILE_OPTIONS

from . import check_capture
from .standin import SM90_SHARED_BYTES, PointerArg, TunedKernel, parse_target

#: Layouts of a case, by the name used in rows.
#: Layouts of the captured cases: everything NCHW, everything channels-last, or a
#: channels-last activation with the parameters left NCHW (an unconverted model's weights).
LAYOUTS = {"nchw": "nchw", "cl": "cl", "cl-input": "cl-input"}
LAYOUT_NAMES = {
    "nchw": "NCHW",
    "cl": "channels_last",
    "cl-input": "channels_last input, NCHW weight",
}
SHARED_LIMIT = {90: SM90_SHARED_BYTES, 100: SM90_SHARED_BYTES, 80: 166912}


@dataclass
class Job:
    """One compile: a captured launch with one config (``None``: a kernel without autotuning)."""

    launch: Any  # standin.Launch
    config: Any
    config_index: int | None
    cases: list[str] = field(default_factory=list)
    dtype: str = ""
    layout: str = ""
    pruned: bool = False
    key: tuple = ()


# --- capture ---------------------------------------------------------------------------------
def capture_case(layer: Any, dtype: Any, layout: str, state: Any) -> list[Any]:
    """The launches ours makes for one layer's forward and backward (stand-in capture mode)."""
    import torch

    from .workload import grad_operands, make_workload, prepared

    wl = make_workload(layer, dtype, "cpu", random=False)
    operands, gy = prepared(wl, layout != "nchw")
    if layout == "cl-input":  # the parameters back in NCHW
        params = [None if t is None else t.detach().contiguous() for t in operands[1:]]
        grads = [t is not None and t.requires_grad for t in operands[1:]]
        operands = (
            operands[0],
            *(t if t is None else t.requires_grad_(g) for t, g in zip(params, grads)),
        )
    first = len(state.launches)
    y = wl.ours(*operands)
    inputs = grad_operands(operands)
    if inputs:
        torch.autograd.grad(y, inputs, gy)
    return state.launches[first:]


def _spec(v: Any) -> Any:
    """What Triton specialises an argument on (a superset: never merges what it tells apart)."""
    if isinstance(v, PointerArg):
        return ("ptr", str(v.dtype), v.data_ptr() % 16 == 0)
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return ("int", v == 1, v % 16 == 0, -(2**31) <= v < 2**31)
    if isinstance(v, float):
        return "float"
    return repr(v)


def _constexpr_spec(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments are constexprs: each value is a variant of its own (pointers aside)."""
    return {k: _spec(v) if isinstance(v, PointerArg) else repr(v) for k, v in kwargs.items()}


def constexprs(launch: Any) -> dict[str, Any]:
    """The launch's keyword arguments: the kernel's variant constexprs (``FLAT_K``, …), not the
    compile options every launch passes."""
    return {
        k: v
        for k, v in launch.kwargs.items()
        if not isinstance(v, PointerArg) and k not in COMPILE_OPTIONS
    }


def first_dtype(launch: Any) -> str:
    ptr = next((a for a in launch.args if isinstance(a, PointerArg)), None)
    return str(ptr.dtype).removeprefix("torch.") if ptr else "?"


def plan(
    captured: list[tuple[str, str, Any]],
    configs: str | Callable[[str], str],
    known: Sequence[Job] = (),
) -> list[Job]:
    """One job per (specialisation, config), each listing the cases that launch it; none for
    what ``known`` jobs compile already. ``configs``: ``"all"``, ``"first"`` or ``"pinned"``
    (the one ``python -m torchconv_ext check`` pins: ``check.tuners.pin_config``), or per case
    label a function giving one of those."""
    from torchconv_ext.check.tuners import pin_config

    jobs: dict[tuple, Job] = {}
    seen = {job.key for job in known}
    for case, layout, launch in captured:
        kernel = launch.kernel
        cands = list(getattr(kernel, "configs", None) or [None])
        kept = _kept_configs(launch, cands)
        which = configs(case) if callable(configs) else configs
        chosen = list(enumerate(cands))
        if which == "first":
            chosen = chosen[:1]
        elif which == "pinned" and cands != [None]:
            pinned = pin_config(kernel)
            chosen = [(cands.index(pinned), pinned)]
        spec = (
            id(kernel),
            tuple(map(_spec, launch.args)),
            tuple(sorted(_constexpr_spec(launch.kwargs).items())),
            layout,
        )
        for i, cfg in chosen:
            key = (spec, i)
            if key in seen:
                continue
            if key not in jobs:
                jobs[key] = Job(
                    launch,
                    cfg,
                    None if cfg is None else i,
                    dtype=first_dtype(launch),
                    layout=layout,
                    pruned=cfg is not None and kept is not None and cfg not in kept,
                    key=key,
                )
            if case not in jobs[key].cases:
                jobs[key].cases.append(case)
    return list(jobs.values())


def _kept_configs(launch: Any, configs: list[Any]) -> list[Any] | None:
    """The configs the kernel's own pruning keeps for this launch (``None``: unknown)."""
    prune = getattr(launch.kernel, "prune_configs", None)
    if prune is None or configs == [None]:
        return None
    try:
        launch.kernel.nargs = dict(zip(launch.kernel.arg_names, launch.args))
        return list(prune(dict(launch.kwargs)))
    except Exception:
        return None
    finally:
        launch.kernel.nargs = None


# --- compile and read ------------------------------------------------------------------------
def _tool(name: str) -> str | None:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(path) if path.exists() else None


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers, stack frame, static shared and local memory of a cubin (``cuobjdump``)."""
    tool = _tool("cuobjdump")
    if tool is None:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out)
    if not m:
        return {}
    return dict(zip(("regs", "stack", "static_shared", "local"), map(int, m.groups())))


#: A SASS instruction line of ``nvdisasm``, a branch with its target label, and an ``EXIT``.
_SASS_INSTRUCTION = re.compile(r"^\s+/\*[0-9a-f]+\*/\s+\S")
_SASS_BRANCH = re.compile(r"\bBRA\b[^`]*`\((\.L_x_\d+)\)")
_SASS_EXIT = re.compile(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?EXIT\b")


def disassemble(cubin: bytes) -> str | None:
    """A cubin's SASS (``nvdisasm -c``), ``None`` without ``nvdisasm``."""
    tool = _tool("nvdisasm")
    if tool is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([tool, "-c", f.name], capture_output=True, text=True).stdout


def main_loop_instructions(cubin: bytes) -> int | None:
    """SASS instructions per thread in the innermost loop around the kernel's tensor-core
    instructions (``HGMMA``/``HMMA``): one step of a GEMM's main loop — its address arithmetic,
    masks and loads besides the matrix instructions. ``None`` for a kernel without such a loop
    (or without ``nvdisasm``)."""
    sass = disassemble(cubin)
    return None if sass is None else loop_instructions(sass)


def sass_instructions(sass: str) -> int:
    """The SASS instructions of a disassembly, counted statically (each once, loops or not):
    for a kernel without loops, what each thread executes for its share of the tile."""
    return sum(1 for line in sass.splitlines() if _SASS_INSTRUCTION.match(line))


#: SASS opcodes of tensor-core instructions, and of global loads.
MATRIX_OPCODES = ("HGMMA", "HMMA")
LOAD_OPCODES = ("LDG",)


def loop_instructions(sass: str, opcodes: Sequence[str] = MATRIX_OPCODES) -> int | None:
    """:func:`main_loop_instructions` of a disassembly (``nvdisasm -c``): of the innermost loops
    — a label and a later branch back to it, holding no other such loop — that hold matrix
    instructions (``opcodes``), the one holding the most, and of equals the longest. With
    :data:`LOAD_OPCODES`, the same of the loops holding global loads: one step of a
    memory-bound kernel's loop (a gather's step over the windows covering an element). A kernel's other matrix
    loops are narrower — the merged groups' loop that sums a tile again one group at a time
    (``conv_gemm._unmerged``), rarely taken — or as wide but shorter: the weight gradient's bias
    column tile (one tile beside the weight's, summing the output gradient alone). A branch back
    from code placed after the kernel's ``EXIT`` (an out-of-line retry of a barrier wait, in
    kernels fed by TMA) makes no loop."""
    lines = sass.splitlines()
    labels = {line.split(":")[0]: i for i, line in enumerate(lines) if line.startswith(".L_x_")}
    mma = [i for i, line in enumerate(lines) if any(op in line for op in opcodes)]
    exits = [i for i, line in enumerate(lines) if _SASS_EXIT.search(line)]
    loops = []
    for end, line in enumerate(lines):
        m = _SASS_BRANCH.search(line)
        start = labels.get(m.group(1), end) if m else end

        def inside(marks: list[int], start: int = start, end: int = end) -> bool:
            return any(start < i < end for i in marks)

        if start < end and inside(mma) and not inside(exits):
            loops.append((start, end))
    inner = [
        (s, e)
        for s, e in loops
        if not any(s <= s2 and e2 <= e and (s2, e2) != (s, e) for s2, e2 in loops)
    ]
    if not inner:
        return None

    def size(loop: tuple[int, int]) -> int:
        return sum(1 for line in lines[loop[0] : loop[1] + 1] if _SASS_INSTRUCTION.match(line))

    def matrix(loop: tuple[int, int]) -> int:
        return sum(loop[0] < i < loop[1] for i in mma)

    return size(max(inner, key=lambda loop: (matrix(loop), size(loop))))


def ptxas_spills(compiled: Any) -> dict[str, int | None]:
    """Spill store/load bytes from Triton's own ``ptxas`` step, rerun with its log on.

    Triton's compiler backend turns the kernel's PTX into a cubin again with the same ptxas
    and options (``TRITON_DUMP_PTXAS_LOG`` makes it print ``ptxas -v``); run only where the
    binary has a stack frame or local memory, the traces a spill leaves. ``None``: unknown.
    """
    from triton.compiler.compiler import make_backend

    meta = compiled.metadata
    log = io.StringIO()
    old = os.environ.get("TRITON_DUMP_PTXAS_LOG")
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
    try:
        backend = make_backend(meta.target)
        options = backend.parse_options(dict(meta._asdict()))
        with contextlib.redirect_stdout(log):
            backend.make_cubin(compiled.asm["ptx"], {}, options, meta.target.arch)
    except Exception:
        return {"spill_stores": None, "spill_loads": None}
    finally:
        if old is None:
            os.environ.pop("TRITON_DUMP_PTXAS_LOG", None)
        else:
            os.environ["TRITON_DUMP_PTXAS_LOG"] = old
    m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log.getvalue())
    if not m:
        return {"spill_stores": None, "spill_loads": None}
    return {"spill_stores": int(m.group(1)), "spill_loads": int(m.group(2))}


def _widths(ptx: str, op: str) -> dict[int, int]:
    """Histogram ``{bytes per access: count}`` of ``ld.global`` / ``st.global``."""
    hist: dict[int, int] = {}
    for token in re.findall(rf"\b{op}\.global[.\w:]*", ptx):
        vec = re.search(r"\.v(\d)\b", token)
        bits = re.search(r"\.[bfsu](\d+)$", token)
        if not bits:
            continue
        size = (int(vec.group(1)) if vec else 1) * int(bits.group(1)) // 8
        hist[size] = hist.get(size, 0) + 1
    return dict(sorted(hist.items(), reverse=True))


def ptx_features(ptx: str) -> dict[str, Any]:
    """Matrix instructions, async copies and memory access widths in a kernel's PTX."""
    sizes: dict[int, int] = {}
    for s in re.findall(
        r"cp\.async\.c[ag]\.shared\.global[.\w:]*\s+\[[^\]]+\],\s*\[[^\]]+\],\s*(0x[0-9a-fA-F]+|\d+)",
        ptx,
    ):
        sizes[int(s, 0)] = sizes.get(int(s, 0), 0) + 1
    return {
        "wgmma": len(re.findall(r"\bwgmma\.mma_async", ptx)),
        "mma_sync": len(re.findall(r"\bmma\.sync", ptx)),
        "cp_async_bytes": dict(sorted(sizes.items(), reverse=True)),
        "tma": len(re.findall(r"\bcp\.async\.bulk\.tensor", ptx)),
        "ld_global_bytes": _widths(ptx, "ld"),
        "st_global_bytes": _widths(ptx, "st"),
    }


JOBS: list[Job] = []


def compile_job(index: int) -> dict[str, Any]:
    """Compile ``JOBS[index]`` through ``warmup`` and read its resources (runs in a worker)."""
    job = JOBS[index]
    launch = job.launch
    kernel = launch.kernel
    target = getattr(kernel, "fn", kernel) if job.config is not None else kernel
    kwargs = dict(launch.kwargs)
    if job.config is not None:
        kwargs.update(job.config.all_kwargs())
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            compiled = target.warmup(*launch.args, grid=(1,), **kwargs)
        if isinstance(compiled, list):  # an Autotuner's warmup: one kernel per config
            compiled = compiled[0]
        meta = compiled.metadata
        out: dict[str, Any] = {
            "status": "ok",
            "compile_s": round(time.perf_counter() - t0, 2),
            "name": meta.name,
            "hash": getattr(meta, "hash", None),
            "num_warps": meta.num_warps,
            "num_stages": meta.num_stages,
            "shared": meta.shared,
            **resource_usage(compiled.asm["cubin"]),
            **ptx_features(compiled.asm["ptx"]),
        }
        sass = disassemble(compiled.asm["cubin"])
        if sass is not None:
            out["loop_instructions"] = loop_instructions(sass)
            out["load_loop_instructions"] = loop_instructions(sass, LOAD_OPCODES)
            out["sass_instructions"] = sass_instructions(sass)
        if out.get("stack", 0) or out.get("local", 0) or "stack" not in out:
            out.update(ptxas_spills(compiled))
        else:  # nothing on the stack or in local memory: nothing spilled
            out.update(spill_stores=0, spill_loads=0)
        return out
    except Exception as e:
        root = e  # Triton's CompilationError points at a call; its innermost cause says why
        while (root.__cause__ or root.__context__) is not None:
            root = root.__cause__ or root.__context__
        why = "" if root is e else f" ({type(root).__name__}: {str(root).strip()[:300]})"
        return {"status": "error", "error": f"{type(e).__name__}{why}: {str(e).strip()[-800:]}"}


def compile_all(jobs: list[Job], processes: int, log: Callable[[str], None]) -> list[dict]:
    """Compile every job, in ``processes`` forked workers (they share the Triton cache)."""
    global JOBS
    JOBS = jobs
    results: list[dict[str, Any]] = [{} for _ in jobs]
    done = 0
    t0 = time.perf_counter()
    if processes <= 1:
        mapped = ((i, compile_job(i)) for i in range(len(jobs)))
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(processes)
        mapped = pool.imap_unordered(_indexed, range(len(jobs)))
    try:
        for i, res in mapped:
            results[i] = res
            done += 1
            if done % 10 == 0 or done == len(jobs):
                log(f"  compiled {done}/{len(jobs)} ({time.perf_counter() - t0:.0f} s)")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return results


def _indexed(i: int) -> tuple[int, dict[str, Any]]:
    return i, compile_job(i)


# --- rows ------------------------------------------------------------------------------------
def config_text(cfg: Any) -> str:
    """``BLOCK_M=128 BLOCK_N=128 BLOCK_K=32 w8 s3`` (``fixed`` for a kernel without configs)."""
    if cfg is None:
        return "fixed"
    blocks = " ".join(f"{k}={v}" for k, v in cfg.kwargs.items())
    return f"{blocks} w{cfg.num_warps} s{cfg.num_stages}".strip()


def variant_text(launch: Any) -> str:
    """The kernel name with its variant constexprs: ``_conv_fwd_kernel[FLAT_K=0,HAS_BIAS=1]``."""

    def short(v: Any) -> str:
        return str(int(v)) if isinstance(v, bool) else str(v).removeprefix("torch.")

    consts = constexprs(launch)
    inner = ",".join(f"{k}={short(v)}" for k, v in sorted(consts.items()))
    return f"{launch.name}[{inner}]" if inner else launch.name


def rows(jobs: list[Job], results: list[dict], limit: int) -> list[dict[str, Any]]:
    """One row per kernel variant × config × dtype × layout, its specialisations folded."""
    out: dict[tuple, dict[str, Any]] = {}
    for job, res in zip(jobs, results):
        key = (variant_text(job.launch), config_text(job.config), job.dtype, job.layout)
        row = out.setdefault(
            key,
            {
                "kernel": job.launch.name,
                "variant": key[0],
                "config": key[1],
                "dtype": job.dtype,
                "layout": LAYOUT_NAMES[job.layout],
                "pruned": job.pruned,
                "tuned": isinstance(job.launch.kernel, TunedKernel),
                "specialisations": 0,
                "cases": [],
                "status": "ok",
                "errors": [],
            },
        )
        row["specialisations"] += 1
        row["cases"] += [c for c in job.cases if c not in row["cases"]]
        if res.get("status") != "ok":
            row["status"] = "error"
            row["errors"].append(res.get("error", "not compiled"))
            continue
        for k in ("regs", "stack", "local", "spill_stores", "spill_loads", "shared"):
            if res.get(k) is None:
                row[f"{k}_unknown"] = True
            else:
                row[k] = max(row.get(k, 0), res[k])
        for k in ("wgmma", "mma_sync", "tma"):
            row[k] = max(row.get(k, 0), res.get(k, 0))
        for k in ("loop_instructions", "load_loop_instructions", "sass_instructions"):
            if res.get(k) is not None:
                row[k] = max(row.get(k, 0), res[k])
        for k in ("cp_async_bytes", "ld_global_bytes", "st_global_bytes"):
            merged = row.setdefault(k, {})
            for size, n in res.get(k, {}).items():
                merged[size] = merged.get(size, 0) + n
        row["num_warps"], row["num_stages"] = res["num_warps"], res["num_stages"]
        row["compile_s"] = round(row.get("compile_s", 0) + res["compile_s"], 2)
        row["shared_fits"] = row["shared"] <= limit
    table = list(out.values())
    mark_tuner_pruned(table, limit)
    return table


def mark_tuner_pruned(table: list[dict[str, Any]], limit: int) -> None:
    """Mark ``(pruned)`` the rows of our tuner's kernels that its pruning drops after compiling
    (``triton_kernels._tuning.prune``: spills, the register cap, shared memory), per kernel
    variant, dtype and layout (the rows' worst case over their specialisations)."""
    from triton_kernels._tuning import Resources, prune

    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(table):
        if row.get("tuned"):
            groups.setdefault((row["variant"], row["dtype"], row["layout"]), []).append(i)
    for members in groups.values():
        resources = {
            i: Resources(table[i]["regs"], spill_bytes(table[i]) or 0, table[i]["shared"])
            for i in members
            if table[i]["status"] == "ok" and "regs" in table[i]
        }
        kept = set(prune(members, resources, limit))
        for i in members:
            table[i]["pruned"] = table[i]["pruned"] or i not in kept


def spill_bytes(row: dict[str, Any]) -> int | None:
    """Spill stores + loads of a row, ``None`` when ptxas did not say for every variant."""
    if row.get("spill_stores_unknown") or row.get("spill_loads_unknown"):
        return None
    return row.get("spill_stores", 0) + row.get("spill_loads", 0)


def _sizes(hist: dict[Any, int] | None) -> str:
    if not hist:
        return "–"
    return " ".join(f"{size}B×{n}" for size, n in sorted(hist.items(), key=lambda kv: -int(kv[0])))


def table(rows_: list[dict[str, Any]], limit: int) -> list[str]:
    head = (
        "| kernel | config | dtype | layout | regs | spills B | stack B | shared B | wgmma | "
        "mma.sync | loop SASS | cp.async | TMA | ld.global | st.global | specs | status |"
    )
    lines = [head, "|" + "---|" * 17]
    for r in rows_:
        ok = r["status"] == "ok"
        spills = spill_bytes(r) if ok else None
        shared = f"{r['shared']}" + ("" if r["shared_fits"] else f" > {limit}") if ok else "–"
        cells = [
            f"`{r['variant']}`",
            r["config"] + (" (pruned)" if r["pruned"] else ""),
            r["dtype"],
            r["layout"],
            str(r.get("regs", "?")) if ok else "–",
            "?" if spills is None else str(spills),
            str(r.get("stack", "?")) if ok else "–",
            shared,
            str(r.get("wgmma", 0)) if ok else "–",
            str(r.get("mma_sync", 0)) if ok else "–",
            str(r.get("loop_instructions", "–")) if ok else "–",
            _sizes(r.get("cp_async_bytes")) if ok else "–",
            str(r.get("tma", 0)) if ok else "–",
            _sizes(r.get("ld_global_bytes")) if ok else "–",
            _sizes(r.get("st_global_bytes")) if ok else "–",
            str(r["specialisations"]),
            "ok" if ok else "ERROR: " + "; ".join(r["errors"])[:200].replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(doc: dict[str, Any]) -> str:
    limit = doc["shared_limit"]
    lines = [
        f"# Compile report · {doc['target']} · triton {doc['triton']}",
        "",
        f"- compiled without a GPU by `python -m benchmarks.compile_report` on {doc['host']}; "
        f"torch {doc['torch']}, triton {doc['triton']}; commit `{doc['git_sha']}`"
        + (" + local changes" if doc.get("git_dirty") else "")
        + f", {doc['date']}",
        (
            "- the launches of `python -m torchconv_ext check` on a GPU (`--check`: every op "
            "family's cases; the per-config sweep forces each config of the same kernels)"
            if doc["suites"] == ["check"]
            else f"- suites {', '.join(doc['suites'])}"
        )
        + f"; dtypes {', '.join(doc['dtypes'])}; layouts "
        f"{', '.join(LAYOUT_NAMES[x] for x in doc['layouts'])}; configs: {doc['configs']}",
        f"- {doc['launches']} launches captured; {doc['compiles']} kernel variants compiled (or "
        f"found in Triton's cache) in {doc['elapsed_s']:.0f} s with {doc['processes']} processes",
        f"- shared memory limit per block: {limit} B; `spills B` = spill stores + loads from "
        "ptxas (0 when the binary has no stack frame and no local memory; `?`: ptxas did not "
        "say); `stack B` = stack frame; `loop SASS`: instructions per thread in the innermost "
        "loop around the tensor-core instructions (one main-loop step: its address arithmetic, "
        "masks and loads besides the matrix instructions, from nvdisasm; – without one); "
        "cp.async / ld.global / st.global: bytes per access × count in the PTX; "
        "`specs`: Triton specialisations folded into the row (worst case shown); `(pruned)`: a "
        "config the kernel's tuner drops for these launches before timing them (it spills, sits "
        "at the register cap or exceeds shared memory; when no config is clean the least-bad "
        "one stays)",
        *(f"- CAPTURE FAILED: {m}" for m in doc.get("capture_failures", [])),
        "",
        *table(doc["rows"], limit),
        "",
        "Cases per row are in the JSON (`rows[].cases`).",
        "",
    ]
    return "\n".join(lines)


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def parser() -> argparse.ArgumentParser:
    from .results import RESULTS_DIR
    from .suites import SUITES

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compile_report",
        description="Compile every kernel variant the benchmarks launch for a GPU target, "
        "without a GPU, and report registers, spills, shared memory and instructions.",
    )
    p.add_argument("--target", default="sm_90", help="GPU target (default sm_90)")
    p.add_argument("--suite", nargs="+", default=list(SUITES), choices=list(SUITES))
    p.add_argument(
        "--layers",
        nargs="+",
        default=None,
        help="only these layers: suite:name (exact) or a fragment of a layer's name",
    )
    p.add_argument("--dtype", nargs="+", default=["bf16"], choices=["fp32", "fp16", "bf16"])
    p.add_argument("--layout", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    p.add_argument(
        "--configs",
        default=None,
        choices=["all", "first", "pinned", "as-run"],
        help="every autotune config (the default), each kernel's first, the one the check pins "
        "(the smallest), or with --check (its default) what the check runs: the pinned config "
        "for its op cases, every config for its sweep and autotuned cases",
    )
    p.add_argument("--jobs", type=int, default=default_jobs(), help="compile processes")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "compile-report")
    p.add_argument("--json", type=Path, default=None, help="write the JSON here instead")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument(
        "--ahead",
        action="store_true",
        help="compile ahead for a budget run: two waves, JSON only (see benchmarks/budget.py)",
    )
    p.add_argument("--first-wave", type=int, default=0, help="--ahead: layers in the first wave")
    p.add_argument(
        "--check",
        action="store_true",
        help="instead of the benchmarks' layers, the launches of `python -m torchconv_ext "
        "check` on a GPU: every op family in every dtype it checks (fp64 and TF32 too) and "
        "layout (--dtype and --layout do not apply; --layers selects cases by a fragment of "
        "their name); written as check-<target>.json/.md (see benchmarks/check_capture.py)",
    )
    p.add_argument("--quick", action="store_true", help="--check: the check's --quick cases")
    return p


def select_layers(args: argparse.Namespace) -> list[tuple[Any, Any]]:
    """``(suite, layer)`` pairs: ``--layers`` entries ``suite:name`` (exact, in that order) or
    name fragments (every layer of ``--suite`` whose name has one); all without ``--layers``."""
    from .suites import SUITES

    chosen = [SUITES[n] for n in args.suite]
    if not args.layers:
        return [(s, layer) for s in chosen for layer in s.layers]
    out: list[tuple[Any, Any]] = []
    for entry in args.layers:
        if ":" in entry:
            suite, name = entry.split(":", 1)
            found = [(SUITES[suite], x) for x in SUITES[suite].layers if x.name == name]
        else:
            found = [(s, x) for s in chosen for x in s.layers if entry in x.name]
        out += [f for f in found if f not in out]
    return out


def capture(
    pairs: list[tuple[Any, Any]],
    args: argparse.Namespace,
    state: Any,
    failed: Callable[[str], None],
) -> list[tuple[str, str, Any]]:
    """``(case label, layout, launch)`` for every launch of the layers' benchmark cases."""
    from .options import DTYPES, RunOptions

    gpu_sizes = RunOptions(device="cuda")  # the training batch, as a GPU run times it
    captured: list[tuple[str, str, Any]] = []
    for suite, layer in pairs:
        big = type(layer).from_dict(suite.case(layer, gpu_sizes))
        for dtype in args.dtype:
            for layout in args.layout:
                label = f"{suite.name}:{layer.name}"
                try:
                    got = capture_case(big, DTYPES[dtype], LAYOUTS[layout], state)
                except Exception as e:
                    failed(f"{label} {dtype} {layout}: capture failed: {e!r}"[:300])
                    continue
                captured += [(label, layout, launch) for launch in got]
    return captured


def build(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Capture, compile and tabulate (see the module docstring); return the document.

    With ``args.ahead`` (a budget run compiling its kernels ahead) the layers come in two
    waves, the first ``--first-wave`` of them and then the rest, each captured and compiled
    before the next; ``wave N compiled`` is printed after each.
    """
    import torch
    import triton

    import torchconv_ext

    from .results import _cpu_name, git_dirty, git_sha
    from .standin import stand_in_gpu

    capability = parse_target(args.target)
    limit = SHARED_LIMIT.get(capability, SM90_SHARED_BYTES)
    t0 = time.perf_counter()
    failures: list[str] = []

    def failed(message: str) -> None:
        failures.append(message)
        log(f"  {message}")

    configs = args.configs or ("as-run" if args.check else "all")
    if configs == "as-run" and not args.check:
        raise SystemExit("--configs as-run is what the check runs: it needs --check")
    if args.check:
        waves: list[list[Any]] = [check_capture.cases(args.quick, args.layers)]
        what = "check cases"
    else:
        pairs = select_layers(args)
        waves = [pairs[: args.first_wave], pairs[args.first_wave :]] if args.ahead else [pairs]
        what = "layers"
    jobs: list[Job] = []
    results: list[dict[str, Any]] = []
    launches = 0
    stand_in = stand_in_gpu(args.target, mode="capture")
    with stand_in as state, torchconv_ext.use_backend("triton"):
        for n, wave in enumerate(w for w in waves if w):
            if args.check:
                captured = check_capture.capture(wave, state, failed)
            else:
                captured = capture(wave, args, state, failed)
            launches += len(captured)
            new = plan(captured, check_capture.configs_as_run if configs == "as-run" else configs,
                       known=jobs)  # fmt: skip
            log(
                f"captured {len(captured)} launches of {len(wave)} {what}; compiling "
                f"{len(new)} kernel variants for {args.target} with {args.jobs} processes"
            )
            results += compile_all(new, args.jobs, log)
            jobs += new
            log(f"wave {n + 1} compiled ({time.perf_counter() - t0:.0f} s)")
    return {
        "target": args.target,
        "capability": capability,
        "shared_limit": limit,
        "triton": triton.__version__,
        "torch": torch.__version__,
        "host": f"{_cpu_name()} ({os.cpu_count()} cores)",
        "git_sha": git_sha(),
        "git_dirty": git_dirty(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "suites": ["check"] if args.check else list(args.suite),
        "dtypes": list(check_capture.SETTINGS if args.check else args.dtype),
        "layouts": list(check_capture.LAYOUTS.values() if args.check else args.layout),
        "capture_failures": failures,
        "configs": configs,
        "processes": args.jobs,
        "launches": launches,
        "elapsed_s": time.perf_counter() - t0,
        "compiles": len(jobs),
        "rows": rows(jobs, results, limit),
    }


def main(argv: Sequence[str] | None = None) -> int:
    from .standin import require_compiled_kernels

    args = parser().parse_args(argv)
    require_compiled_kernels()
    doc = build(args)
    if args.ahead:  # the budget run reads the log; the JSON says what was compiled
        if args.json:
            args.json.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        return 0
    print("\n".join(table(doc["rows"], doc["shared_limit"])))
    if not args.no_write:
        js = args.json or args.out / f"{'check-' if args.check else ''}{doc['target']}.json"
        js.parent.mkdir(parents=True, exist_ok=True)
        js.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        js.with_suffix(".md").write_text(markdown(doc))
        print(f"wrote {js} and {js.with_suffix('.md')}")
    failed = [r for r in doc["rows"] if r["status"] != "ok"]
    return 1 if failed or doc["capture_failures"] or not doc["rows"] else 0


if __name__ == "__main__":
    sys.exit(main())
