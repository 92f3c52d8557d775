"""One op on a tensor past 2**31 elements: the kernels' int64 offset path.

The whole tensor goes through our op (forward and backward); torch recomputes only the last
sample, which starts at offset 2**31 and so is addressed wrongly if any offset wraps at 32 bits.
The output gradient is zero except on that sample, so every gradient — the weight's too — equals
the one of the slice alone. Whole-tensor checks catch the rest: the output holds no NaN (outputs
are NaN-poisoned before the kernels write them) and the input gradient is exactly zero before
the last sample.
"""

from __future__ import annotations

import time
from typing import Any

import torch

import torchconv_ext

from . import evaluate, observe, tuners
from .cases import Case
from .compare import exact
from .device import device
from .problems import Problem, functions, input_shapes
from .results import SKIP, from_parts, row

GIB = 2**30


def run(case: Case, sink: Any, seed: int) -> None:
    if device() != "cuda":
        sink.row(row(case, SKIP, "needs a CUDA GPU"))
        return
    torch.cuda.empty_cache()
    free = torch.cuda.mem_get_info()[0]
    need = case.spec["need_gib"] * GIB
    if free < need:
        reason = f"needs about {need / GIB:.0f} GiB of free GPU memory, {free / GIB:.0f} GiB free"
        sink.row(row(case, SKIP, reason))
        return
    try:
        sink.row(check(case, seed, "cuda", free_gib=round(free / GIB, 1)))
    finally:
        torch.cuda.empty_cache()


def _inputs(case: Case, seed: int, dev: str) -> dict[str, torch.Tensor]:
    """The big input straight in the case's dtype; weights scaled as in ``problems``."""
    gen = torch.Generator(device=dev).manual_seed(seed)
    inputs = {}
    for name, shape in input_shapes(case.spec).items():
        t = torch.randn(shape, generator=gen, device=dev, dtype=evaluate.DTYPES[case.dtype])
        inputs[name] = t / t[0].numel() ** 0.5 if name == "weight" else t
    return inputs


def check(case: Case, seed: int, dev: str, **fields: Any) -> dict[str, Any]:
    """The checks above on ``dev`` (any size of tensor: the logic is the same)."""
    start = time.time()
    ours_fn, theirs_fn = functions(case.spec)
    inputs = _inputs(case, seed, dev)
    names = tuple(inputs)
    leaves = {k: v.requires_grad_() for k, v in inputs.items()}
    found = tuners.discover()
    with torchconv_ext.use_backend("triton"), tuners.forced(found):
        with observe.window() as fw:
            out = ours_fn(*leaves.values())
        grad_out = torch.zeros_like(out)
        gen = torch.Generator(device=dev).manual_seed(seed + 1)
        last = torch.randn(grad_out[-1:].shape, generator=gen, device=dev)
        grad_out[-1:] = last
        with observe.window() as bw:
            got = torch.autograd.grad(out, list(leaves.values()), grad_out)
    grads = {f"grad_{k}": g for k, g in zip(names, got)}
    windows = {"forward": fw, "backward": bw}
    parts = evaluate.ran(windows)
    parts.append(
        exact(
            "output written everywhere",
            bool(torch.isfinite(out).all()),
            "NaN or inf in the output: an element was not written (or read out of place)",
        )
    )
    parts.append(
        exact(
            "grad_input is zero before the last sample",
            not bool(grads["grad_input"][:-1].any()),
            "nonzero or NaN where the output gradient is zero: a write landed out of place",
        )
    )

    # Torch on the last sample (float64 reference, and the dtype for torch's own error).
    sample = {k: (v[-1:] if k == "input" else v).detach().double() for k, v in inputs.items()}
    problem = Problem(sample, ours_fn, theirs_fn, names)
    ref = evaluate.reference(problem, case.dtype, "nchw", names, seed, grad_output=grad_out[-1:])
    ours = {"output": out[-1:].detach(), **grads}
    ours["grad_input"] = grads["grad_input"][-1:]
    parts += evaluate.compare_all(ours, ref)
    seconds = round(time.time() - start, 3)
    return from_parts(case, parts, launches=evaluate.launches(windows), seconds=seconds, **fields)
