"""Adaptive, pyramid and global pooling vs torch (and vs the pyramid's definition) in float64,
both backends, forward and backward, on random / NaN / -inf / tie-heavy inputs in every layout."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
from tests.references.pool import (
    LAYOUTS,
    in_layout,
    reference_adaptive,
    significant_strides,
    special_batch,
)
from torchconv_ext import functional as TF

TORCH = {
    "max": {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d},
    "avg": {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d},
}
OURS = {
    "max": {1: TF.adaptive_max_pool1d, 2: TF.adaptive_max_pool2d, 3: TF.adaptive_max_pool3d},
    "avg": {1: TF.adaptive_avg_pool1d, 2: TF.adaptive_avg_pool2d, 3: TF.adaptive_avg_pool3d},
}
# Output sizes for inputs of SIZES (1: (7,), 2: (5, 6), 3: (4, 5, 3)): one bin, divisible and
# overlapping windows, identity, more bins than inputs, None, and an empty output.
OUTPUT_SIZES = {
    1: [1, 3, 4, 7, 10, 0],
    2: [1, (2, 3), (3, 4), (5, 6), (7, 9), (None, 4), (4, 1), (0, 2)],
    3: [1, (2, 3, 2), (3, 2, 5), (4, 5, 3), (5, 7, 1), (None, 2, None)],
}


def _exact(got, want, msg):
    torch.testing.assert_close(
        got, want, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{msg}: {m}"
    )


def check_adaptive(mode, nd, size, layout, backend, x=None):
    x = in_layout(special_batch(nd) if x is None else x, layout).requires_grad_()
    with torchconv_ext.use_backend(backend):
        got = OURS[mode][nd](x, size, *([True] if mode == "max" else []))
    want = TORCH[mode][nd](x, size, *([True] if mode == "max" else []))
    got, want = (got, want) if mode == "max" else ((got,), (want,))
    msg = f"adaptive {mode}{nd}d {size} {layout} {backend}"
    if mode == "max":
        _exact(got[0], want[0], msg)
        _exact(got[1], want[1], msg + " indices")
    else:
        torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12, equal_nan=True)
    for g, w in zip(got, want):
        assert significant_strides(g) == significant_strides(w), msg

    gy = torch.randn(want[0].shape, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        (g_got,) = torch.autograd.grad(got[0], x, gy)
    if want[0].numel() == 0:  # torch's backward refuses empty outputs; the gradient is zero
        assert torch.equal(g_got, torch.zeros_like(x))
        return
    (g_want,) = torch.autograd.grad(want[0], x, gy)
    torch.testing.assert_close(
        g_got, g_want, rtol=1e-12, atol=1e-12, msg=lambda m: f"{msg} grad: {m}"
    )
    assert significant_strides(g_got) == significant_strides(g_want), msg + " grad strides"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_adaptive_fallback_grid(mode, nd, layout):
    for size in OUTPUT_SIZES[nd]:
        check_adaptive(mode, nd, size, layout, "torch")


TRITON_ADAPTIVE = [
    ("max", 2, (3, 4)),
    ("max", 2, (7, 9)),
    ("max", 2, 1),
    ("max", 1, 3),
    ("max", 3, (2, 3, 2)),
    ("avg", 2, (2, 3)),
    ("avg", 2, (7, 4)),
    ("avg", 2, (1, 1)),
    ("avg", 1, 10),
    ("avg", 3, (3, 2, 5)),
]


@pytest.mark.interpret
@pytest.mark.parametrize("i", range(len(TRITON_ADAPTIVE)))
def test_adaptive_triton(i):
    mode, nd, size = TRITON_ADAPTIVE[i]
    check_adaptive(mode, nd, size, LAYOUTS[i % 3], "triton")


def test_reference_adaptive_agrees_with_torch():
    """The written-out window rule [floor(i·In/Out), ceil((i+1)·In/Out)) is torch's."""
    for nd in (1, 2, 3):
        x = special_batch(nd)
        for size in OUTPUT_SIZES[nd]:
            full = tuple(
                s if o is None else o
                for o, s in zip((size,) * nd if not isinstance(size, tuple) else size, x.shape[2:])
            )
            if 0 in full:
                continue
            for mode in ("max", "avg"):
                got = reference_adaptive(x, mode, full)
                want = TORCH[mode][nd](x, full, *([True] if mode == "max" else []))
                if mode == "max":
                    _exact(got[0], want[0], "ref")
                    _exact(got[1], want[1], "ref indices")
                else:
                    torch.testing.assert_close(got[0], want, equal_nan=True)


# --------------------------------------------------------------------------------------------
# Spatial pyramid pooling: its definition, torch.cat of flattened adaptive poolings
# --------------------------------------------------------------------------------------------


def pyramid_definition(x, levels, mode):
    nd = x.dim() - 2
    pooled = [TORCH[mode][nd](x, level, *([True] if mode == "max" else [])) for level in levels]
    if mode == "max":
        return torch.cat([p[0].flatten(1) for p in pooled], 1), torch.cat(
            [p[1].flatten(1) for p in pooled], 1
        )
    return torch.cat([p.flatten(1) for p in pooled], 1), None


