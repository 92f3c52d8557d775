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

Run: ``python benchmarks/bench_pool.py [--quick] [--dtype float32] [--device cuda|cpu]``;
results go to ``benchmarks/results/<device>/pool-<dtype>.json``. :func:`cases` and
:func:`run_case` are the pieces a harness needs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as a script: import from the repository root, and not from this folder, whose
    # profile.py would shadow the standard library's.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(REPO_ROOT))

import torchconv_ext  # noqa: E402
from torchconv_ext import functional as TF  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}
CPU_THREADS = 1
QUANTILES = (0.5, 0.2, 0.8)

# name, network layer, op, input (N, C, H, W) at training batch, op arguments
_LAYERS: list[tuple[str, str, str, tuple[int, int, int, int], dict[str, Any]]] = [
    ("alexnet_pool1", "AlexNet pool1: 3×3/2 overlapping max", "max_pool2d", (128, 64, 55, 55),
     dict(kernel_size=3, stride=2)),
    ("vgg16_pool2", "VGG-16 pool2: 2×2/2 max", "max_pool2d", (64, 128, 112, 112),
     dict(kernel_size=2, stride=2)),
    ("resnet_stem_pool", "ResNet stem: 3×3/2 max, padding 1", "max_pool2d", (128, 64, 112, 112),
     dict(kernel_size=3, stride=2, padding=1)),
    ("resnet50_head_gap", "ResNet-50 head: global average pool", "global_avg_pool",
     (128, 2048, 7, 7), {}),
    ("vgg16_conv5_spp", "VGG-16 conv5: pyramid max pool, levels 1, 2, 4", "spatial_pyramid_pool",
     (64, 512, 14, 14), dict(levels=(1, 2, 4), mode="max")),
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
            out.append(dict(name=name, layer=what, op=op, shape=shape, args=args, layout=layout,
                            batch=QUICK_BATCH if quick else None, quick=quick))
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
        name=case["name"], layer=case["layer"], op=case["op"], layout=case["layout"],
        shape=[batch, c, h, w], full_shape=list(case["shape"]), dtype=str(dtype).removeprefix("torch."),
        check=_check(y_ours.detach(), y_ref.detach(), case["op"]),
    )
    if record["check"] != "ok":
        return record
    fwd_bytes, bwd_bytes = _bytes(case["op"], x, y_ref)
    gy = torch.randn_like(y_ref)
    record["bytes"] = dict(fwd=fwd_bytes, bwd=bwd_bytes)
    for direction, nbytes, make in (
        ("fwd", fwd_bytes, lambda f: (lambda: f(x))),
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


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine() or "cpu"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def environment(device: str) -> dict[str, Any]:
    """Where the numbers come from."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return dict(
        device=device, device_name=_device_name(device), torch=torch.__version__,
        triton=triton_version, cuda=torch.version.cuda, git_sha=_git_sha(),
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        timer=("triton.testing.do_bench (median, p20, p80)" if device.startswith("cuda") else
               f"torch.utils.benchmark.Timer.blocked_autorange (median, p20, p80; {CPU_THREADS} thread)"),
    )


def _print_table(records: list[dict[str, Any]]) -> None:
    head = f"{'case':22s} {'layout':13s} {'dir':3s} {'ours ms':>9s} {'torch ms':>9s} " \
           f"{'ours GB/s':>9s} {'torch GB/s':>10s} {'ratio':>6s}"
    print(head)
    print("-" * len(head))
    for r in records:
        if r["check"] != "ok":
            print(f"{r['name']:22s} {r['layout']:13s} CHECK FAILED ({r['check']})")
            continue
        for d in ("fwd", "bwd"):
            o, t = r[d]["ours"], r[d]["torch"]
            print(f"{r['name']:22s} {r['layout']:13s} {d:3s} {o['ms']:9.3f} {t['ms']:9.3f} "
                  f"{o['gbps']:9.1f} {t['gbps']:10.1f} {r[d]['ratio']:6.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: batch 1, few samples")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="results folder")
    args = parser.parse_args(argv)

    env = environment(args.device)
    records = [run_case(case, DTYPES[args.dtype], args.device) for case in cases(args.quick)]
    _print_table(records)
    folder = Path(args.out) / _slug(env["device_name"] if args.device.startswith("cuda") else "cpu")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"pool-{args.dtype}.json"
    doc = dict(suite="pool", dtype=args.dtype, quick=args.quick, **env, records=records)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")
    return 0 if all(r["check"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
