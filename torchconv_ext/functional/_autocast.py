"""Autocast: the dtype torch's autocast gives each of our ops, on any device.

Torch's autocast casts by op and by device (``aten/src/ATen/autocast_mode.*``):

* convolutions (``conv*d``, ``conv_transpose*d``) run in the autocast dtype on every device: their
  floating operands other than float64 are cast to it;
* a pooling or upsampling op runs in float32 where torch registered an autocast kernel for it on
  that device — CPU autocast has them for 3-d max/avg/adaptive pooling, CUDA autocast for nearest
  upsampling (torch 2.13) — and in the input's dtype everywhere else.

Which ops those are is read from torch's own dispatcher when this module is imported, so the
rules follow the installed torch on every device type it knows, not a copied list. Our ops apply
them in the functional layer, before any computation; the computations themselves then run with
autocast off (``_fallback.without_autocast``), so nothing is cast twice.
"""

from __future__ import annotations

import torch

from .._fallback import autocast_on

# The dispatch key of each device type's autocast.
_AUTOCAST_KEYS = {
    "cpu": "AutocastCPU",
    "cuda": "AutocastCUDA",
    "xpu": "AutocastXPU",
    "mps": "AutocastMPS",
    "hpu": "AutocastHPU",
    "privateuseone": "AutocastPrivateUse1",
}

# The ATen ops torch's functional pooling and upsampling call, by which autocast decides.
_POOL_AND_UPSAMPLE_OPS = tuple(
    name
    for d in (1, 2, 3)
    for name in (
        f"max_pool{d}d",
        f"max_pool{d}d_with_indices",
        f"avg_pool{d}d",
        f"adaptive_avg_pool{d}d",
        f"adaptive_max_pool{d}d",
        f"upsample_nearest{d}d",
        f"_upsample_nearest_exact{d}d",
    )
)


def _has_autocast_kernel(op: str, key: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{op}", key)
    except RuntimeError:  # an op or dispatch key this torch does not have
        return False


#: Per device type, the ATen pooling / upsampling ops autocast runs in float32.
FLOAT32_OPS: dict[str, frozenset[str]] = {
    device: frozenset(op for op in _POOL_AND_UPSAMPLE_OPS if _has_autocast_kernel(op, key))
    for device, key in _AUTOCAST_KEYS.items()
}


def autocast_off() -> bool:
    """Outside any autocast region, the common case: one C call answers (``torch.compile``
    answers it too, inside the autocast regions it traces)."""
    return not torch._C._is_any_autocast_enabled()


def _eligible(t: torch.Tensor | None) -> bool:
    """What autocast casts: floating tensors other than float64."""
    return t is not None and t.is_floating_point() and t.dtype != torch.float64


def conv_dtype(input: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast casts a convolution's floating operands to, ``None`` when it is off."""
    if autocast_off():
        return None
    device = input.device.type
    return torch.get_autocast_dtype(device) if autocast_on(device) else None


def torch_op_dtype(op: str, input: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast gives ``input`` of ATen pooling or upsampling op ``op`` (float32 where
    torch casts), ``None`` where it leaves the input as it is."""
    if autocast_off():
        return None
    device = input.device.type
    if not _eligible(input) or op not in FLOAT32_OPS.get(device, ()) or not autocast_on(device):
        return None
    return torch.float32


def dtype_after(dtype: torch.dtype | None, t: torch.Tensor) -> torch.dtype:
    """``t``'s dtype after :func:`cast` to ``dtype``."""
    return dtype if dtype is not None and _eligible(t) else t.dtype


def cast(dtype: torch.dtype | None, *tensors: torch.Tensor | None) -> tuple:
    """``tensors`` with the eligible ones cast to ``dtype`` (unchanged when ``dtype`` is None)."""
    if dtype is None:
        return tensors
    return tuple(t.to(dtype) if _eligible(t) else t for t in tensors)
