"""The kernel launches of ``python -m torchconv_ext check`` on a GPU, captured without one.

``python -m benchmarks.compile_report --check`` compiles them for the target: every kernel
variant the GPU check launches — each op family in bf16, fp16, fp32 with TF32 on and off, and
fp64, NCHW and channels-last, at the check's layer shapes, past 2**31 elements too, and every
kernel again on its int64 offset path — so that a variant that does not compile for the GPU (a
construct only the interpreter accepts, an fp64 matrix product the target lacks) shows up
before the first GPU run, not in it.

Each case's op runs as the check runs it — forward, every gradient, and the forward again
without gradients — on uninitialised CPU tensors in the case's dtype and layout, under the
stand-in GPU's capture mode (:mod:`benchmarks.standin`): launches are recorded, not run. A
case of the per-config sweep is captured as its layer's whole forward and backward, which
launches its direction's kernel; the sweep then forces each config of it. Which configs are
compiled is the check's own choice by default (:func:`configs_as_run`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The check's layouts as the compile report names them.
LAYOUTS = {"nchw": "nchw", "channels_last": "cl"}
#: The check's settings in the order the report lists them.
SETTINGS = ("bf16", "fp16", "tf32", "fp32", "fp64")


def cases(quick: bool = False, only: list[str] | None = None) -> list[Any]:
    """The GPU check's cases (``only``: those whose name holds one of these fragments)."""
    from torchconv_ext.check.cases import plan, select

    return select(plan(cuda=True, quick=quick), only)


def capture_case(case: Any, state: Any) -> list[Any]:
    """The launches of one case (stand-in capture mode), as the check makes them."""
    import torch

    from torchconv_ext.check.evaluate import DTYPES, numerics, to_layout
    from torchconv_ext.check.problems import functions, input_shapes

    ours, _ = functions(case.spec)
    dtype = DTYPES[case.dtype]
    inputs = [
        to_layout(torch.empty(shape, dtype=dtype), case.layout).requires_grad_()
        for shape in input_shapes(case.spec).values()
    ]
    first = len(state.launches)
    with numerics(case.dtype):
        out = ours(*inputs)
        torch.autograd.grad(out, inputs, torch.empty_like(out))
        if case.kind != "large":
            with torch.no_grad():
                ours(*inputs)
    return state.launches[first:]


#: The label of a case's launches on their int64 offset path.
INT64 = " (int64 offsets)"


def configs_as_run(label: str) -> str:
    """Which configs of a case's launches the check runs (``compile_report.plan``'s
    ``configs``): the pinned one for an op case (and for the int64 offset path, whose code
    does not depend on the config), every one for the sweep and the autotuned cases."""
    if label.endswith(INT64) or not label.startswith(("conv-config |", "conv-autotuned |")):
        return "pinned"
    return "all"


def with_int64_offsets(launch: Any) -> Any | None:
    """``launch`` on its kernel's int64 offset path (``USE_INT64``), which launchers take for
    tensors past 2**31 elements; ``None`` where it takes that path already or has none."""
    from .standin import Launch

    if launch.kwargs.get("USE_INT64", True):
        return None
    return Launch(launch.kernel, launch.args, {**launch.kwargs, "USE_INT64": True})


def capture(
    chosen: list[Any], state: Any, failed: Callable[[str], None]
) -> list[tuple[str, str, Any]]:
    """``(case id, layout, launch)`` for every launch of the ``chosen`` cases, and each again on
    its int64 offset path (the case labelled ``... (int64 offsets)``): the check runs that path
    for three ops only (its cases past 2**31 elements), so the others' is compiled here.
    ``failed`` gets a message per case that could not be captured."""
    captured: list[tuple[str, str, Any]] = []
    for case in chosen:
        try:
            got = capture_case(case, state)
        except Exception as e:
            failed(f"{case.id}: capture failed: {e!r}"[:300])
            continue
        layout = LAYOUTS[case.layout]
        captured += [(case.id, layout, launch) for launch in got]
        for launch in got:
            if (wide := with_int64_offsets(launch)) is not None:
                captured.append((f"{case.id}{INT64}", layout, wide))
    return captured
