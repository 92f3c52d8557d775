"""How a callable is timed: ``do_bench`` on GPUs, torch's ``benchmark.Timer`` on CPUs.

Both report the median and the 20th/80th percentiles in milliseconds. ``do_bench`` warms up and
flushes the L2 cache before every timed call; :func:`rotating` adds a cycle of distinct input
sets for problems small enough to sit in cache, so a call never finds its operands there.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

#: Threads for CPU timings (sanity only): see :func:`bench`.
CPU_THREADS = 1

#: The quantiles reported for every timing: median, p20, p80.
QUANTILES: tuple[float, float, float] = (0.5, 0.2, 0.8)


@dataclass(frozen=True)
class Timing:
    """A timing in milliseconds: median, 20th and 80th percentiles, and how it was taken."""

    ms: float
    p20_ms: float
    p80_ms: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def method_name(device: str) -> str:
    """The timing method used on ``device``, as recorded in result files."""
    if device.startswith("cuda"):
        return "triton.testing.do_bench (median, p20, p80; warm-up; L2 flushed before each call)"
    return (
        "torch.utils.benchmark.Timer.blocked_autorange (median, p20, p80 of blocks; the better "
        f"of 2 measurements; {CPU_THREADS} thread)"
    )


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench(fn: Callable[[], Any], device: str, *, quick: bool = False) -> Timing:
    """Time ``fn()`` on ``device``; ``quick`` takes few samples (smoke tests, not numbers)."""
    if device.startswith("cuda"):
        from triton.testing import do_bench

        warmup, rep = (1, 3) if quick else (25, 100)
        ms, p20, p80 = do_bench(fn, warmup=warmup, rep=rep, quantiles=list(QUANTILES))
        return Timing(float(ms), float(p20), float(p80), method_name(device))
    from torch.utils.benchmark import Timer

    fn()  # warm-up: first-call allocations and lazy initialisation stay out of the samples
    # One thread, as Timer defaults to: CPU runs are sanity checks on shared machines, where
    # a multi-threaded op competing for busy cores gives times that swing by 10x.
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=CPU_THREADS)
    # The better of two measurements: a load spike from elsewhere spoils at most one of them.
    runs = (
        [timer.blocked_autorange(min_run_time=0.1) for _ in range(2)]
        if not quick
        else [timer.blocked_autorange(min_run_time=0.002)]
    )
    m = min(runs, key=lambda r: r.median)
    times = sorted(m.times)
    return Timing(
        m.median * 1e3,
        _quantile(times, 0.2) * 1e3,
        _quantile(times, 0.8) * 1e3,
        method_name(device),
    )


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[round(q * 100) - 1]


def peak_memory_mb(fn: Callable[[], Any], device: str) -> float | None:
    """Memory ``fn()`` allocates on the GPU beyond what was live before it, in MiB.

    Outputs and workspaces count; inputs allocated before the call do not. ``None`` on CPU,
    where torch keeps no such statistic.
    """
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def l2_cache_bytes(device: str) -> int:
    """The GPU's L2 size (0 on CPU: there ``rotating`` keeps a single input set)."""
    if not device.startswith("cuda"):
        return 0
    return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0))


def rotation_count(working_set_bytes: int, device: str, limit: int = 8) -> int:
    """How many distinct input sets to cycle through so one call's operands are out of L2."""
    l2 = l2_cache_bytes(device)
    if l2 == 0 or working_set_bytes <= 0 or working_set_bytes >= l2:
        return 1
    return min(limit, math.ceil(2 * l2 / working_set_bytes))


def rotating(fns: Sequence[Callable[[], Any]]) -> Callable[[], Any]:
    """One callable that runs ``fns`` in turn (each bound to its own inputs)."""
    if len(fns) == 1:
        return fns[0]
    cycle = itertools.cycle(fns)
    return lambda: next(cycle)()


@dataclass(frozen=True)
class DevicePeak:
    """Throughput limits measured in this run: a large matrix product and a large copy."""

    matmul_tflops: float
    matmul_dtype: str
    matmul_size: int
    copy_gbps: float
    copy_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_peak(device: str, *, quick: bool = False) -> DevicePeak:
    """Measure the device's matmul TFLOP/s and copy GB/s (bytes read + written).

    GPUs: a bf16 ``8192³`` product and a 1 GiB copy. CPUs (sanity only): fp32 — bf16 products
    are emulated on many CPUs and would understate the machine — and a 64 MiB copy.
    """
    gpu = device.startswith("cuda")
    if gpu:
        size, dtype, copy_elems = (
            (1024 if quick else 8192),
            torch.bfloat16,
            (2**22 if quick else 2**28),
        )
    else:
        size, dtype, copy_elems = (
            (128 if quick else 1024),
            torch.float32,
            (2**16 if quick else 2**24),
        )
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    mm = bench(lambda: torch.mm(a, b), device, quick=quick)
    src = torch.empty(copy_elems, device=device, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    cp = bench(lambda: dst.copy_(src), device, quick=quick)
    copy_bytes = 2 * src.numel() * src.element_size()
    return DevicePeak(
        matmul_tflops=2 * size**3 / (mm.ms * 1e-3) / 1e12,
        matmul_dtype=str(dtype).removeprefix("torch."),
        matmul_size=size,
        copy_gbps=copy_bytes / (cp.ms * 1e-3) / 1e9,
        copy_bytes=copy_bytes,
    )


def graph_timing(fn: Callable[[], Any], eager_ms: float, *, quick: bool = False) -> dict[str, Any]:
    """``fn`` replayed from a CUDA graph against the same calls issued eagerly (GPU only).

    ``n`` calls back to back (``n`` sized from ``eager_ms`` to about 20 ms, 3 to 50 calls; no
    L2 flush in either), timed with CUDA events: ``graph_ms`` per call from replays of a graph
    that captured the ``n`` calls, ``stream_ms`` per call issued eagerly. Their gap,
    ``host_overhead_us``, is the host time per call the GPU waits for; ``host_issue_us`` is the
    host's own time to issue one call (wall clock, before synchronising).
    """
    n = max(3, min(50, round((2.0 if quick else 20.0) / max(eager_ms, 1e-3))))
    reps = 3 if quick else 10
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(n):
            fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed(run: Callable[[], Any]) -> tuple[float, float]:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        start.record()
        run()
        host = time.perf_counter() - t0
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / n, host * 1e6 / n

    def eager() -> None:
        for _ in range(n):
            fn()

    graph_ms = statistics.median(timed(graph.replay)[0] for _ in range(reps))
    eager_runs = [timed(eager) for _ in range(reps)]
    del graph
    stream_ms = statistics.median(ms for ms, _ in eager_runs)
    return {
        "graph_ms": graph_ms,
        "stream_ms": stream_ms,
        "host_overhead_us": (stream_ms - graph_ms) * 1e3,
        "host_issue_us": statistics.median(us for _, us in eager_runs),
        "graph_calls": n,
    }
