"""From a case's ``spec`` to runnable code: the inputs, our op and torch's op.

Ours is always reached through ``torchconv_ext.functional``, looked up when it is called (so a
replaced function is what runs); torch's is ``torch.nn.functional`` (or, for the ops torch lacks,
the torch expression they equal).
"""

from __future__ import annotations

import importlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import torchconv_ext
from torchconv_ext._args import expand, expand_pairs
from torchconv_ext._padding import pad_input


@dataclass
class Problem:
    """``inputs`` in call order (float64 values); ``grads`` names the inputs whose gradients are
    checked."""

    inputs: dict[str, Tensor]
    ours: Callable[..., Tensor]
    theirs: Callable[..., Tensor]
    grads: tuple[str, ...]
    #: Results take the case's layout whatever the device: convolutions follow the rule torch
    #: applies on CUDA (cuDNN: channels-last operands give channels-last results), which torch's
    #: CPU convolutions do not always follow (oneDNN returns some 3-d results contiguous).
    layout_as_on_cuda: bool = False
    #: Torch's side is an expression of several ops, whose strides follow no rule of torch's:
    #: its output and input gradient take the case's layout (the rule of ours, a convolution's)
    #: on every device, and its other results (parameters' gradients) are contiguous.
    activations_in_case_layout: bool = False


def _ours(name: str) -> Callable[..., Any]:
    return lambda *args, **kwargs: getattr(torchconv_ext.functional, name)(*args, **kwargs)


def functions(spec: dict[str, Any]) -> tuple[Callable[..., Tensor], Callable[..., Tensor]]:
    """``(ours, theirs)`` of a spec, each called with the inputs in :func:`input_shapes` order."""
    op = spec["op"]
    if op == "conv":
        name = f"conv_transpose{spec['dims']}d" if spec["transposed"] else f"conv{spec['dims']}d"
        geometry = dict(stride=spec["stride"], padding=spec["padding"], groups=spec["groups"],
                        dilation=spec["dilation"])  # fmt: skip
        ours, theirs = _ours(name), getattr(F, name)
        if not spec["transposed"] and _explicit(spec):
            ours, theirs = _explicitly_padded(ours, theirs, spec, spec["dims"])
        pieces = spec.get("pieces", 1)
        if pieces > 1:  # a maxout over the convolution's channels (``nn.MaxoutConv*d``)
            return (
                lambda x, w, b=None: _maxout_conv(spec["dims"], x, w, b, pieces, geometry),
                lambda x, w, b=None: theirs(x, w, b, **geometry).unflatten(1, (-1, pieces)).amax(2),
            )
        if spec.get("non_finite"):
            return _non_finite(ours, geometry), _non_finite(theirs, geometry)
        activation = spec.get("activation")
        if activation is not None:  # in our kernels' epilogue; torch's after its convolution
            after = getattr(F, activation)
            return (
                lambda x, w, b=None: ours(x, w, b, activation=activation, **geometry),
                lambda x, w, b=None: after(theirs(x, w, b, **geometry)),
            )
        return (
            lambda x, w, b=None: ours(x, w, b, **geometry),
            lambda x, w, b=None: theirs(x, w, b, **geometry),
        )
    if op == "local":
        return _local_functions(spec)
    kwargs = spec.get("kwargs", {})
    if op in ("global_avg_pool", "global_max_pool"):
        mode = op.split("_")[1]
        return _ours(op), lambda x: _adaptive(mode, x, 1).flatten(1)
    if op == "spatial_pyramid_pool":
        levels, mode = tuple(kwargs["levels"]), kwargs["mode"]
        return (
            lambda x: _ours(op)(x, levels=levels, mode=mode),
            lambda x: torch.cat([_adaptive(mode, x, lv).flatten(1) for lv in levels], 1),
        )
    ours = _ours(op)
    return lambda x: ours(x, **kwargs), lambda x: getattr(F, op)(x, **kwargs)


