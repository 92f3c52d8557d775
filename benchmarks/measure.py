"""One case, every suite alike: check ours against torch, then time each provider and direction.

A case is a layer of :mod:`benchmarks.shapes` as a dict (``Layer.to_dict``). Every "ours"
provider is first compared with torch (float64 reference, :mod:`benchmarks.check`); a direction
whose check fails is recorded as ``mismatch`` and nothing of it is timed — a benchmark never
times a wrong kernel. A provider that raises is recorded with its error; the run goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .check import compare, layout_mismatch
from .options import DTYPES, RunOptions
from .providers import PROVIDERS, Provider, compiled
from .shapes import Layer
from .timing import bench, graph_timing, peak_memory_mb, rotating, rotation_count
from .workload import Op, Workload, make_call, make_workload, prepared, run_once

#: Which checked parts a direction's timing depends on.
PARTS: dict[str, tuple[str, ...]] = {
    "infer": ("infer",),
    "fwd": ("fwd",),
    "bwd": ("bwd",),
    "both": ("fwd", "bwd"),
}


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip()[:300]}"


def check_case(
    wl: Workload,
    ours_providers: Sequence[Provider],
    dtype: torch.dtype,
    grads: bool,
    infer: bool = False,
) -> dict[str, dict[str, Any]]:
    """Compare each of our providers with torch: ``{"fwd": result, "bwd": result}`` (and
    ``"infer"``, our forward without gradients), the worst result over the providers for each
    part (nothing to compare without one of ours)."""
    if not ours_providers:
        return {}
    ref = run_once(wl.torch, *prepared(wl, False, dtype=torch.float64), grads)
    theirs_by_layout = {}
    names = ["output", *(f"grad_{n}" for n in wl.names)]
    parts = {"fwd": slice(0, 1), "bwd": slice(1, None), "infer": slice(0, 1)}
    out: dict[str, dict[str, Any]] = {}
    for provider in ours_providers:
        cl = provider.channels_last
        if cl not in theirs_by_layout:
            theirs_by_layout[cl] = run_once(wl.torch, *prepared(wl, cl), grads)
        theirs = theirs_by_layout[cl]
        ours = run_once(wl.ours, *prepared(wl, cl), grads)
        inferred = []
        if infer:
            with torch.no_grad():
                inferred = [wl.ours(*prepared(wl, cl)[0])]
        for part, sl in parts.items():
            if (part == "bwd" and not grads) or (part == "infer" and not infer):
                continue
            got = inferred if part == "infer" else ours[sl]
            res = compare(got, theirs[sl], ref[sl], dtype, names[sl]).to_dict()
            if part in ("fwd", "infer") and res["ok"]:
                bad_layout = layout_mismatch(got[0], theirs[0])
                if bad_layout:
                    res.update(ok=False, status="mismatch", message=f"output: {bad_layout}")
            res["message"] = f"{provider.name}: {res['message']}" if res["message"] else ""
            if (
                part not in out
                or (out[part]["ok"] and not res["ok"])
                or (res["ok"] == out[part]["ok"] and res["max_err"] > out[part]["max_err"])
            ):
                out[part] = res
    return out


def time_provider(
    fn: Op, wl: Workload, provider: Provider, direction: str, options: RunOptions
) -> dict[str, Any]:
    """Time one provider on one direction; an exception is recorded, not raised.

    With ``options.graph`` (GPU runs), our providers are also replayed in a CUDA graph: the gap
    to the same calls issued eagerly is their host overhead per call.
    """
    try:
        working_set = wl.layer.bytes(direction, wl.operands[0].element_size())
        k = rotation_count(working_set, options.device)
        calls = [
            make_call(
                fn,
                *prepared(wl, provider.channels_last, copy=i > 0),
                direction,
                ours=provider.ours,
            )
            for i in range(k)
        ]
        call = rotating(calls)
        call()  # warm-up: compilation, autotuning and cudnn.benchmark's search happen here
        timing = bench(call, options.device, quick=options.quick)
        entry: dict[str, Any] = {
            "status": "ok",
            "ms": timing.ms,
            "p20_ms": timing.p20_ms,
            "p80_ms": timing.p80_ms,
            "rotating_inputs": k,
            "peak_mem_mb": peak_memory_mb(call, options.device),
        }
    except Exception as e:  # a provider that fails is reported, the run goes on
        return {"status": "error", "error": _error(e)}
    if options.graph and provider.ours and options.gpu:
        try:
            entry.update(graph_timing(call, timing.ms, quick=options.quick))
        except Exception as e:  # no graph for this case: the eager time stands
            entry["graph_error"] = _error(e)
    return entry


def new_record(case: dict[str, Any], layer: Layer, direction: str, element_size: int) -> dict:
    """A record with no timings yet (see ``benchmarks/README.md`` for the format)."""
    return {
        "suite": case.get("suite"),
        "name": layer.name,
        "net": layer.net,
        "layer": layer.layer,
        "direction": direction,
        "shape": layer.shape_str(),
        "full_shape": case.get("full_shape", layer.shape_str()),
        "case": {k: v for k, v in case.items() if k not in ("suite", "full_shape")},
        "flops": layer.flops(direction),
        "bytes": layer.bytes(direction, element_size),
        "status": "ok",
        "check": None,
        "providers": {},
    }


def run_case(
    case: dict[str, Any],
    dtype: str,
    options: RunOptions,
    *,
    providers: Sequence[str] | None = None,
    stop: Callable[[], bool] = lambda: False,
    sink: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Check, then time, one case: one record per direction of ``options.directions``.

    ``providers`` narrows ``options.providers``; ``stop()`` is asked before each timing, and
    once it says so the remaining timings are recorded as ``skipped`` (a time budget ran out).
    The records go to ``sink`` as soon as they exist and fill in as timings finish, so a caller
    interrupted mid-case still holds what was measured.
    """
    layer = Layer.from_dict(case)
    tdtype = DTYPES[dtype]
    records = [new_record(case, layer, d, tdtype.itemsize) for d in options.directions]
    if sink is not None:
        sink.extend(records)
    names = [p for p in options.providers if providers is None or p in providers]
    chosen = [PROVIDERS[p] for p in names if p in PROVIDERS]
    if layer.dims == 1:  # no channels-last layout for 1-d tensors
        chosen = [p for p in chosen if not p.channels_last]
    grads = any(d in ("bwd", "both") for d in options.directions)
    try:
        wl = make_workload(layer, tdtype, options.device)
        ours = [p for p in chosen if p.ours]
        checks = check_case(wl, ours, tdtype, grads, infer="infer" in options.directions)
    except Exception as e:
        for r in records:
            r.update(status="error", error=f"check raised {_error(e)}")
        return records
    compiled_fn: Op | None = None
    for rec in records:
        parts = [checks[p] for p in PARTS[rec["direction"]] if p in checks]
        failed = [c for c in parts if not c["ok"]]
        rec["check"] = failed[0] if failed else max(parts, key=lambda c: c["max_err"], default=None)
        if failed:
            rec["status"] = "mismatch"
            continue
        for provider in chosen:
            if stop():
                rec["providers"][provider.name] = {"status": "skipped", "error": "time budget"}
                continue
            if provider.compiled:
                try:
                    compiled_fn = compiled_fn or compiled(wl.torch, options.compile_mode)
                except Exception as e:
                    rec["providers"][provider.name] = {"status": "error", "error": _error(e)}
                    continue
                fn = compiled_fn
            else:
                fn = wl.ours if provider.ours else wl.torch
            rec["providers"][provider.name] = time_provider(
                fn, wl, provider, rec["direction"], options
            )
    return records


