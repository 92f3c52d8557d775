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

DIRECTION_COLORS = {
    "infer": "tab:purple",
    "fwd": "tab:blue",
    "bwd": "tab:orange",
    "both": "tab:green",
}


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


def sanity_note(doc: dict[str, Any]) -> str | None:
    """Why a document's ratios are no speedups (``None`` for a real GPU measurement).

    ``--quick`` runs time tiny cases with few samples; CPU runs time torchconv_ext's fallback,
    which for these arguments calls torch's own op: both are sanity checks of the harness.
    """
    if doc.get("quick"):
        return "--quick smoke test: tiny cases, few samples; the times mean nothing"
    if doc.get("ours_backend") == "torch" or str(doc.get("device", "")).startswith("cpu"):
        return "CPU sanity check: ours is the fallback calling torch's own op; not a speedup"
    return None


def ratio_name(doc: dict[str, Any]) -> str:
    """What the headline ratio is called: ``speedup``, or ``torch/ours`` in a sanity check."""
    return "torch/ours" if sanity_note(doc) else "speedup"


def markdown(doc: dict[str, Any]) -> str:
    """The Markdown table of one result document, with its environment and summary."""
    provs = _provider_names(doc)
    has_flops = any(r.get("flops") for r in doc["records"])
    g = doc["summary"]["geomean_speedup"]
    peak = doc.get("peak") or {}
    note = sanity_note(doc)
    ratio = ratio_name(doc)
    budget = doc.get("budget")
    lines = [
        f"# {doc['suite']} · {doc['dtype']} · {doc['device_name']}",
        "",
        *([f"**{note}.**", ""] if note else []),
        f"- device `{doc['device']}`; CUDA {doc.get('cuda') or '–'}, driver "
        f"{doc.get('driver') or '–'}; torch {doc['torch']}, triton {doc.get('triton') or '–'}",
        f"- commit `{doc['git_sha']}`"
        + (" + local changes" if doc.get("git_dirty") else "")
        + f", {doc['date']}",
        f"- timer: {doc['timer']}",
        f"- sizes: {doc['batch_policy']}",
        f"- ours = torchconv_ext backend `{doc.get('ours_backend', '?')}`",
        f"- peak measured in this run: {_num(peak.get('matmul_tflops'), '.4g')} TFLOP/s "
        f"({peak.get('matmul_dtype')} matmul), {_num(peak.get('copy_gbps'), '.4g')} GB/s (copy)",
        *([f"- time budget: {budget_text(budget)}"] if budget else []),
        f"- **{ratio}** = time of the fastest eager torch provider / time of our fastest provider "
        "(above 1: ours is faster)",
        "",
        f"Geometric mean of {ratio}: "
        + (", ".join(f"{d} **{v:.3f}×**" for d, v in g.items() if v) or "–"),
        "",
    ]
    graph = any(r.get("graph_ms") for rec in doc["records"] for r in rec["providers"].values())
    tput = ["ours TFLOP/s", "% peak"] if has_flops else ["ours GB/s", "% copy BW"]
    extra = ["ours graph ms", "host µs/call"] if graph else []
    head = ["layer", "dir", "shape", *(f"{p} ms" for p in provs), *extra, *tput, ratio, "check"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in doc["records"]:
        provd = rec.get("providers", {})
        ours = _best(rec, is_ours) or {}
        if has_flops:
            t = [_num(ours.get("tflops")), _num(ours.get("pct_peak_flops"), ".1f")]
        else:
            t = [_num(ours.get("gbps")), _num(ours.get("pct_peak_bw"), ".1f")]
        if graph:
            t = [_num(ours.get("graph_ms"), ".4g"), _num(ours.get("host_overhead_us"), ".1f"), *t]
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


def budget_text(budget: dict[str, Any]) -> str:
    """``300 s, used 287 s; stopped early: 12 of 40 tasks not run`` and the like."""
    text = f"{budget.get('seconds', '?')} s, used {_num(budget.get('elapsed_s'), '.0f')} s"
    if budget.get("stopped_early"):
        text += f"; stopped early: {budget.get('tasks_left', '?')} of the planned tasks not run"
    return text


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


def _times(v: float) -> str:
    """A plain tick label: ``0.5×``, ``1×``, ``1.25×``."""
    return f"{v:.3g}×"


#: Round ratios for the speedup axis.
_ROUND_RATIOS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 0.67, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)
_ROUND_RATIOS += (1.01, 1.02, 1.05, 1.1, 1.25, 1.5, 2, 3, 4, 5, 10, 20, 50, 100)


