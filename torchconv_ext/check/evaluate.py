"""Running one problem three ways — torch in float64, torch in the checked dtype, ours — and
comparing.

All three get the same low-precision inputs (the float64 reference gets them upcast) in the
case's memory layout, and the same output gradient; ours runs with backend ``"triton"`` (which
never falls back to torch) inside an :func:`observe.window`, so a result that did not come from
our kernels is caught.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import torchconv_ext

from . import observe
from .compare import compare, exact
from .problems import Problem

DTYPES = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "tf32": torch.float32,
    "fp32": torch.float32,
    "fp64": torch.float64,
}


def to_layout(t: Tensor, layout: str) -> Tensor:
    """``t`` in NCHW (contiguous) or channels-last (4-d and 5-d tensors; others contiguous)."""
    if layout == "channels_last" and t.dim() in (4, 5):
        fmt = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
        return t.contiguous(memory_format=fmt)
    return t.contiguous()


@contextlib.contextmanager
def numerics(setting: str) -> Iterator[None]:
    """fp32 convolutions in TF32 exactly for the "tf32" setting (our kernels follow cuDNN's
    switch, as torch's convolutions do)."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = setting == "tf32"
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


@dataclass
class Reference:
    """Torch's results for one problem: ``expected`` in float64, ``torch`` in the dtype."""

    setting: str
    inputs: dict[str, Tensor]  # in the checked dtype and layout
    grad_output: Tensor | None
    expected: dict[str, Tensor]
    torch: dict[str, Tensor]


def _forward_backward(
    fn: Callable[..., Tensor],
    inputs: dict[str, Tensor],
    grads: tuple[str, ...],
    grad_output: Callable[[Tensor], Tensor] | Tensor | None,
) -> tuple[dict[str, Tensor], Tensor | None]:
    leaves = {k: v.detach().requires_grad_(k in grads) for k, v in inputs.items()}
    out = fn(*leaves.values())
    parts = {"output": out.detach()}
    if not grads:
        return parts, None
    gy = grad_output(out) if callable(grad_output) else grad_output
    got = torch.autograd.grad(out, [leaves[k] for k in grads], gy.to(out.dtype))
    parts.update({f"grad_{k}": g for k, g in zip(grads, got)})
    return parts, gy


#: The results laid out like the input (the others are parameters and their gradients).
ACTIVATIONS = ("output", "grad_input")


class TorchCannot(Exception):
    """Torch's own op does not run this case here (e.g. no fp16 kernel on the CPU): there is
    nothing to compare with."""


def reference(
    problem: Problem,
    setting: str,
    layout: str,
    grads: tuple[str, ...],
    seed: int,
    grad_output: Tensor | None = None,
) -> Reference:
    """Torch's results; the output gradient is random (``seed``) unless given."""
    dtype = DTYPES[setting]
    lowp = {k: to_layout(v.to(dtype), layout) for k, v in problem.inputs.items()}

    def random_like(out: Tensor) -> Tensor:
        gen = torch.Generator(device=out.device.type).manual_seed(seed)
        values = torch.randn(out.shape, generator=gen, device=out.device, dtype=torch.float64)
        return torch.empty_like(out).copy_(values)  # torch's output layout, the checked dtype

    with numerics(setting):
        given = grad_output if grad_output is not None else random_like
        try:
            theirs, gy = _forward_backward(problem.theirs, lowp, grads, given)
        except NotImplementedError as error:
            raise TorchCannot(f"torch's own op does not run this case here: {error}") from error
        upcast = {k: v.double() for k, v in lowp.items()}  # keeps the layout
        expected, _ = _forward_backward(problem.theirs, upcast, grads, gy)
    if problem.activations_in_case_layout:
        theirs = {
            k: to_layout(v, layout) if k in ACTIVATIONS else v.contiguous()
            for k, v in theirs.items()
        }
    elif problem.layout_as_on_cuda and not next(iter(lowp.values())).is_cuda:
        theirs = {k: to_layout(v, layout) for k, v in theirs.items()}
    return Reference(setting, lowp, gy, expected, theirs)


#: The forward again without gradients: an op may compute otherwise while autograd records it
#: (a fused activation needing its pre-activation runs unfused), so both are checked.
INFERENCE = "output without gradients"


def run_ours(
    problem: Problem, ref: Reference, grads: tuple[str, ...], inference: bool = False
) -> tuple[dict[str, Tensor], dict[str, observe.Window]]:
    """Our results on the reference's inputs, and what ran in the forward and the backward
    (``inference``: and in a forward without gradients, :data:`INFERENCE`)."""
    windows = {}
    with torchconv_ext.use_backend("triton"), numerics(ref.setting):
        leaves = {k: v.detach().requires_grad_(k in grads) for k, v in ref.inputs.items()}
        with observe.window() as windows["forward"]:
            out = problem.ours(*leaves.values())
        parts = {"output": out.detach()}
        if grads:
            with observe.window() as windows["backward"]:
                got = torch.autograd.grad(out, [leaves[k] for k in grads], ref.grad_output)
            parts.update({f"grad_{k}": g for k, g in zip(grads, got)})
            if inference:
                with torch.no_grad(), observe.window() as windows["inference"]:
                    parts[INFERENCE] = problem.ours(*leaves.values())
    return parts, windows


def same_again(first: dict[str, Tensor], later: dict[str, Tensor], what: str) -> dict[str, Any]:
    """A record: a later call of the same problem gave the first call's results bit for bit
    (values and strides)."""
    differ = [
        name
        for name, t in first.items()
        if not (torch.equal(t, later[name]) and t.stride() == later[name].stride())
    ]
    return exact(
        f"{what} equals call 1",
        not differ,
        f"{', '.join(differ)} differ from the first call's (a replayed launcher tape?)",
    )


def compare_all(
    ours: dict[str, Tensor], ref: Reference, only: tuple[str, ...] | None = None
) -> list[dict[str, Any]]:
    """One record per result (``only``: those parts)."""
    names = only or tuple(ref.expected)
    records = [compare(n, ours[n], ref.torch[n], ref.expected[n], ref.setting) for n in names]
    if INFERENCE in ours and only is None:
        expected, theirs = ref.expected["output"], ref.torch["output"]
        records.append(compare(INFERENCE, ours[INFERENCE], theirs, expected, ref.setting))
    return records


def ran(windows: dict[str, observe.Window]) -> list[dict[str, Any]]:
    """A record per window: did our Triton code run in it?"""
    return [
        exact(
            f"{name} ran our kernels",
            w.ran,
            "no triton_kernels kernel or launcher ran: the result is not ours (a fallback to "
            "torch?)",
        )
        for name, w in windows.items()
    ]


def launches(windows: dict[str, observe.Window]) -> dict[str, Any]:
    return {name: w.summary() for name, w in windows.items()}
