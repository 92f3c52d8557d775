"""Result rows: one JSON-able dict per checked case (or per forced config of a sweep case).

Statuses: ``pass``; ``fail`` (a wrong result, an error, a crash or a time-out); ``skip`` (not
applicable here, with the reason); ``not run`` (the time budget ran out first — a failure of the
check, labelled apart so that it is not mistaken for a wrong result).
"""

from __future__ import annotations

import math
import traceback
from typing import Any

from .cases import Case
from .compare import worst

PASS, FAIL, SKIP, NOT_RUN = "pass", "fail", "skip", "not run"
FAILING = (FAIL, NOT_RUN)


def row(case: Case, status: str, reason: str = "", **fields: Any) -> dict[str, Any]:
    """A row for ``case``; ``fields`` add to or override the defaults (e.g. a sweep's ``id``)."""
    out = {
        "id": case.id,
        "case": case.id,
        "family": case.family,
        "name": case.name,
        "dtype": case.dtype,
        "layout": case.layout,
        "kind": case.kind,
        "spec": case.spec,
        "status": status,
        "reason": reason,
    }
    out.update(fields)
    return out


def from_parts(case: Case, parts: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A row judged by its parts: it passes when every part passes."""
    failed = [p["reason"] for p in parts if not p["ok"]]
    w = worst(parts) or {}
    status = FAIL if failed or not parts else PASS
    reason = "; ".join(failed) if failed else ("" if parts else "nothing was compared")
    return row(case, status, reason, parts=parts, max_err=w.get("ours_err"),
               torch_err=w.get("torch_err"), allowed=w.get("allowed"), **fields)  # fmt: skip


def from_error(case: Case, error: BaseException, what: str = "", **fields: Any) -> dict[str, Any]:
    """A failing row for an exception, with the end of its traceback."""
    tail = "".join(traceback.format_exception(type(error), error, error.__traceback__))[-2000:]
    message = f"{type(error).__name__}: {error}".strip()
    reason = f"{what}: {message}" if what else message
    return row(case, FAIL, reason[:600], traceback=tail, **fields)


def json_safe(value: Any) -> Any:
    """Rows as strict JSON: non-finite floats become strings, tuples lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