def _ratio_ticks(lo: float, hi: float, count: int = 8) -> list[float]:
    """Round ratios between ``lo`` and ``hi``, always 1, spaced at least 1/``count`` of the
    (logarithmic) axis apart so that their labels never overlap."""
    gap = math.log(hi / lo) / count
    ticks = [1.0]
    for side in (
        sorted(r for r in _ROUND_RATIOS if r > 1),
        sorted(r for r in _ROUND_RATIOS if r < 1)[::-1],
    ):
        last = 1.0
        for r in side:
            if lo <= r <= hi and abs(math.log(r / last)) >= gap:
                ticks.append(r)
                last = r
    return sorted(ticks)


def _title(doc: dict[str, Any], what: str) -> str:
    title = f"{doc['suite']} {doc['dtype']} on {doc['device_name']}\n{what}"
    note = sanity_note(doc)
    return f"{title}\n{note.upper()}" if note else title


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_speedup(doc: dict[str, Any], path: Path) -> None:
    """Write :func:`speedup_figure` to ``path``."""
    _save(speedup_figure(doc), path)


def plot_roofline(doc: dict[str, Any], path: Path) -> None:
    """Write :func:`roofline_figure` to ``path``."""
    _save(roofline_figure(doc), path)


def speedup_figure(doc: dict[str, Any]) -> Any:
    """Horizontal bars from 1×: ours' speedup over eager torch per layer and direction.

    A bar to the right of 1× is a case where ours is faster, to the left one where it is
    slower; the axis is logarithmic (2× and 0.5× are equally far from 1×), labelled in plain
    ratios, and each bar carries its value.
    """
    plt = _pyplot()
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    recs = [r for r in doc["records"] if r.get("speedup")]
    ratio = ratio_name(doc)
    fig, ax = plt.subplots(figsize=(8, 1.9 + 0.2 * max(1, len(recs))))
    values = [r["speedup"] for r in recs]
    reach = max([1.1, *values, *(1 / v for v in values)]) * 1.25  # room for the value labels
    ax.set_xscale("log")
    ax.set_xlim(1 / reach, reach)
    ax.barh(
        range(len(recs)),
        [v - 1 for v in values],
        left=1,
        height=0.75,
        color=[DIRECTION_COLORS.get(r["direction"], "gray") for r in recs],
    )
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}× ", va="center", ha="left" if v >= 1 else "right", fontsize=6)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.xaxis.set_major_locator(FixedLocator(_ratio_ticks(1 / reach, reach)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _times(v)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(axis="x", color="0.9", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_yticks(range(len(recs)), [f"{r['name']} {r['direction']}" for r in recs], fontsize=7)
    ax.set_ylim(len(recs) - 0.5, -0.5)
    g = doc["summary"]["geomean_speedup"]
    geo = ", ".join(f"{d} {v:.2f}×" for d, v in g.items() if v and d != "all")
    ax.set_xlabel(
        f"time of torch / time of ours (right of 1×: ours {'faster' if ratio == 'speedup' else 'took less time'})"
    )
    directions = [d for d in DIRECTION_COLORS if any(r["direction"] == d for r in recs)]
    ax.legend(
        handles=[Patch(color=DIRECTION_COLORS[d], label=d) for d in directions],
        fontsize=7,
        loc="lower right",
    )
    what = "speedup of ours over eager torch" if ratio == "speedup" else "torch time / ours time"
    ax.set_title(_title(doc, f"{what} per layer; geometric mean {geo}"), fontsize=9)
    return fig


