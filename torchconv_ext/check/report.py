"""What the check says: a header, the family × dtype × layout table, the failures, the JSON."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from .cases import INTERPRETER_SKIPS
from .compare import ATOL, SLACK
from .environment import INTERPRETER
from .results import FAIL, FAILING, NOT_RUN, PASS, SKIP, json_safe

FAMILY_ORDER = [
    "conv",
    "conv-dw",
    "conv-T",
    "conv-local",
    "conv-autotuned",
    "conv-config",
    "pool",
    "upsample",
]
DTYPE_ORDER = ["bf16", "fp16", "tf32", "fp32", "fp64"]

RULE = (
    f"pass: our error vs torch in float64 <= {SLACK:g} x torch's own error in that dtype + atol "
    f"x max|ref| (atol {', '.join(f'{k} {v:g}' for k, v in ATOL.items())}); torch's shape, dtype "
    "and strides; and our Triton kernels ran"
)


def header(env: dict[str, Any]) -> list[str]:
    sha = env["git_sha"][:12] + (" (uncommitted changes)" if env["git_dirty"] else "")
    versions = f"torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, git {sha}"
    if env["mode"] != INTERPRETER:
        device = f"{env['device']} (sm {env['compute_capability']}, {env['device_memory_gib']} GiB)"
        return [f"torchconv_ext check on {device}", versions, RULE]
    skipped = "; ".join(f"{k}: {v}" for k, v in INTERPRETER_SKIPS.items())
    return [
        "torchconv_ext check on the CPU under Triton's INTERPRETER (TRITON_INTERPRET=1) -- NOT A "
        "GPU CHECK: tiny shapes, it checks the kernels' logic, not how they compile or run on a "
        "GPU",
        versions,
        f"not checked here: {skipped}; >2^31-element cases need a GPU",
        RULE,
    ]


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return "inf" if math.isinf(x) else f"{x:.2e}"


def _order(key: tuple[str, str, str]) -> tuple:
    family, dtype, layout = key
    base = family.split(" ")[0]
    rank = FAMILY_ORDER.index(base) if base in FAMILY_ORDER else len(FAMILY_ORDER)
    dtype_rank = DTYPE_ORDER.index(dtype) if dtype in DTYPE_ORDER else len(DTYPE_ORDER)
    return (" " in family, rank, family, dtype_rank, layout)


def _ratio(r: dict[str, Any]) -> float:
    err, allowed = r.get("max_err"), r.get("allowed")
    if err is None or allowed is None:
        return -1.0
    if isinstance(err, str) or (isinstance(err, float) and math.isinf(err)):
        return math.inf
    return err / allowed if allowed else (math.inf if err else 0.0)


def table(rows: list[dict[str, Any]]) -> list[str]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["family"], r["dtype"], r["layout"]), []).append(r)
    head = ("family", "dtype", "layout", "result", "passed", "max err", "torch err", "allowed")
    lines = [head]
    for key in sorted(groups, key=_order):
        members = groups[key]
        statuses = Counter(r["status"] for r in members)
        result = next((s for s in (FAIL, NOT_RUN, PASS, SKIP) if statuses[s]), SKIP)
        counted = len(members) - statuses[SKIP]
        worst = max(members, key=_ratio)
        lines.append((*key, result.upper(), f"{statuses[PASS]}/{counted}" if counted else "-",
                      _fmt(worst.get("max_err")), _fmt(worst.get("torch_err")),
                      _fmt(worst.get("allowed"))))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]


def details(rows: list[dict[str, Any]]) -> list[str]:
    """Every failure by name; skips once per reason."""
    out = []
    for r in rows:
        if r["status"] in FAILING:
            out.append(f"{r['status'].upper()}: {r['id']}\n    {r['reason']}")
    skips = Counter(r["reason"] for r in rows if r["status"] == SKIP)
    for reason, n in skips.items():
        out.append(f"SKIP ({n} case{'s' if n > 1 else ''}): {reason}")
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(r["status"] for r in rows)
    ok = not any(counts[s] for s in FAILING) and counts[PASS] > 0
    out_of_time = sum(r["status"] == NOT_RUN and "time budget" in r["reason"] for r in rows)
    return {
        "passed": ok,
        "rows": len(rows),
        **{status.replace(" ", "_"): counts[status] for status in (PASS, FAIL, SKIP, NOT_RUN)},
        "out_of_time": out_of_time,
    }


def verdict(s: dict[str, Any]) -> str:
    counts = f"{s['pass']} passed, {s['fail']} failed, {s['not_run']} not run, {s['skip']} skipped"
    hint = ""
    if s.get("out_of_time"):
        hint = " -- out of time: raise --budget, or use --quick"
    elif s["not_run"]:
        hint = " -- see why each check did not run"
    if not s["pass"] and not s["fail"] and not s["not_run"]:
        hint = " -- nothing was checked"
    return f"{'PASSED' if s['passed'] else 'FAILED'}: {counts} ({s['rows']} checks){hint}"


def write_json(path: str, document: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(json_safe(document), f, indent=1, allow_nan=False)
        f.write("\n")
