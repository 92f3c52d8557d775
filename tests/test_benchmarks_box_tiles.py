"""The TMA box-tile kernels of ``benchmarks.box_tiles`` (an experiment, not used by the ops):
exact under Triton's interpreter against torch, boxes overhanging the maps and channel blocks
overhanging ``C`` included. Float32 operands (the interpreter's tensor descriptors take no
float64), compared with torch's float64 result."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from triton.runtime import _allocation

from benchmarks import box_tiles


@pytest.fixture(autouse=True)
def scratch_allocator():
    """Device-side tensor descriptors need Triton's global-scratch allocator."""
    token = _allocation._allocator.set(
        lambda size, align, stream: torch.empty(size, dtype=torch.int8)
    )
    yield
    _allocation._allocator.reset(token)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.movedim(1, -1).contiguous()


CASES = [  # input (N, C, spatial...), C_out, kernel, padding, dilation
    ((2, 16, 9, 11), 16, (3, 3), (1, 1), (1, 1)),
    ((1, 24, 7, 6), 8, (3, 2), (2, 0), (2, 1)),
    ((1, 16, 5, 6, 7), 24, (3, 3, 3), (1, 1, 1), (1, 1, 1)),
]


@pytest.mark.parametrize("shape, c_out, kernel, padding, dilation", CASES)
def test_forward_matches_torch(shape, c_out, kernel, padding, dilation):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    w = torch.randn((c_out, shape[1], *kernel), generator=g)
    conv = F.conv2d if len(kernel) == 2 else F.conv3d
    ref = conv(x.double(), w.double(), padding=padding, dilation=dilation)
    got = box_tiles.conv_forward(_channels_last(x), _channels_last(w), padding, dilation)
    torch.testing.assert_close(got.movedim(-1, 1).double(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape, c_out, kernel, padding, dilation", CASES)
def test_weight_gradient_matches_torch(shape, c_out, kernel, padding, dilation):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    w = torch.randn((c_out, shape[1], *kernel), dtype=torch.float64, requires_grad=True)
    conv = F.conv2d if len(kernel) == 2 else F.conv3d
    y = conv(x, w, padding=padding, dilation=dilation)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (ref,) = torch.autograd.grad(y, w, gy)
    got = box_tiles.conv_weight_grad(
        _channels_last(x.float()), _channels_last(gy.float()), kernel, padding, dilation
    )
    torch.testing.assert_close(got.movedim(-1, 1).double(), ref, rtol=1e-5, atol=1e-3)


def test_box_shapes_take_whole_rows_first():
    assert box_tiles.box_shape((1, 56, 56), 128) == (1, 2, 64)
    assert box_tiles.box_shape((1, 14, 14), 128) == (1, 8, 16)
    assert box_tiles.box_shape((128, 128, 128), 128) == (1, 1, 128)
    assert box_tiles.box_shape((8, 8, 8), 128) == (2, 8, 8)
    assert box_tiles.utilisation((1, 56, 56), (1, 2, 64)) == pytest.approx(56 / 64)
    assert box_tiles.boxes_per_image((1, 14, 14), (1, 8, 16)) == 2


def test_timing_checks_each_case_then_times_all_three():
    """The GPU trial's code path, on the CPU at a few positions (times mean nothing)."""
    rows = list(box_tiles.time_layers("cpu", 600.0, tiny=True, layers=[box_tiles.LAYERS[0]]))
    assert [r["direction"] for r in rows] == list(box_tiles.CONFIGS)
    for r in rows:
        assert r["check"]["status"] == "ok", r
        assert all(r[f"{k}_ms"] > 0 for k in ("torch", "ours", "box"))
    doc = {"device": "cpu", "dtype": "float32", "torch": "t", "triton": "t", "git_sha": "abc"}
    text = box_tiles.timing_markdown({**doc, "date": "today", "rows": rows})
    assert "| resnet50.layer1.conv2 | forward | ok |" in text


def test_weight_gradient_splits_sum_to_the_whole():
    g = torch.Generator().manual_seed(2)
    x = torch.randn((1, 5, 7, 16), generator=g)
    gy = torch.randn((1, 5, 7, 16), generator=g)
    one = box_tiles.conv_weight_grad(x, gy, (3, 3), (1, 1), (1, 1), splits=1)
    three = box_tiles.conv_weight_grad(x, gy, (3, 3), (1, 1), (1, 1), splits=3)
    torch.testing.assert_close(three, one, rtol=1e-5, atol=1e-5)
