"""Every autotune config of a kernel's tuner, forced alone, on one direction of one layer.

The autotuner keeps the fastest config for each shape, so a config that computes wrong results
(8-warp configs of this loop shape have miscompiled silently: triton#1254, pytorch#173068) can
hide until a user's shape picks it. Here each one runs on its own and is compared with torch.

Which tuner serves the direction is observed, not assumed: one probe run with every tuner pinned
shows the one that ran; then its configs are forced one at a time (the other tuners stay pinned).
"""

from __future__ import annotations

import time
from typing import Any

from . import evaluate, tuners
from .cases import Case
from .compare import compare, exact, is_resource_error
from .device import BrokenDevice, device, healthy
from .problems import Problem, build
from .results import FAIL, SKIP, from_error, from_parts, row

# direction -> (inputs whose gradient runs it, the results it produces, the window it runs in)
DIRECTIONS = {
    "forward": ((), ("output",), "forward"),
    "grad_input": (("input",), ("grad_input",), "backward"),
    "grad_weight": (("weight",), ("grad_weight",), "backward"),
}


def _direction(case: Case, problem: Problem) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """``DIRECTIONS[direction]``; a layer with a bias has its weight gradient checked with the
    bias's, which the weight-gradient kernels sum beside it."""
    grads, parts, window = DIRECTIONS[case.spec["direction"]]
    if case.spec["direction"] == "grad_weight" and "bias" in problem.inputs:
        return (*grads, "bias"), (*parts, "grad_bias"), window
    return grads, parts, window


def run(case: Case, sink: Any, seed: int) -> None:
    found = tuners.discover()
    if not found:
        sink.row(row(case, FAIL, f"no tuner in {tuners.KERNEL_PACKAGE}: no config forced"))
        return
    problem = build(case.spec, device(), seed)
    grads, results, window = _direction(case, problem)
    ref = evaluate.reference(problem, case.dtype, case.layout, grads, seed + 1)

    with tuners.forced(found):  # the probe: which tuner runs this direction?
        _, windows = evaluate.run_ours(problem, ref, grads)
    used = [n for n, t in found.items() if any(t is u for u in windows[window].tuners)]
    if len(used) != 1:
        reason = f"expected one tuner to run {case.spec['direction']}, saw {used or 'none'}"
        sink.row(row(case, FAIL, reason, tuners_found=sorted(found)))
        return

    name = used[0]
    configs = tuners.configs(found[name])
    for k in range(case.spec.get("first_config", 0), len(configs)):
        description = tuners.describe(configs[k])
        sink.progress(k, description)
        fields = dict(
            id=f"{case.id} | {name} config {k + 1}/{len(configs)}: {description}",
            tuner=name,
            config=description,
            config_index=k,
            tuners_found=sorted(found),
        )
        start = time.time()
        try:
            with tuners.forced(found, {name: configs[k]}):
                ours, windows = evaluate.run_ours(problem, ref, grads)
        except Exception as error:
            if is_resource_error(error):
                reason = f"cannot run on this device, so the autotuner skips it: {error}"
                sink.row(row(case, SKIP, reason[:400], **fields))
                continue
            sink.row(from_error(case, error, **fields))
            if not healthy():
                raise BrokenDevice(f"the device failed at {fields['id']}") from error
            continue
        ran = windows[window]
        parts = [
            *(compare(r, ours[r], ref.torch[r], ref.expected[r], case.dtype) for r in results),
            exact(
                f"{name} ran",
                any(t is found[name] for t in ran.tuners),
                "the forced tuner did not run",
            ),
        ]
        seconds = round(time.time() - start, 3)
        sink.row(from_parts(case, parts, launches=ran.summary(), seconds=seconds, **fields))
