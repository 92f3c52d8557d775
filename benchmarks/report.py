"""Tables and plots from result files: a Markdown table per (suite, dtype), a speedup chart, a
roofline (achieved vs the device peaks measured in the same run) and an index of the latest
tables. ``python -m benchmarks.report [DIR]`` regenerates them from the JSON files under DIR.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .providers import is_baseline, is_ours
from .results import REQUIRED_KEYS, RESULTS_DIR, load, paths

DIRECTION_COLORS = {"fwd": "tab:blue", "bwd": "tab:orange", "both": "tab:green"}


def is_result(doc: object) -> bool:
    """Whether a JSON document is a result file of this harness (others may share the folder)."""
    return isinstance(doc, dict) and all(k in doc for k in REQUIRED_KEYS)


def _num(v: float | None, fmt: str = ".3g") -> str:
    return "–" if v is None else format(v, fmt)


def _best(rec: dict[str, Any], pick: Callable[[str], bool]) -> dict[str, Any] | None:
    timed = [
        r
        for p, r in rec.get("providers", {}).items()
        if pick(p) and r.get("status", "ok") == "ok" and r.get("ms")
    ]
    return min(timed, key=lambda r: r["ms"], default=None)


def _provider_names(doc: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for rec in doc["records"]:
        names += [p for p in rec.get("providers", {}) if p not in names]
    return names


def markdown(doc: dict[str, Any]) -> str:
    """The Markdown table of one result document, with its environment and summary."""
    provs = _provider_names(doc)
    has_flops = any(r.get("flops") for r in doc["records"])
    g = doc["summary"]["geomean_speedup"]
    peak = doc.get("peak") or {}
    lines = [
        f"# {doc['suite']} · {doc['dtype']} · {doc['device_name']}",
        "",
        f"- device `{doc['device']}`; CUDA {doc.get('cuda') or '–'}, driver "
        f"{doc.get('driver') or '–'}; torch {doc['torch']}, triton {doc.get('triton') or '–'}",
        f"- commit `{doc['git_sha']}`"
        + (" + local changes" if doc.get("git_dirty") else "")
        + f", {doc['date']}"
        + (" — **--quick smoke run: times mean nothing**" if doc.get("quick") else ""),
        f"- timer: {doc['timer']}",
        f"- sizes: {doc['batch_policy']}",
        f"- ours = torchconv_ext backend `{doc.get('ours_backend', '?')}`",
        f"- peak measured in this run: {_num(peak.get('matmul_tflops'), '.4g')} TFLOP/s "
        f"({peak.get('matmul_dtype')} matmul), {_num(peak.get('copy_gbps'), '.4g')} GB/s (copy)",
        "- **speedup** = time of the fastest eager torch provider / time of our fastest provider "
        "(above 1: ours is faster)",
        "",
        "Geometric-mean speedup: "
        + (", ".join(f"{d} **{v:.3f}×**" for d, v in g.items() if v) or "–"),
        "",
    ]
    tput = ["ours TFLOP/s", "% peak"] if has_flops else ["ours GB/s", "% copy BW"]
    head = ["layer", "dir", "shape", *(f"{p} ms" for p in provs), *tput, "speedup", "check"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in doc["records"]:
        provd = rec.get("providers", {})
        ours = _best(rec, is_ours) or {}
        if has_flops:
            t = [_num(ours.get("tflops")), _num(ours.get("pct_peak_flops"), ".1f")]
        else:
            t = [_num(ours.get("gbps")), _num(ours.get("pct_peak_bw"), ".1f")]
        check = rec["status"]
        if rec["status"] != "ok":
            check += ": " + ((rec.get("check") or {}).get("message") or rec.get("error") or "")
        cells = [
            f"`{rec['name']}`",
            rec["direction"],
            rec.get("shape") or "",
            *(_cell(provd.get(p)) for p in provs),
            *t,
            f"**{rec['speedup']:.2f}×**" if rec.get("speedup") else "–",
            check.replace("|", "/"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def _cell(r: dict[str, Any] | None) -> str:
    if not r:
        return "–"
    if r.get("status", "ok") != "ok" or not r.get("ms"):
        return r.get("status", "error")
    return f"{r['ms']:.4g}"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_speedup(doc: dict[str, Any], path: Path) -> None:
    """Horizontal bars: speedup over eager torch per layer and direction (log scale)."""
    plt = _pyplot()
    recs = [r for r in doc["records"] if r.get("speedup")]
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.22 * max(1, len(recs))))
    labels = [f"{r['name']} {r['direction']}" for r in recs]
    ax.barh(
        range(len(recs)),
        [r["speedup"] for r in recs],
        color=[DIRECTION_COLORS.get(r["direction"], "gray") for r in recs],
    )
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(range(len(recs)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup over torch (time torch / time ours; > 1 is faster)")
    ax.set_title(f"{doc['suite']} {doc['dtype']} on {doc['device_name']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roofline(doc: dict[str, Any], path: Path) -> None:
    """Roofline of achieved throughput vs the measured matmul and copy peaks.

    With FLOP counts: TFLOP/s against arithmetic intensity (FLOP/byte) under the two ceilings.
    Memory-bound suites without FLOPs: GB/s per case against the measured copy bandwidth.
    """
    plt = _pyplot()
    peak = doc.get("peak") or {}
    recs = [r for r in doc["records"] if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(7, 5))
    if any(r.get("flops") for r in recs):
        pts = {"ours": is_ours, "torch": is_baseline}
        ai_all = [r["flops"] / r["bytes"] for r in recs if r.get("flops") and r.get("bytes")]
        for label, pick in pts.items():
            xs, ys = [], []
            for r in recs:
                best = _best(r, pick)
                if best and best.get("tflops") and r.get("bytes"):
                    xs.append(r["flops"] / r["bytes"])
                    ys.append(best["tflops"])
            ax.scatter(xs, ys, label=label, marker="o" if label == "ours" else "x", s=18)
        if ai_all and peak.get("matmul_tflops") and peak.get("copy_gbps"):
            lo, hi = min(ai_all) / 2, max(ai_all) * 2
            xs = [lo * (hi / lo) ** (i / 100) for i in range(101)]
            ax.plot(
                xs,
                [min(peak["matmul_tflops"], x * peak["copy_gbps"] / 1e3) for x in xs],
                color="black",
                linewidth=1,
                label=f"roof: {peak['matmul_tflops']:.3g} TFLOP/s {peak['matmul_dtype']} "
                f"matmul, {peak['copy_gbps']:.3g} GB/s copy",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP / byte)")
        ax.set_ylabel("TFLOP/s")
    else:
        xs = list(range(len(recs)))
        for label, pick, m in (("ours", is_ours, "o"), ("torch", is_baseline, "x")):
            ys = [(_best(r, pick) or {}).get("gbps") or math.nan for r in recs]
            ax.scatter(xs, ys, label=label, marker=m, s=18)
        if peak.get("copy_gbps"):
            ax.axhline(
                peak["copy_gbps"],
                color="black",
                linewidth=1,
                label=f"copy {peak['copy_gbps']:.3g} GB/s",
            )
        ax.set_xticks(xs, [f"{r['name']} {r['direction']}" for r in recs], rotation=90, fontsize=6)
        ax.set_ylabel("GB/s (bytes read + written)")
    ax.legend(fontsize=7)
    ax.set_title(f"{doc['suite']} {doc['dtype']} on {doc['device_name']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    doc: dict[str, Any], out: dict[str, Path] | None = None, *, log: Callable[[str], None] = print
) -> dict[str, Path]:
    """Write the Markdown table and, when matplotlib is installed, the two plots."""
    out = out or paths(RESULTS_DIR, doc["device"], doc["suite"], doc["dtype"], doc["quick"])
    out["md"].parent.mkdir(parents=True, exist_ok=True)
    text = markdown(doc)
    try:
        plot_speedup(doc, out["speedup_png"])
        plot_roofline(doc, out["roofline_png"])
        text += (
            f"\n![speedup]({out['speedup_png'].name})\n\n![roofline]({out['roofline_png'].name})\n"
        )
    except ImportError:
        log("matplotlib is not installed (pip install -e .[bench]): tables only, no plots")
    out["md"].write_text(text)
    return out


def write_index(root: Path = RESULTS_DIR) -> Path:
    """``<root>/README.md``: every device's latest tables with their geometric-mean speedups."""
    root = Path(root)
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python -m benchmarks` (see `benchmarks/README.md`). Speedup = time of the "
        "fastest eager torch provider / time of ours, geometric mean over a suite's cases "
        "(above 1: ours is faster). CPU results compare the CPU fallback with torch: sanity only. "
        "A commit marked + had local changes when the run was made.",
        "",
        "| device | suite | dtype | fwd | bwd | both | all | cases ok | commit | date |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for js in sorted(root.glob("*/*.json")):
        try:
            doc = load(js)
        except (OSError, ValueError):
            continue
        if not is_result(doc):
            continue
        g = doc["summary"]["geomean_speedup"]
        counts = doc["summary"].get("status_counts", {})
        rel = js.with_suffix(".md").relative_to(root).as_posix()
        lines.append(
            f"| {doc['device_name']} | [{doc['suite']}]({rel}) | {doc['dtype']} | "
            + " | ".join(_num(g.get(d), ".3f") for d in ("fwd", "bwd", "both", "all"))
            + f" | {counts.get('ok', 0)}/{sum(counts.values())} | `{doc['git_sha'][:12]}`"
            + ("+" if doc.get("git_dirty") else "")
            + " | "
            f"{doc['date'][:10]} |"
        )
    lines.append("")
    root.mkdir(parents=True, exist_ok=True)
    index = root / "README.md"
    index.write_text("\n".join(lines))
    return index


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Regenerate tables and plots from result JSON files.",
    )
    p.add_argument(
        "root",
        nargs="?",
        type=Path,
        default=RESULTS_DIR,
        help="results root (default: benchmarks/results)",
    )
    args = p.parse_args(argv)
    for js in sorted(args.root.glob("*/*.json")) + sorted(args.root.glob("*/quick/*.json")):
        doc = load(js)
        if not is_result(doc):
            print(f"skipped {js}: not written by python -m benchmarks")
            continue
        write_report(doc, paths(args.root, doc["device"], doc["suite"], doc["dtype"], doc["quick"]))
        print(f"wrote {js.with_suffix('.md')}")
    print(f"wrote {write_index(args.root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
