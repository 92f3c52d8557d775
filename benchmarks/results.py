"""Result files: the run's environment, derived figures, JSON and CSV writers.

A result document (``<out>/<device>/<suite>-<dtype>.json``) holds the environment (device name,
CUDA/driver, torch, triton, git SHA, date), the device peaks measured in the run, and one record
per (case, direction) with each provider's timing. The CSV has one row per provider timing, each
row repeating the environment so that a row read alone still says where it came from.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import platform
import re
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from .options import ALL_DIRECTIONS
from .providers import is_baseline, is_ours

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Keys every result document carries at its top level.
REQUIRED_KEYS: tuple[str, ...] = (
    "suite",
    "dtype",
    "device",
    "device_name",
    "torch",
    "triton",
    "cuda",
    "driver",
    "git_sha",
    "date",
    "timer",
    "batch_policy",
    "quick",
    "peak",
    "providers",
    "records",
    "summary",
)

CSV_FIELDS: tuple[str, ...] = (
    "suite",
    "dtype",
    "name",
    "net",
    "layer",
    "direction",
    "shape",
    "full_shape",
    "status",
    "provider",
    "provider_status",
    "ms",
    "p20_ms",
    "p80_ms",
    "tflops",
    "gbps",
    "pct_peak_flops",
    "pct_peak_bw",
    "peak_mem_mb",
    "ratio",
    "speedup",
    "flops",
    "bytes",
    "check",
    "device",
    "device_name",
    "cuda",
    "driver",
    "torch",
    "triton",
    "git_sha",
    "date",
    "quick",
)


def git_sha() -> str:
    """``git rev-parse HEAD`` of the repository, or ``"unknown"``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", sha) else "unknown"


def git_dirty() -> bool | None:
    """Whether the working tree differs from ``HEAD`` (the SHA then does not pin the code).

    Result files and profiler traces (``benchmarks/results``, ``benchmarks/profiles``) do not
    count: a run writing its own output does not make the code it measured dirty.
    """
    outputs = [":(exclude)benchmarks/results", ":(exclude)benchmarks/profiles"]
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", *outputs],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (
        out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    )


def slug(text: str) -> str:
    """A folder name: lower case, runs of other characters as one dash."""
    text = re.sub(r"\((r|tm)\)", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def environment(device: str) -> dict[str, Any]:
    """Where and with what the run happens: device, drivers, library versions, commit, date."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    import torchconv_ext

    env: dict[str, Any] = {
        "torch": torch.__version__,
        "triton": triton_version,
        "torchconv_ext": torchconv_ext.__version__,
        "python": platform.python_version(),
        "git_sha": git_sha(),
        "git_dirty": git_dirty(),
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "cuda": torch.version.cuda if device.startswith("cuda") else None,
        "driver": None,
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        env.update(
            device_name=props.name,
            driver=_driver_version(),
            cudnn=torch.backends.cudnn.version(),
            device_info={
                "capability": f"{props.major}.{props.minor}",
                "sm_count": props.multi_processor_count,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "l2_bytes": getattr(props, "L2_cache_size", None),
            },
            tf32={
                "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            },
            cudnn_benchmark=torch.backends.cudnn.benchmark,
        )
    else:
        env.update(
            device_name=_cpu_name(),
            device_info={"cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        )
    env["device"] = (
        slug(env["device_name"]) if device.startswith("cuda") else "cpu-" + slug(env["device_name"])
    )
    return env


def finalize(record: dict[str, Any], peak: dict[str, Any] | None) -> dict[str, Any]:
    """Add throughput, % of peak, ratios to ours and the headline speedup to a record.

    ``ratio[p] = time(p) / time(ours)`` (above 1: ours is faster), where ours is our fastest
    provider; ``speedup`` is the same against the fastest eager torch provider.
    """
    providers = record.setdefault("providers", {})
    flops, nbytes = record.get("flops"), record.get("bytes")
    for r in providers.values():
        ms = r.get("ms") if r.get("status", "ok") == "ok" else None
        if not ms or ms <= 0:
            continue
        if flops:
            r["tflops"] = flops / (ms * 1e-3) / 1e12
            if peak and peak.get("matmul_tflops"):
                r["pct_peak_flops"] = 100 * r["tflops"] / peak["matmul_tflops"]
        if nbytes:
            r["gbps"] = nbytes / (ms * 1e-3) / 1e9
            if peak and peak.get("copy_gbps"):
                r["pct_peak_bw"] = 100 * r["gbps"] / peak["copy_gbps"]
    timed = {
        p: r["ms"] for p, r in providers.items() if r.get("status", "ok") == "ok" and r.get("ms")
    }
    ours = min((ms for p, ms in timed.items() if is_ours(p)), default=None)
    base = min((ms for p, ms in timed.items() if is_baseline(p)), default=None)
    record["ratio"] = {p: ms / ours for p, ms in timed.items() if ours and not is_ours(p)}
    record["speedup"] = base / ours if ours and base else None
    return record


def geomean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else None


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts by status and the geometric-mean speedup per direction and overall."""
    status: dict[str, int] = {}
    for r in records:
        status[r["status"]] = status.get(r["status"], 0) + 1
    ok = [r for r in records if r["status"] == "ok" and r.get("speedup")]
    seen = {r["direction"] for r in ok}
    directions = [d for d in ALL_DIRECTIONS if d in seen] + sorted(seen - set(ALL_DIRECTIONS))
    return {
        "status_counts": status,
        "geomean_speedup": {
            **{d: geomean(r["speedup"] for r in ok if r["direction"] == d) for d in directions},
            "all": geomean(r["speedup"] for r in ok),
        },
    }


def with_ending(stem: Path, ending: str) -> Path:
    """``stem`` + ``ending``: a stem's dots are part of its name (``overhead-torch-2.11``), where
    ``Path.with_suffix`` would replace what follows the last one."""
    return stem.with_name(stem.name + ending)


def paths(out_root: Path, device: str, suite: str, dtype: str, quick: bool) -> dict[str, Path]:
    """Where a suite's files go: ``<out>/<device>[/quick]/<suite>-<dtype>.*``."""
    folder = Path(out_root) / device / ("quick" if quick else "")
    stem = folder / f"{suite}-{dtype}"
    return {
        "json": with_ending(stem, ".json"),
        "csv": with_ending(stem, ".csv"),
        "md": with_ending(stem, ".md"),
        "speedup_png": folder / f"{suite}-{dtype}-speedup.png",
        "roofline_png": folder / f"{suite}-{dtype}-roofline.png",
    }


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict):
        return v.get("status", json.dumps(v))
    return "" if v is None else v


