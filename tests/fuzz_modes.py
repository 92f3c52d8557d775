"""The ways ``python -m tests.fuzz`` calls a drawn case besides plainly: each mode takes a
:class:`tests.fuzz.Case` and returns the same computation called another way, ours against
torch's, on the same operands or on operands made for the mode.

* ``repeat``: ours called three times, the third compared: its tapes recorded by the first
  two and replayed, after the operands' values changed in place (layouts compared too);
* ``vmap``: ours under ``torch.func.vmap`` over two samples — the input always batched, every
  other operand in half the cases (per-sample weights), along the first or the last dim —
  against torch's result of each sample, stacked;
* ``jvp``: the result and its tangent along random tangents of every operand (forward mode,
  ``torch.func.jvp``, or ``linearize``: traced by ``make_fx``, through the registered ops);
* ``autocast``: ours and torch's under CPU autocast to float16, on float32 or float16
  operands (dtypes compared exactly; values against the call in float64, ours at most twice
  as far from it as torch's), where torch's call is its op (not a definition written with its
  ops);
* ``module``: the drawn call as ``torch.nn`` layers (the operands after the input as their
  parameters, through ``torch.func.functional_call``), ours either converted by
  ``convert_model`` — fusing a drawn activation into the convolution, ``fuse=True`` — or built
  from our classes with torch's constructor arguments;
* ``fake``: ours, forward and backward, under ``CrossRefFakeMode``: every registered op's fake
  (what tracing sees) against its result (sizes, strides, dtype, aliasing);
* ``compile``: ours under ``torch.compile(fullgraph=True)`` with static or dynamic sizes
  (backends ``eager`` and ``aot_eager``: the registered ops' schemas, fakes — on symbolic
  sizes too — and autograd in a graph; and, on our kernels, ``inductor``: our ops as extern
  kernels of its generated code, planned from their fakes) against torch eager;
  arguments torch refuses are not compared (a compiled call may raise its own error types);
* ``trace``: ours recorded by ``torch.jit.trace`` (torch's ops only in its graph) and the
  recording run, against torch eager.
* ``inference``: ours under ``torch.inference_mode()``, three times (the first two record its
  tapes, the third replays them), its weights parameters — as a layer's are — that the first
  two calls change in place, made under the mode (inference tensors, as a model built or
  loaded there holds: no version counter) or before it; the third call's values compared,
  the gradients being the plain call's.

Layouts are not compared in the other modes (the plain cases compare them).
"""

from __future__ import annotations

import dataclasses
import random
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch._subclasses.fake_utils import CrossRefFakeMode
from torch.func import functional_call

import torchconv_ext
from torchconv_ext import nn as ours_nn

if TYPE_CHECKING:
    from tests.fuzz import Case


def _with(case: Case, call: str, **changes: Any) -> Case:
    """``case`` called another way: ``call`` names it in the case's configuration."""
    config = {**case.config, "call": call, **changes.pop("config", {})}
    changes.setdefault("compare_layout", False)
    return dataclasses.replace(case, config=config, second_order=False, **changes)


def outputs(result: Any) -> tuple[torch.Tensor, ...]:
    """A call's results as a tuple (one tensor, or a pooling's values and indices)."""
    return result if isinstance(result, tuple) else (result,)


# --- repeated calls -----------------------------------------------------------------------------


def repeated(case: Case, rng: random.Random) -> Case:
    """Ours called a third time, forward and backward: the first two calls — on the same
    tensors holding other values, changed in place before each — record the call's tapes, the
    third replays them (``triton_kernels._tape``) after its operands got their values back in
    place (so a weight repacked once per version is repacked again)."""
    seed = rng.getrandbits(32)

    def ours(*operands):
        g = torch.Generator().manual_seed(seed)
        saved = [t.detach().clone() for t in operands]
        for _ in range(2):
            with torch.no_grad():
                for t in operands:
                    t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype))
            out = outputs(case.ours(*operands))[0]
            grad = torch.randn(out.shape, generator=g, dtype=out.dtype)
            torch.autograd.grad(out, operands, grad, allow_unused=True)
        with torch.no_grad():
            for t, values in zip(operands, saved):
                t.copy_(values)
        return case.ours(*operands)

    return _with(case, "repeat", ours=ours, compare_layout=case.compare_layout)


# --- vmap ---------------------------------------------------------------------------------------


def vmapped(case: Case, rng: random.Random) -> Case:
    """Two samples: the drawn operands and others of their shapes, stacked."""
    samples = 2
    dims = [0] + [rng.choice([0, None]) for _ in case.operands[1:]]
    if rng.random() < 0.5:  # the last dim instead: each sample a strided view
        dims = [None if d is None else -1 for d in dims]
    g = torch.Generator().manual_seed(rng.getrandbits(32))
    stacked = []
    for t, dim in zip(case.operands, dims):
        if dim is None:
            stacked.append(t)
            continue
        other = torch.randn(t.shape, generator=g, dtype=t.dtype)
        stacked.append(torch.stack([t.detach(), other], dim=dim).requires_grad_())

    def sample(operands: tuple, i: int) -> list[torch.Tensor]:
        return [t if d is None else t.select(d, i) for t, d in zip(operands, dims)]

    def ours(*operands):
        return torch.func.vmap(case.ours, in_dims=tuple(dims))(*operands)

    def theirs(*operands):
        results = [outputs(case.theirs(*sample(operands, i))) for i in range(samples)]
        stacked = tuple(torch.stack(outputs) for outputs in zip(*results))
        return stacked if len(stacked) > 1 else stacked[0]

    return _with(case, "vmap", ours=ours, theirs=theirs, operands=stacked,
                 config={"in_dims": dims})  # fmt: skip


