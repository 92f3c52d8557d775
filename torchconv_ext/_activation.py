"""The activation a convolution applies to its result: ``activation=`` / ``activation_args=``
of the functional convolutions and the convolution modules.

An activation is named as ``torch.nn.functional`` names it and takes the keyword arguments that
function takes (:data:`ACTIVATION_ARGS`). :func:`parse_activation` checks both and returns an
:class:`Activation`, whose ``kind`` is what the ops and kernels take (``'gelu'`` with
``approximate='tanh'`` is the kind ``'gelu_tanh'``). The formulas here are torch ops: the
fallback's activation and every activation's backward (torch's own backward ops), differentiable
in turn (so the fused convolution has derivatives of any order).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: Each activation's keyword arguments (as ``torch.nn.functional`` takes them) and defaults;
#: ``None``: required.
ACTIVATION_ARGS: dict[str, dict[str, object]] = {
    "relu": {},
    "leaky_relu": {"negative_slope": 0.01},
    "prelu": {"weight": None},
    "elu": {"alpha": 1.0},
    "gelu": {"approximate": "none"},
    "silu": {},
    "relu6": {},
    "hardswish": {},
    "hardsigmoid": {},
    "mish": {},
    "sigmoid": {},
}
#: The kinds the ops and kernels take.
KINDS = ("relu", "leaky_relu", "prelu", "elu", "gelu", "gelu_tanh", "silu", "relu6",
         "hardswish", "hardsigmoid", "mish", "sigmoid")  # fmt: skip

_NAMES = ", ".join(["None", *map(repr, ACTIVATION_ARGS)])


@dataclass(frozen=True, eq=False)
class Activation:
    """A checked activation: its ``kind`` (one of :data:`KINDS`), the scalar ``alpha`` (leaky
    slope or ELU alpha, else 0) and the PReLU ``weight`` (else ``None``)."""

    kind: str
    alpha: float = 0.0
    weight: Tensor | None = None


def _number(activation: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"activation_args[{name!r}] of {activation!r} must be a real number, "
            f"got {type(value).__name__}"
        )
    return float(value)


def parse_activation(
    activation: str | None, activation_args: Mapping[str, object] | None
) -> Activation | None:
    """Check ``activation`` (``None`` or a name in :data:`ACTIVATION_ARGS`) and its keyword
    arguments; ``None`` when there is no activation. Raises ``TypeError`` / ``ValueError`` that
    name the argument and what it takes."""
    if activation is None:
        if activation_args:
            raise TypeError("activation_args given without an activation (activation=None)")
        return None
    if not isinstance(activation, str):
        raise TypeError(
            f"activation must be None or one of {_NAMES}, got {type(activation).__name__}"
        )
    if activation not in ACTIVATION_ARGS:
        raise ValueError(f"activation must be None or one of {_NAMES}, got {activation!r}")
    if activation_args is None:
        activation_args = {}
    if not isinstance(activation_args, Mapping):
        raise TypeError(
            "activation_args must be a dict of the activation's keyword arguments or None, "
            f"got {type(activation_args).__name__}"
        )
    allowed = ACTIVATION_ARGS[activation]
    unexpected = sorted(map(str, set(activation_args) - set(allowed)))
    if unexpected:
        takes = ", ".join(map(repr, allowed)) or "no arguments"
        raise TypeError(
            f"activation_args: {activation!r} takes {takes}, got unexpected {', '.join(unexpected)}"
        )
    args = {**allowed, **activation_args}
    if activation == "leaky_relu":
        return Activation(
            "leaky_relu", _number(activation, "negative_slope", args["negative_slope"])
        )
    if activation == "elu":
        return Activation("elu", _number(activation, "alpha", args["alpha"]))
    if activation == "gelu":
        approximate = args["approximate"]
        if approximate not in ("none", "tanh"):
            raise ValueError(
                f"activation_args['approximate'] of 'gelu' must be 'none' or 'tanh', "
                f"got {approximate!r}"
            )
        return Activation("gelu" if approximate == "none" else "gelu_tanh")
    if activation == "prelu":
        weight = args["weight"]
        if weight is None:
            raise TypeError("activation 'prelu' needs activation_args={'weight': tensor}")
        if not isinstance(weight, Tensor):
            raise TypeError(
                f"activation_args['weight'] of 'prelu' must be a Tensor, got {type(weight).__name__}"
            )
        if weight.dim() > 1 or not weight.is_floating_point():
            raise ValueError(
                "activation_args['weight'] of 'prelu' must be a floating-point tensor of one "
                f"value or one per output channel (0-d or 1-d), got {weight.dtype} of shape "
                f"{list(weight.shape)}"
            )
        return Activation("prelu", weight=weight.reshape(-1))
    return Activation(activation)


def check_channels(act: Activation, out_channels: int) -> None:
    """A PReLU weight holds one value, or one per output channel."""
    if act.weight is not None and act.weight.numel() not in (1, out_channels):
        raise ValueError(
            f"activation_args['weight'] of 'prelu' must hold 1 or out_channels={out_channels} "
            f"values, got {act.weight.numel()}"
        )


# --------------------------------------------------------------------------------------------
# Formulas, on a batched (N, C, *spatial) tensor
# --------------------------------------------------------------------------------------------


def per_channel(weight: Tensor, z: Tensor) -> Tensor:
    """The PReLU weight broadcastable against ``z`` (one value, or one per channel)."""
    weight = weight.to(z.dtype)
    return weight.view(-1, *[1] * (z.dim() - 2)) if weight.numel() > 1 else weight.reshape(())


def apply(z: Tensor, kind: str, alpha: float, weight: Tensor | None) -> Tensor:
    """``act(z)`` with torch's functional ops."""
    if kind == "prelu":
        return F.prelu(z, weight.to(z.dtype))
    return function(kind, alpha)(z)