def _explicit(spec: dict[str, Any]) -> bool:
    """Whether torch's convolution cannot pad as the spec says: a padding mode, or ``(before,
    after)`` pairs (numeric padding that is not ints)."""
    padding = spec["padding"]
    pairs = not isinstance(padding, str) and expand(padding, spec["dims"]) is None
    return pairs or spec.get("padding_mode", "zeros") != "zeros"


def _explicitly_padded(ours, theirs, spec: dict[str, Any], dims: int) -> tuple:
    """Ours with the spec's padding mode; torch's convolution of an input padded as the spec
    says beforehand (how ``nn.ConvNd`` pads in a mode)."""
    mode = spec.get("padding_mode", "zeros")
    before, after = expand_pairs(spec["padding"], dims)

    def padded(x: Tensor, w: Tensor, b: Tensor | None = None, **geometry: Any) -> Tensor:
        return theirs(pad_input(x, before, after, mode), w, b, **{**geometry, "padding": 0})

    def ours_in_mode(x: Tensor, w: Tensor, b: Tensor | None = None, **geometry: Any) -> Tensor:
        return ours(x, w, b, padding_mode=mode, **geometry)

    return ours_in_mode, padded


def _non_finite(conv: Callable[..., Tensor], geometry: dict) -> Callable[..., Tensor]:
    """``conv`` with non-finite values in a few channels (spec ``non_finite``): an infinity and a
    NaN added to the input, in the first and the last channel, and an infinity put into the
    gradient reaching the output's second channel. torch keeps each within its group's results:
    the kernels that compute several groups as one (``triton_kernels.reads_merged``) must too."""

    def run(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        poison = torch.zeros_like(x)
        poison[(0, 0, *(s // 2 for s in x.shape[2:]))] = math.inf
        poison[(-1, -1, *(0 for _ in x.shape[2:]))] = math.nan
        return _PoisonedGradient.apply(conv(x + poison, w, b, **geometry))

    return run


class _PoisonedGradient(torch.autograd.Function):
    """The identity, whose backward adds an infinity to one element of channel 1."""

    @staticmethod
    def forward(ctx: Any, y: Tensor) -> Tensor:
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        grad[(0, 1, *(s // 3 for s in grad.shape[2:]))] = math.inf
        return grad


def _maxout_conv(dims: int, x: Tensor, w: Tensor, b: Tensor | None, pieces: int, geometry):
    """Ours: the fused maxout convolution ``nn.MaxoutConv*d`` computes."""
    # (the package's attribute ``maxout`` is the function; the module holds maxout_conv)
    maxout_conv = importlib.import_module("torchconv_ext.functional.maxout").maxout_conv
    return maxout_conv(f"MaxoutConv{dims}d", dims, x, w, b, pieces, **geometry)


def _local_functions(spec: dict[str, Any]) -> tuple[Callable[..., Tensor], Callable[..., Tensor]]:
    """Ours: ``conv{d}d_tiled``, or ``conv{d}d_local`` for ``tiles`` None; torch's: the same sum
    of every output position's own kernel over its window (:func:`tiled_conv_by_torch`)."""
    kind = "local" if spec["tiles"] is None else "tiled"
    geometry = dict(stride=spec["stride"], padding=spec["padding"], dilation=spec["dilation"],
                    groups=spec["groups"], padding_mode=spec.get("padding_mode", "zeros"))  # fmt: skip
    ours = _ours(f"conv{spec['dims']}d_{kind}")
    return (
        lambda x, w, b=None: ours(x, w, b, **geometry),
        lambda x, w, b=None: tiled_conv_by_torch(x, w, b, **geometry),
    )


def tiled_conv_by_torch(
    x: Tensor,
    w: Tensor,
    b: Tensor | None = None,
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> Tensor:
    """A tiled (or locally connected) convolution in torch's plain ops, as its users write one
    (torch has no op for it; the benchmarks time it as torch's side): the input padded, each
    tap's window at every output position a strided slice, each position's kernel gathered from
    its tile (``o mod tiles`` per dim; a locally connected weight is per position already), all
    summed by one ``einsum``. Its result's strides follow no rule."""
    nd = x.dim() - 2
    stride, dilation = expand(stride, nd), expand(dilation, nd)
    padded = pad_input(x, *expand_pairs(padding, nd), padding_mode)
    tiles, kernel = w.shape[:nd], w.shape[nd + 2 :]
    out = [(size - (k - 1) * d - 1) // s + 1
           for size, k, s, d in zip(padded.shape[2:], kernel, stride, dilation)]  # fmt: skip
    windows = [
        padded[(..., *(slice(t * d, t * d + (o - 1) * s + 1, s)
                       for t, o, s, d in zip(tap, out, stride, dilation)))]
        for tap in itertools.product(*(range(k) for k in kernel))
    ]  # fmt: skip
    patches = torch.stack(windows, 2).unflatten(1, (groups, -1))  # (N, G, C_in/G, taps, *out)

    def per_position(t: Tensor) -> Tensor:  # (*tiles, ...) -> (*out, ...)
        if list(tiles) == out:
            return t
        tile_of = torch.meshgrid(
            *(torch.arange(o, device=x.device) % n for o, n in zip(out, tiles)), indexing="ij"
        )
        return t[tile_of]

    kernels = per_position(w).unflatten(nd, (groups, -1)).flatten(nd + 3)  # (*out, G, o, i, taps)
    y = torch.einsum("ngit...,...goit->ngo...", patches, kernels).flatten(1, 2)
    return y if b is None else y + per_position(b).movedim(-1, 0)


def _adaptive(mode: str, x: Tensor, size: int) -> Tensor:
    return getattr(F, f"adaptive_{mode}_pool{x.dim() - 2}d")(x, size)


def input_shapes(spec: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The inputs' names and shapes, in call order."""
    if spec["op"] == "local":
        return _local_shapes(spec)
    if spec["op"] != "conv":
        return {"input": tuple(spec["shape"])}
    dims, groups, k = spec["dims"], spec["groups"], spec["kernel"]
    # A maxout's convolution has ``pieces`` channels per channel of the result (``c_out``).
    c_in, c_out = spec["c_in"], spec["c_out"] * spec.get("pieces", 1)
    weight = (c_in, c_out // groups) if spec["transposed"] else (c_out, c_in // groups)
    shapes = {
        "input": (spec["n"], c_in) + (spec["size"],) * dims,
        "weight": weight + (k,) * dims,
    }
    if spec["bias"]:
        shapes["bias"] = (c_out,)
    return shapes


def _local_shapes(spec: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """A tiled convolution's input, weight ``(*tiles, C_out, C_in/groups, *kernel)`` and bias
    ``(*tiles, C_out)``; a locally connected one's tiles are its output size."""
    dims, k = spec["dims"], spec["kernel"]
    tiles = (spec["tiles"],) * dims
    if spec["tiles"] is None:
        befores, afters = expand_pairs(spec["padding"], dims)
        stride, dilation = expand(spec["stride"], dims), expand(spec["dilation"], dims)
        tiles = tuple((spec["size"] + p + q - (k - 1) * d - 1) // s + 1
                      for p, q, s, d in zip(befores, afters, stride, dilation))  # fmt: skip
    shapes = {
        "input": (spec["n"], spec["c_in"]) + (spec["size"],) * dims,
        "weight": (*tiles, spec["c_out"], spec["c_in"] // spec["groups"]) + (k,) * dims,
    }
    if spec["bias"]:
        shapes["bias"] = (*tiles, spec["c_out"])
    return shapes


def build(spec: dict[str, Any], device: str, seed: int) -> Problem:
    """Random float64 inputs on ``device`` (weights scaled so that outputs stay O(1))."""
    gen = torch.Generator(device=device).manual_seed(seed)
    inputs = {}
    for name, shape in input_shapes(spec).items():
        t = torch.randn(shape, generator=gen, device=device, dtype=torch.float64)
        if name == "weight":  # by the fan-in: the channels and taps one output sums
            t /= math.prod(shape[-(spec["dims"] + 1) :]) ** 0.5
        inputs[name] = t
    ours, theirs = functions(spec)
    return Problem(inputs, ours, theirs, tuple(inputs), layout_as_on_cuda=spec["op"] == "conv",
                   activations_in_case_layout=spec["op"] == "local")  # fmt: skip