# --- forward mode -------------------------------------------------------------------------------


def forward_mode(case: Case, rng: random.Random) -> Case:
    """The result and its tangent along random tangents of every operand: ``torch.func.jvp``,
    or in half the cases ``torch.func.linearize`` (forward mode traced by ``make_fx``: the
    registered ops' own forward mode); gradients are of the result."""
    g = torch.Generator().manual_seed(rng.getrandbits(32))
    tangents = tuple(torch.randn(t.shape, generator=g, dtype=t.dtype) for t in case.operands)
    linearized = rng.random() < 0.5

    def with_tangent(fn: Callable[..., Any], linearize: bool) -> Callable[..., Any]:
        def first(*o: torch.Tensor) -> torch.Tensor:
            return outputs(fn(*o))[0]

        def call(*operands):
            if linearize:
                out, tangent_of = torch.func.linearize(first, *operands)
                return out, tangent_of(*tangents)
            return torch.func.jvp(first, operands, tangents)

        return call

    # (torch's side by jvp: its linearize of a convolution after circular padding gives wrong
    # weight tangents in torch 2.13, its jvp the right ones)
    return _with(
        case, "jvp", ours=with_tangent(case.ours, linearized),
        theirs=with_tangent(case.theirs, False), config={"linearized": linearized},
    )  # fmt: skip


# --- autocast -----------------------------------------------------------------------------------


def autocast(case: Case, rng: random.Random) -> Case:
    """Float16, not bfloat16: Triton's interpreter cannot compute in bfloat16."""
    dtype = rng.choice([torch.float32, torch.float16])
    operands = [t.detach().to(dtype).requires_grad_() for t in case.operands]

    def under_autocast(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*operands):
            with torch.autocast("cpu", dtype=torch.float16):
                return fn(*operands)

        return call

    # Ours and torch's each round float16 partial sums their own way: both are measured
    # against the call in float64 on the operands as autocast rounds them (``Case.exact``).
    return _with(case, "autocast", ours=under_autocast(case.ours),
                 theirs=under_autocast(case.theirs), operands=operands, exact=case.theirs,
                 config={"dtype": str(dtype)})  # fmt: skip


# --- nn modules ---------------------------------------------------------------------------------


def as_module(case: Case, rng: random.Random) -> Case:
    """``case.layers(namespace)`` builds the layers and names the parameters the operands after
    the input stand for; only cases that have layers in ``torch.nn`` get this mode."""
    how = rng.choice(["convert_model", "our class"])

    def call(namespace: Any, *, convert: bool = False) -> Callable[..., Any]:
        def run(x, *params):
            module, names = case.layers(namespace)
            if convert:  # (fusing moves a PReLU's weight into the convolution)
                module = torchconv_ext.convert_model(module, fuse=True)
                names = tuple(_moved_by_fusion(module, n) for n in names)
            return functional_call(module, dict(zip(names, params)), (x,))

        return run

    ours = call(torch.nn, convert=True) if how == "convert_model" else call(ours_nn)
    return _with(case, "module", ours=ours, theirs=call(torch.nn), config={"built": how})


def _moved_by_fusion(module: torch.nn.Module, name: str) -> str:
    """Where parameter ``name`` of a ``Sequential(conv, activation)`` is after fusion."""
    params = dict(module.named_parameters())
    return name if name in params or name != "1.weight" else "0.activation_weight"


# --- fake tensors -------------------------------------------------------------------------------


def cross_checked(case: Case, rng: random.Random) -> Case:
    """Ours forward and backward under ``CrossRefFakeMode``: each registered op (the path a
    dispatch mode takes) also runs on fake tensors, its fake's sizes, strides, dtype and
    aliasing checked against its result's."""

    def ours(*operands):
        with CrossRefFakeMode(_not_ours, check_strides=True):
            result = case.ours(*operands)
            out = outputs(result)[0]
            grad = torch.ones(out.shape, dtype=out.dtype)
            torch.autograd.grad(out, operands, grad, retain_graph=True, allow_unused=True)
        return result

    return _with(case, "fake", ours=ours)


def _not_ours(op: torch._ops.OpOverload) -> bool:
    """Whether ``op`` is torch's, whose fake is not checked: the fallback's derivatives call
    torch's ops, and some of their metas give other strides than their CPU kernels for mixed
    layouts (``aten.elu_backward``'s, torch 2.13)."""
    return op.namespace != "torchconv_ext"


# --- torch.compile ------------------------------------------------------------------------------