def roofline_figure(doc: dict[str, Any]) -> Any:
    """Roofline of achieved throughput vs the matmul and copy peaks measured in the same run.

    With FLOP counts: TFLOP/s against arithmetic intensity (FLOP/byte) under the two ceilings;
    each case is a number (ours: filled, coloured by direction; torch: a grey cross joined to
    it), the key beside the plot names them. Memory-bound suites: GB/s per case, named on the
    axis, against the measured copy bandwidth.
    """
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator

    peak = doc.get("peak") or {}
    recs = [r for r in doc["records"] if r["status"] == "ok" and _best(r, is_ours)]
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    if any(r.get("flops") for r in recs):
        fig, (ax, key) = plt.subplots(
            1,
            2,
            figsize=(11, max(5.0, 1.2 + 0.12 * len(recs))),
            gridspec_kw={"width_ratios": [3, 1]},
        )
        _roofline_points(ax, key, recs, peak)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_xlabel("arithmetic intensity (FLOP / byte, each tensor moved once)")
        ax.set_ylabel("TFLOP/s")
    else:
        fig, ax = plt.subplots(figsize=(8, 1.8 + 0.2 * max(1, len(recs))))
        ys = list(range(len(recs)))
        for label, pick, style in (
            ("torch (fastest eager layout)", is_baseline, dict(marker="x", color="0.45")),
            ("ours (fastest layout)", is_ours, dict(marker="o")),
        ):
            xs = [(_best(r, pick) or {}).get("gbps") or math.nan for r in recs]
            colors = [DIRECTION_COLORS.get(r["direction"], "gray") for r in recs]
            if style.get("marker") == "o":
                ax.scatter(xs, ys, c=colors, s=22, label=label, zorder=3)
            else:
                ax.scatter(xs, ys, s=22, label=label, zorder=2, **style)
        if peak.get("copy_gbps"):
            ax.axvline(
                peak["copy_gbps"],
                color="black",
                linewidth=1,
                label=f"copy bandwidth measured in this run: {peak['copy_gbps']:.4g} GB/s",
            )
        ax.set_yticks(ys, [f"{r['name']} {r['direction']}" for r in recs], fontsize=7)
        ax.set_ylim(len(recs) - 0.5, -0.5)
        ax.set_xlim(left=0)
        ax.grid(axis="x", color="0.9", linewidth=0.6)
        ax.set_xlabel("GB/s (bytes read + written, each tensor once); colour: fwd, bwd, both")
        ax.legend(fontsize=7, loc="best")
    ax.set_title(_title(doc, "throughput against the measured peaks"), fontsize=9)
    return fig


def _roofline_points(ax: Any, key: Any, recs: list[dict[str, Any]], peak: dict) -> None:
    """Numbered points of ours and torch per record, the two roofs, and the numbered key."""
    ai_all: list[float] = []
    lines = []
    for i, r in enumerate(recs, 1):
        ours, torch_ = _best(r, is_ours), _best(r, is_baseline)
        if not (ours and ours.get("tflops") and r.get("bytes")):
            continue
        ai = r["flops"] / r["bytes"]
        ai_all.append(ai)
        color = DIRECTION_COLORS.get(r["direction"], "gray")
        if torch_ and torch_.get("tflops"):
            ax.plot([ai, ai], [torch_["tflops"], ours["tflops"]], color="0.75", linewidth=0.6)
            ax.scatter([ai], [torch_["tflops"]], marker="x", color="0.45", s=16, zorder=2)
        ax.scatter([ai], [ours["tflops"]], color=color, s=18, zorder=3)
        ax.annotate(
            str(i), (ai, ours["tflops"]), xytext=(3, 2), textcoords="offset points", fontsize=6
        )
        lines.append(f"{i:>3}  {r['name']} {r['direction']}")
    if ai_all and peak.get("matmul_tflops") and peak.get("copy_gbps"):
        lo, hi = min(ai_all) / 2, max(ai_all) * 2
        xs = [lo * (hi / lo) ** (k / 100) for k in range(101)]
        ax.plot(
            xs,
            [min(peak["matmul_tflops"], x * peak["copy_gbps"] / 1e3) for x in xs],
            color="black",
            linewidth=1,
        )
        ax.annotate(
            f"{peak['matmul_dtype']} matmul {peak['matmul_tflops']:.4g} TFLOP/s",
            (hi, peak["matmul_tflops"]),
            xytext=(-4, 4),
            textcoords="offset points",
            ha="right",
            fontsize=7,
        )
        ax.annotate(
            f"copy {peak['copy_gbps']:.4g} GB/s",
            (lo, lo * peak["copy_gbps"] / 1e3),
            xytext=(4, -10),
            textcoords="offset points",
            fontsize=7,
        )
    handles = [
        ax.scatter([], [], color=c, s=18, label=f"ours {d}") for d, c in DIRECTION_COLORS.items()
    ]
    handles.append(ax.scatter([], [], marker="x", color="0.45", s=16, label="torch"))
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    key.axis("off")
    key.text(
        0,
        1,
        "\n".join(lines),
        va="top",
        ha="left",
        fontsize=6,
        family="monospace",
        transform=key.transAxes,
    )