def profile_calls(
    case: dict[str, Any],
    dtype: str,
    options: RunOptions,
    *,
    providers: Sequence[str] = ("torch", "ours"),
    direction: str = "both",
) -> dict[str, Callable[[], Any]]:
    """Per provider, a callable running ``direction`` once with each pass in a
    ``record_function`` range (``<provider>.fwd`` / ``<provider>.bwd``), for the profiler."""
    from torch.profiler import record_function

    from .workload import TRAINING_STEP_DIRECTIONS, after_optimizer_step, grad_operands

    layer = Layer.from_dict(case)
    wl = make_workload(layer, DTYPES[dtype], options.device)
    calls: dict[str, Callable[[], Any]] = {}
    for name in providers:
        provider = PROVIDERS[name]
        if provider.channels_last and layer.dims == 1:
            continue
        if provider.compiled:
            fn = compiled(wl.torch, options.compile_mode)
        else:
            fn = wl.ours if provider.ours else wl.torch
        operands, gy = prepared(wl, provider.channels_last)
        inputs = grad_operands(operands)
        y_kept = fn(*operands) if direction == "bwd" else None

        step = after_optimizer_step if provider.ours else None

        def call(fn=fn, operands=operands, gy=gy, inputs=inputs, y_kept=y_kept, name=name,
                 step=step):  # fmt: skip
            y = y_kept
            if direction in TRAINING_STEP_DIRECTIONS:
                if step is not None:
                    step()
                with record_function(f"{name}.fwd"):
                    y = fn(*operands)
            if direction in ("bwd", "both"):
                with record_function(f"{name}.bwd"):
                    torch.autograd.grad(y, inputs, gy, retain_graph=direction == "bwd")

        calls[name] = call
    return calls
