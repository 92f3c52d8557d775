"""The reference nearest upsampling the Triton tests compare against, and the check against it.

``reference`` gathers along each spatial dim with the source indices of torch's own 1-d kernel
run on float32 positions. That kernel applies ATen's float32 rule (``compute_scales_value<float>``,
``floor(o * s)`` / ``floor((o + 0.5) * s)``, clamped) with no shortcuts: the rule of torch's CUDA
kernels, which the Triton kernels follow. Torch's CPU kernels for 2-d inputs and for float64
tensors deviate from that rule where a scale factor does not match the sizes, so the Triton tests
use this reference rather than calling ``F.interpolate`` on the same (CPU) tensor.

``check_against_reference``: forward values must be equal bitwise (nearest copies, no
arithmetic); outputs are NaN-poisoned before the kernels write (conftest), so an unwritten element
fails. Backward is compared in float64 with the reference's autograd (an index_add, which sums
the same terms in another order, hence a 1e-12 tolerance: one term missing or extra would be O(1)).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

import torchconv_ext
from torchconv_ext import functional as TF

aten = torch.ops.aten

# The nearest modes, each with whether it is nearest-exact.
MODES = {"nearest": False, "nearest-exact": True}

_ATEN_1D = {False: aten.upsample_nearest1d.default, True: aten._upsample_nearest_exact1d.default}
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def torch_index(in_size: int, out_size: int, scale: float, exact: bool) -> torch.Tensor:
    """Source index of every output position, from torch's 1-d kernel on float32 positions.

    ``scale``: torch's scale factor, or ``0.0`` when the scale comes from the sizes.
    """
    pos = torch.arange(in_size, dtype=torch.float32).view(1, 1, in_size)
    out = _ATEN_1D[exact](pos, [out_size], scale if scale > 0 else None)
    return out.view(-1).long()


def reference(x: torch.Tensor, output_size, scales, exact: bool) -> torch.Tensor:
    """Nearest upsampling of ``x`` as a differentiable gather (its backward is an index_add)."""
    y = x
    for d, (o, s) in enumerate(zip(output_size, scales)):
        y = y.index_select(2 + d, torch_index(x.shape[2 + d], o, s, exact))
    return y


def torch_geometry(x: torch.Tensor, size=None, scale_factor=None, recompute=None):
    """(output_size, scales) the way ``F.interpolate`` derives them."""
    nd = x.dim() - 2
    if size is not None:
        out = [size] * nd if isinstance(size, int) else list(size)
        return out, [0.0] * nd
    factors = [scale_factor] * nd if not isinstance(scale_factor, (list, tuple)) else scale_factor
    out = [int(n * f) for n, f in zip(x.shape[2:], factors)]
    return out, [0.0] * nd if recompute else [float(f) for f in factors]


def layout(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x``'s values in layout ``name``: contiguous, channels_last, strided (a non-contiguous
    view with a permuted, padded and sliced storage) or expanded (zero strides)."""
    if name == "contiguous":
        return x.contiguous()
    if name == "channels_last":
        if x.dim() == 3:  # no channels-last format for 3-d: use the (N, L, C) transpose instead
            return x.transpose(1, 2).contiguous().transpose(1, 2)
        return x.contiguous(memory_format=_CHANNELS_LAST[x.dim()])
    if name == "strided":
        perm = list(reversed(range(x.dim())))
        big = torch.zeros(
            [2 * s + 1 for s in x.permute(perm).shape], dtype=x.dtype, device=x.device
        )
        view = big[tuple(slice(1, None, 2) for _ in range(x.dim()))].permute(perm)
        view.copy_(x)
        return view
    if name == "expanded":
        # Repeat the batch through a zero stride.
        return x[:1].expand(x.shape)
    raise ValueError(name)


def random_geometries(count: int, seed: int, max_size: int = 40):
    """(in, out, scale, exact) with awkward scale factors, sizes, up and down."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        n = rng.choice([rng.randint(1, 12), rng.randint(1, max_size)])
        exact = rng.random() < 0.5
        if rng.random() < 0.5:
            s = rng.choice(
                [
                    rng.uniform(0.1, 6.0),
                    round(rng.uniform(0.1, 5.0), 2),
                    rng.randint(1, 5) + rng.choice([0.0, 1e-7, -1e-7, 0.05, -0.05]),
                    1 / rng.randint(1, 7),
                ]
            )
            o = int(n * s)
            if o < 1:
                continue
        else:
            s, o = 0.0, rng.choice([rng.randint(1, 3 * n + 3), 2 * n, n, max(1, n // 3)])
        cases.append((n, o, s, exact))
    return cases


# Our interpolate, run the same way by several test modules


def run(x, backend="triton", **kwargs):
    """Our interpolate on ``x`` and its input gradient for a random grad_output."""
    x = x.detach().requires_grad_()
    with torchconv_ext.use_backend(backend):
        y = TF.interpolate(x, **kwargs)
        go = torch.randn(y.shape, dtype=y.dtype)
        (g,) = torch.autograd.grad(y, x, go)
    return x, y, go, g


def check_against_reference(x, mode="nearest", **kwargs):
    """Forward bitwise and backward (float64) vs the reference; output strides vs torch's."""
    _, y, go, g = run(x, mode=mode, **kwargs)
    out_size, scales = torch_geometry(
        x, kwargs.get("size"), kwargs.get("scale_factor"), kwargs.get("recompute_scale_factor")
    )
    xr = x.detach().requires_grad_()
    expected = reference(xr, out_size, scales, MODES[mode])
    assert torch.equal(y, expected), (x.shape, kwargs, mode)
    assert y.stride() == F.interpolate(x, mode=mode, **kwargs).stride()
    if x.is_floating_point():
        (g_ref,) = torch.autograd.grad(expected, xr, go)
        # Same terms, summed in another order: float64 rounding apart, equal.
        torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