def csv_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (record, provider); records without timings get one row of their own."""
    meta = {
        k: doc.get(k)
        for k in (
            "suite",
            "dtype",
            "device",
            "device_name",
            "cuda",
            "driver",
            "torch",
            "triton",
            "git_sha",
            "date",
            "quick",
        )
    }
    rows = []
    for rec in doc["records"]:
        base = {
            **meta,
            **{
                k: rec.get(k)
                for k in (
                    "name",
                    "net",
                    "layer",
                    "direction",
                    "shape",
                    "full_shape",
                    "status",
                    "speedup",
                    "flops",
                    "bytes",
                    "check",
                )
            },
        }
        provs = rec.get("providers") or {"": {"status": "not timed"}}
        for p, r in provs.items():
            rows.append(
                {
                    **base,
                    "provider": p,
                    "provider_status": r.get("status", "ok"),
                    **{
                        k: r.get(k)
                        for k in (
                            "ms",
                            "p20_ms",
                            "p80_ms",
                            "tflops",
                            "gbps",
                            "pct_peak_flops",
                            "pct_peak_bw",
                            "peak_mem_mb",
                        )
                    },
                    "ratio": rec.get("ratio", {}).get(p),
                }
            )
    return rows


def write(doc: dict[str, Any], out_root: Path) -> dict[str, Path]:
    """Write a document's JSON and CSV; return all of its paths (Markdown and plots to come)."""
    p = paths(out_root, doc["device"], doc["suite"], doc["dtype"], doc["quick"])
    p["json"].parent.mkdir(parents=True, exist_ok=True)
    p["json"].write_text(json.dumps(doc, indent=1, default=str) + "\n")
    with p["csv"].open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for row in csv_rows(doc):
            w.writerow({k: _fmt(row.get(k)) for k in CSV_FIELDS})
    return p


def write_tool(
    out_root: Path, tool: str, tag: str | None, doc: dict, text: str, device: str = "cpu"
) -> Path:
    """Write a tool's document as ``OUT/<device>/<tool>[-<tag>].{json,md}`` (``<device>``: the
    CPU's or GPU's name); return the path without its suffix."""
    stem = Path(out_root) / environment(device)["device"] / (tool + (f"-{tag}" if tag else ""))
    stem.parent.mkdir(parents=True, exist_ok=True)
    with_ending(stem, ".json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    with_ending(stem, ".md").write_text(text)
    return stem


def load(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