def check_pyramid(nd, levels, mode, layout, backend):
    x = in_layout(special_batch(nd), layout).requires_grad_()
    want, want_idx = pyramid_definition(x, levels, mode)
    with torchconv_ext.use_backend(backend):
        got = TF.spatial_pyramid_pool(x, levels, mode)
    assert got.shape == (x.shape[0], x.shape[1] * sum(level**nd for level in levels))
    assert got.is_contiguous()
    if mode == "max":
        _exact(got, want, f"pyramid {nd}d {levels}")
        # The indices the kernel saved for backward are the definition's indices.
        with torchconv_ext.use_backend(backend):
            _, idx = torch.ops.torchconv_ext.pyramid_pool_fwd(x.detach(), mode, list(levels))
        _exact(idx, want_idx, "pyramid indices")
    else:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)
    gy = torch.randn(want.shape, dtype=torch.float64)
    (g_want,) = torch.autograd.grad(want, x, gy)
    with torchconv_ext.use_backend(backend):
        (g_got,) = torch.autograd.grad(got, x, gy)
    torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-12)


PYRAMIDS = [(2, (1, 2, 4)), (2, (3, 1, 7)), (1, (1, 2, 3, 9)), (3, (1, 2))]


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pyramid_fallback(mode):
    for nd, levels in PYRAMIDS:
        for layout in LAYOUTS:
            check_pyramid(nd, levels, mode, layout, "torch")


@pytest.mark.interpret
@pytest.mark.parametrize("i", range(len(PYRAMIDS)))
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pyramid_triton(mode, i):
    nd, levels = PYRAMIDS[i]
    check_pyramid(nd, levels, mode, LAYOUTS[i % 3], "triton")


# --------------------------------------------------------------------------------------------
# Global pooling
# --------------------------------------------------------------------------------------------


def check_global(nd, layout, backend, x=None):
    x = in_layout(special_batch(nd) if x is None else x, layout).requires_grad_()
    with torchconv_ext.use_backend(backend):
        got_avg, got_max = TF.global_avg_pool(x), TF.global_max_pool(x)
    want_avg = x.mean(tuple(range(2, x.dim())))
    want_max = TORCH["max"][nd](x, 1).flatten(1)
    assert got_avg.shape == got_max.shape == x.shape[:2] and got_avg.is_contiguous()
    torch.testing.assert_close(got_avg, want_avg, rtol=1e-12, atol=1e-12, equal_nan=True)
    _exact(got_max, want_max, f"global max {nd}d {layout}")
    gy = torch.randn(x.shape[:2], dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        g_got = torch.autograd.grad((got_avg * gy).sum() + (got_max * gy).sum(), x)[0]
    g_want = torch.autograd.grad((want_avg * gy).sum() + (want_max * gy).sum(), x)[0]
    torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_global_fallback(nd):
    for layout in LAYOUTS:
        check_global(nd, layout, "torch")


@pytest.mark.interpret
@pytest.mark.parametrize("layout", LAYOUTS)
def test_global_triton(layout):
    # A plane larger than the reduction tile: lanes meet several elements each and are
    # combined (last NaN, else first maximum) at the end.
    x = special_batch(2, channels=5, sizes=(7, 9))
    x[3, :, 6, 8] = 2.0  # ties between lanes: the first maximum must win
    check_global(2, layout, "triton", x=x)


@pytest.mark.interpret
def test_global_triton_3d_and_1d():
    check_global(3, "channels_last", "triton")
    check_global(1, "strided", "triton")


def _outcome(fn):
    """``fn()``'s result, or the type of what it raised."""
    try:
        return fn()
    except Exception as error:  # (compared with torch's)
        return type(error)


def _as_torch(ours, reference, backend: str, msg: str) -> None:
    """``ours()`` on ``backend`` returns what ``reference()`` returns (NaN too), or raises
    the type of error it raises."""
    want = _outcome(reference)
    with torchconv_ext.use_backend(backend):
        got = _outcome(ours)
    if isinstance(want, type):
        assert got is want, msg
    else:
        assert isinstance(got, torch.Tensor), f"{msg}: raised {got}"
        torch.testing.assert_close(got, want, equal_nan=True, msg=msg)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_no_channels_or_no_positions_as_torch(backend):
    """What torch takes without channels or positions: average pooling to one bin per plane
    is a mean (of nothing: NaN), the 1- and 2-d average poolings check the spatial sizes alone,
    the others the channels of a batched input too; pyramid and global pooling are the adaptive
    pooling of their levels (global: one bin)."""
    for nd in (1, 2, 3):
        spatial = (4,) * nd
        shapes = [(2, 0, *spatial), (0, 0, *spatial), (0, *spatial), (2, 3, 0, *spatial[1:])]
        shapes.append((3, 0, *spatial[1:]))
        for shape, mode, size in itertools.product(shapes, ("avg", "max"), (1, 2)):
            x, pool, msg = torch.randn(shape, dtype=torch.float64), TORCH[mode][nd], f"{shape}"
            _as_torch(lambda: OURS[mode][nd](x, size), lambda: pool(x, size), backend, msg)
            if x.dim() == nd + 2:
                levels = (1, size)
                _as_torch(
                    lambda: TF.spatial_pyramid_pool(x, levels, mode),
                    lambda: torch.cat([pool(x, level).flatten(1) for level in levels], 1),
                    backend, f"pyramid {msg}",
                )  # fmt: skip
                _as_torch(
                    lambda: getattr(TF, f"global_{mode}_pool")(x),
                    lambda: pool(x, 1).flatten(1),
                    backend, f"global {msg}",
                )  # fmt: skip
