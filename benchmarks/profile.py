"""``python -m benchmarks.profile <suite> <case>``: look inside one benchmark case.

1. writes a ``torch.profiler`` trace (open it in Perfetto or ``chrome://tracing``) in which every
   provider's passes are ``record_function`` ranges (``ours.fwd``, ``torch.bwd``, …) and our
   Triton kernels appear under their own names;
2. prints each provider's kernel table (GPU kernels by device time; on CPU, the ops by CPU time);
3. prints the autotuner's chosen config per tuning key of every ``triton.autotune`` kernel in
   ``triton_kernels``, and registers / spills / shared memory of the compiled kernels;
4. prints the exact ``ncu`` command line that profiles one of our kernels for this case.

On a CPU the fallback runs instead of the Triton kernels: the trace and op table still come out,
and the report says what needs a GPU. ``--ncu-run`` is the mode the printed ``ncu`` command uses:
warm up (autotuning included) outside, then run ours once inside the NVTX range ``ncu:ours``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .measure import profile_calls as case_calls
from .options import DIRECTIONS, DTYPES, RunOptions
from .providers import PROVIDERS, ours_backend
from .suites import SUITES, Suite

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
NVTX_RANGE = "ncu:ours"


# --- finding the case ------------------------------------------------------------------------
def find_case(suite: Suite, name: str, options: RunOptions) -> dict[str, Any]:
    """The case called ``name`` (exact, else the one case whose name contains it)."""
    cases = suite.cases(options, every_layer=True)  # any layer, also at --quick size
    exact = [c for c in cases if c["name"] == name]
    if exact:
        return exact[0]
    partial = [c for c in cases if name in c["name"]]
    if len(partial) == 1:
        return partial[0]
    names = ", ".join(c["name"] for c in (partial or cases))
    what = "matches several cases" if partial else "matches no case"
    raise SystemExit(f"{suite.name}: {name!r} {what}; choose one of: {names}")


# --- profiler --------------------------------------------------------------------------------
def _activities(gpu: bool) -> list[torch.profiler.ProfilerActivity]:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if gpu:
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return acts


def _sync(gpu: bool) -> None:
    if gpu:
        torch.cuda.synchronize()


def profile_calls(
    calls: dict[str, Callable[[], Any]], gpu: bool, iters: int, label: str
) -> torch.profiler.profile:
    """Profile ``iters`` rounds of every call, each round of each provider in its own range."""
    with torch.profiler.profile(activities=_activities(gpu), record_shapes=True) as prof:
        for i in range(iters):
            for name, call in calls.items():
                with torch.profiler.record_function(f"{name}:{label}#{i}"):
                    call()
            _sync(gpu)
    return prof


def kernel_rows(prof: torch.profiler.profile, gpu: bool) -> list[dict[str, Any]]:
    """GPU kernels (device type CUDA) by total device time; on CPU, ops by self CPU time."""
    rows = []
    for e in prof.key_averages():
        if gpu:
            if e.device_type != torch.autograd.DeviceType.CUDA:
                continue
            total = getattr(e, "self_device_time_total", 0) or getattr(e, "device_time_total", 0)
        else:
            if getattr(e, "is_user_annotation", False) or e.key.startswith(("ProfilerStep",)):
                continue
            total = e.self_cpu_time_total
        if total > 0:
            rows.append(
                {
                    "name": e.key,
                    "count": e.count,
                    "total_us": total,
                    "avg_us": total / max(e.count, 1),
                }
            )
    rows.sort(key=lambda r: -r["total_us"])
    return rows


def print_kernel_table(
    provider: str, rows: list[dict[str, Any]], gpu: bool, limit: int = 15
) -> None:
    what = "GPU kernels, by device time" if gpu else "CPU ops, by self CPU time (no GPU here)"
    print(f"\n{provider}: {what}")
    print(f"  {'name':<70} {'calls':>6} {'total us':>11} {'avg us':>10}")
    for r in rows[:limit]:
        name = r["name"] if len(r["name"]) <= 70 else r["name"][:67] + "..."
        print(f"  {name:<70} {r['count']:>6} {r['total_us']:>11.1f} {r['avg_us']:>10.1f}")
    if not rows:
        print("  (nothing recorded)")


# --- autotuner choices and compiled-kernel resources ----------------------------------------
def triton_objects() -> tuple[list[tuple[str, Any]], str | None]:
    """``(qualified name, object)`` for every autotuned or jitted kernel in ``triton_kernels``.

    Returns the objects and, when the package or one of its modules cannot be imported, why.
    """
    try:
        from triton.runtime.autotuner import Autotuner
        from triton.runtime.jit import JITFunction, KernelInterface

        import triton_kernels
        from triton_kernels._tuning import Tuner
    except Exception as e:
        return [], f"triton_kernels cannot be imported: {type(e).__name__}: {e}"
    found: list[tuple[str, Any]] = []
    problems = []
    for m in pkgutil.iter_modules(triton_kernels.__path__):
        modname = f"triton_kernels.{m.name}"
        try:
            mod = importlib.import_module(modname)
        except Exception as e:
            problems.append(f"{modname}: {type(e).__name__}: {e}")
            continue
        for attr, obj in vars(mod).items():
            # a kernel's tuners: one, or one per variant in a dict
            for tuner in _tuners(obj, Tuner):
                if _origin(tuner) == modname:
                    found.append((f"{modname}.{tuner.name}", tuner))
            # listed where defined, not where imported
            if (
                isinstance(obj, (Autotuner, JITFunction, KernelInterface))
                and _origin(obj) == modname
            ):
                found.append((f"{modname}.{attr}", obj))
    return found, ("; ".join(problems) or None)


def _tuners(obj: Any, tuner_type: type) -> list[Any]:
    """The :class:`triton_kernels._tuning.Tuner` objects ``obj`` is or holds (as dict values)."""
    if isinstance(obj, tuner_type):
        return [obj]
    if isinstance(obj, dict):
        return [v for v in obj.values() if isinstance(v, tuner_type)]
    return []


def _origin(obj: Any) -> str | None:
    """The module defining a (possibly tuned, autotuned or interpreted) kernel."""
    obj = _jit_fn(obj)
    while hasattr(obj, "fn"):
        obj = obj.fn
    return getattr(obj, "__module__", None)


def autotune_choices(objects: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Every autotuning decision: kernel, tuning key (argument → value), chosen config.

    The autotuner caches one config per key; with a single config (as under the interpreter)
    it caches nothing and only ``best_config``, the config of its last launch, is known.
    """
    from triton.runtime.autotuner import Autotuner

    rows = []
    for name, obj in objects:
        chosen = getattr(obj, "_chosen", None)  # our Tuner: one config per (device, key)
        if isinstance(chosen, dict):
            for (device, key), config in list(chosen.items()):
                rows.append(
                    {
                        "kernel": name,
                        "key": {"key": key},
                        "dtypes": [str(device)],
                        "config": str(config),
                    }
                )
            continue
        if not isinstance(obj, Autotuner):
            continue
        keys = list(getattr(obj, "keys", []) or [])
        cache = getattr(obj, "cache", {}) or {}
        for key, config in cache.items():
            key = tuple(key) if isinstance(key, tuple) else (key,)
            named = dict(zip(keys, key))
            extra = [str(k) for k in key[len(keys) :]]  # dtypes of the arguments
            rows.append({"kernel": name, "key": named, "dtypes": extra, "config": str(config)})
        best = getattr(obj, "best_config", None)
        if best is not None and not cache:
            rows.append(
                {
                    "kernel": name,
                    "key": {"last launch": "(single config, not cached)"},
                    "dtypes": [],
                    "config": str(best),
                }
            )
    return rows


