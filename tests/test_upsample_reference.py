"""The upsampling reference itself (``references/upsample.py``): its source indices are ATen's
float32 rule and torch's own float32 1-d / 3-d results; its layouts keep the values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.references.upsample import (
    layout,
    random_geometries,
    reference,
    torch_geometry,
    torch_index,
)


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
