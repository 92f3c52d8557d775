"""What one case runs: its operands and the two implementations, ours and torch's.

Every suite's layer (:mod:`benchmarks.shapes`) becomes a :class:`Workload`: the functional op of
``torchconv_ext.functional`` and of ``torch.nn.functional`` bound to the layer's arguments, and
random operands in the benchmarked dtype. The measuring code (:mod:`benchmarks.measure`), the
budget run, the profiler and the compile report all build their calls from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .providers import memory_format
from .shapes import ConvLayer, Layer, LocalLayer, PoolLayer, UpsampleLayer

Operands = tuple[torch.Tensor | None, ...]
Op = Callable[..., torch.Tensor]


@dataclass
class Workload:
    """One layer in one dtype on one device: operands, gradient, and the two implementations."""

    layer: Layer
    ours: Op
    torch: Op
    operands: Operands  # contiguous, in the benchmarked dtype; None for an absent bias
    grad_output: torch.Tensor
    names: tuple[str, ...]  # of the operands, for messages ("input", "weight", "bias")


def required_ops(layer: Layer) -> set[str]:
    """The ``torchconv_ext.functional`` names a layer's "ours" calls."""
    return {layer.op}


def functions(layer: Layer) -> tuple[Op, Op]:
    """``(ours, torch)``: the layer's op from torchconv_ext.functional and torch.nn.functional."""
    import torchconv_ext.functional as ours_f

    if isinstance(layer, LocalLayer):
        return _local_functions(layer, ours_f)
    if isinstance(layer, ConvLayer):
        kw: dict[str, Any] = dict(
            stride=layer.arg("stride"),
            padding=layer.arg("padding"),
            dilation=layer.arg("dilation"),
            groups=layer.groups,
        )
        if layer.transposed:
            kw["output_padding"] = layer.arg("output_padding")
        ours_op, torch_op = getattr(ours_f, layer.op), getattr(F, layer.op)
        if layer.activation:
            return _activated(ours_op, torch_op, layer.activation, kw)
        return (lambda x, w, b: ours_op(x, w, b, **kw)), (lambda x, w, b: torch_op(x, w, b, **kw))
    if isinstance(layer, PoolLayer):
        return _pool_functions(layer, ours_f)
    if isinstance(layer, UpsampleLayer):
        kw = dict(scale_factor=layer.scale, mode="nearest")
        return (lambda x: ours_f.interpolate(x, **kw)), (lambda x: F.interpolate(x, **kw))
    raise TypeError(f"no functions for a {type(layer).__name__}")


def _activated(ours_op: Op, torch_op: Op, activation: str, kw: dict[str, Any]) -> tuple[Op, Op]:
    """Ours with the activation fused (``activation=``); torch's convolution, then its
    activation."""
    act = getattr(F, activation)
    return (
        lambda x, w, b: ours_op(x, w, b, activation=activation, **kw),
        lambda x, w, b: act(torch_op(x, w, b, **kw)),
    )