def write_report(
    doc: dict[str, Any],
    out: dict[str, Path] | None = None,
    *,
    log: Callable[[str], None] = print,
    plots: bool = True,
) -> dict[str, Path]:
    """Write the Markdown table and, with ``plots`` and matplotlib installed, the two plots."""
    out = out or paths(RESULTS_DIR, doc["device"], doc["suite"], doc["dtype"], doc["quick"])
    out["md"].parent.mkdir(parents=True, exist_ok=True)
    text = markdown(doc)
    try:
        if plots:
            plot_speedup(doc, out["speedup_png"])
            plot_roofline(doc, out["roofline_png"])
        if out["speedup_png"].exists() and out["roofline_png"].exists():
            text += (
                f"\n![time ratio per layer]({out['speedup_png'].name})\n\n"
                f"![roofline]({out['roofline_png'].name})\n"
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
        "Generated by `python -m benchmarks` (see `benchmarks/README.md`). Each row: the "
        "geometric mean over a suite's cases of time of the fastest eager torch provider / time "
        "of ours (above 1: ours is faster). On a GPU that ratio is a **speedup**; CPU rows "
        "compare torchconv_ext's fallback — torch's own op — with torch: a **sanity check** of "
        "the harness, not a speedup. A commit marked + had local changes when the run was made.",
        "",
        "| device | suite | dtype | ratio | fwd | bwd | both | all | cases ok | commit | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
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
            + ("sanity check" if sanity_note(doc) else "speedup")
            + (f", {doc['budget']['seconds']} s budget" if doc.get("budget") else "")
            + " | "
            + " | ".join(_num(g.get(d), ".3f") for d in ("fwd", "bwd", "both", "all"))
            + f" | {counts.get('ok', 0)}/{sum(counts.values())} | `{doc['git_sha'][:12]}`"
            + ("+" if doc.get("git_dirty") else "")
            + " | "
            f"{doc['date'][:10]} |"
        )
    others = (
        [
            (f"host overhead per call ({js.stem})", js)
            for js in sorted(root.glob("*/overhead*.json"))
        ]
        + [
            (f"host instructions per call ({js.stem})", js)
            for js in sorted(root.glob("*/instructions*.json"))
        ]
        + [
            (f"first calls' compiles ({js.stem})", js)
            for js in sorted(root.glob("*/cold-start*.json"))
        ]
        + [
            (f"other libraries' models converted and fused, against themselves ({js.stem})", js)
            for js in sorted(root.glob("*/real-models*.json"))
        ]
        + [
            (f"TMA box tiles timed against the flat kernels ({js.stem})", js)
            for js in sorted(root.glob("*/box-tiles*.json"))
            if js.parent.name != "compile-report"  # (the compile experiment is listed below)
        ]
        + [
            (f"compile report for {js.stem}", js)
            for js in sorted(root.glob("compile-report/*.json"))
        ]
    )
    others = [
        (what, js.with_suffix(".md")) for what, js in others if js.with_suffix(".md").exists()
    ]
    # Tables written by hand from compile reports (experiments, comparisons): their titles.
    others += [
        (md.read_text().splitlines()[0].lstrip("# ").strip(), md)
        for md in sorted(root.glob("compile-report/*.md"))
        if not md.with_suffix(".json").exists()
    ]
    if others:
        lines += ["", "Without a GPU (see `benchmarks/README.md`):", ""]
        for what, md in others:
            lines.append(f"- [{what}]({md.relative_to(root).as_posix()})")
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
