"""The reference nearest upsampling the Triton tests compare against, and its own checks.

``reference`` gathers along each spatial dim with the source indices of torch's own 1-d kernel
run on float32 positions. That kernel applies ATen's float32 rule (``compute_scales_value<float>``,
``floor(o * s)`` / ``floor((o + 0.5) * s)``, clamped) with no shortcuts: the rule of torch's CUDA
kernels, which the Triton kernels follow. Torch's CPU kernels for 2-d inputs and for float64
tensors deviate from that rule where a scale factor does not match the sizes, so the Triton tests
use this reference rather than calling ``F.interpolate`` on the same (CPU) tensor.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

aten = torch.ops.aten

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


# ---------------------------------------------------------------------------------------------
# Checks of the reference itself
# ---------------------------------------------------------------------------------------------


def _float32_rule(n: int, o: int, s: float, exact: bool) -> torch.Tensor:
    """ATen's float32 rule written out with float32 tensor arithmetic."""
    scale = torch.tensor(1.0 / s if s > 0 else 0.0, dtype=torch.float32)
    if s <= 0:
        scale = torch.tensor(n, dtype=torch.float32) / torch.tensor(o, dtype=torch.float32)
    pos = torch.arange(o, dtype=torch.int64).to(torch.float32)
    if exact:
        pos = pos + 0.5
    return torch.floor(pos * scale).long().clamp(max=n - 1)


def test_torch_index_is_the_float32_rule():
    for n, o, s, exact in random_geometries(400, seed=1, max_size=5000):
        assert torch.equal(torch_index(n, o, s, exact), _float32_rule(n, o, s, exact)), (n, o, s)


@pytest.mark.parametrize("nd", [1, 3])
@pytest.mark.parametrize("exact", [False, True])
def test_reference_is_torch_float32_1d_3d(nd, exact):
    """For float32 1-d / 3-d inputs torch's CPU kernels apply the float32 rule too."""
    mode = "nearest-exact" if exact else "nearest"
    for n, o, s, _ in random_geometries(60, seed=2 + nd, max_size=12):
        x = torch.randn((2, 3) + (n,) * nd)
        kw = {"scale_factor": s} if s > 0 else {"size": o}
        out, scales = torch_geometry(x, **kw)
        assert torch.equal(reference(x, out, scales, exact), F.interpolate(x, mode=mode, **kw))


@pytest.mark.parametrize("name", ["contiguous", "channels_last", "strided", "expanded"])
def test_layout_keeps_values(name):
    for nd in (1, 2, 3):
        x = torch.randn((2, 3) + (4,) * nd)
        y = layout(x, name)
        expected = x[:1].expand(x.shape) if name == "expanded" else x
        assert torch.equal(y, expected)
        if name != "contiguous":
            assert not y.is_contiguous()
