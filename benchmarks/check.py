"""Correctness gate run before any timing: ours must match torch, or the case is not timed.

The reference is torch's op on the same inputs in float64. Ours passes when its error is at most
twice torch's own error in the benchmarked dtype plus a small dtype-dependent allowance (relative
to the reference's magnitude) — the rule the test-suite uses — checked with ``assert_close``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

#: Allowance per dtype, relative to the largest reference magnitude: a few units of rounding of
#: the result, for a different but equally valid accumulation order.
EPS: dict[torch.dtype, float] = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 1e-3,
    torch.bfloat16: 8e-3,
}


@dataclass
class CheckResult:
    """Outcome of comparing ours with the float64 reference."""

    ok: bool
    max_err: float
    torch_err: float
    tol: float
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = "ok" if self.ok else "mismatch"
        return d


def compare(
    ours: Sequence[torch.Tensor | None],
    theirs: Sequence[torch.Tensor | None],
    reference: Sequence[torch.Tensor | None],
    dtype: torch.dtype,
    names: Sequence[str] | None = None,
) -> CheckResult:
    """Compare each of ``ours`` with ``reference`` (float64), using ``theirs`` (torch in
    ``dtype``) to size the tolerance. ``None`` entries must line up and are skipped."""
    names = list(names) if names is not None else [f"output {i}" for i in range(len(reference))]
    worst = CheckResult(True, 0.0, 0.0, 0.0)
    for name, o, t, r in zip(names, ours, theirs, reference, strict=True):
        if o is None and r is None:
            continue
        if o is None or r is None:
            return CheckResult(
                False, float("inf"), 0.0, 0.0, f"{name}: ours is {o!r}, torch's is not"
            )
        if o.shape != r.shape:
            return CheckResult(
                False, float("inf"), 0.0, 0.0, f"{name}: shape {tuple(o.shape)} != {tuple(r.shape)}"
            )
        r = r.detach().to(torch.float64)
        o64 = o.detach().to(device=r.device, dtype=torch.float64)
        t64 = t.detach().to(device=r.device, dtype=torch.float64)
        scale = float(r.abs().max()) if r.numel() else 0.0
        torch_err = float((t64 - r).abs().max()) if r.numel() else 0.0
        err = float((o64 - r).abs().nan_to_num(float("inf")).max()) if r.numel() else 0.0
        tol = 2 * torch_err + EPS[dtype] * max(scale, 1e-30)
        try:
            torch.testing.assert_close(o64, r, atol=tol, rtol=0, equal_nan=False)
        except AssertionError:
            bad = int(((o64 - r).abs() > tol).sum() + o64.isnan().sum())
            return CheckResult(
                False,
                err,
                torch_err,
                tol,
                f"{name}: max |ours - fp64 reference| = {err:.3g} > tolerance {tol:.3g} "
                f"(torch's own error {torch_err:.3g}; {bad} of {r.numel()} elements off)",
            )
        if err > worst.max_err or worst.tol == 0.0:
            worst = CheckResult(True, err, torch_err, tol)
    return worst


def layout_mismatch(ours: torch.Tensor, theirs: torch.Tensor) -> str:
    """Why ``ours`` is not in torch's output memory format (``""`` when it is)."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    fmt = formats.get(theirs.dim())
    if fmt is None:
        return ""
    want = theirs.is_contiguous(memory_format=fmt) and not theirs.is_contiguous()
    got = ours.is_contiguous(memory_format=fmt) and not ours.is_contiguous()
    if want == got:
        return ""
    name = "channels_last" if want else "contiguous"
    return f"torch returns a {name} tensor, ours has strides {tuple(ours.stride())}"
