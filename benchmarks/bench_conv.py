"""Convolution benchmarks: ours vs torch on real layer shapes, forward, backward and both.

Serves the suites ``conv`` (AlexNet, VGG-16, ResNet-50 3×3 and 1×1), ``depthwise``
(MobileNetV2), ``conv3d`` (a 3D U-Net) and ``transposed`` (U-Net / DCGAN decoders). Each case
first checks every "ours" provider against torch (float64 reference); a mismatch marks the case
failed and nothing of it is timed.

Run alone: ``python -m benchmarks.bench_conv [--dtype ...] [--quick]`` — the same as
``python -m benchmarks conv depthwise conv3d``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .check import compare
from .options import DTYPES, RunOptions
from .providers import PROVIDERS, Provider, compile_max_autotune, memory_format
from .shapes import SUITE_LAYERS, ConvLayer, scaled
from .timing import bench, peak_memory_mb, rotating, rotation_count

#: CPU runs (sanity only): batch 1, spatial size halved until the forward is at most this.
CPU_BATCH = 1
CPU_MAX_FWD_FLOPS = 0.5e9
#: ``--quick`` (smoke test): two layers per suite, shrunk to about this forward cost.
QUICK_MAX_FWD_FLOPS = 2e5

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]
ConvFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def op_name(layer: ConvLayer) -> str:
    """``conv2d``, ``conv_transpose3d``, …: the functional op a layer runs."""
    return f"conv{'_transpose' if layer.transposed else ''}{layer.dims}d"


def unavailable(suite: str) -> str | None:
    """Why ``suite`` cannot run here (``None`` when it can)."""
    import torchconv_ext.functional as ours

    missing = sorted({op_name(layer) for layer in SUITE_LAYERS[suite]} - set(dir(ours)))
    if missing:
        return f"torchconv_ext.functional has no {', '.join(missing)} yet"
    return None


def batch_policy(options: RunOptions) -> str:
    """How batch and size were chosen in this run, recorded in the result files."""
    if options.quick:
        return (
            f"--quick smoke test: 2 layers per suite, batch {options.batch or 1}, spatial size "
            f"halved until forward <= {QUICK_MAX_FWD_FLOPS:.0e} FLOP; times are not measurements"
        )
    if options.batch:
        return f"batch {options.batch} for every layer (--batch)"
    if not options.gpu:
        return (
            f"CPU sanity run: batch {CPU_BATCH} instead of the training batch, spatial size "
            f"halved until forward <= {CPU_MAX_FWD_FLOPS / 1e9:g} GFLOP; 'shape' is what ran, "
            "'full_shape' the layer at training size"
        )
    return "per-GPU training batch of each network (benchmarks/shapes.py)"


def cases(
    suite: str, quick: bool, options: RunOptions | None = None, *, every_layer: bool = False
) -> list[dict[str, Any]]:
    """The cases of ``suite``: each a :class:`ConvLayer` as a dict, sized for the device.

    ``quick`` shrinks them and keeps the first two layers (all of them with ``every_layer``).
    """
    options = options or RunOptions(quick=quick)
    layers = SUITE_LAYERS[suite]
    if quick and not every_layer:
        layers = layers[:2]
    out = []
    for layer in layers:
        if quick:
            batch, budget = options.batch or 1, QUICK_MAX_FWD_FLOPS
        elif options.batch:
            batch, budget = options.batch, None
        elif not options.gpu:
            batch, budget = CPU_BATCH, CPU_MAX_FWD_FLOPS
        else:
            batch, budget = layer.batch, None
        case = scaled(layer, batch, budget).to_dict()
        case.update(suite=suite, full_shape=layer.shape_str())
        out.append(case)
    return out


def functions(layer: ConvLayer) -> tuple[ConvFn, ConvFn]:
    """``(ours, torch)``: the layer's op from torchconv_ext.functional and torch.nn.functional."""
    import torchconv_ext.functional as ours_f

    name = op_name(layer)
    kw: dict[str, Any] = dict(
        stride=layer.arg("stride"),
        padding=layer.arg("padding"),
        dilation=layer.arg("dilation"),
        groups=layer.groups,
    )
    if layer.transposed:
        kw["output_padding"] = layer.arg("output_padding")
    ours_op, torch_op = getattr(ours_f, name), getattr(F, name)
    return (lambda x, w, b: ours_op(x, w, b, **kw)), (lambda x, w, b: torch_op(x, w, b, **kw))


