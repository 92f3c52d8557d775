"""Pooling benchmarks: ours vs torch on real layer shapes, forward and backward, GB/s and ratio.

Cases: AlexNet's overlapping 3×3/2 max pool, VGG-16's 2×2/2 max pool, the ResNet stem's 3×3/2
max pool (padding 1), the global average pool of a ResNet-50 head, and pyramid pooling
(levels 1, 2, 4) of a VGG-16 conv5 map against torch's composition of adaptive pools — each in
NCHW and channels-last. Every case is first checked against torch (max exactly, average to
rounding); a mismatch is recorded and the case is not timed.

GPU timings use ``triton.testing.do_bench`` (median, 20th/80th percentiles); CPU timings
``torch.utils.benchmark.Timer`` with one thread (on the CPU "ours" is the ATen fallback, so the
CPU ratio measures our dispatch overhead, not a kernel). GB/s counts the bytes an ideal kernel
moves: every input read once and every output written once (indices included).

Run: ``python -m benchmarks pool [--quick] [--dtype fp32|fp16|bf16] [--device cuda|cpu]``
(or ``python -m benchmarks.bench_pool``); results go to ``benchmarks/results/<device>/``.
:func:`cases` and :func:`run_case` are what the harness calls.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import torchconv_ext
from torchconv_ext import functional as TF

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}
CPU_THREADS = 1
QUANTILES = (0.5, 0.2, 0.8)

# name, network layer, op, input (N, C, H, W) at training batch, op arguments
_LAYERS: list[tuple[str, str, str, tuple[int, int, int, int], dict[str, Any]]] = [
    (
        "alexnet_pool1",
        "AlexNet pool1: 3×3/2 overlapping max",
        "max_pool2d",
        (128, 64, 55, 55),
        dict(kernel_size=3, stride=2),
    ),
    (
        "vgg16_pool2",
        "VGG-16 pool2: 2×2/2 max",
        "max_pool2d",
        (64, 128, 112, 112),
        dict(kernel_size=2, stride=2),
    ),
    (
        "resnet_stem_pool",
        "ResNet stem: 3×3/2 max, padding 1",
        "max_pool2d",
        (128, 64, 112, 112),
        dict(kernel_size=3, stride=2, padding=1),
    ),
    (
        "resnet50_head_gap",
        "ResNet-50 head: global average pool",
        "global_avg_pool",
        (128, 2048, 7, 7),
        {},
    ),
    (
        "vgg16_conv5_spp",
        "VGG-16 conv5: pyramid max pool, levels 1, 2, 4",
        "spatial_pyramid_pool",
        (64, 512, 14, 14),
        dict(levels=(1, 2, 4), mode="max"),
    ),
]
CPU_BATCH = 4
QUICK_BATCH = 1


def cases(quick: bool) -> list[dict[str, Any]]:
    """Every (layer, layout) case: name, description, op, shape, args, layout.

    The shape is the training batch on a GPU; ``quick`` (a smoke test) and CPU runs use a
    smaller batch (the ``batch`` key, applied by :func:`run_case`).
    """
    out = []
    for name, what, op, shape, args in _LAYERS:
        for layout in ("contiguous", "channels_last"):
            out.append(
                dict(
                    name=name,
                    layer=what,
                    op=op,
                    shape=shape,
                    args=args,
                    layout=layout,
                    batch=QUICK_BATCH if quick else None,
                    quick=quick,
                )
            )
    return out


def _torch_fn(op: str, args: dict[str, Any]) -> Callable:
    if op == "global_avg_pool":
        return lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1)
    if op == "spatial_pyramid_pool":
        pool = F.adaptive_max_pool2d if args["mode"] == "max" else F.adaptive_avg_pool2d
        return lambda x: torch.cat([pool(x, level).flatten(1) for level in args["levels"]], 1)
    return lambda x: getattr(F, op)(x, **args)


def _ours_fn(op: str, args: dict[str, Any]) -> Callable:
    return lambda x: getattr(TF, op)(x, **args)


def _bytes(op: str, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """Ideal bytes moved (forward, backward): inputs read once, outputs written once."""
    e = x.element_size()
    index = 8 if op in ("max_pool2d", "spatial_pyramid_pool") else 0  # int64 indices
    fwd = x.numel() * e + y.numel() * (e + index)
    bwd = y.numel() * (e + index) + x.numel() * e  # grad_out (+ indices) read, grad_in written
    return fwd, bwd


def _timer(fn: Callable[[], Any], device: str, quick: bool) -> dict[str, float]:
    if device.startswith("cuda"):
        from triton.testing import do_bench

        warmup, rep = (1, 3) if quick else (25, 100)
        ms, p20, p80 = do_bench(fn, warmup=warmup, rep=rep, quantiles=list(QUANTILES))
        return dict(ms=ms, p20_ms=p20, p80_ms=p80)
    from torch.utils.benchmark import Timer

    threads = torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS)
    try:
        m = Timer("fn()", globals={"fn": fn}, num_threads=CPU_THREADS).blocked_autorange(
            min_run_time=0.05 if quick else 1.0
        )
    finally:
        torch.set_num_threads(threads)
    times = sorted(m.times)
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))] * 1e3
    return dict(ms=m.median * 1e3, p20_ms=q(0.2), p80_ms=q(0.8))


def _check(ours: torch.Tensor, ref: torch.Tensor, op: str) -> str:
    if op in ("max_pool2d", "spatial_pyramid_pool"):  # copies of input elements
        return "ok" if torch.equal(ours, ref) else "mismatch"
    tol = 1e-5 if ours.dtype in (torch.float32, torch.float64) else 1e-2
    return "ok" if torch.allclose(ours.float(), ref.float(), rtol=tol, atol=tol) else "mismatch"


def run_case(case: dict[str, Any], dtype: torch.dtype, device: str) -> dict[str, Any]:
    """Check and time one case: forward and backward, ours and torch, on ``device``.

    Returns the case's figures: shape, bytes, check, and per direction the timings (ms, p20,
    p80), GB/s of each and ``ratio`` = torch time / our time (> 1: ours is faster).
    """
    n, c, h, w = case["shape"]
    batch = case["batch"] or (n if device.startswith("cuda") else CPU_BATCH)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, c, h, w, device=device, generator=gen).to(dtype)
    if case["layout"] == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    ours, theirs = _ours_fn(case["op"], case["args"]), _torch_fn(case["op"], case["args"])
    quick = case.get("quick", False)

    with torchconv_ext.use_backend("auto"):
        y_ours = ours(x)
    y_ref = theirs(x)
    record: dict[str, Any] = dict(
        name=case["name"],
        layer=case["layer"],
        op=case["op"],
        layout=case["layout"],
        shape=[batch, c, h, w],
        full_shape=list(case["shape"]),
        dtype=str(dtype).removeprefix("torch."),
        check=_check(y_ours.detach(), y_ref.detach(), case["op"]),
    )
    if record["check"] != "ok":
        return record
    fwd_bytes, bwd_bytes = _bytes(case["op"], x, y_ref)
    gy = torch.randn_like(y_ref)
    record["bytes"] = dict(fwd=fwd_bytes, bwd=bwd_bytes)
    for direction, nbytes, make in (
        ("fwd", fwd_bytes, lambda f: lambda: f(x)),
        ("bwd", bwd_bytes, lambda f: _backward_call(f, x, gy)),
    ):
        result = {}
        for provider, fn in (("ours", ours), ("torch", theirs)):
            t = _timer(make(fn), device, quick)
            result[provider] = dict(t, gbps=nbytes / (t["ms"] * 1e-3) / 1e9)
        result["ratio"] = result["torch"]["ms"] / result["ours"]["ms"]
        record[direction] = result
    return record


def _backward_call(fn: Callable, x: torch.Tensor, gy: torch.Tensor) -> Callable[[], Any]:
    """The backward pass alone: the graph is built once and retained."""
    with torchconv_ext.use_backend("auto"):
        y = fn(x)
    return lambda: torch.autograd.grad(y, x, gy, retain_graph=True)


def timer(device: str) -> str:
    """How this module times its cases on ``device`` (recorded in the result files)."""
    if device.startswith("cuda"):
        return "triton.testing.do_bench (median, p20, p80; L2 flushed)"
    return f"torch.utils.benchmark.Timer.blocked_autorange (median, p20, p80; {CPU_THREADS} thread)"


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.bench_pool``: the ``pool`` suite through the main CLI (options,
    result files and reports are the harness's)."""
    from .__main__ import main as cli

    return cli(["pool", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
