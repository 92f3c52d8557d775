"""The pass rule: ours against torch's op in float64, allowed twice torch's own error.

For one result (an output or a gradient), with ``ref`` torch's op in float64 on the same
low-precision inputs upcast, ``ours_err = max|ours - ref|`` and ``torch_err = max|torch - ref|``
(torch's op run in the checked dtype):

    pass  iff  ours is finite  and  ours_err <= 2 * torch_err + ATOL[dtype] * max|ref|

where ``ref`` is finite; where it holds NaN or infinities (cases with non-finite inputs), ours
and torch's must hold the same ones. And ours has torch's shape, dtype and strides (the memory
format torch returns; strides of size-1 dims carry no layout and are ignored).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

SLACK = 2.0

#: The allowance relative to the largest reference magnitude, per checked setting. bf16/fp16:
#: a few rounding units of the result for another accumulation order. TF32: Triton hands fp32
#: bits to the tensor cores, which truncate them to TF32 (up to 2**-10 relative per operand;
#: cuDNN rounds, or may use no TF32 at all), hence 2e-3. fp32 and fp64: rounding noise.
ATOL = {"bf16": 1e-3, "fp16": 1e-3, "tf32": 2e-3, "fp32": 1e-5, "fp64": 1e-12}


def max_abs_diff(a: Tensor, b: Tensor) -> float:
    """``max |a - b|`` in float64; ``inf`` when ``a`` holds a NaN or an infinity."""
    if a.numel() == 0:
        return 0.0
    diff = (a.double() - b.double()).abs().max().item()
    return math.inf if math.isnan(diff) else diff


def layout_strides(t: Tensor) -> list[int]:
    """The strides that say how ``t`` is laid out: those of dims longer than 1."""
    return [st for size, st in zip(t.shape, t.stride()) if size > 1]


def compare(part: str, ours: Tensor, theirs: Tensor, ref: Tensor, setting: str) -> dict[str, Any]:
    """One result checked by the rule above: a JSON-able record with ``ok`` and ``reason``."""
    record: dict[str, Any] = {"part": part, "ok": False, "reason": ""}
    if ours.shape != theirs.shape or ours.dtype != theirs.dtype:
        record["reason"] = (
            f"{part}: ours is {ours.dtype} {list(ours.shape)}, torch's {theirs.dtype} "
            f"{list(theirs.shape)}"
        )
        return record
    finite = ref.isfinite()
    if not finite.all():  # torch's NaN and infinities: ours must have them, where torch has them
        if not (_same_non_finite(ours, ref) and _same_non_finite(theirs, ref)):
            record["reason"] = f"{part}: NaN or infinities not where torch's are"
            return record
        ours, theirs, ref = ours[finite], theirs[finite], ref[finite]
    ours_err = max_abs_diff(ours, ref)
    torch_err = max_abs_diff(theirs, ref)
    ref_max = ref.abs().max().item() if ref.numel() else 0.0
    allowed = SLACK * torch_err + ATOL[setting] * ref_max
    strides_ok = layout_strides(ours) == layout_strides(theirs)
    record.update(ours_err=ours_err, torch_err=torch_err, allowed=allowed, ref_max=ref_max)
    record["strides_ok"] = strides_ok
    if not math.isfinite(ours_err):
        record["reason"] = f"{part}: ours holds NaN or inf (an element not written?)"
    elif ours_err > allowed:
        record["reason"] = (
            f"{part}: error {ours_err:.3g} > allowed {allowed:.3g} "
            f"(2 x torch's {torch_err:.3g} + {ATOL[setting]:g} x max|ref| {ref_max:.3g})"
        )
    elif not strides_ok:
        record["reason"] = (
            f"{part}: strides {list(ours.stride())} differ from torch's {list(theirs.stride())}"
        )
    else:
        record["ok"] = True
    return record


def _same_non_finite(a: Tensor, ref: Tensor) -> bool:
    """Whether ``a`` has NaN where ``ref`` has, and the same infinities (with their signs)."""
    a = a.to(ref.device)
    infinite = ref.isinf()
    return bool(
        (a.isnan() == ref.isnan()).all()
        and (a.isinf() == infinite).all()
        and (a[infinite].double() == ref[infinite]).all()
    )


def exact(part: str, ok: bool, reason: str) -> dict[str, Any]:
    """A yes/no check (e.g. 'every element was written') in the same record form."""
    return {"part": part, "ok": bool(ok), "reason": "" if ok else f"{part}: {reason}"}


def worst(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The part closest to (or furthest past) its allowance."""
    scored = [p for p in parts if "allowed" in p]
    if not scored:
        return None

    def ratio(p):
        if p["allowed"] > 0:
            return p["ours_err"] / p["allowed"]
        return math.inf if p["ours_err"] > 0 else 0.0

    return max(scored, key=ratio)


def is_resource_error(error: BaseException) -> bool:
    """Errors the autotuner treats as 'this config cannot run here' and skips (its own rule)."""
    from triton_kernels._tuning import cannot_run

    return cannot_run(error)