def make_inputs(layer: ConvLayer, dtype: torch.dtype, device: str, seed: int = 0) -> Tensors:
    """Input, weight (scaled by 1/sqrt(fan-in) so outputs stay O(1)), bias and grad_output."""
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(shape: Sequence[int], scale: float = 1.0) -> torch.Tensor:
        t = torch.randn(tuple(shape), generator=g, device=device, dtype=torch.float32)
        return (t * scale).to(dtype)

    fan_in = math.prod(layer.weight_shape[1:])
    if layer.transposed:  # weight is (C_in, C_out/groups, k...): an output sums over C_in/groups
        fan_in = layer.c_in // layer.groups * math.prod(layer.arg("kernel"))
    x = randn(layer.input_shape)
    w = randn(layer.weight_shape, 1 / math.sqrt(fan_in))
    b = randn((layer.c_out,)) if layer.bias else None
    return x, w, b, randn(layer.output_shape)


def prepared(base: Tensors, layer: ConvLayer, channels_last: bool, copy: bool = False) -> Tensors:
    """Leaf tensors for one provider: its layout, ``requires_grad`` as in training."""
    fmt = memory_format(layer.dims) if channels_last else None
    fmt = fmt or torch.contiguous_format

    def leaf(t: torch.Tensor | None, grad: bool) -> torch.Tensor | None:
        if t is None:
            return None
        f = fmt if t.dim() == layer.dims + 2 else torch.contiguous_format  # not the bias
        t = t.clone(memory_format=f) if copy else t.contiguous(memory_format=f)
        return t.detach().requires_grad_(grad)

    x, w, b, gy = base
    return leaf(x, layer.input_grad), leaf(w, True), leaf(b, True), leaf(gy, False)


def _grad_inputs(x, w, b) -> tuple[torch.Tensor, ...]:
    return tuple(t for t in (x, w, b) if t is not None and t.requires_grad)


def make_call(fn: ConvFn, tensors: Tensors, direction: str) -> Callable[[], Any]:
    """A zero-argument callable running ``direction`` of ``fn`` on ``tensors``.

    ``fwd`` runs with autograd recording, as a training forward does; ``bwd`` differentiates a
    graph built once (``retain_graph``); ``both`` does forward and backward in each call.
    """
    x, w, b, gy = tensors
    inputs = _grad_inputs(x, w, b)
    if direction == "fwd":
        return lambda: fn(x, w, b)
    if direction == "bwd":
        y = fn(x, w, b)
        return lambda: torch.autograd.grad(y, inputs, gy, retain_graph=True)
    if direction == "both":
        return lambda: torch.autograd.grad(fn(x, w, b), inputs, gy)
    raise ValueError(f"direction must be 'fwd', 'bwd' or 'both', got {direction!r}")


def _run(fn: ConvFn, tensors: Tensors, grads: bool) -> list[torch.Tensor | None]:
    x, w, b, gy = tensors
    y = fn(x, w, b)
    if not grads:
        return [y]
    got = iter(torch.autograd.grad(y, _grad_inputs(x, w, b), gy))
    return [y] + [next(got) if t is not None and t.requires_grad else None for t in (x, w, b)]


def check_case(
    layer: ConvLayer,
    base: Tensors,
    ours_fn: ConvFn,
    torch_fn: ConvFn,
    ours_providers: Sequence[Provider],
    dtype: torch.dtype,
    grads: bool,
) -> dict[str, dict[str, Any]]:
    """Compare each of our providers with torch; ``{"fwd": ..., "bwd": ...}`` check results."""
    ref_base = tuple(t.to(torch.float64) if t is not None else None for t in base)
    ref = _run(torch_fn, prepared(ref_base, layer, False), grads)
    theirs = _run(torch_fn, prepared(base, layer, False), grads)
    parts = {"fwd": slice(0, 1), "bwd": slice(1, 4)}
    names = ["output", "grad_input", "grad_weight", "grad_bias"]
    out: dict[str, dict[str, Any]] = {}
    for provider in ours_providers:
        ours = _run(ours_fn, prepared(base, layer, provider.channels_last), grads)
        for part, sl in parts.items():
            if part == "bwd" and not grads:
                continue
            res = compare(ours[sl], theirs[sl], ref[sl], dtype, names[sl]).to_dict()
            res["message"] = f"{provider.name}: {res['message']}" if res["message"] else ""
            if (
                part not in out
                or (out[part]["ok"] and not res["ok"])
                or (res["ok"] == out[part]["ok"] and res["max_err"] > out[part]["max_err"])
            ):
                out[part] = res
    return out


def time_provider(
    fn: ConvFn,
    layer: ConvLayer,
    base: Tensors,
    provider: Provider,
    direction: str,
    options: RunOptions,
) -> dict[str, Any]:
    """Time one provider on one direction; an exception is recorded, not raised."""
    try:
        working_set = layer.bytes(direction, base[0].element_size())
        k = rotation_count(working_set, options.device)
        calls = [
            make_call(fn, prepared(base, layer, provider.channels_last, copy=i > 0), direction)
            for i in range(k)
        ]
        call = rotating(calls)
        call()  # warm-up: compilation, autotuning and cudnn.benchmark's search happen here
        timing = bench(call, options.device, quick=options.quick)
        return {
            "status": "ok",
            "ms": timing.ms,
            "p20_ms": timing.p20_ms,
            "p80_ms": timing.p80_ms,
            "rotating_inputs": k,
            "peak_mem_mb": peak_memory_mb(call, options.device),
        }
    except Exception as e:  # a provider that fails is reported, the run goes on
        return {"status": "error", "error": f"{type(e).__name__}: {str(e).strip()[:300]}"}