def function(kind: str, alpha: float) -> Callable[[Tensor], Tensor]:
    """``act`` of every kind but PReLU as one callable of ``z``: the C function that
    ``torch.nn.functional``'s calls (whose Python adds only ``inplace`` and a
    ``__torch_function__`` check the C function makes itself), ``alpha`` bound — a
    decomposition made once calls it on every step."""
    if kind in _FUNCTIONS:
        return _FUNCTIONS[kind]
    if kind == "leaky_relu":
        return functools.partial(torch._C._nn.leaky_relu, negative_slope=alpha)
    if kind == "elu":
        return functools.partial(torch._C._nn.elu, alpha=alpha)
    if kind in ("gelu", "gelu_tanh"):
        approximate = "none" if kind == "gelu" else "tanh"
        return functools.partial(torch._C._nn.gelu, approximate=approximate)
    raise ValueError(f"unknown activation kind {kind!r}")


#: The kinds without an argument, as ``torch.nn.functional`` computes them.
_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "silu": torch._C._nn.silu,
    "relu6": torch._C._nn.relu6,
    "hardswish": torch._C._nn.hardswish,
    "hardsigmoid": torch._C._nn.hardsigmoid,
    "mish": torch._C._nn.mish,
    "sigmoid": torch.sigmoid,
}


def backward(grad: Tensor, z: Tensor, kind: str, alpha: float, weight: Tensor | None) -> Tensor:
    """``grad · act'(z)`` with torch's own backward op of each activation: one pass (on a GPU
    one kernel, where a formula of the derivative was up to a dozen), torch's values — at 0,
    and for a non-finite ``grad`` — and differentiable again: double backward, jvp (also the
    jvp's ``t_z · act'(z)``) and vmap. SiLU's, Mish's and hard sigmoid's backward ops have
    no derivatives of their own, so while a graph is built or a transform is active theirs is
    a formula of torch's ops (torch's own for SiLU and Mish; hard sigmoid's with the slope its
    kernels use)."""
    if kind == "relu":
        return _THRESHOLD_BACKWARD(grad, z, 0)
    if kind == "leaky_relu":
        return _LEAKY_RELU_BACKWARD(grad, z, alpha, False)
    if kind == "prelu":
        return _PRELU_BACKWARD(grad, z, per_channel(weight, z))[0]
    if kind == "elu":
        return _ELU_BACKWARD(grad, alpha, 1, 1, False, z)
    if kind in ("gelu", "gelu_tanh"):
        return _GELU_BACKWARD(grad, z, approximate="none" if kind == "gelu" else "tanh")
    if kind == "relu6":
        return _HARDTANH_BACKWARD(grad, z, 0.0, 6.0)
    if kind == "hardswish":
        return _HARDSWISH_BACKWARD(grad, z)
    if kind == "sigmoid":
        return _SIGMOID_BACKWARD(grad, torch.sigmoid(z))
    graphed = torch.is_grad_enabled() or torch._C._are_functorch_transforms_active()
    if kind == "silu":
        if graphed:
            s = torch.sigmoid(z)
            return grad * (s * (1 + z * (1 - s)))
        return _SILU_BACKWARD(grad, z)
    if kind == "mish":
        if graphed:  # torch's infinitely differentiable Mish backward
            s, t = torch.sigmoid(z), torch.tanh(F.softplus(z))
            return grad * (t + z * s * (1 - t * t))
        return _MISH_BACKWARD(grad, z)
    if kind == "hardsigmoid":
        if graphed:
            return torch.where((z > -3) & (z < 3), grad * _HARDSIGMOID_SLOPE, 0)
        return _HARDSIGMOID_BACKWARD(grad, z)
    raise ValueError(f"unknown activation kind {kind!r}")