def _jit_fn(obj: Any) -> Any:
    if hasattr(obj, "_chosen"):  # our Tuner
        obj = obj.kernel
    while hasattr(obj, "fn") and not hasattr(obj, "device_caches"):
        obj = obj.fn
    return obj


def compiled_kernels(objects: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Registers, spills, shared memory, warps and stages of every compiled kernel variant."""
    rows = []
    for name, obj in objects:
        fn = _jit_fn(obj)
        caches = getattr(fn, "device_caches", None)
        if not caches:
            continue
        for device, entry in list(caches.items()):
            kernel_cache = entry[0] if isinstance(entry, tuple) else entry
            for kernel in list(getattr(kernel_cache, "values", lambda: [])()):
                kernel = kernel.result() if hasattr(kernel, "result") else kernel
                rows.append(_kernel_resources(name, device, kernel))
    return rows


def _kernel_resources(name: str, device: Any, kernel: Any) -> dict[str, Any]:
    meta = getattr(kernel, "metadata", None)
    if getattr(kernel, "n_regs", None) is None and hasattr(kernel, "_init_handles"):
        with contextlib.suppress(Exception):  # registers/spills are known once the binary loads
            kernel._init_handles()
    return {
        "kernel": name,
        "name": getattr(kernel, "name", None) or getattr(meta, "name", None),
        "device": device,
        "n_regs": getattr(kernel, "n_regs", None),
        "n_spills": getattr(kernel, "n_spills", None),
        "shared": getattr(meta, "shared", None),
        "num_warps": getattr(meta, "num_warps", None),
        "num_stages": getattr(meta, "num_stages", None),
    }


def print_triton_report(gpu: bool) -> list[dict[str, Any]]:
    """Print the autotuner choices and compiled-kernel resources; return the kernel rows."""
    objects, problem = triton_objects()
    print("\nautotuner: chosen config per tuning key")
    if problem:
        print(f"  note: {problem}")
    choices = autotune_choices(objects) if objects else []
    for c in choices:
        key = ", ".join(f"{k}={v}" for k, v in c["key"].items())
        print(f"  {c['kernel']} [{key}] {' '.join(c['dtypes'])}\n      -> {c['config']}")
    if not choices:
        print(
            "  (no autotuned kernel ran in this process"
            + (": ours ran the CPU fallback, the Triton kernels run on a GPU)" if not gpu else ")")
        )
    kernels = compiled_kernels(objects) if objects else []
    print("\ncompiled kernels: registers / spills / shared memory")
    print(f"  {'kernel':<56} {'regs':>5} {'spills':>6} {'shared B':>9} {'warps':>5} {'stages':>6}")
    for k in kernels:
        print(
            f"  {k['name'] or k['kernel']:<56} {_s(k['n_regs']):>5} {_s(k['n_spills']):>6} "
            f"{_s(k['shared']):>9} {_s(k['num_warps']):>5} {_s(k['num_stages']):>6}"
        )
    if not kernels:
        print(
            "  (no compiled kernel: "
            + (
                "none was launched)"
                if gpu
                else "Triton compiles for a GPU; on a CPU the fallback runs, so registers, spills and "
                "shared memory cannot be shown)"
            )
        )
    return kernels


def _s(v: Any) -> str:
    return "?" if v is None else str(v)


# --- ncu -------------------------------------------------------------------------------------
def ncu_command(args: argparse.Namespace, kernel: str | None, out_dir: Path) -> str:
    """The ``ncu`` command that profiles one of our kernels of this case, after warm-up."""
    stem = f"{args.suite}-{args.case}-{args.dtype}-{args.direction}".replace("/", "_")
    cmd = ["ncu", "--target-processes", "all", "--nvtx", "--nvtx-include", f"{NVTX_RANGE}/"]
    if kernel:
        cmd += ["--kernel-name-base", "function", "--kernel-name", f"regex:^{kernel}"]
    cmd += [
        "--launch-count",
        "1",
        "--set",
        "full",
        "--import-source",
        "yes",
        "-f",
        "-o",
        str(out_dir / stem),
        sys.executable,
        "-m",
        "benchmarks.profile",
        args.suite,
        args.case,
        "--dtype",
        args.dtype,
        "--direction",
        args.direction,
        "--device",
        "cuda",
        "--ncu-run",
    ]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    return shlex.join(cmd)


def ncu_run(calls: dict[str, Callable[[], Any]]) -> None:
    """Warm up ours (compilation, autotuning), then run it once inside the NVTX range."""
    call = calls["ours"]
    call()
    torch.cuda.synchronize()
    with torch.cuda.nvtx.range(NVTX_RANGE):
        call()
        torch.cuda.synchronize()


# --- entry point -----------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.profile",
        description="Profile one benchmark case (trace, kernels, ncu).",
    )
    p.add_argument("suite", choices=list(SUITES))
    p.add_argument(
        "case", help="case name (or a unique part of it); see python -m benchmarks --list"
    )
    p.add_argument(
        "--dtype", default=None, choices=list(DTYPES), help="default: bf16 on GPU, fp32 on CPU"
    )
    p.add_argument("--direction", default="both", choices=list(DIRECTIONS))
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument(
        "--providers",
        nargs="+",
        default=None,
        choices=list(PROVIDERS),
        help="default: torch and ours (plus torch_cl and ours_cl on GPU)",
    )
    p.add_argument("--iters", type=int, default=3, help="profiled rounds per provider")
    p.add_argument("--batch", type=int, default=None, help="batch size instead of the default")
    p.add_argument("--quick", action="store_true", help="the --quick (tiny) size of the case")
    p.add_argument("--out", type=Path, default=PROFILES_DIR, help="where the trace goes")
    p.add_argument(
        "--backend",
        default=None,
        choices=["auto", "triton", "torch"],
        help="torchconv_ext backend for ours (default: triton on GPU, torch on CPU; "
        "triton on CPU runs the kernels in Triton's interpreter: slow, minutes "
        "even at --quick sizes)",
    )
    p.add_argument(
        "--ncu-run",
        action="store_true",
        help="no profiler: warm up, then run ours once in an NVTX range (for ncu)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        parser().error("--device cuda: no CUDA device is available")
    if args.ncu_run and not gpu:
        parser().error("--ncu-run profiles GPU kernels under ncu: it needs a CUDA device")
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    backend = args.backend or ours_backend(device)
    if backend == "triton" and not gpu:
        # read when the kernels are decorated: before anything imports triton_kernels
        os.environ.setdefault("TRITON_INTERPRET", "1")
    suite = SUITES[args.suite]
    reason = suite.unavailable()
    if reason:
        print(f"{args.suite}: not available: {reason}")
        return 2
    providers = args.providers or (
        ["torch", "torch_cl", "ours", "ours_cl"] if gpu else ["torch", "ours"]
    )
    if args.ncu_run:
        providers = ["ours"]
    options = RunOptions(
        device=device,
        quick=args.quick,
        providers=providers,
        batch=args.batch,
        directions=(args.direction,),
    )
    case = find_case(suite, args.case, options)
    args.case = case["name"]
    if gpu:
        torch.backends.cudnn.benchmark = True

    import torchconv_ext

    with torchconv_ext.use_backend(backend):
        calls = case_calls(case, args.dtype, options, providers=providers, direction=args.direction)
        if args.ncu_run:
            ncu_run(calls)
            return 0
        print(
            f"{args.suite} / {args.case} ({case.get('shape', '')}), {args.dtype}, "
            f"{args.direction}, {device}; ours = torchconv_ext backend {backend!r}"
        )
        if not gpu and backend != "triton":
            print(
                "CPU run: ours is the torch fallback. GPU kernel times, the autotuner's choices, "
                "registers/spills/shared memory and ncu need a CUDA GPU; shown: the trace and "
                "the CPU op tables."
            )
        for call in calls.values():  # warm-up: compilation, autotuning, cudnn's algorithm search
            call()
        _sync(gpu)
        label = f"{args.case}.{args.direction}"
        tables = {}
        for name, call in calls.items():
            prof = profile_calls({name: call}, gpu, args.iters, label)
            tables[name] = kernel_rows(prof, gpu)
            print_kernel_table(name, tables[name], gpu)
        prof = profile_calls(calls, gpu, args.iters, label)
    args.out.mkdir(parents=True, exist_ok=True)
    trace = args.out / f"{args.suite}-{args.case}-{args.dtype}-{args.direction}.trace.json"
    prof.export_chrome_trace(str(trace))
    print(f"\ntrace: {trace} (open in https://ui.perfetto.dev or chrome://tracing)")

    kernels = print_triton_report(gpu)
    ours_rows = tables.get("ours") or []
    ours_names = {k["name"] for k in kernels if k.get("name")}
    heaviest = next((r["name"] for r in ours_rows if r["name"] in ours_names), None)
    heaviest = heaviest or (ours_rows[0]["name"] if gpu and ours_rows else None)
    print(
        "\nncu: profile one of our kernels for this case (after warm-up, inside the NVTX range "
        f"{NVTX_RANGE!r}):"
    )
    print("  " + ncu_command(args, heaviest, args.out))
    if not heaviest:
        print(
            "  (which kernel runs is known from a GPU run's kernel table; without "
            "--kernel-name, ncu takes the first kernel ours launches in the range)"
        )
    if not gpu:
        print("  ncu needs an NVIDIA GPU: run this command on a CUDA machine.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
