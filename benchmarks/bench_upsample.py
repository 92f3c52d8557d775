"""Nearest upsampling benchmarks: ours vs torch on decoder shapes, forward and backward, GB/s.

Cases: the ×2 nearest upsampling of U-Net decoders (2-D, NCHW, four levels), of a 3-D U-Net
(NCDHW, three levels), and of an FPN top-down path (channels-last, the Mask R-CNN pyramid of an
800×1088 image), plus one non-integer factor (the generic, non-fast path). Every case is first
checked against torch (forward bitwise, backward to rounding); a mismatch is recorded and the case
is not timed.

GPU timings use ``triton.testing.do_bench`` (median, 20th/80th percentiles, L2 flushed); CPU
timings ``torch.utils.benchmark.Timer`` with one thread. On the CPU "ours" is the ATen fallback,
so the CPU ratio measures our dispatch overhead, not a kernel. GB/s counts the bytes an ideal
kernel moves (input read once, output written once; for backward grad_output read once and
grad_input written once); ``pct_peak`` relates it to a device copy (``y.copy_(x)``) timed in the
same run. ``ratio`` is torch's time over ours (> 1: ours is faster).

Run: ``python -m benchmarks upsample [--quick] [--dtype fp32|fp16|bf16] [--device cuda|cpu]``
(or ``python -m benchmarks.bench_upsample``); results go to ``benchmarks/results/<device>/``.
:func:`cases` and :func:`run_case` are what the harness calls.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from torchconv_ext import functional as TF

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}
CPU_THREADS = 1
QUANTILES = (0.5, 0.2, 0.8)

# name, what it is, input (N, C, *spatial) at a training batch, layout, interpolate arguments
_CASES: list[tuple[str, str, tuple[int, ...], str, dict[str, Any]]] = [
    (
        "unet2d_up4",
        "U-Net decoder ×2, 1024 ch 32² → 64²",
        (8, 1024, 32, 32),
        "contiguous",
        dict(scale_factor=2),
    ),
    (
        "unet2d_up3",
        "U-Net decoder ×2, 512 ch 64² → 128²",
        (8, 512, 64, 64),
        "contiguous",
        dict(scale_factor=2),
    ),
    (
        "unet2d_up2",
        "U-Net decoder ×2, 256 ch 128² → 256²",
        (8, 256, 128, 128),
        "contiguous",
        dict(scale_factor=2),
    ),
    (
        "unet2d_up1",
        "U-Net decoder ×2, 128 ch 256² → 512²",
        (8, 128, 256, 256),
        "contiguous",
        dict(scale_factor=2),
    ),
    (
        "unet3d_up3",
        "3-D U-Net decoder ×2, 256 ch 16³ → 32³",
        (2, 256, 16, 16, 16),
        "contiguous",
        dict(scale_factor=2),
    ),
    (
        "unet3d_up2",
        "3-D U-Net decoder ×2, 128 ch 32³ → 64³",
        (2, 128, 32, 32, 32),
        "contiguous",
        dict(scale_factor=2),
    ),
    (
        "unet3d_up1",
        "3-D U-Net decoder ×2, 64 ch 64³ → 128³",
        (2, 64, 64, 64, 64),
        "contiguous",
        dict(scale_factor=2),
    ),
    (
        "fpn_p5_p4",
        "FPN top-down ×2, 256 ch 25×34 → 50×68",
        (8, 256, 25, 34),
        "channels_last",
        dict(scale_factor=2),
    ),
    (
        "fpn_p4_p3",
        "FPN top-down ×2, 256 ch 50×68 → 100×136",
        (8, 256, 50, 68),
        "channels_last",
        dict(scale_factor=2),
    ),
    (
        "fpn_p3_p2",
        "FPN top-down ×2, 256 ch 100×136 → 200×272",
        (8, 256, 100, 136),
        "channels_last",
        dict(scale_factor=2),
    ),
    (
        "resize_1_5",
        "resize ×1.5 (generic path), 256 ch 64² → 96²",
        (8, 256, 64, 64),
        "contiguous",
        dict(scale_factor=1.5),
    ),
]
_QUICK = ("unet2d_up3", "unet3d_up2", "fpn_p4_p3", "resize_1_5")


def cases(quick: bool) -> list[dict[str, Any]]:
    """The benchmark cases; ``quick`` keeps four of them at batch 1 (a smoke test)."""
    out = []
    for name, layer, shape, layout, kwargs in _CASES:
        if quick and name not in _QUICK:
            continue
        shape = (1, *shape[1:]) if quick else shape
        out.append(
            dict(
                name=name,
                layer=layer,
                shape=list(shape),
                layout=layout,
                mode="nearest",
                kwargs=kwargs,
                quick=quick,
            )
        )
    return out


def _timer(fn: Callable[[], Any], device: str, quick: bool) -> dict[str, float]:
    if device.startswith("cuda"):
        from triton.testing import do_bench

        warmup, rep = (5, 20) if quick else (25, 100)
        ms, p20, p80 = do_bench(fn, warmup=warmup, rep=rep, quantiles=list(QUANTILES))
        return dict(ms=float(ms), p20_ms=float(p20), p80_ms=float(p80))
    from torch.utils.benchmark import Timer

    fn()
    m = Timer(stmt="fn()", globals={"fn": fn}, num_threads=CPU_THREADS).blocked_autorange(
        min_run_time=0.05 if quick else 0.5
    )
    times = sorted(m.times)

    def q(p: float) -> float:
        return times[min(len(times) - 1, int(p * len(times)))] * 1e3

    return dict(ms=m.median * 1e3, p20_ms=q(0.2), p80_ms=q(0.8))


def _input(case: dict[str, Any], dtype: torch.dtype, device: str) -> torch.Tensor:
    x = torch.randn(case["shape"], dtype=dtype, device=device)
    if case["layout"] == "channels_last":
        x = x.contiguous(
            memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        )
    return x


def _check(x: torch.Tensor, case: dict[str, Any]) -> str:
    """'ok', or what differs from torch."""
    kw = dict(mode=case["mode"], **case["kwargs"])
    xs = [x.detach().clone().requires_grad_() for _ in range(2)]
    ours, theirs = TF.interpolate(xs[0], **kw), F.interpolate(xs[1], **kw)
    if not torch.equal(ours, theirs) or ours.stride() != theirs.stride():
        return "forward differs from torch"
    go = torch.randn_like(theirs)
    g_ours = torch.autograd.grad(ours, xs[0], go)[0]
    g_theirs = torch.autograd.grad(theirs, xs[1], go)[0]
    tol = 1e-5 if x.dtype in (torch.float32, torch.float64) else 2e-2
    if not torch.allclose(g_ours.float(), g_theirs.float(), rtol=tol, atol=tol):
        return "backward differs from torch"
    return "ok"


def peak_copy_gbps(device: str, dtype: torch.dtype, quick: bool) -> float:
    """Bandwidth of a plain device copy (read + write), the ceiling a copy-like op can reach."""
    numel = (2**24 if quick else 2**27) if device.startswith("cuda") else 2**22
    x = torch.empty(numel, dtype=dtype, device=device).normal_()
    y = torch.empty_like(x)
    t = _timer(lambda: y.copy_(x), device, quick)
    return 2 * x.numel() * x.element_size() / (t["ms"] * 1e-3) / 1e9


def run_case(case: dict[str, Any], dtype: torch.dtype, device: str) -> dict[str, Any]:
    """Check one case against torch, then time forward and backward of ours and torch's."""
    x = _input(case, dtype, device)
    record = dict(case, dtype=str(dtype).replace("torch.", ""), device=device)
    record["check"] = _check(x, case)
    if record["check"] != "ok":
        return record
    kw = dict(mode=case["mode"], **case["kwargs"])
    y = F.interpolate(x, **kw)
    moved = (x.numel() + y.numel()) * x.element_size()
    record.update(out_shape=list(y.shape), bytes=moved)
    quick = case.get("quick", False)
    for direction in ("fwd", "bwd"):
        timings = {}
        for provider, fn in (("ours", TF.interpolate), ("torch", F.interpolate)):
            if direction == "fwd":

                def call(fn=fn):
                    return fn(x, **kw)
            else:
                xg = x.detach().requires_grad_()
                out = fn(xg, **kw)
                go = torch.randn_like(out)

                def call(out=out, xg=xg, go=go):
                    return torch.autograd.grad(out, xg, go, retain_graph=True)

            t = _timer(call, device, quick)
            t["gbps"] = moved / (t["ms"] * 1e-3) / 1e9
            timings[provider] = t
        timings["ratio"] = timings["torch"]["ms"] / timings["ours"]["ms"]
        record[direction] = timings
    return record


def timer(device: str) -> str:
    """How this module times its cases on ``device`` (recorded in the result files)."""
    if device.startswith("cuda"):
        return "triton.testing.do_bench (median, p20, p80; L2 flushed)"
    return f"torch.utils.benchmark.Timer.blocked_autorange (median, p20, p80; {CPU_THREADS} thread)"


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.bench_upsample``: the ``upsample`` suite through the main CLI (options,
    result files and reports are the harness's)."""
    from .__main__ import main as cli

    return cli(["upsample", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