def prelu_backward(grad: Tensor, z: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """PReLU's two gradients, of ``z`` and of its weight (``grad · z`` summed where ``z ≤ 0``,
    per channel or all), from one pass of torch's PReLU backward op."""
    grad_z, grad_weight = _PRELU_BACKWARD(grad, z, per_channel(weight, z))
    if weight.numel() == 1:
        total = grad_weight.sum()
    else:
        total = grad_weight.sum([0, *range(2, grad_weight.dim())])
    return grad_z, total.reshape(weight.shape).to(weight.dtype)


def from_output(kind: str, alpha: float) -> bool:
    """Whether ``act'`` can be read off the activation's output, as torch's backward ops read
    it: ReLU and leaky ReLU with a slope ≥ 0 (the output's sign is ``z``'s and the derivative
    constant on each side), ReLU6 (the derivative 1 where the output lies strictly inside
    ``(0, 6)``, as ``z`` does), sigmoid (``y·(1 - y)``)."""
    return kind in ("relu", "relu6", "sigmoid") or (kind == "leaky_relu" and alpha >= 0)


def backward_from_output(grad: Tensor, y: Tensor, kind: str, alpha: float) -> Tensor:
    """``grad · act'(z)`` read off ``y = act(z)``, for the kinds :func:`from_output` accepts:
    torch's own ReLU and leaky-ReLU backward ops, so one pass (on a GPU, one kernel instead of
    a comparison, a select and a product) with torch's values — ReLU's is 0 where ``y ≤ 0``
    even for a non-finite ``grad`` — and differentiable again (double backward, jvp, vmap)."""
    if kind == "relu":
        return _THRESHOLD_BACKWARD(grad, y, 0)
    if kind == "relu6":
        return _HARDTANH_BACKWARD(grad, y, 0.0, 6.0)
    if kind == "sigmoid":
        return _SIGMOID_BACKWARD(grad, y)
    return _LEAKY_RELU_BACKWARD(grad, y, alpha, True)  # y is the result: its sign is z's


_THRESHOLD_BACKWARD = torch.ops.aten.threshold_backward.default
_LEAKY_RELU_BACKWARD = torch.ops.aten.leaky_relu_backward.default
_PRELU_BACKWARD = torch.ops.aten._prelu_kernel_backward.default
_ELU_BACKWARD = torch.ops.aten.elu_backward.default
_GELU_BACKWARD = torch.ops.aten.gelu_backward.default
_SILU_BACKWARD = torch.ops.aten.silu_backward.default
_HARDTANH_BACKWARD = torch.ops.aten.hardtanh_backward.default
_HARDSWISH_BACKWARD = torch.ops.aten.hardswish_backward.default
_HARDSIGMOID_BACKWARD = torch.ops.aten.hardsigmoid_backward.default
_MISH_BACKWARD = torch.ops.aten.mish_backward.default
_SIGMOID_BACKWARD = torch.ops.aten.sigmoid_backward.default
#: Hard sigmoid's slope as torch's backward kernels hold it: 1/6 rounded to float32.
_HARDSIGMOID_SLOPE = float(torch.tensor(1 / 6, dtype=torch.float32))
