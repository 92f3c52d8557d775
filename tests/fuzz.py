"""``python -m tests.fuzz``: random configurations of every op family, ours against torch.

Each case draws an op — convolution (in some cases with a fused activation, or maxout over its
channels as ``nn.MaxoutConv*d`` computes it), transposed convolution (in some cases with a
fused activation), locally connected or
tiled convolution (against its definition written with torch's ops), max or average pooling,
adaptive pooling, spatial pyramid and global pooling (against torch's adaptive pooling of each
level), nearest interpolation and upsampling (sizes rounded half to even too, against ATen's op
given them), maxout over any dim (against its definition), TensorFlow's ``'same'`` with any
stride and ``'valid'`` for convolutions, transposed convolutions and pooling (against torch's
op on a padded input or a cropped output) — with random arguments, sizes, dtype (float64 or
float32) and operand layouts (contiguous, channels-last, strided views of either, or
channels-last with size-1 dims stepping as ``unsqueeze`` gives), runs it on our Triton path
(under Triton's interpreter on a CPU) and with torch on the same values, and checks that

* where torch refuses the arguments, ours raises an exception of the same type;
* values agree forward and backward (every input's gradient), as do shapes and dtypes, and in
  a quarter of the float64 cases second-order gradients too (of every input and of the
  incoming gradient, through the first-order gradients);
* results and first-order gradients have torch's memory format (ATen's double backward
  layouts differ between devices: its values are compared only);
* no kernel reads or writes outside its launch's tensors (``TORCHCONV_EXT_BOUNDS_CHECK``), and
  none reads an output or workspace element no kernel wrote (``TORCHCONV_EXT_POISON``: NaN
  until written), as in the test suite.

About half the cases are called another way (``tests.fuzz_modes``): a third time, replaying
what the first two recorded, under ``torch.func.vmap``, in forward mode (``torch.func.jvp``),
under autocast, as ``torch.nn`` layers converted by ``convert_model`` or built from our
classes, with every registered op's fake checked against its result, or compiled by
``torch.compile`` (Inductor too, on our kernels).

``--backend torch`` checks the fallback instead (its own paths are the arguments torch's
functional API lacks: padding modes, padding strings).

Torch gets dense copies of the operands in the layouts they suggest: CPU torch's convolutions
misread an operand dense in their layout whose size-1 dims step otherwise (ours does not).
Ours follows CUDA torch where CPU torch differs, so cases are drawn where the two agree: 3-d
convolutions' layouts are not compared (CPU torch's follow a speed heuristic — whether its
oneDNN path takes the call, by dtype, sizes and thread count — and are contiguous elsewhere,
where CUDA's are channels-last when an operand is), nor 2-d ones' where CPU torch's float64
path, group by group, reads another layout from each group's slice than from the operands
(:func:`_layouts_comparable`), and nearest interpolation never meets CPU torch's "output =
2·input" shortcut (its backward then takes output index // 2 whatever the scale factor its
forward used, so its gradient is not its forward's adjoint; CUDA's is). Nor are max poolings
drawn whose dilated windows can step over the whole input: CPU torch's backward then writes out
of bounds (CUDA's and ours give -inf and a gradient of zero).

``python -m tests.fuzz --seconds 600 --seed 7`` prints one line per failure and a summary;
the exit status is 1 when any case failed. Failures print the case's configuration: rerun one
by hand, or with the same seed. The Triton interpreter is slow; sizes stay small.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are imported
os.environ.setdefault("TORCHCONV_EXT_BOUNDS_CHECK", "1")  # (loads and stores inside the tensors)
os.environ.setdefault("TORCHCONV_EXT_POISON", "1")  # (outputs and workspaces NaN until written)

import argparse
import contextlib
import json
import math
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch._prims_common import suggest_memory_format

import torchconv_ext
from tests.fuzz_modes import draw_mode, outputs
from tests.references.local import output_size, reference_local
from tests.references.maxout import reference_maxout
from torchconv_ext import functional as TF
from torchconv_ext.functional.maxout import maxout_conv

_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}
_TOLERANCES = {
    torch.float64: dict(rtol=1e-9, atol=1e-9),
    torch.float32: dict(rtol=2e-4, atol=2e-4),
}


@dataclass
class Case:
    """One drawn call: ``ours(*operands)`` against ``theirs(*operands)``."""

    config: dict[str, Any]
    ours: Callable[..., Any]
    theirs: Callable[..., Any]
    operands: list[torch.Tensor]
    compare_layout: bool = True
    #: Whether second-order gradients are compared too (drawn by :func:`run`).
    second_order: bool = False
    #: Whether torch's call has second-order gradients (torch's hard sigmoid has none; ours,
    #: checked by gradgradcheck in the tests, has).
    twice_differentiable: bool = True
    #: ``layers(namespace)``: the call as layers of ``torch.nn`` or ``torchconv_ext.nn`` and the
    #: names of the parameters the operands after the input stand for (``None``: no such layers).
    layers: Callable[[Any], tuple[nn.Module, tuple[str, ...]]] | None = None
    #: ``tolerance(expected)``: the tolerances of a result or gradient, given torch's (default:
    #: by the operands' dtype).
    tolerance: Callable[[torch.Tensor], dict[str, float]] | None = None
    #: Whether ours must refuse what torch refuses with its exception type.
    check_refusals: bool = True
    #: Whether ``theirs`` gives the op's dtypes under autocast (a definition written with
    #: torch's ops gets their casts instead).
    autocasts: bool = True
    #: ``exact(*operands)``: the call computed in float64, given the operands rounded to the
    #: dtype of torch's result; where set, 16-bit results (or ones computed in 16 bits) of ours
    #: and torch's are both measured against it, and ours may err by at most twice torch's
    #: error plus a few roundings (:func:`_close_like_torch`: two right ways to compute round
    #: differently in 16 bits).
    exact: Callable[..., Any] | None = None


def _laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last" and t.dim() in _FORMATS:
        return t.contiguous(memory_format=_FORMATS[t.dim()])
    if layout == "strided":  # every other element of a tensor twice as wide
        return torch.cat([t, t], dim=-1)[..., ::2]
    if layout == "strided_channels_last":  # the same, channels-last (not dense)
        return _laid_out(torch.cat([t, t], dim=-1), "channels_last")[..., ::2]
    if layout == "unit_strides":  # channels-last, each size-1 dim strided as unsqueeze gives
        units = [d for d, n in enumerate(t.shape) if n == 1]
        squeezed = _laid_out(t, "channels_last").squeeze(units)
        for d in units:
            squeezed = squeezed.unsqueeze(d)
        return squeezed
    return t


def _operand(rng: random.Random, shape: tuple[int, ...], dtype, layout: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(rng.getrandbits(32))
    return _laid_out(torch.randn(shape, generator=g, dtype=dtype), layout).requires_grad_()


def _draw_dtype(rng: random.Random) -> torch.dtype:
    return rng.choice([torch.float64, torch.float64, torch.float32])


def _draw_layout(rng: random.Random) -> str:
    return rng.choice(
        ["contiguous", "channels_last", "strided", "strided_channels_last", "unit_strides"]
    )


# --- draws, one per op family ------------------------------------------------------------------


def _conv_channels(rng: random.Random, nd: int) -> tuple[int, int, int]:
    """``(groups, input channels per group, output channels per group)``."""
    if rng.random() < 0.2:  # depthwise, with a channel multiplier
        return rng.choice([2, 4, 8, 16]), 1, rng.choice([1, 2])
    groups = rng.choice([1, 1, 1, 2, 3, 4])
    per_in, per_out = rng.choice([1, 2, 3, 4, 8, 16, 17]), rng.choice([1, 2, 4, 5, 8, 16])
    if nd == 3:  # the interpreter's time grows with every dim
        per_in, per_out = min(per_in, 4), min(per_out, 4)
    return groups, per_in, per_out


def _conv_shape(rng: random.Random, nd: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """``(kernel, stride, dilation, input sizes)``."""
    largest = 3 if nd == 3 else 5
    if rng.random() < 0.3:
        kernel = [rng.choice([1, 1, 2, 3, 3, largest]) for _ in range(nd)]
    else:
        kernel = [rng.choice([1, 2, 3, largest])] * nd
    if rng.random() < 0.7:
        stride = [rng.choice([1, 1, 2, 3])] * nd
    else:
        stride = [rng.randint(1, 3) for _ in range(nd)]
    dilation = [rng.choice([1, 1, 2])] * nd
    extra = 3 if nd == 3 else 8
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    return kernel, stride, dilation, [rng.randint(s, s + extra - 1) for s in spans]


def _conv_operands(rng: random.Random, config: dict[str, Any], *, transposed: bool) -> list:
    """A drawn convolution's ``[input, weight]`` and its bias where ``config`` has one: the
    input in ``config``'s layout, the weight contiguous or channels-last — or with ``tiles``
    in ``config`` (locally connected and tiled convolutions), contiguous, one kernel and bias
    per tile."""
    groups, (per_in, per_out), batch = config["groups"], config["per_group"], config["batch"]
    dtype = getattr(torch, config["dtype"].removeprefix("torch."))
    lead = () if batch is None else (batch,)
    x = _operand(rng, (*lead, groups * per_in, *config["size"]), dtype, config["layout"])
    tiles = config.get("tiles", ())
    w_layout = "contiguous" if tiles else rng.choice(["contiguous", "channels_last"])
    w_channels = (groups * per_in, per_out) if transposed else (groups * per_out, per_in)
    w = _operand(rng, (*tiles, *w_channels, *config["kernel"]), dtype, w_layout)
    b_shape = (*tiles, groups * per_out)
    bias = [_operand(rng, b_shape, dtype, "contiguous")] if config["bias"] else []
    return [x, w, *bias]


def _layouts_comparable(nd: int, x: torch.Tensor, w: torch.Tensor, groups: int) -> bool:
    """Whether CPU torch's ``nd``-d convolution of ``x`` and ``w`` gets the layout CUDA's does:
    not in 3-d (module doc), nor where CPU torch's float64 path, which runs group by group on a
    copy of each group's slice of both operands in the operand's layout, reads another layout
    from the slices than from the operands — one channel of 1×1 images per group is ambiguous
    (only 2-d results' layouts are compared)."""
    if nd == 3:
        return False
    if nd == 1 or x.dim() == 3 or x.dtype != torch.float64 or groups == 1:
        return True

    def channels_last(t: torch.Tensor) -> bool:
        return suggest_memory_format(t) == torch.channels_last

    def slice_channels_last(t: torch.Tensor, dim: int) -> bool:
        part = t.narrow(dim, 0, t.shape[dim] // groups)
        return channels_last(part.contiguous(memory_format=suggest_memory_format(t)))

    whole = channels_last(x) or channels_last(w)
    return whole == (slice_channels_last(x, 1) or slice_channels_last(w, 0))


def _draw_activation(rng: random.Random) -> tuple[str | None, dict[str, Any]]:
    """A fused activation (``None`` mostly) and its arguments, a PReLU weight as its size."""
    if rng.random() < 0.7:
        return None, {}
    name = rng.choice(["relu", "leaky_relu", "prelu", "elu", "gelu", "silu", "relu6",
                       "hardswish", "hardsigmoid", "mish", "sigmoid"])  # fmt: skip
    if name == "leaky_relu":
        return name, {"negative_slope": rng.choice([0.01, 0.2, -0.5, 1.5])}
    if name == "elu":
        return name, {"alpha": rng.choice([1.0, 0.5, 2.0])}
    if name == "gelu":
        return name, {"approximate": rng.choice(["none", "tanh"])}
    if name == "prelu":
        return name, {"weight": rng.choice(["one", "per channel"])}
    return name, {}


def conv_case(rng: random.Random) -> Case:
    nd = rng.choice([1, 2, 2, 3])
    groups, per_in, per_out = _conv_channels(rng, nd)
    kernel, stride, dilation, size = _conv_shape(rng, nd)
    spans = [(k - 1) * d for k, d in zip(kernel, dilation)]
    mode = rng.choice(["zeros"] * 4 + ["reflect", "replicate", "circular"])
    drawn = rng.random()
    if drawn < 0.15 and mode == "zeros" and stride == [1] * nd:
        padding: Any = "same"
    elif drawn < 0.25 and mode == "zeros":
        padding = "valid"
    else:  # torch's reflection wants padding < size (mostly kept: refusals are checked too)
        padding = [rng.randint(0, s) for s in spans]
        if rng.random() < 0.9:
            padding = [min(p, n - 1) for p, n in zip(padding, size)]
    batch = None if rng.random() < 0.15 else rng.choice([1, 2, 3])
    dtype, layout, bias = _draw_dtype(rng), _draw_layout(rng), rng.random() < 0.6
    activation, activation_args = _draw_activation(rng)
    # or maxout over groups of ``pieces`` output channels (fused into the kernel where they
    # fall within a convolution group)
    divisors = [p for p in range(2, 5) if groups * per_out % p == 0]
    pieces = rng.choice(divisors) if activation is None and divisors and rng.random() < 0.2 else 1
    config = dict(
        op=f"conv{nd}d", batch=batch, groups=groups, per_group=(per_in, per_out), kernel=kernel,
        stride=stride, dilation=dilation, size=size, padding=padding, padding_mode=mode,
        dtype=str(dtype), layout=layout, bias=bias, activation=activation,
        activation_args=activation_args, maxout_pieces=pieces,
    )  # fmt: skip
    operands = _conv_operands(rng, config, transposed=False)
    x, w = operands[:2]
    operands += _activation_operands(rng, activation, activation_args, groups * per_out, dtype)
    args = (stride, padding, dilation, groups)

    def split(operands: tuple) -> tuple:
        """``(x, w, b, activation's arguments)`` from the operands."""
        x, w, *rest = operands  # (no list methods on rest: Dynamo 2.11 makes it a tuple)
        b = rest[0] if bias else None
        act_args = {"weight": rest[-1]} if activation == "prelu" else activation_args
        return x, w, b, act_args

    def ours(*operands):
        x, w, b, act_args = split(operands)
        if pieces > 1:
            return maxout_conv(f"MaxoutConv{nd}d", nd, x, w, b, pieces, *args, mode)
        fused = {} if activation is None else dict(activation=activation, activation_args=act_args)
        return getattr(TF, f"conv{nd}d")(x, w, b, *args, padding_mode=mode, **fused)

    def theirs(*operands):  # nn.ConvNd's recipe: F.pad for every mode but zeros
        x, w, b, act_args = split(operands)
        if mode == "zeros":
            z = getattr(F, f"conv{nd}d")(x, w, b, *args)
        else:
            pads = [p for q in reversed(padding) for p in (q, q)]
            z = getattr(F, f"conv{nd}d")(F.pad(x, pads, mode=mode), w, b, stride, 0, *args[2:])
        if pieces > 1:  # (channels are dim 1 of the batched result)
            batched = z if batch is not None else z.unsqueeze(0)
            out = reference_maxout(batched, pieces)[0]
            return out if batch is not None else out.squeeze(0)
        return _activated(z, activation, act_args, batch is not None)

    def layers(namespace: Any) -> tuple[nn.Module, tuple[str, ...]]:
        conv_args = (groups * per_in, groups * per_out, kernel, stride, padding, dilation,
                     groups, bias, mode)  # fmt: skip
        return _activated_layers(namespace, f"Conv{nd}d", conv_args, groups * per_out, bias,
                                 dtype, activation, activation_args, operands)  # fmt: skip

    # (maxout convolutions are ours alone; torch's PReLU module reads an unbatched input's
    # dim 1 as its channels)
    module = pieces == 1 and not (batch is None and activation == "prelu")
    return Case(
        config, ours, theirs, operands, compare_layout=_layouts_comparable(nd, x, w, groups),
        layers=layers if module else None, twice_differentiable=activation != "hardsigmoid",
    )  # fmt: skip


def _activation_operands(rng: random.Random, activation: str | None, args: dict[str, Any],
                         channels: int, dtype: torch.dtype) -> list[torch.Tensor]:  # fmt: skip
    """A drawn PReLU's weight (one value or one per output channel), the case's last operand."""
    if activation != "prelu":
        return []
    return [_operand(rng, (1 if args["weight"] == "one" else channels,), dtype, "contiguous")]


def _activated(z: torch.Tensor, activation: str | None, act_args: dict[str, Any],
               batched: bool) -> torch.Tensor:  # fmt: skip
    """Torch's activation of a convolution's result ``z`` (an unbatched one activated as a
    batch: its channels are dim 1 of a batch)."""
    if activation is None:
        return z
    out = getattr(F, activation)(z if batched else z.unsqueeze(0), **act_args)
    return out if batched else out.squeeze(0)


def _activated_layers(namespace: Any, name: str, conv_args: tuple, channels: int, bias: bool,
                      dtype, activation: str | None, activation_args: dict[str, Any],
                      operands: list) -> tuple[nn.Module, tuple[str, ...]]:  # fmt: skip
    """A case's convolution module ``name`` of ``namespace`` (``channels`` out), followed by
    the activation's module in torch's (ours fuses it); with the names of the parameters the
    operands after the input stand for (a PReLU weight: the last)."""
    conv = getattr(namespace, name)
    names = ("weight", "bias")[: 1 + bias]
    prelu = ("weight",) if activation == "prelu" else ()
    if activation is None:
        return conv(*conv_args, dtype=dtype), names
    if namespace is nn:
        act = _activation_module(activation, activation_args, channels, dtype)
        module = nn.Sequential(conv(*conv_args, dtype=dtype), act)
        return module, tuple(f"0.{n}" for n in names) + tuple(f"1.{n}" for n in prelu)
    args = {"weight": torch.zeros(operands[-1].shape, dtype=dtype)} if prelu else {}
    module = conv(*conv_args, dtype=dtype, activation=activation,
                  activation_args={**activation_args, **args})  # fmt: skip
    return module, names + tuple(f"activation_{n}" for n in prelu)


def _activation_module(name: str, args: dict[str, Any], channels: int, dtype) -> nn.Module:
    """Torch's module of a drawn fused activation (a PReLU weight as drawn: one or per channel)."""
    if name == "prelu":
        return nn.PReLU(1 if args["weight"] == "one" else channels, dtype=dtype)
    kinds = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU,
             "silu": nn.SiLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish,
             "hardsigmoid": nn.Hardsigmoid, "mish": nn.Mish, "sigmoid": nn.Sigmoid}  # fmt: skip
    return kinds[name](**args)


def conv_transpose_case(rng: random.Random) -> Case:
    nd = rng.choice([1, 2, 2, 3])
    groups, per_in, per_out = _conv_channels(rng, nd)
    kernel, stride, dilation, size = _conv_shape(rng, nd)
    padding = [rng.randint(0, (k - 1) * d) for k, d in zip(kernel, dilation)]
    output_padding = [rng.randint(0, max(s, d) - 1) for s, d in zip(stride, dilation)]
    batch = None if rng.random() < 0.15 else rng.choice([1, 2, 3])
    dtype, layout, bias = _draw_dtype(rng), _draw_layout(rng), rng.random() < 0.6
    activation, activation_args = _draw_activation(rng)
    config = dict(
        op=f"conv_transpose{nd}d", batch=batch, groups=groups, per_group=(per_in, per_out),
        kernel=kernel, stride=stride, dilation=dilation, size=size, padding=padding,
        output_padding=output_padding, dtype=str(dtype), layout=layout, bias=bias,
        activation=activation, activation_args=activation_args,
    )  # fmt: skip
    operands = _conv_operands(rng, config, transposed=True)
    x, w = operands[:2]
    operands += _activation_operands(rng, activation, activation_args, groups * per_out, dtype)
    args = (stride, padding, output_padding, groups, dilation)
    name = f"conv_transpose{nd}d"

    def split(operands: tuple) -> tuple:
        """``(x, w, b, activation's arguments)`` from the operands."""
        x, w, *rest = operands
        b = rest[0] if bias else None
        act_args = {"weight": rest[-1]} if activation == "prelu" else activation_args
        return x, w, b, act_args

    def ours(*operands):
        x, w, b, act_args = split(operands)
        fused = {} if activation is None else dict(activation=activation, activation_args=act_args)
        return getattr(TF, name)(x, w, b, *args, **fused)

    def theirs(*operands):
        x, w, b, act_args = split(operands)
        return _activated(getattr(F, name)(x, w, b, *args), activation, act_args, batch is not None)

    def layers(namespace: Any) -> tuple[nn.Module, tuple[str, ...]]:
        conv_args = (groups * per_in, groups * per_out, kernel, stride, padding, output_padding,
                     groups, bias, dilation)  # fmt: skip
        return _activated_layers(namespace, f"ConvTranspose{nd}d", conv_args, groups * per_out,
                                 bias, dtype, activation, activation_args, operands)  # fmt: skip

    # (torch's PReLU module reads an unbatched input's dim 1 as its channels)
    module = not (batch is None and activation == "prelu")
    return Case(
        config, ours, theirs, operands, compare_layout=_layouts_comparable(nd, x, w, groups),
        layers=layers if module else None, twice_differentiable=activation != "hardsigmoid",
    )  # fmt: skip


def local_case(rng: random.Random) -> Case:
    """A locally connected or tiled convolution (beyond torch) against its definition written
    with torch's ops (``tests.references.local``); drawn within the arguments both accept."""
    nd = rng.choice([1, 2, 2, 3])
    groups, per_in, per_out = _conv_channels(rng, nd)
    kernel, stride, dilation, size = _conv_shape(rng, nd)
    mode = rng.choice(["zeros"] * 3 + ["reflect", "replicate", "circular"])
    drawn = rng.random()
    padding: Any = "same" if drawn < 0.15 else "valid" if drawn < 0.25 else None
    if padding is None:  # (reflection wants padding < size; a dim's sides may differ)
        sides = 2 if rng.random() < 0.3 else 1
        padding = [
            tuple(min(rng.randint(0, (k - 1) * d), n - 1) for _ in range(sides))
            for k, d, n in zip(kernel, dilation, size)
        ]
        padding = [p[0] if len(set(p)) == 1 else p for p in padding]
    out = output_size(size, kernel, stride, padding, dilation)
    tiled = rng.random() < 0.5
    tiles = [rng.randint(1, o + 1) for o in out] if tiled else list(out)
    batch = None if rng.random() < 0.15 else rng.choice([1, 2])
    dtype, layout, bias = _draw_dtype(rng), _draw_layout(rng), rng.random() < 0.6
    name = f"conv{nd}d_{'tiled' if tiled else 'local'}"
    config = dict(
        op=name, batch=batch, groups=groups, per_group=(per_in, per_out), kernel=kernel,
        stride=stride, dilation=dilation, size=size, padding=padding, padding_mode=mode,
        tiles=tiles, dtype=str(dtype), layout=layout, bias=bias,
    )  # fmt: skip
    operands = _conv_operands(rng, config, transposed=False)
    args = (stride, padding, dilation, groups)

    def ours(x, w, b=None):
        return getattr(TF, name)(x, w, b, *args, padding_mode=mode)

    def theirs(x, w, b=None):
        y = reference_local(x if batch is not None else x.unsqueeze(0), w, b, *args, mode)
        return y if batch is not None else y.squeeze(0)

    # (the definition's einsum picks its own layout, and autocast casts inside it)
    return Case(config, ours, theirs, operands, compare_layout=False, autocasts=False)


def _same(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's ``'same'`` padding of one dim, from its definition: the output is
    ``ceil(size / stride)``, the padding what its windows need, the odd element at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pads(pairs: list[tuple[int, int]]) -> list[int]:
    """``F.pad``'s list (last dim first) of ``(before, after)`` per spatial dim."""
    return [p for pair in reversed(pairs) for p in pair]


def padding_string_case(rng: random.Random) -> Case:
    """``'same'`` with any stride (TensorFlow's rule), ``'valid'`` and ``(before, after)``
    padding pairs — beyond torch for strided convolutions, transposed convolutions and
    pooling —, against torch's op on an explicitly padded input (convolutions in every padding
    mode, max pooling padded with -inf, average pooling dividing by the window's input elements,
    or by the whole window for pairs, whose padding counts by default) or a cropped or extended
    output (transposed convolutions)."""
    kind = rng.choice(["conv", "conv", "conv_transpose", "max_pool", "avg_pool"])
    nd = rng.choice([1, 2, 2, 3])
    string = rng.choice(["same", "same", "same", "valid", "pairs", "pairs"])
    pooling = kind.endswith("pool")
    if pooling:
        groups, per_in, per_out = 1, rng.choice([1, 3, 8]), 1
        kernel = [rng.randint(1, 4) for _ in range(nd)]
        kernel[0] = max(kernel[0], 2 if string == "pairs" else 1)  # (room for unequal sides)
        stride = [rng.randint(1, 3) for _ in range(nd)]
        dilation = [rng.randint(1, 2) if kind == "max_pool" else 1 for _ in range(nd)]
    else:
        groups, per_in, per_out = _conv_channels(rng, nd)
        kernel, stride, dilation, _ = _conv_shape(rng, nd)
    size = [rng.randint(1, 6 if nd == 3 else 9) for _ in range(nd)]  # (smaller than spans too)
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    if string == "valid" and kind != "conv_transpose":
        size = [max(n, span) for n, span in zip(size, spans)]
    mode = rng.choice(["zeros"] * 3 + ["reflect", "replicate", "circular"])
    if kind != "conv" or string == "valid":
        mode = "zeros"
    pairs = [_same(*a) for a in zip(size, kernel, stride, dilation)]
    if mode == "reflect":  # (torch's reflection pads less than the size)
        size = [max(n, max(p) + 1) for n, p in zip(size, pairs)]
        pairs = [_same(*a) for a in zip(size, kernel, stride, dilation)]
    if string == "valid":
        pairs = [(0, 0)] * nd
    output_padding = [0] * nd
    if string == "pairs":  # (reflection pads less than the size; each dim an int or a pair)
        pairs = [(rng.randint(0, span - 1), rng.randint(0, span - 1)) for span in spans]
        size = [max(n, span - sum(p), max(p) + 1) for n, span, p in zip(size, spans, pairs)]
        if pooling:  # (each side at most half the kernel, as torch's padding)
            pairs = [(rng.randint(0, k // 2), rng.randint(0, k // 2)) for k in kernel]
            size = [max(n, span - sum(p)) for n, span, p in zip(size, spans, pairs)]
        pairs = [(p[0], p[0]) if rng.random() < 0.3 else p for p in pairs]
        if pooling and all(p[0] == p[1] for p in pairs):  # (else torch's padding: pool_case's)
            pairs[0] = (0, 1)
            size[0] = max(size[0], spans[0] - 1)
        if kind == "conv_transpose":  # (crops of the full output, which must keep an element)
            output_padding = [rng.randint(0, max(s, d) - 1) for s, d in zip(stride, dilation)]
            size = [max(n, 1 + -(-(sum(p) - span + 1) // s))
                    for n, p, span, s in zip(size, pairs, spans, stride)]  # fmt: skip
    padding = [p[0] if p[0] == p[1] else p for p in pairs] if string == "pairs" else string
    batch = None if rng.random() < 0.15 else rng.choice([1, 2])
    dtype, layout, bias = _draw_dtype(rng), _draw_layout(rng), rng.random() < 0.6 and not pooling
    config = dict(op=f"{kind}{nd}d", padding=padding, output_padding=output_padding,
                  batch=batch, groups=groups,
                  per_group=(per_in, per_out), kernel=kernel, stride=stride, dilation=dilation,
                  size=size, padding_mode=mode, dtype=str(dtype), layout=layout,
                  bias=bias)  # fmt: skip
    name = config["op"]
    if pooling:
        lead = () if batch is None else (batch,)
        operands = [_operand(rng, (*lead, per_in, *size), dtype, layout)]
    else:
        operands = _conv_operands(rng, config, transposed=kind == "conv_transpose")
    unbatched = batch is None

    def ours(x, w=None, b=None):
        if kind == "conv":
            return getattr(TF, name)(x, w, b, stride, padding, dilation, groups, padding_mode=mode)
        if kind == "conv_transpose":
            return getattr(TF, name)(x, w, b, stride, padding, output_padding, groups, dilation)
        if kind == "max_pool":
            return getattr(TF, name)(x, kernel, stride, padding, dilation)
        return getattr(TF, name)(x, kernel, stride, padding)  # (pairs: counting the padding)

    def theirs(x, w=None, b=None):
        x = x.unsqueeze(0) if unbatched else x
        if kind == "conv_transpose":
            cut = pairs  # ('valid': none)
            if string == "same":
                cut = [_transposed_same(*a) for a in zip(kernel, stride, dilation)]
            crops = [(p[0], p[1] - op) for p, op in zip(cut, output_padding)]
            out = _transposed(name, x, w, b, stride, dilation, groups, crops)
        else:
            padded = F.pad(x, _pads(pairs), mode="constant" if mode == "zeros" else mode,
                           value=-math.inf if kind == "max_pool" else 0.0)  # fmt: skip
            if kind == "conv":
                out = getattr(F, name)(padded, w, b, stride, 0, dilation, groups)
            elif kind == "max_pool":
                out = getattr(F, name)(padded, kernel, stride, 0, dilation)
            elif string == "pairs":  # (count_include_pad: every window whole, in the padding)
                out = getattr(F, name)(padded, kernel, stride)
            else:  # window sums over the number of input elements each window holds
                ones = F.pad(torch.ones_like(x[:1, :1]), _pads(pairs))
                out = getattr(F, name)(padded, kernel, stride) / getattr(F, name)(
                    ones, kernel, stride
                )
        return out.squeeze(0) if unbatched else out

    # (no torch.nn layers take these paddings; F.pad's result's layout is its own; and under
    # autocast the definition's padding runs in the operands' dtype)
    return Case(config, ours, theirs, operands, compare_layout=False, autocasts=False)


def _transposed_same(kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """What ``'same'`` crops from a transposed convolution's full output (output ``in ·
    stride``): the crop split evenly, the odd element at the end; a stride beyond the kernel's
    span extends the end instead."""
    crop = (kernel - 1) * dilation + 1 - stride
    return max(crop, 0) // 2, crop - max(crop, 0) // 2


def _transposed(name: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                stride: list[int], dilation: list[int], groups: int,
                crops: list[tuple[int, int]]) -> torch.Tensor:  # fmt: skip
    """torch's full transposed convolution cropped by ``(before, after)`` per spatial dim (a
    negative amount extends it: positions of bias alone, as torch's ``output_padding``)."""
    full = getattr(F, name)(x, w, None, stride, 0, 0, groups, dilation)
    out = F.pad(full, [-c for c in _pads(crops)])
    return out if b is None else out + b.view(-1, *[1] * len(crops))


def pool_case(rng: random.Random) -> Case:
    nd = rng.choice([1, 2, 2, 3])
    kind = rng.choice(["max", "avg"])
    size = [rng.randint(1, 9 if nd < 3 else 6) for _ in range(nd)]
    kernel = [rng.randint(1, min(4, s + 2)) for s in size]
    stride = [rng.randint(1, 3) for _ in range(nd)] if rng.random() < 0.8 else None
    padding = [rng.randint(0, k // 2) for k in kernel]
    ceil_mode = rng.random() < 0.4
    x = _operand(
        rng, (rng.choice([1, 2]), rng.choice([1, 3, 4, 8, 16]), *size), *_dtype_layout(rng)
    )
    name = f"{kind}_pool{nd}d"
    config = dict(op=name, size=size, kernel=kernel, stride=stride, padding=padding,
                  ceil_mode=ceil_mode, dtype=str(x.dtype))  # fmt: skip
    if kind == "max":
        dilation = [rng.randint(1, 2) for _ in range(nd)]
        stride_or_kernel = stride or kernel
        for i in range(nd):  # (CPU torch's backward writes out of bounds for empty windows)
            if not _windows_meet_input(size[i], kernel[i], stride_or_kernel[i], padding[i],
                                       dilation[i], ceil_mode):  # fmt: skip
                dilation[i] = 1
        indices = rng.random() < 0.4
        config.update(dilation=dilation, return_indices=indices)
        args: tuple = (kernel, stride, padding, dilation, ceil_mode, indices)
    else:
        count_include_pad = rng.random() < 0.5
        divisor = rng.choice([None, None, rng.randint(1, 5)]) if nd > 1 else None
        config.update(count_include_pad=count_include_pad, divisor_override=divisor)
        args = (kernel, stride, padding, ceil_mode, count_include_pad)
        args += (divisor,) if nd > 1 else ()
    if kind == "max":  # (the module's arguments are in another order)
        module_args: tuple = (kernel, stride, padding, dilation, indices, ceil_mode)
    else:
        module_args = args
    layers = _module(f"{kind.capitalize()}Pool{nd}d", *module_args)
    return Case(config, _on(TF, name, args), _on(F, name, args), [x], layers=layers)


def _windows_meet_input(size: int, kernel: int, stride: int, padding: int, dilation: int,
                        ceil_mode: bool) -> bool:  # fmt: skip
    """Whether every max-pooling window along one dim holds an input element: a dilated window
    can step over a small input, and CPU torch's backward then scatters out of bounds (CUDA's
    and ours read an empty window as -inf with a gradient of zero)."""
    room = size + 2 * padding - (kernel - 1) * dilation - 1
    out = (room + (stride - 1 if ceil_mode else 0)) // stride + 1  # torch's output size
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    starts = (o * stride - padding for o in range(out))
    return all(any(0 <= b + j * dilation < size for j in range(kernel)) for b in starts)


def adaptive_case(rng: random.Random) -> Case:
    nd = rng.choice([1, 2, 2, 3])
    kind = rng.choice(["max", "avg"])
    size = [rng.randint(1, 9 if nd < 3 else 6) for _ in range(nd)]
    out = [rng.choice([None, 1, rng.randint(1, 12)]) for _ in range(nd)]
    if all(o is None for o in out):
        out[0] = 2
    output_size: Any = out if nd > 1 else out[0]
    x = _operand(rng, (rng.choice([1, 2]), rng.choice([1, 3, 8, 16]), *size), *_dtype_layout(rng))
    name = f"adaptive_{kind}_pool{nd}d"
    args: tuple = (output_size,)
    if kind == "max":
        args += (rng.random() < 0.5,)  # return_indices
    config = dict(op=name, size=size, output_size=output_size, dtype=str(x.dtype))
    layers = _module(f"Adaptive{kind.capitalize()}Pool{nd}d", *args)
    return Case(config, _on(TF, name, args), _on(F, name, args), [x], layers=layers)


def pyramid_case(rng: random.Random) -> Case:
    """Spatial pyramid or global pooling (beyond torch) against their definition: torch's
    adaptive pooling of each level, flattened and concatenated."""
    nd = rng.choice([1, 2, 2, 3])
    mode = rng.choice(["max", "avg"])
    size = [rng.randint(1, 9 if nd < 3 else 5) for _ in range(nd)]
    x = _operand(rng, (rng.choice([1, 2]), rng.choice([1, 3, 8]), *size), *_dtype_layout(rng))
    if rng.random() < 0.3:
        name, levels = f"global_{mode}_pool", [1]
        ours: Callable[[torch.Tensor], Any] = getattr(TF, name)
    else:  # (levels in any order, repeated ones too, some finer than the input)
        name, levels = "spatial_pyramid_pool", rng.choices([1, 2, 3, 4, 6], k=rng.randint(1, 3))

        def ours(x):
            return TF.spatial_pyramid_pool(x, levels, mode)

    adaptive = getattr(F, f"adaptive_{mode}_pool{nd}d")

    def theirs(x):
        return torch.cat([adaptive(x, level).flatten(1) for level in levels], 1)

    config = dict(op=name, mode=mode, size=size, levels=levels, dtype=str(x.dtype))
    return Case(config, ours, theirs, [x], compare_layout=False)  # (results are matrices)


def maxout_case(rng: random.Random) -> Case:
    """Maxout (beyond torch) over any dim of a 1- to 5-d input against its definition
    (``tests/references/maxout.py``); in some cases the input is on a coarse grid (ties keep
    the first piece), with NaNs in some (a NaN wins and takes the gradient)."""
    rank = rng.randint(1, 5)
    dim, pieces = rng.randrange(rank), rng.randint(1, 4)
    shape = [rng.randint(1, 4) for _ in range(rank)]
    shape[dim] = pieces * rng.randint(1, 3)
    x = _operand(rng, tuple(shape), *_dtype_layout(rng))
    values = rng.choice(["random", "ties", "nans"])
    g = torch.Generator().manual_seed(rng.getrandbits(32))
    with torch.no_grad():
        if values != "random":
            x.copy_(torch.randint(-2, 3, shape, generator=g))
        if values == "nans":
            x[torch.rand(shape, generator=g) < 0.2] = float("nan")
    dim -= rank if rng.random() < 0.5 else 0
    config = dict(op="maxout", shape=shape, pieces=pieces, dim=dim, values=values,
                  dtype=str(x.dtype))  # fmt: skip

    def ours(x):
        return TF.maxout(x, pieces, dim)

    def theirs(x):
        return reference_maxout(x, pieces, dim)[0]

    def tolerance(expected: torch.Tensor) -> dict[str, Any]:
        return dict(_TOLERANCES[expected.dtype], equal_nan=True)

    # (layouts are not compared: the definition's follow its ops' rules, and maxout's own
    # rule is tested by tests/test_maxout_functional.py; the autocast mode's tolerances are
    # finite values')
    return Case(config, ours, theirs, [x], compare_layout=False, tolerance=tolerance,
                autocasts=values != "nans")  # fmt: skip


def interpolate_case(rng: random.Random) -> Case:
    nd = rng.choice([1, 2, 3])
    size = [rng.randint(1, 6) for _ in range(nd)]
    x = _operand(rng, (rng.choice([1, 2]), rng.choice([1, 3, 8]), *size), *_dtype_layout(rng))
    mode = rng.choice(["nearest", "nearest-exact"])
    kwargs: dict[str, Any] = dict(mode=mode)
    if rng.random() < 0.5:
        out = [rng.randint(1, 13) for _ in range(nd)]
        kwargs["size"] = out if nd > 1 else out[0]
    else:
        factors = [rng.choice([0.5, 0.7, 1.0, 1.5, 2.0, 2.3, 3.0]) for _ in range(nd)]
        recompute = rng.choice([None, True, False])
        # sizes rounded half to even (beyond torch) in some cases, else torch's floor
        rounding = "round" if rng.random() < 0.3 else "floor"
        outs = [round(s * f) if rounding == "round" else int(s * f) for s, f in zip(size, factors)]
        if mode == "nearest" and recompute is not True:
            # CPU torch's nearest backward takes output index // 2 when the output is twice the
            # input, whatever the scale factor its forward used: CUDA's (and ours) use the factor
            shortcut = any(o == 2 * s and f != 2.0 for o, s, f in zip(outs, size, factors))
            recompute = True if shortcut else recompute
        kwargs.update(scale_factor=factors if nd > 1 else factors[0])
        kwargs.update(recompute_scale_factor=recompute)
        if rounding == "round":
            kwargs.update(output_size_rounding=rounding)
    # or as ``upsample_nearest`` (``nn.UpsamplingNearest2d`` for layers): interpolate's
    # defaults but for the size or scale
    name = "interpolate"
    rounded = "output_size_rounding" in kwargs
    if (
        mode == "nearest"
        and kwargs.get("recompute_scale_factor") is None
        and not rounded
        and rng.random() < 0.3
    ):
        name = "upsample_nearest"
        del kwargs["mode"]
        kwargs.pop("recompute_scale_factor", None)
    config = dict(op=name, input_size=size, **kwargs, dtype=str(x.dtype))
    layers: Callable[[Any], tuple[nn.Module, tuple]] | None

    def ours(x):
        return getattr(TF, name)(x, **kwargs)

    def theirs(x):
        if rounded:  # ATen's op given the rounded sizes and the scales torch would pass
            op = f"upsample_nearest{nd}d" if mode == "nearest" else f"_upsample_nearest_exact{nd}d"
            scales = [None] * nd if kwargs["recompute_scale_factor"] else factors
            return getattr(torch.ops.aten, op)(x, outs, *scales)
        with warnings.catch_warnings():  # (torch's upsample_nearest is deprecated)
            warnings.simplefilter("ignore", UserWarning)
            return getattr(F, name)(x, **kwargs)

    if rounded:  # (torch's layers have no rounding)
        layers = None
    elif name == "interpolate":
        layers = _module("Upsample", **kwargs)
    else:
        layers = _module("UpsamplingNearest2d", **kwargs) if nd == 2 else None
    return Case(config, ours, theirs, [x], layers=layers)


def _dtype_layout(rng: random.Random) -> tuple[torch.dtype, str]:
    return rng.choice([torch.float64, torch.float32]), _draw_layout(rng)


def _module(name: str, *args: Any, **kwargs: Any) -> Callable[[Any], tuple[nn.Module, tuple]]:
    """Layers of a case without parameters: ``namespace.<name>(*args, **kwargs)``."""

    def layers(namespace: Any) -> tuple[nn.Module, tuple]:
        return getattr(namespace, name)(*args, **kwargs), ()

    return layers


def _on(module: Any, name: str, args: tuple) -> Callable[[torch.Tensor], Any]:
    def call(x: torch.Tensor) -> Any:
        return getattr(module, name)(x, *args)

    return call


#: The share of float64 cases whose second-order gradients are compared ...
SECOND_ORDER_SHARE = 0.25
#: ... among those whose operands hold at most this many elements: a locally connected layer
#: with a weight per output position can hold millions, whose second order the interpreter
#: had not finished after eleven minutes (its first order took about two).
SECOND_ORDER_MAX_ELEMENTS = 100_000

DRAWS: tuple[Callable[[random.Random], Case], ...] = (
    conv_case, conv_case, conv_case, conv_transpose_case, conv_transpose_case, local_case,
    pool_case, pool_case, adaptive_case, pyramid_case, interpolate_case, maxout_case,
    padding_string_case,
)  # fmt: skip


# --- one case ----------------------------------------------------------------------------------


def _channels_last(t: torch.Tensor) -> bool:
    return t.dim() in _FORMATS and t.is_contiguous(memory_format=_FORMATS[t.dim()])


def _both_layouts(t: torch.Tensor) -> bool:
    """Whether ``t`` is dense both contiguous and channels-last (a size-1 dim allows it)."""
    return _channels_last(t) and t.is_contiguous()


def _layouts_differ(case: Case, ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    return (
        case.compare_layout
        and ours.dim() in _FORMATS
        and (_channels_last(ours) != _channels_last(theirs))
    )


def _tolerance(case: Case, expected: torch.Tensor) -> dict[str, float]:
    if case.tolerance is not None:
        return case.tolerance(expected)
    return _TOLERANCES[expected.dtype]


_SIXTEEN_BITS = (torch.float16, torch.bfloat16)


def _coarser(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    return a if torch.finfo(a).eps >= torch.finfo(b).eps else b


def _close_like_torch(ours: torch.Tensor, theirs: torch.Tensor, exact: torch.Tensor,
                      unit: float, what: str) -> None:  # fmt: skip
    """Raise unless ``ours`` is as close to ``exact`` as torch's ``theirs`` is — its largest
    error at most twice torch's plus four roundings of ``exact``'s largest value (``unit``: the
    epsilon of the coarser of the computing dtype and the result's)."""
    err_ours = (ours.double() - exact).abs().max().item()
    err_theirs = (theirs.double() - exact).abs().max().item()
    bound = 2 * err_theirs + 4 * unit * exact.abs().max().item()
    if not err_ours <= bound:  # (NaN fails too)
        raise AssertionError(
            f"{what}: ours is {err_ours:.3g} from float64, torch's {err_theirs:.3g} "
            f"(at most {bound:.3g})"
        )


def _compare(case: Case, ours: torch.Tensor, theirs: torch.Tensor, exact: torch.Tensor | None,
             computing: torch.dtype, what: str) -> None:  # fmt: skip
    """Raise where ``ours`` and torch's ``theirs`` differ: a 16-bit result, or one computed in
    16 bits (``computing``: the dtype of the call's result), against ``exact`` where the case
    has it (:attr:`Case.exact`), any other by the case's tolerances."""
    if not ours.is_floating_point():
        torch.testing.assert_close(ours, theirs, msg=lambda m: f"{what}: {m}")
        return
    coarser = _coarser(computing, theirs.dtype)
    if exact is not None and coarser in _SIXTEEN_BITS and ours.numel():
        _close_like_torch(ours, theirs, exact, torch.finfo(coarser).eps, what)
    else:
        close = _tolerance(case, theirs)
        torch.testing.assert_close(ours, theirs, **close, msg=lambda m: f"{what}: {m}")


def _exact(case: Case, dtype: torch.dtype, grad: torch.Tensor) -> tuple[list, list]:
    """``case.exact``'s results and gradients (for ``grad``) in float64, on the operands
    rounded to ``dtype`` (the call's result's), as autocast rounds them; ``[None]``s where the
    case has none."""
    if case.exact is None:
        return [None] * 2, [None] * len(case.operands)
    rounded = [t.detach().to(dtype).double().requires_grad_() for t in case.operands]
    results = outputs(case.exact(*rounded))
    grads = torch.autograd.grad(results[0], rounded, grad.double(), allow_unused=True)
    return [r.detach() for r in results], [
        torch.zeros_like(t) if g is None else g for t, g in zip(rounded, grads)
    ]


def check(case: Case, backend: str = "triton") -> str | None:
    """``None`` when ours, on ``backend``, agrees with torch on the case, else what differs."""
    # (dense copies: CPU torch's convolutions misread size-1 dims strided otherwise)
    copies = [
        t.detach().clone(memory_format=suggest_memory_format(t)).requires_grad_()
        for t in case.operands
    ]
    try:
        expected = outputs(case.theirs(*copies))
    except Exception as refused:  # torch refuses: so must we, with its exception type
        if not case.check_refusals:
            return None
        try:
            with torchconv_ext.use_backend(backend):
                case.ours(*case.operands)
        except Exception as ours:
            if isinstance(ours, type(refused)):
                return None
            return f"raised {type(ours).__name__} where torch raised {type(refused).__name__}"
        return f"accepted what torch refuses ({type(refused).__name__}: {refused})"
    with torchconv_ext.use_backend(backend):
        got = outputs(case.ours(*case.operands))
    seed = torch.Generator().manual_seed(0)
    grad = torch.randn(expected[0].shape, generator=seed, dtype=expected[0].dtype)
    computing = expected[0].dtype
    exact, exact_grads = _exact(case, computing, grad)
    for i, (ours, theirs) in enumerate(zip(got, expected)):
        if (ours.shape, ours.dtype) != (theirs.shape, theirs.dtype):
            return f"{list(ours.shape)} {ours.dtype}, torch's {list(theirs.shape)} {theirs.dtype}"
        _compare(case, ours, theirs, exact[i], computing, f"result {i}")
        if _layouts_differ(case, ours, theirs):
            return f"strides {ours.stride()}, torch's {theirs.stride()}"
    grads = [grad.clone().requires_grad_() for _ in range(2)]
    with torchconv_ext.use_backend(backend):
        ours_grads = torch.autograd.grad(
            got[0], case.operands, grads[0], create_graph=case.second_order
        )
    their_grads = torch.autograd.grad(expected[0], copies, grads[1], create_graph=case.second_order)
    # A compiled backward lays its results out by the incoming gradient it traced — the
    # output's strides — and where that one and torch's differ only in a size-1 dim's stride
    # (one channel, say) torch's eager rule reads the two apart: no layouts to compare then.
    traced_layout = case.config.get("call") == "compile" and _both_layouts(grad)
    for i, (ours, theirs) in enumerate(zip(ours_grads, their_grads)):
        _compare(case, ours, theirs, exact_grads[i], computing, f"grad {i}")
        if not traced_layout and _layouts_differ(case, ours, theirs):
            return f"grad {i}: strides {ours.stride()}, torch's {theirs.stride()}"
    if case.second_order:
        _compare_second_order(
            (ours_grads, [*case.operands, grads[0]]), (their_grads, [*copies, grads[1]]), backend
        )
    return None


def _compare_second_order(ours: tuple, theirs: tuple, backend: str) -> None:
    """Raise where the gradients, through the first-order ``grads``, of ``sum(grads · v)``
    (``v`` random, the same for both) with respect to ``inputs`` differ: ``ours`` and
    ``theirs`` are ``(grads, inputs)``, the operands then the incoming gradient."""
    seed = torch.Generator().manual_seed(1)
    weights = [torch.randn(g.shape, generator=seed, dtype=g.dtype) for g in ours[0]]
    results = []
    for (grads, inputs), run_on in ((ours, backend), (theirs, None)):
        linked = [(g, v) for g, v in zip(grads, weights) if g.requires_grad]
        if not linked:  # (no first-order gradient depends on an input: all zero)
            results.append([torch.zeros_like(t) for t in inputs])
            continue
        total = sum((g * v).sum() for g, v in linked)
        with torchconv_ext.use_backend(run_on) if run_on else contextlib.nullcontext():
            results.append(torch.autograd.grad(total, inputs, materialize_grads=True))
    for i, (a, b) in enumerate(zip(*results)):
        torch.testing.assert_close(
            a, b, rtol=1e-9, atol=1e-9, msg=lambda m, i=i: f"second-order grad {i}: {m}"
        )


def _elements(case: Case) -> int:
    """The elements of a case's tensor operands."""
    return sum(t.numel() for t in case.operands if isinstance(t, torch.Tensor))


def run(seed: int, *, seconds: float | None = None, cases: int | None = None,
        backend: str = "triton", verbose: bool = False,
        report: Callable[[str], None] = print) -> list[str]:  # fmt: skip
    """Draw and check cases from ``seed`` until ``seconds`` pass or ``cases`` ran, ours on
    ``backend``; the failures."""
    rng = random.Random(seed)
    failures: list[str] = []
    start, done = time.monotonic(), 0
    while (cases is None or done < cases) and (
        seconds is None or time.monotonic() - start < seconds
    ):
        case = draw_mode(rng.choice(DRAWS)(rng), rng, backend)
        if (
            "call" not in case.config
            and case.twice_differentiable
            and case.operands[0].dtype == torch.float64
            and rng.random() < SECOND_ORDER_SHARE
            and _elements(case) <= SECOND_ORDER_MAX_ELEMENTS  # (after the draw: seeds keep theirs)
        ):
            case.second_order = case.config["second_order"] = True
        done += 1
        if verbose:  # before the case runs: a crash or a hang shows which case it was
            report(f"CASE {json.dumps(case.config)}")
        try:
            problem = check(case, backend)
        except Exception as e:  # a mismatch (assert_close) or a crash of ours
            problem = f"{type(e).__name__}: {' | '.join(str(e).splitlines()[:4])}"
        if problem is not None:
            failures.append(f"{json.dumps(case.config)}: {problem}")
            report(f"FAIL {failures[-1]}")
    report(f"{done} cases, {len(failures)} failed (seed {seed})")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=300.0, help="time budget (default 300)")
    parser.add_argument("--cases", type=int, help="stop after this many cases")
    parser.add_argument("--backend", choices=["triton", "torch"], default="triton")
    parser.add_argument("--verbose", action="store_true", help="print each case before it runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    failures = run(
        args.seed,
        seconds=args.seconds,
        cases=args.cases,
        backend=args.backend,
        verbose=args.verbose,
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