def _local_functions(layer: LocalLayer, ours_f: Any) -> tuple[Op, Op]:
    """Ours; and torch's way to write a locally connected or tiled convolution (torch has no
    op for it): every tap's windows, each position's kernel gathered from its tile, and one
    ``einsum`` (``torchconv_ext.check.problems.tiled_conv_by_torch``, what the check compares
    with), its result in the input's memory format as torch's convolutions return theirs."""
    from torchconv_ext.check.problems import tiled_conv_by_torch

    kw: dict[str, Any] = dict(
        stride=layer.arg("stride"),
        padding=layer.arg("padding"),
        dilation=layer.arg("dilation"),
        groups=layer.groups,
    )
    ours_op = getattr(ours_f, layer.op)
    fmt = memory_format(layer.dims)

    def torch_local(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        y = tiled_conv_by_torch(x, w, b, **kw)
        channels_last = (
            fmt is not None and x.is_contiguous(memory_format=fmt) and not x.is_contiguous()
        )
        return y.contiguous(memory_format=fmt if channels_last else torch.contiguous_format)

    return (lambda x, w, b: ours_op(x, w, b, **kw)), torch_local


def _pool_functions(layer: PoolLayer, ours_f: Any) -> tuple[Op, Op]:
    if layer.op == "global_avg_pool":
        adaptive = getattr(F, f"adaptive_avg_pool{layer.dims}d")
        return ours_f.global_avg_pool, lambda x: adaptive(x, 1).flatten(1)
    if layer.op == "spatial_pyramid_pool":
        adaptive = getattr(F, f"adaptive_{layer.mode}_pool{layer.dims}d")
        levels, mode = layer.levels, layer.mode

        def torch_pyramid(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([adaptive(x, level).flatten(1) for level in levels], 1)

        return (lambda x: ours_f.spatial_pyramid_pool(x, levels, mode)), torch_pyramid
    kw = dict(kernel_size=layer.kernel, stride=layer.stride, padding=layer.padding)
    ours_op, torch_op = getattr(ours_f, layer.op), getattr(F, layer.op)
    return (lambda x: ours_op(x, **kw)), (lambda x: torch_op(x, **kw))


def make_workload(
    layer: Layer, dtype: torch.dtype, device: str, seed: int = 0, *, random: bool = True
) -> Workload:
    """Random operands for ``layer`` (conv weights scaled by 1/sqrt(fan-in) so outputs stay
    O(1)); ``random=False`` leaves them uninitialised (for runs that never read the values)."""
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(shape: Sequence[int], scale: float = 1.0) -> torch.Tensor:
        if not random:
            return torch.empty(tuple(shape), device=device, dtype=dtype)
        t = torch.randn(tuple(shape), generator=g, device=device, dtype=torch.float32)
        return (t * scale).to(dtype)

    ours, theirs = functions(layer)
    x = randn(layer.input_shape)
    if isinstance(layer, ConvLayer):
        fan_in = math.prod(layer.weight_shape[1:])
        if layer.transposed:  # weight is (C_in, C_out/groups, k...): an output sums C_in/groups
            fan_in = layer.c_in // layer.groups * math.prod(layer.arg("kernel"))
        if isinstance(layer, LocalLayer):  # weight (*lead, C_out, C_in/groups, k...)
            fan_in = layer.c_in // layer.groups * math.prod(layer.arg("kernel"))
        w = randn(layer.weight_shape, 1 / math.sqrt(fan_in))
        b = randn(layer.bias_shape) if layer.bias else None
        operands, names = (x, w, b), ("input", "weight", "bias")
    else:
        operands, names = (x,), ("input",)
    return Workload(layer, ours, theirs, operands, randn(layer.output_shape), names)


def needs_grad(layer: Layer, operands: Operands) -> tuple[bool, ...]:
    """Which operands take a gradient in training: weights and biases always, the input unless
    the layer is its network's first."""
    return tuple(t is not None and (i > 0 or layer.input_grad) for i, t in enumerate(operands))


def prepared(
    wl: Workload, channels_last: bool, *, copy: bool = False, dtype: torch.dtype | None = None
) -> tuple[Operands, torch.Tensor]:
    """Leaf operands and grad_output for one provider: its layout, ``requires_grad`` as in
    training, the weight and bias as ``nn.Parameter`` objects (what a model's layer passes:
    torchconv_ext repacks a parameter once per version, a plain tensor at every call);
    ``copy`` gives fresh storage (distinct inputs), ``dtype`` a cast (the reference)."""
    layer = wl.layer
    fmt = (memory_format(layer.dims) if channels_last else None) or torch.contiguous_format

    def leaf(t: torch.Tensor | None, grad: bool, parameter: bool = False) -> torch.Tensor | None:
        if t is None:
            return None
        if dtype is not None:
            t = t.to(dtype)
        f = fmt if t.dim() == layer.dims + 2 else torch.contiguous_format  # not a bias
        t = t.clone(memory_format=f) if copy else t.contiguous(memory_format=f)
        if parameter:
            return torch.nn.Parameter(t.detach(), requires_grad=grad)
        return t.detach().requires_grad_(grad)

    grads = needs_grad(layer, wl.operands)
    operands = tuple(leaf(t, g, i > 0) for i, (t, g) in enumerate(zip(wl.operands, grads)))
    return operands, leaf(wl.grad_output, False)


#: The directions that stand for part of a training step, whose optimizer step changes the
#: weights: each call of ours repacks the weights it reads in another layout, once, as the first
#: forward after an optimizer step does (``bwd`` reuses the copies of its step's forward,
#: ``infer`` never repacks).
TRAINING_STEP_DIRECTIONS = ("fwd", "both")


def after_optimizer_step() -> None:
    """What an optimizer step leaves for ours: no repacked weight (it forgets those of the
    parameters it steps) — one repack per weight in the next forward."""
    from torchconv_ext import clear_weight_cache

    clear_weight_cache()


def grad_operands(operands: Operands) -> tuple[torch.Tensor, ...]:
    return tuple(t for t in operands if t is not None and t.requires_grad)


def make_call(
    fn: Op, operands: Operands, gy: torch.Tensor, direction: str, *, ours: bool = False
) -> Callable[[], Any]:
    """A zero-argument callable running ``direction`` of ``fn`` on ``operands``.

    ``infer`` runs the forward without gradients; ``fwd`` with autograd recording, as a
    training forward does; ``bwd`` differentiates a graph built once (``retain_graph``);
    ``both`` does forward and backward in each call. ``ours``: ``fn`` is torchconv_ext's, and
    ``fwd`` and ``both`` begin where an optimizer step leaves it (:func:`after_optimizer_step`).
    """
    inputs = grad_operands(operands)
    if direction == "infer":
        return torch.no_grad()(lambda: fn(*operands))
    if direction == "bwd":
        y = fn(*operands)
        return lambda: torch.autograd.grad(y, inputs, gy, retain_graph=True)
    if direction not in TRAINING_STEP_DIRECTIONS:
        raise ValueError(f"direction must be 'infer', 'fwd', 'bwd' or 'both', got {direction!r}")
    step = after_optimizer_step if ours else _no_step

    def forward() -> Any:
        step()
        return fn(*operands)

    if direction == "fwd":
        return forward
    return lambda: torch.autograd.grad(forward(), inputs, gy)


def _no_step() -> None:
    pass


def run_once(fn: Op, operands: Operands, gy: torch.Tensor, grads: bool) -> list:
    """``[output, grad of each operand (None where it takes none)]`` — or just ``[output]``."""
    y = fn(*operands)
    if not grads:
        return [y]
    got = iter(torch.autograd.grad(y, grad_operands(operands), gy))
    return [y] + [next(got) if t is not None and t.requires_grad else None for t in operands]