def _record(case: dict[str, Any], layer: ConvLayer, direction: str, element_size: int) -> dict:
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
    case: dict[str, Any], dtype: str, device: str, options: RunOptions | None = None
) -> list[dict[str, Any]]:
    """Check, then time, one layer: one record per direction (see ``benchmarks/README.md``)."""
    options = options or RunOptions(device=device)
    layer = ConvLayer.from_dict(case)
    tdtype = DTYPES[dtype]
    records = [_record(case, layer, d, tdtype.itemsize) for d in options.directions]
    reason = unavailable(case["suite"]) if case.get("suite") in SUITE_LAYERS else None
    if reason:
        for r in records:
            r.update(status="unavailable", error=reason)
        return records
    providers = [PROVIDERS[p] for p in options.providers if p in PROVIDERS]
    if layer.dims == 1:  # no channels-last layout for 1-d tensors
        providers = [p for p in providers if not p.channels_last]
    ours_fn, torch_fn = functions(layer)
    base = make_inputs(layer, tdtype, device)
    grads = any(d != "fwd" for d in options.directions)
    try:
        checks = check_case(
            layer, base, ours_fn, torch_fn, [p for p in providers if p.ours], tdtype, grads
        )
    except Exception as e:
        for r in records:
            r.update(
                status="error", error=f"check raised {type(e).__name__}: {str(e).strip()[:300]}"
            )
        return records
    compiled: ConvFn | None = None
    for rec in records:
        parts = {"fwd": ["fwd"], "bwd": ["bwd"], "both": ["fwd", "bwd"]}[rec["direction"]]
        failed = [checks[p] for p in parts if p in checks and not checks[p]["ok"]]
        rec["check"] = (
            failed[0]
            if failed
            else max(
                (checks[p] for p in parts if p in checks), key=lambda c: c["max_err"], default=None
            )
        )
        if failed:
            rec["status"] = "mismatch"
            continue
        for provider in providers:
            if provider.compiled:
                try:
                    compiled = compiled or compile_max_autotune(torch_fn)
                except Exception as e:
                    err = f"{type(e).__name__}: {str(e).strip()[:300]}"
                    rec["providers"][provider.name] = {"status": "error", "error": err}
                    continue
                fn = compiled
            else:
                fn = ours_fn if provider.ours else torch_fn
            rec["providers"][provider.name] = time_provider(
                fn, layer, base, provider, rec["direction"], options
            )
    return records


def profile_calls(
    case: dict[str, Any],
    dtype: str,
    device: str,
    *,
    providers: Sequence[str] = ("torch", "ours"),
    direction: str = "both",
) -> dict[str, Callable[[], Any]]:
    """Per provider, a callable running ``direction`` once with each pass in a
    ``record_function`` range (``<provider>.fwd`` / ``<provider>.bwd``), for the profiler."""
    from torch.profiler import record_function

    layer = ConvLayer.from_dict(case)
    ours_fn, torch_fn = functions(layer)
    base = make_inputs(layer, DTYPES[dtype], device)
    calls: dict[str, Callable[[], Any]] = {}
    for name in providers:
        provider = PROVIDERS[name]
        if provider.channels_last and memory_format(layer.dims) is None:
            continue
        fn = (
            compile_max_autotune(torch_fn)
            if provider.compiled
            else ours_fn
            if provider.ours
            else torch_fn
        )
        x, w, b, gy = prepared(base, layer, provider.channels_last)
        inputs = _grad_inputs(x, w, b)
        y_kept = fn(x, w, b) if direction == "bwd" else None

        def call(fn=fn, x=x, w=w, b=b, gy=gy, inputs=inputs, y_kept=y_kept, name=name) -> None:
            y = y_kept
            if direction in ("fwd", "both"):
                with record_function(f"{name}.fwd"):
                    y = fn(x, w, b)
            if direction in ("bwd", "both"):
                with record_function(f"{name}.bwd"):
                    torch.autograd.grad(y, inputs, gy, retain_graph=direction == "bwd")

        calls[name] = call
    return calls


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.bench_conv``: the convolution suites through the main CLI."""
    from .__main__ import main as cli

    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a in SUITE_LAYERS for a in argv):
        argv = ["conv", "depthwise", "conv3d", *argv]
    return cli(argv)


if __name__ == "__main__":
    raise SystemExit(main())
