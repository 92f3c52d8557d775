"""Runs suites: measures the device peaks, checks and times each case, writes result files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import suites as suite_registry
from .options import RunOptions
from .providers import label, ours_backend
from .report import sanity_note
from .results import environment, finalize, summarize, write
from .suites import Suite
from .timing import measure_peak


def _ms(r: dict[str, Any] | None) -> str:
    if r and r.get("status", "ok") == "ok" and r.get("ms"):
        return f"{r['ms']:.3f}"
    return (r or {}).get("status") or "-"


def format_record(rec: dict[str, Any], sanity: bool = False) -> str:
    """One console line: case, direction, status, times, our throughput and the speedup
    (``torch/ours`` in a sanity check, where it is no speedup)."""
    provs = rec.get("providers", {})
    times = " ".join(f"{p}={_ms(r)}" for p, r in provs.items())
    best = min(
        (r for p, r in provs.items() if p.startswith("ours") and r.get("ms")),
        key=lambda r: r["ms"],
        default=None,
    )
    thru = ""
    if best and best.get("tflops"):
        thru = f" {best['tflops']:.3g} TFLOP/s"
    elif best and best.get("gbps"):
        thru = f" {best['gbps']:.3g} GB/s"
    ratio = "torch/ours" if sanity else "speedup"
    sp = f" {ratio} {rec['speedup']:.2f}x" if rec.get("speedup") else ""
    if best and best.get("graph_ms"):
        thru += f" (graph {best['graph_ms']:.3f} ms, host {best['host_overhead_us']:.1f} us/call)"
    note = ""
    if rec["status"] != "ok":
        note = " " + ((rec.get("check") or {}).get("message") or rec.get("error") or "")
    return f"  {rec['name']:<36} {rec['direction']:<4} {rec['status']:<8} {times}{thru}{sp}{note}"


def sanity_banner(options: RunOptions, env: dict[str, Any]) -> str | None:
    """The line that tells a reader a run is a sanity check (CPU, ``--quick``), or ``None``."""
    note = sanity_note(
        {"quick": options.quick, "ours_backend": ours_backend(options.device), **env}
    )
    return f"SANITY CHECK, NOT A MEASUREMENT: {note}" if note else None


def start(options: RunOptions, log: Callable[[str], None]) -> tuple[dict, dict]:
    """Set up the device, log where the run happens, measure the peaks: ``(env, peak)``."""
    if options.gpu:
        torch.backends.cudnn.benchmark = True
    env = environment(options.device)
    log(
        f"device {env['device_name']} ({env['device']}), torch {env['torch']}, triton "
        f"{env['triton']}, cuda {env['cuda']}, driver {env['driver']}, git {env['git_sha'][:12]}"
    )
    banner = sanity_banner(options, env)
    if banner:
        log(banner)
    peak = measure_peak(options.device, quick=options.quick).to_dict()
    log(
        f"measured peak: {peak['matmul_tflops']:.4g} TFLOP/s ({peak['matmul_dtype']} matmul), "
        f"{peak['copy_gbps']:.4g} GB/s (copy, read + write)"
    )
    return env, peak


def make_doc(
    suite: Suite,
    dtype: str,
    options: RunOptions,
    env: dict[str, Any],
    peak: dict[str, Any],
    records: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """The result document of one (suite, dtype) (see ``results.py``)."""
    return {
        "suite": suite.name,
        "description": suite.description,
        "dtype": dtype,
        "quick": options.quick,
        **env,
        "timer": suite.timer(options),
        "batch_policy": suite.batch_policy(options),
        "ours_backend": ours_backend(options.device),
        "peak": peak,
        "compile_mode": options.compile_mode,
        "providers": [
            {"name": p, "label": label(p, options.compile_mode)} for p in options.providers
        ],
        "directions": list(options.directions),
        **extra,
        "records": records,
        "summary": summarize(records),
    }


def write_doc(
    doc: dict[str, Any],
    out_root: Path,
    *,
    report: bool,
    plots: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Write a document's JSON and CSV and, with ``report``, its table (and ``plots``)."""
    paths = write(doc, out_root)
    if report:
        from .report import write_report

        write_report(doc, paths, log=log, plots=plots)
    return paths


def summary_line(doc: dict[str, Any]) -> str:
    """``[conv bf16] geomean speedup fwd 1.02x, …`` (``torch/ours`` in a sanity check)."""
    g = doc["summary"]["geomean_speedup"]
    ratio = "torch/ours (sanity check)" if sanity_note(doc) else "speedup"
    return f"[{doc['suite']} {doc['dtype']}] geomean {ratio} " + ", ".join(
        f"{d} {v:.3f}x" for d, v in g.items() if v
    )


def run(
    suite_names: Sequence[str],
    dtypes: Sequence[str],
    options: RunOptions,
    out_root: Path,
    *,
    report: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, Path]]:
    """Run ``suite_names`` in each of ``dtypes``; return the paths written per (suite, dtype)."""
    import torchconv_ext

    env, peak = start(options, log)
    sanity = sanity_banner(options, env) is not None
    written: list[dict[str, Path]] = []
    with torchconv_ext.use_backend(ours_backend(options.device)):
        for name in suite_names:
            suite = suite_registry.get(name)
            reason = suite.unavailable()
            if reason:
                log(f"[{name}] not available: {reason}")
                continue
            cases = suite.cases(options)
            for dtype in dtypes:
                log(f"[{name} {dtype}] {len(cases)} cases")
                records = []
                for case in cases:
                    for rec in suite.run_case(case, dtype, options):
                        records.append(finalize(rec, peak))
                        log(format_record(rec, sanity))
                doc = make_doc(suite, dtype, options, env, peak, records)
                paths = write_doc(doc, out_root, report=report, log=log)
                log(f"{summary_line(doc)} -> {paths['json']}")
                written.append(paths)
    if report and written:
        from .report import write_index

        write_index(out_root)
    return written
