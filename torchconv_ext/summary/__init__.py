"""``summary``: per-layer output sizes, parameters, FLOPs, activation memory and receptive fields.

The model runs once, by default on the meta device (shapes only, no compute, no memory), with
forward hooks on every module. See :func:`summary`.
"""

from __future__ import annotations

import contextlib
import operator
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from . import _table
from ._trace import LayerSummary, Tracer, tensors
from .effective import EffectiveField, effective_field, final_map_call
from .fields import Field

__all__ = ["EffectiveField", "Field", "LayerSummary", "ModelSummary", "summary"]


@dataclass(frozen=True)
class ModelSummary:
    """What :func:`summary` measured: one :class:`LayerSummary` per listed layer call, in
    execution order, and the model's totals.

    ``params``: the model's parameters (each counted once); ``flops``: the whole forward as
    ``FlopCounterMode`` counts it; ``activation_bytes``: the bytes of every leaf layer's outputs
    (what a training step may keep for backward, at most); ``field``: the receptive field of
    the model's output; ``effective``: the measured effective receptive field (when asked).
    """

    layers: list[LayerSummary]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    params: int
    trainable_params: int
    flops: int
    activation_bytes: int
    field: Field | None
    effective: EffectiveField | None = None

    def __str__(self) -> str:
        header = [
            "Layer (type)",
            "Output shape",
            "Params",
            "FLOPs",
            "Output",
            "RF",
            "Jump",
            "Start",
        ]
        rows = [
            [
                "  " * max(layer.depth - 1, 0) + f"{layer.name or '(model)'} ({layer.type})",
                str(list(layer.output_shape)) if layer.output_shape is not None else "–",
                _table.count(layer.params),
                _table.metric(layer.flops),
                _table.size_in_bytes(layer.output_bytes),
                *_table.field_columns(layer.field),
            ]
            for layer in self.layers
        ]
        right = [False, False, True, True, True, True, True, True]
        lines = [
            _table.table(header, rows, right),
            f"Input {list(self.input_shape)} -> output "
            f"{list(self.output_shape) if self.output_shape is not None else '–'}",
            f"Params: {_table.count(self.params)} ({_table.count(self.trainable_params)} "
            f"trainable)   FLOPs: {_table.metric(self.flops)}   "
            f"Activations: {_table.size_in_bytes(self.activation_bytes)}",
        ]
        if self.field is not None:
            size, jump, start = _table.field_columns(self.field)
            lines.append(f"Receptive field of the output: {size} (jump {jump}, start {start})")
        if self.effective is not None:
            e = self.effective
            lines.append(
                f"Effective receptive field of {e.layer}'s centre unit: {_table.axes(e.size)} "
                f"(gradient ≥ {e.threshold:g} of its peak; theoretical "
                f"{_table.field_columns(e.field)[0]})"
            )
        return "\n".join(lines)