#: Fused activations whose backward Inductor computes less precisely than torch's eager op:
#: torch 2.13's Inductor lowers ``hardsigmoid_backward`` about 1e-8 off in float64 (torch's own
#: compiled ``F.hardsigmoid`` after a convolution differs from its eager gradient by 6e-8), and a
#: fused activation's backward is torch's op. Those cases are not compiled by Inductor.
INDUCTOR_IMPRECISE = ("hardsigmoid",)


def _unbatched_convolution(case: Case) -> bool:
    """An unbatched convolution (``batch`` None), which torch 2.13's Inductor cannot compile
    with dynamic sizes when it reaches a registered op (README's known limits)."""
    return case.config["op"].startswith("conv") and case.config.get("batch", 0) is None


def compiled(case: Case, rng: random.Random, *, inductor: bool = True) -> Case:
    """Static or dynamic sizes; the call's int arguments are constants in either, as a layer's
    are (Dynamo would take a closure's ints for sizes too). ``inductor``: whether Inductor may
    be drawn — not on the fallback, where ours are mostly torch's own ops and Inductor's
    lowerings of them are torch's (some are wrong on the CPU: torch 2.13's ``avg_pool2d``
    backward with ``ceil_mode``, its ``convolution_backward`` on dynamic sizes)."""
    inductor = inductor and case.config.get("activation") not in INDUCTOR_IMPRECISE
    backends = ["eager", "aot_eager", "inductor"] if inductor else ["eager", "aot_eager"]
    backend, dynamic = rng.choice(backends), rng.random() < 0.5
    if backend == "inductor" and _unbatched_convolution(case):
        dynamic = False

    def ours(*operands):
        torch._dynamo.reset()  # (every case's closure would count against one code's recompiles)
        with torch._dynamo.config.patch(specialize_int=True):
            compiled = torch.compile(case.ours, backend=backend, fullgraph=True, dynamic=dynamic)
            return compiled(*operands)

    config = {"backend": backend, "dynamic": dynamic}
    return _with(case, "compile", ours=ours, check_refusals=False, config=config)


# --- torch.jit.trace ----------------------------------------------------------------------------


def traced(case: Case, rng: random.Random) -> Case:
    """Ours recorded by ``torch.jit.trace`` — as TorchScript files and ONNX's TorchScript-based
    exporter record it — then the recording run: its graph must hold torch's ops only (no op
    of ours, no Python), whatever the backend."""

    def ours(*operands):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (TracerWarnings where our Python reads sizes)
            recorded = torch.jit.trace(case.ours, tuple(operands), check_trace=False)
        kinds = {node.kind() for node in recorded.inlined_graph.nodes()}
        foreign = sorted(k for k in kinds if not k.startswith(("aten::", "prim::")))
        if foreign:
            raise AssertionError(f"the trace holds {foreign}")
        return recorded(*operands)

    return _with(case, "trace", ours=ours, check_refusals=False)


# --- inference mode -----------------------------------------------------------------------------


def inference(case: Case, rng: random.Random) -> Case:
    """Ours under ``torch.inference_mode()`` (see the module doc). Results made there cannot
    be differentiated: the plain call's carry its values."""
    made_inside, seed = rng.random() < 0.5, rng.getrandbits(32)

    def ours(*operands):
        g = torch.Generator().manual_seed(seed)
        with torch.inference_mode(made_inside):
            tensors = [t.detach().clone() for t in operands]
            tensors[1:] = [torch.nn.Parameter(t, requires_grad=False) for t in tensors[1:]]
        with torch.inference_mode():
            for _ in range(2):
                for t in tensors:
                    t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype))
                case.ours(*tensors)
            for t, values in zip(tensors, operands):
                t.copy_(values.detach())
            inferred = [r.clone() for r in outputs(case.ours(*tensors))]  # (clones: plain)
        carried = [p.clone() for p in outputs(case.ours(*operands))]
        with torch.no_grad():  # (the clones' backward is the identity: it saves nothing)
            for c, values in zip(carried, inferred):
                c.copy_(values)
        return tuple(carried) if len(carried) > 1 else carried[0]

    return _with(case, "inference", ours=ours, config={"made_inside": made_inside})


#: Each mode and the share of cases drawn in it (the rest are called plainly).
MODES: tuple[tuple[Callable[[Case, random.Random], Case], float], ...] = (
    (repeated, 0.1),
    (vmapped, 0.1),
    (forward_mode, 0.05),
    (autocast, 0.1),
    (as_module, 0.15),
    (cross_checked, 0.05),
    (compiled, 0.03),
    (traced, 0.03),
    (inference, 0.05),
)


def draw_mode(case: Case, rng: random.Random, backend: str = "triton") -> Case:
    """``case``, to be run on ``backend``, in a mode drawn by the shares of :data:`MODES`, or
    as it is."""
    drawn = rng.random()
    for mode, share in MODES:
        if drawn < share:
            if (mode is as_module and case.layers is None) or (
                mode is autocast and not case.autocasts
            ):
                return case
            if mode is compiled:
                return compiled(case, rng, inductor=backend == "triton")
            return mode(case, rng)
        drawn -= share
    return case