def summary(
    model: nn.Module,
    input_size: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "meta",
    depth: int | None = None,
    effective: bool = False,
    threshold: float = 0.05,
    seed: int = 0,
    verbose: bool = True,
) -> ModelSummary:
    r"""Run ``model`` once and summarise it layer by layer; print the table when ``verbose``.

    Per listed layer call (in execution order): the output shape; the parameters (for a
    convolution the notes' ``F·F·D1·K + K``: ``K`` filters of ``F×F`` over ``D1`` input channels
    (``D1/groups`` when grouped), plus ``K`` biases); the FLOPs
    (``torch.utils.flop_counter.FlopCounterMode``, which counts our convolutions like
    ``aten.convolution``; 2 per multiply-add); the bytes of its outputs; and its output's
    receptive field — size ``r``, jump ``j`` and start (centre of the first unit's field) per
    spatial axis, by the recurrences in :mod:`torchconv_ext.summary.fields`.

    For convolution, transposed convolution, pooling and interpolation layers the output size is
    also computed from the notes' formula ``(W − F + 2P)/S + 1`` (with dilation, ``ceil_mode``,
    TensorFlow-style ``'same'`` and the transposed form) and checked against the size the layer
    returned: a mismatch raises ``RuntimeError``. A subclass with its own ``forward`` that pads
    or crops (a causal or TensorFlow-'same' convolution) returns another size: its field is
    unknown instead.

    Receptive fields follow the tensors through the forward, so any model works: layers and
    functions that keep each pixel where it was (ReLU, batch norm, dropout, a change of
    channels…) pass the field through; a tensor computed from several (a residual sum, a
    concatenation) gets the union of their fields; padding layers shift it; global pooling
    (layers, our functions, a mean over the spatial axes) and a fully-connected layer on a
    flattened map cover the whole map; any other layer or function that changes the spatial
    size or moves pixels (functional convolution, pooling or interpolation, a crop, a
    transposition, ``nn.Linear`` on a map's last axis) makes the field unknown (shown ``?``).

    Args:
        model: any ``nn.Module`` taking one tensor (torch's layers and ``torchconv_ext.nn``'s).
        input_size: the full input shape, batch included: ``(N, C, *spatial)``; the receptive
            field is over the ``spatial`` axes.
        dtype: of the input and of the floating-point parameters and buffers (as if
            ``model.to(dtype)``).
        device: where the summary run happens. ``"meta"`` (default): shapes only, nothing is
            computed or allocated. Any other device runs the model for real on a random input,
            with copies of its parameters and buffers there (the model is not changed).
        depth: list the leaf layers down to this nesting depth and the modules at exactly this
            depth (with their sublayers' totals); ``None`` (default) lists every leaf layer.
        effective: also measure the effective receptive field (Luo et al., 2016) of the centre
            unit of the final feature map — the output of the module (the model included) that
            returned last a map shaped like the input, larger than 1×1: a residual block's sum,
            not its last convolution. Real compute, forward and backward, on the model's own
            device and weights (see :mod:`torchconv_ext.summary.effective`).
        threshold: the effective field's size counts pixels whose normalised gradient is at
            least this (default 0.05).
        seed: of the random inputs of real runs.
        verbose: print the table.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"summary: model must be an nn.Module, but got {type(model).__name__}")
    shape = _check_input_size(input_size)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"summary: dtype must be a floating-point torch.dtype, but got {dtype!r}")
    if depth is not None and not _is_int(depth):
        raise TypeError(f"summary: depth must be an int or None, but got {depth!r}")
    if depth is not None and depth < 0:
        raise ValueError(f"summary: depth must be non-negative, but got {depth!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise TypeError(f"summary: threshold must be a number, but got {threshold!r}")
    if not 0 < threshold <= 1:
        raise ValueError(f"summary: threshold must be in (0, 1], but got {threshold!r}")
    if not _is_int(seed):
        raise TypeError(f"summary: seed must be an int, but got {seed!r}")
    device = torch.device(device)
    lazy = [name for name, p in model.named_parameters() if nn.parameter.is_lazy(p)]
    if lazy:
        raise ValueError(
            f"summary: the model's parameters {lazy} are not initialised yet (a lazy module's): "
            "run the model once on an input first"
        )

    if device.type == "meta":
        x = torch.empty(shape, dtype=dtype, device=device)
    else:
        generator = torch.Generator(device).manual_seed(seed)
        x = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    counter = FlopCounterMode(display=False)
    tracer = Tracer(model, depth, counter)
    tracer.mode.assign([x], Field.of_input(shape[2:]))
    try:
        with torch.no_grad(), _state_on(model, device, dtype), tracer.hooks(), counter, tracer.mode:
            output = model(x)
    except Exception as error:
        # The model's own error, as is; the hint only where the meta device may be the cause
        # (it has shapes but no values, and some operations have no meta implementation).
        meta_only = isinstance(error, NotImplementedError) or re.search(r"\bmeta\b", str(error))
        # (a heuristic for a hint only: the error itself is raised unchanged either way;
        # notes exist from Python 3.11)
        if device.type == "meta" and meta_only and hasattr(error, "add_note"):
            error.add_note(
                "summary: the model failed on the meta device (shapes only, no values); pass "
                "device='cpu' to run it for real"
            )
        raise

    outputs = tensors(output)
    result = ModelSummary(
        layers=tracer.layers,
        input_shape=shape,
        output_shape=tuple(outputs[0].shape) if outputs else None,
        params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        flops=counter.get_total_flops(),
        activation_bytes=tracer.leaf_output_bytes,
        field=tracer.mode.field(outputs[0]) if outputs else None,
        effective=_effective(model, shape, tracer, threshold, seed) if effective else None,
    )
    if verbose:
        print(result)
    return result


def _check_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    if isinstance(input_size, torch.Tensor):  # (its values would fill the message)
        raise TypeError(
            "summary: input_size must be the full input shape (N, C, *spatial), not a tensor; "
            f"pass its shape: input_size={tuple(input_size.shape)}"
        )
    # Any integer type torch takes for a size (NumPy's too), not bools, floats or strings.
    if isinstance(input_size, str) or not isinstance(input_size, Sequence):
        raise TypeError(
            "summary: input_size must be a sequence of ints, the full input shape "
            f"(N, C, *spatial), but got {input_size!r}"
        )
    if not all(_is_int(s) for s in input_size):
        raise TypeError(f"summary: input_size must hold ints, but got {input_size!r}")
    shape = tuple(operator.index(s) for s in input_size)
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ValueError(
            "summary: input_size must be the full input shape (N, C, *spatial) of positive ints, "
            f"but got {input_size!r}"
        )
    return shape


def _is_int(value: object) -> bool:
    """An integer (Python's or NumPy's: what ``operator.index`` takes), not a bool."""
    if isinstance(value, bool | torch.Tensor):  # (a one-element tensor has __index__)
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


@contextlib.contextmanager
def _state_on(model: nn.Module, device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """For the duration, ``model``'s parameters and buffers on ``device`` (floating ones in
    ``dtype``): empty on the meta device, copies elsewhere (a forward may update buffers, e.g.
    batch norm's); the model's own tensors are put back afterwards.

    Each module's tables are swapped once and each tensor copied once, so a module registered
    under two names and parameters tied between modules stay as they are
    (``torch.func.functional_call`` restores neither).
    """
    copies: dict[int, torch.Tensor] = {}

    def moved(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in copies:
            kind = dtype if t.is_floating_point() else t.dtype
            if device.type == "meta":
                copies[id(t)] = torch.empty_like(t, device=device, dtype=kind)
            else:
                copies[id(t)] = t.detach().to(device=device, dtype=kind, copy=True)
        return copies[id(t)]

    swapped: list[tuple[dict, str, torch.Tensor]] = []
    try:
        for module in model.modules():  # (each module once)
            for table in (module._parameters, module._buffers):
                for name, t in table.items():
                    if t is not None:
                        swapped.append((table, name, t))
                        table[name] = moved(t)
        yield
    finally:
        for table, name, t in reversed(swapped):
            table[name] = t


def _effective(model, shape, tracer: Tracer, threshold: float, seed: int) -> EffectiveField:
    call = final_map_call(tracer.calls, len(shape))
    if call is None:
        raise ValueError(
            "summary: effective=True needs a layer whose output is a map shaped like the input "
            f"(N, C, *spatial) with more than one unit, and no layer of this model returns one "
            f"for input {list(shape)}"
        )
    return effective_field(model, shape, call, threshold, seed)
