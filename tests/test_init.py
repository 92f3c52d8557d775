"""torchconv_ext.init: the notes' hand-designed kernels and k-means initialisation.

References are independent float64 computations: kernels written out by hand, finite
differences by slicing, a ramp's slope, torch's own convolution of the channel mean, patches
from scikit-learn's ``extract_patches_2d`` and ``torch.nn.functional.unfold``, scikit-learn's
``KMeans`` inertia, and a NumPy ZCA to check that the centroids are a Lloyd fixed point.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchconv_ext
from torchconv_ext import init
from torchconv_ext import nn as tnn
from torchconv_ext.init.kmeans import _kmeans, _Reservoir, _windows

F64 = torch.float64
CONV = {1: tnn.Conv1d, 2: tnn.Conv2d, 3: tnn.Conv3d}
TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def weight_of(layer: nn.Module) -> torch.Tensor:
    return layer.weight.detach()


# ---------------------------------------------------------------------------------------------
# The notes' 1D kernels, exactly
# ---------------------------------------------------------------------------------------------

NOTES_1D = [
    (init.average_, 5, [0.2, 0.2, 0.2, 0.2, 0.2]),
    (init.decaying_average_, 5, [0.1, 0.2, 0.4, 0.2, 0.1]),
    (init.difference_, 3, [-1.0, 0.0, 1.0]),
    (init.second_difference_, 3, [1.0, -2.0, 1.0]),
    (init.sobel_, 3, [-1.0, 0.0, 1.0]),
    (init.prewitt_, 3, [-1.0, 0.0, 1.0]),
    (init.dirac_, 3, [0.0, 1.0, 0.0]),
]


@pytest.mark.parametrize(("fn", "k", "want"), NOTES_1D, ids=lambda v: getattr(v, "__name__", ""))
def test_notes_kernels_1d(fn, k, want):
    layer = tnn.Conv1d(1, 1, k, dtype=F64)
    out = fn(layer)
    assert out is layer.weight
    torch.testing.assert_close(weight_of(layer).flatten(), torch.tensor(want, dtype=F64))
    assert layer.bias.detach().eq(0).all()


def test_differences_on_a_signal():
    z = torch.randn(1, 1, 40, dtype=F64)
    d1, d2 = tnn.Conv1d(1, 1, 3, dtype=F64), tnn.Conv1d(1, 1, 3, dtype=F64)
    init.difference_(d1)
    init.second_difference_(d2)
    s = z[0, 0]
    torch.testing.assert_close(d1(z)[0, 0], s[2:] - s[:-2])  # f' ≈ z[t+1] − z[t−1]
    torch.testing.assert_close(d2(z)[0, 0], (s[2:] - s[1:-1]) - (s[1:-1] - s[:-2]))


def test_decaying_average_is_normalised_and_symmetric():
    layer = tnn.Conv2d(1, 1, (5, 4), dtype=F64)
    init.decaying_average_(layer, ratio=0.25)
    w = weight_of(layer)[0, 0]
    torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(w, w.flip(0).flip(1))
    # ratio^(|i−c|+|j−c|), normalised: the ratio between neighbours along each axis.
    torch.testing.assert_close(w[1, 1] / w[2, 1], torch.tensor(0.25, dtype=F64))
    torch.testing.assert_close(w[2, 0] / w[2, 1], torch.tensor(0.25, dtype=F64))


# ---------------------------------------------------------------------------------------------
# Edges on ramps, Gaussian, Laplacian
# ---------------------------------------------------------------------------------------------


def ramp(nd: int, slopes: list[float], size: int = 7) -> torch.Tensor:
    grids = torch.meshgrid(*[torch.arange(size, dtype=F64)] * nd, indexing="ij")
    return sum(s * g for s, g in zip(slopes, grids))[None, None]


@pytest.mark.parametrize("fn, smooth", [(init.sobel_, 4), (init.prewitt_, 3)])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_edges_on_a_ramp_give_a_constant(fn, smooth, nd):
    slopes = [0.5, -2.0, 3.0][:nd]
    x = ramp(nd, slopes)
    for axis in range(nd):
        layer = CONV[nd](1, 1, 3, dtype=F64)
        fn(layer, dim=axis)
        out = layer(x)
        want = 2 * smooth ** (nd - 1) * slopes[axis]
        torch.testing.assert_close(out, torch.full_like(out, want))
        fn(layer, dim=axis - nd, normalize=True)  # negative axis, slope estimate
        torch.testing.assert_close(layer(x), torch.full_like(out, slopes[axis]))


def test_sobel_2d_by_hand():
    layer = tnn.Conv2d(1, 2, 3, dtype=F64)
    init.sobel_(layer.weight[:1], dim=-1)
    init.sobel_(layer.weight[1:], dim=0)
    gx = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=F64)
    torch.testing.assert_close(weight_of(layer)[0, 0], gx)
    torch.testing.assert_close(weight_of(layer)[1, 0], gx.T)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("k", [3, 4, 5])
def test_gaussian(nd, k):
    layer = CONV[nd](2, 2, k, dtype=F64)
    sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8
    init.gaussian_(layer)
    w = weight_of(layer)
    torch.testing.assert_close(w.sum(tuple(range(1, nd + 2))), torch.ones(2, dtype=F64))
    # Non-separable form: exp(−|p − c|²/2σ²) over the whole grid, normalised.
    grid = torch.stack(torch.meshgrid(*[torch.arange(k, dtype=F64)] * nd, indexing="ij"))
    g = torch.exp(-((grid - (k - 1) / 2) ** 2).sum(0) / (2 * sigma**2))
    torch.testing.assert_close(w[0, 0], g / g.sum())
    torch.testing.assert_close(w[1, 1], g / g.sum())
    assert w[0, 1].eq(0).all()


def test_gaussian_per_axis_sigma():
    layer = tnn.Conv2d(1, 1, (3, 5), dtype=F64)
    init.gaussian_(layer, sigma=(0.5, 2.0))
    w = weight_of(layer)[0, 0]
    rows = torch.exp(-((torch.arange(3.0, dtype=F64) - 1) ** 2) / (2 * 0.25))
    cols = torch.exp(-((torch.arange(5.0, dtype=F64) - 2) ** 2) / (2 * 4.0))
    torch.testing.assert_close(w, torch.outer(rows, cols) / (rows.sum() * cols.sum()))


def test_laplacian():
    layer = tnn.Conv3d(1, 1, 3, dtype=F64)
    init.second_difference_(layer, dim=None)
    w = weight_of(layer)[0, 0]
    want = torch.zeros(3, 3, 3, dtype=F64)
    want[1, 1, 1] = -6
    for axis in range(3):
        for end in (0, 2):
            idx = [1, 1, 1]
            idx[axis] = end
            want[tuple(idx)] = 1
    torch.testing.assert_close(w, want)
    # x² + y² + z² has Laplacian 6 everywhere.
    grid = torch.stack(torch.meshgrid(*[torch.arange(6, dtype=F64)] * 3, indexing="ij"))
    out = layer((grid**2).sum(0)[None, None])
    torch.testing.assert_close(out, torch.full_like(out, 6.0))


# ---------------------------------------------------------------------------------------------
# Dirac: the identity convolution
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_dirac_is_the_identity(nd, k):
    x = torch.randn(2, 3, *[7] * nd, dtype=F64)
    layer = CONV[nd](3, 3, k, padding="same", dtype=F64)
    init.dirac_(layer)
    torch.testing.assert_close(layer(x), x, rtol=0, atol=0)


def test_dirac_grouped_and_transposed_are_the_identity():
    x = torch.randn(2, 4, 6, 6, dtype=F64)
    grouped = tnn.Conv2d(4, 4, 3, padding=1, groups=2, dtype=F64)
    init.dirac_(grouped)
    torch.testing.assert_close(grouped(x), x, rtol=0, atol=0)
    transposed = tnn.ConvTranspose2d(4, 4, 3, padding=1, groups=2, dtype=F64)
    init.dirac_(transposed)
    torch.testing.assert_close(transposed(x), x, rtol=0, atol=0)


def test_dirac_repeats_inputs_when_there_are_more_outputs():
    x = torch.randn(1, 2, 5, dtype=F64)
    layer = tnn.Conv1d(2, 5, 3, padding=1, bias=False, dtype=F64)
    init.dirac_(layer)
    torch.testing.assert_close(layer(x), x[:, [0, 1, 0, 1, 0]], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Channel rules, groups, raw tensors, dtypes
# ---------------------------------------------------------------------------------------------


def test_channels_mean_filters_the_channel_mean():
    x = torch.randn(2, 3, 9, 9, dtype=F64)
    layer = tnn.Conv2d(3, 2, 3, dtype=F64)
    init.gaussian_(layer, channels="mean")
    kernel = torch.zeros(1, 1, 3, 3, dtype=F64)
    init.gaussian_(kernel)
    want = F.conv2d(x.mean(1, keepdim=True), kernel)
    torch.testing.assert_close(layer(x), want.expand(-1, 2, -1, -1))


def test_depthwise_sobel_filters_each_channel():
    x = torch.randn(2, 3, 8, 8, dtype=F64)
    layer = tnn.Conv2d(3, 6, 3, groups=3, dtype=F64)
    init.sobel_(layer)
    kernel = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=F64)[None, None]
    for o in range(6):
        want = F.conv2d(x[:, o // 2 : o // 2 + 1], kernel)
        torch.testing.assert_close(layer(x)[:, o : o + 1], want)


def test_grouped_each_rule_by_hand():
    w = torch.empty(6, 2, 1, dtype=F64)  # C_out 6, groups 2 → 3 outputs × 2 inputs per group
    init.dirac_(w, groups=2)
    want = torch.tensor([[1, 0], [0, 1], [1, 0]] * 2, dtype=F64)[..., None]
    torch.testing.assert_close(w, want)


def test_transposed_layout_by_hand():
    layer = tnn.ConvTranspose1d(4, 6, 1, groups=2, dtype=F64)  # weight (C_in, C_out/g, k)
    init.dirac_(layer)
    # Output (g, o) reads input (g, o mod 2): stored at weight[g·2 + o mod 2, o].
    want = torch.tensor([[1, 0, 1], [0, 1, 0]] * 2, dtype=F64)[..., None]
    torch.testing.assert_close(weight_of(layer), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_dtypes_and_tensors(dtype):
    w = torch.empty(4, 2, 3, 3, dtype=dtype)
    assert init.average_(w) is w
    assert w.dtype == dtype
    each = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 2, dtype=F64)  # output o reads input o mod 2
    torch.testing.assert_close(w.double().sum((2, 3)), each, atol=1e-2, rtol=0)


def test_meta_weight_and_leaf_parameter():
    init.sobel_(torch.empty(2, 1, 3, 3, device="meta"))
    layer = nn.Conv2d(1, 1, 3)  # torch's layer works too; the parameter stays a leaf
    init.prewitt_(layer)
    assert layer.weight.is_leaf and layer.weight.requires_grad


# ---------------------------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------------------------

BAD_KERNEL_CALLS = [
    (lambda: init.average_(nn.Linear(2, 2)), TypeError, "convolution layer"),
    (lambda: init.average_("w"), TypeError, "weight tensor"),
    (lambda: init.average_(torch.empty(2, 2)), ValueError, "3 to 5 dims"),
    (lambda: init.average_(torch.empty(2, 1, 3, dtype=torch.long)), TypeError, "floating"),
    (lambda: init.average_(torch.empty(3, 1, 3), groups=2), ValueError, "groups=2"),
    (lambda: init.average_(torch.empty(2, 1, 3), groups=0), ValueError, "groups"),
    (lambda: init.average_(nn.Conv1d(2, 2, 3, groups=2), groups=1), ValueError, "groups"),
    (lambda: init.average_(nn.Conv1d(1, 1, 3), channels="all"), ValueError, "channels"),
    (lambda: init.difference_(nn.Conv2d(1, 1, 3), dim=2), ValueError, "dim"),
    (lambda: init.difference_(nn.Conv2d(1, 1, 3), dim=1.0), TypeError, "dim"),
    (lambda: init.difference_(nn.Conv1d(1, 1, 4)), ValueError, "odd kernel size"),
    (lambda: init.difference_(nn.Conv1d(1, 1, 1)), ValueError, "3 taps"),
    (lambda: init.second_difference_(nn.Conv2d(1, 1, (3, 2)), dim=None), ValueError, "odd"),
    (lambda: init.sobel_(nn.Conv2d(1, 1, 5)), ValueError, "3 taps per axis"),
    (lambda: init.decaying_average_(nn.Conv1d(1, 1, 3), ratio=0), ValueError, "ratio"),
    (lambda: init.decaying_average_(nn.Conv1d(1, 1, 3), ratio=1.5), ValueError, "ratio"),
    (lambda: init.gaussian_(nn.Conv2d(1, 1, 3), sigma=-1.0), ValueError, "sigma"),
    (lambda: init.gaussian_(nn.Conv2d(1, 1, 3), sigma=(1.0, 1.0, 1.0)), ValueError, "sigma"),
]


@pytest.mark.parametrize(("call", "error", "match"), BAD_KERNEL_CALLS)
def test_bad_kernel_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# k-means: patches
# ---------------------------------------------------------------------------------------------


def test_windows_match_unfold():
    x = torch.randn(2, 3, 9, 8, dtype=F64)
    got = _windows(x, (3, 2), (2, 3))  # (N, C, *positions, *kernel)
    want = F.unfold(x, (3, 2), dilation=(2, 3))  # (N, C·taps, positions)
    n, c, ph, pw = got.shape[:4]
    torch.testing.assert_close(
        got.permute(0, 1, 4, 5, 2, 3).reshape(n, c * 6, ph * pw), want, rtol=0, atol=0
    )


@pytest.mark.parametrize("nd", [1, 3])
def test_windows_1d_3d_by_slicing(nd):
    x = torch.randn(1, 2, *[6] * nd, dtype=F64)
    got = _windows(x, (2,) * nd, (2,) * nd)
    pos = (1,) * nd
    corner = tuple(slice(p, p + 3, 2) for p in pos)  # taps at p and p + 2
    torch.testing.assert_close(got[(0, slice(None), *pos)], x[(0, slice(None), *corner)])


def test_reservoir_keeps_a_subset_without_repeats():
    x = torch.arange(2 * 1 * 6 * 6, dtype=F64).reshape(2, 1, 6, 6)
    sample = _Reservoir(20, torch.Generator().manual_seed(0))
    for batch in (x[:1], x[1:]):
        sample.add(_windows(batch, (3, 3), (1, 1)))
    got = sample.patches.flatten(1)
    everything = _windows(x, (3, 3), (1, 1)).permute(0, 2, 3, 1, 4, 5).reshape(-1, 9)
    assert got.shape == (20, 9)
    assert len({tuple(r.tolist()) for r in got}) == 20
    assert all((everything == r).all(1).any() for r in got)
    assert {int(r[0]) // 36 for r in got} == {0, 1}  # both batches contribute


# ---------------------------------------------------------------------------------------------
# k-means: the clustering
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images / 16.0  # (1797, 8, 8) in [0, 1]


def all_patches(images: np.ndarray, size: int) -> np.ndarray:
    from sklearn.feature_extraction.image import extract_patches_2d

    return np.concatenate(
        [extract_patches_2d(im, (size, size)).reshape(-1, size * size) for im in images]
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_kmeans_inertia_against_sklearn(digits, seed):
    from sklearn.cluster import KMeans

    images = digits[:150]
    layer = tnn.Conv2d(1, 8, 3, dtype=F64)
    init.kmeans_(
        layer,
        torch.tensor(images)[:, None],
        whiten=False,
        unit_variance=False,
        max_patches=None,
        seed=seed,
    )
    patches = all_patches(images, 3)
    mean = patches.mean(0)
    w = weight_of(layer).reshape(8, 9).numpy()
    centroids = w + mean  # no whitening or scaling: the filters are the centred centroids
    ours = ((patches[:, None] - centroids[None]) ** 2).sum(-1).min(1).sum()
    reference = KMeans(8, n_init=10, random_state=0).fit(patches).inertia_
    assert 0.98 * reference <= ours <= 1.05 * reference
    np.testing.assert_allclose(layer.bias.detach().numpy(), -(w @ mean), rtol=1e-12, atol=1e-12)


def test_kmeans_whitened_centroids_are_a_lloyd_fixed_point(digits):
    images = digits[:60]
    layer = tnn.Conv2d(1, 6, 3, dtype=F64)
    init.kmeans_(
        layer, torch.tensor(images)[:, None], unit_variance=False, max_patches=None, iterations=500
    )
    patches = all_patches(images, 3)
    centred = patches - patches.mean(0)
    eigenvalues, vectors = np.linalg.eigh(centred.T @ centred / len(centred))
    eigenvalues = eigenvalues.clip(0)
    zca = vectors @ np.diag(1 / np.sqrt(eigenvalues + 0.1 * eigenvalues.mean())) @ vectors.T
    z = centred @ zca
    c = np.linalg.solve(zca, weight_of(layer).reshape(6, 9).numpy().T).T  # w = W c
    labels = ((z[:, None] - c[None]) ** 2).sum(-1).argmin(1)
    for j in range(6):
        np.testing.assert_allclose(c[j], z[labels == j].mean(0), rtol=0, atol=1e-9)


def test_kmeans_outputs_have_mean_zero_and_unit_variance(digits):
    x = torch.tensor(digits[:100], dtype=torch.float32)[:, None]
    layer = tnn.Conv2d(1, 8, 3, dilation=2)
    init.kmeans_(layer, x, max_patches=None)
    out = layer(x).detach().double()  # every position = every patch (no padding)
    torch.testing.assert_close(out.mean((0, 2, 3)), torch.zeros(8, dtype=F64), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out.std((0, 2, 3), correction=0), torch.ones(8, dtype=F64), atol=1e-5, rtol=0
    )


def test_kmeans_is_deterministic(digits):
    x = torch.tensor(digits[:200], dtype=torch.float32)[:, None]

    def run(data, **kw):
        layer = tnn.Conv2d(1, 8, 3, padding=1)
        init.kmeans_(layer, data, max_patches=1000, **kw)
        return weight_of(layer).clone(), layer.bias.detach().clone()

    a, b = run(x, seed=3), run(x, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], run(x, seed=4)[0])
    assert torch.equal(run(x)[0], run(x, seed=0)[0])  # the default seed is 0
    assert torch.equal(run(x, seed=5)[0], run(x, generator=torch.Generator().manual_seed(5))[0])
    assert torch.equal(a[0], run([(x, torch.zeros(200))], seed=3)[0])  # one (x, y) batch
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(200)), 64)
    first, second = run(loader, seed=3, init="random"), run(loader, seed=3, init="random")
    assert torch.equal(first[0], second[0])
    pixels = (x * 16).round()  # integer images (uint8) give what their float values give
    assert torch.equal(run(pixels.to(torch.uint8), seed=1)[0], run(pixels, seed=1)[0])


def test_kmeans_groups_use_their_own_channels(digits):
    x = torch.tensor(digits[:100], dtype=torch.float32)[:, None].repeat(1, 4, 1, 1)
    x[:, 1] = x[:, 1].flip(-1)

    def group_weights(data):
        layer = tnn.Conv2d(4, 6, 3, groups=2)
        init.kmeans_(layer, data, max_patches=2000)
        return weight_of(layer)

    changed = x.clone()
    changed[:, 2:] = torch.rand(changed[:, 2:].shape, generator=torch.Generator().manual_seed(0))
    a, b = group_weights(x), group_weights(changed)
    assert a.shape == (6, 2, 3, 3)
    assert torch.equal(a[:3], b[:3])  # group 0 only sees channels 0 and 1
    assert not torch.equal(a[3:], b[3:])


def test_kmeans_1d_and_3d_and_center_false():
    g = torch.Generator().manual_seed(0)
    layer = tnn.Conv1d(2, 4, 5, bias=False)
    init.kmeans_(layer, torch.randn(8, 2, 30, generator=g))
    layer = tnn.Conv3d(1, 3, 2)
    nn.init.constant_(layer.bias, 7.0)
    init.kmeans_(layer, torch.randn(2, 1, 5, 5, 5, generator=g), center=False)
    assert layer.bias.detach().eq(7.0).all()


def test_kmeans_reseeds_empty_clusters():
    z = torch.zeros(21, 1, dtype=F64)
    z[-1] = 5.0  # 20 identical points and one apart: random inits often pick two zeros
    for seed in range(8):
        centroids = _kmeans(z, 2, 10, "random", torch.Generator().manual_seed(seed))
        assert sorted(centroids.flatten().tolist()) == [0.0, 5.0]


BAD_KMEANS_CALLS = [
    (lambda x: init.kmeans_(nn.Linear(2, 2), x), TypeError, "conv"),
    (lambda x: init.kmeans_(nn.ConvTranspose2d(1, 2, 3), x), ValueError, "transposed"),
    (lambda x: init.kmeans_(nn.Conv2d(3, 2, 3), x), ValueError, "data batches"),
    (lambda x: init.kmeans_(nn.Conv1d(1, 2, 3), x), ValueError, "data batches"),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 5, dilation=2), x), ValueError, "span"),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), "x"), TypeError, "data"),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), [3]), TypeError, "batch"),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), []), ValueError, "no batches"),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), x, max_patches=0), ValueError, "max_patches"),
    (lambda x: init.kmeans_(nn.Conv2d(1, 9, 3), x, max_patches=5), ValueError, "max_patches"),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), x, iterations=0), ValueError, "iterations"),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), x, init="kmeans"), ValueError, "init"),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), x, whiten_eps=0), ValueError, "whiten_eps"),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), x, whiten_eps=math.inf), ValueError, "finite"),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), x, whiten_eps="0.1"), TypeError, "whiten_eps"),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), x, iterations=2.0), TypeError, "iterations"),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), x, max_patches="all"), TypeError, "max_patches"),
    (
        lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), x, seed=1, generator=torch.Generator()),
        ValueError,
        "not both",
    ),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), x, seed=1.5), TypeError, "seed"),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), torch.ones(2, 1, 6, 6)), ValueError, "the same"),
    (
        lambda x: init.kmeans_(
            nn.Conv2d(1, 2, 3), x.index_fill(0, torch.tensor([1]), float("nan"))
        ),
        ValueError,
        "NaN or infinite",
    ),
    (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3), x.div(0)), ValueError, "NaN or infinite"),
]


@pytest.mark.parametrize(("call", "error", "match"), BAD_KMEANS_CALLS)
def test_bad_kmeans_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0)))


# ---------------------------------------------------------------------------------------------
# k-means init trains faster (the measured comparison: benchmarks/kmeans_init.py)
# ---------------------------------------------------------------------------------------------


def digits_cnn() -> nn.Sequential:
    return nn.Sequential(
        tnn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        tnn.MaxPool2d(2),
        tnn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        tnn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 10),
    )


def loss_after(steps: int, kmeans: bool, images: torch.Tensor, labels: torch.Tensor) -> float:
    torch.manual_seed(0)
    net = digits_cnn()
    for i in (0, 3):
        if kmeans:
            with torch.no_grad():
                features = net[:i](images)
            torchconv_ext.init.kmeans_(net[i], features, max_patches=4000)
        else:
            nn.init.kaiming_normal_(net[i].weight, nonlinearity="relu")
            nn.init.zeros_(net[i].bias)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    for step in range(steps):
        index = order[step * 32 : (step + 1) * 32]
        loss = F.cross_entropy(net(images[index]), labels[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return F.cross_entropy(net(images), labels).item()


def test_kmeans_init_lowers_the_loss_sooner(digits):
    from sklearn.datasets import load_digits

    images = torch.tensor(digits, dtype=torch.float32)[:, None]
    labels = torch.tensor(load_digits().target)
    kmeans, kaiming = loss_after(15, True, images, labels), loss_after(15, False, images, labels)
    assert kmeans < 0.5 * kaiming, (kmeans, kaiming)


# ---------------------------------------------------------------------------------------------
# Parametrized layers, our multi-kernel layers, argument types
# ---------------------------------------------------------------------------------------------

SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def test_weight_norm_layer_is_written_through_its_parametrization():
    layer = nn.utils.parametrizations.weight_norm(nn.Conv2d(1, 2, 3))
    init.sobel_(layer)
    torch.testing.assert_close(layer.weight.detach(), SOBEL.expand(2, 1, 3, 3))
    assert torch.equal(layer.bias.detach(), torch.zeros(2))
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    plain = nn.Conv2d(1, 2, 3)
    init.kmeans_(layer, x)
    init.kmeans_(plain, x)
    torch.testing.assert_close(layer.weight.detach(), plain.weight.detach())
    torch.testing.assert_close(layer.bias.detach(), plain.bias.detach())


@pytest.mark.parametrize(
    ("parametrize", "kmeans_too"),
    [
        (nn.utils.parametrizations.spectral_norm, True),  # the layer would compute weight/σ
        (lambda c: nn.utils.weight_norm(c), True),  # the deprecated hook recomputes the weight
        # Sobel leaves input channel 1 unused: a zero slice has no direction. Centroids do not.
        (lambda c: nn.utils.parametrizations.weight_norm(c, dim=1), False),
    ],
)
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_parametrized_weight_that_cannot_be_written_is_refused_before_any_write(
    parametrize, kmeans_too
):
    layer = parametrize(nn.Conv2d(2, 1, 3))
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    with pytest.raises(ValueError, match="Conv2d's weight"):
        init.sobel_(layer)
    if kmeans_too:
        x = torch.rand(4, 2, 5, 5, generator=torch.Generator().manual_seed(0))
        with pytest.raises(ValueError, match="Conv2d's weight"):
            init.kmeans_(layer, x)
    assert torch.equal(layer.weight.detach(), weight)
    assert torch.equal(layer.bias.detach(), bias)


@pytest.mark.parametrize(
    "layer",
    [
        tnn.TiledConv2d(2, 2, 3, tiles=(2, 1)),
        tnn.LocallyConnected2d(2, 2, 3, input_size=5),
        tnn.MaxoutConv2d(2, 2, 3, pieces=3),
    ],
    ids=["tiled", "local", "maxout"],
)
def test_our_layers_compute_the_kernel_of_a_conv(layer):
    conv = nn.Conv2d(2, 2, 3)
    init.sobel_(conv)
    init.sobel_(layer)
    x = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(layer(x), conv(x))


@pytest.mark.parametrize(
    "make", [lambda: tnn.TiledConv2d(1, 2, 3, tiles=2), lambda: tnn.LocallyConnected2d(1, 2, 3, 6)]
)
def test_kmeans_repeats_the_centroids_in_every_tile_or_position(make):
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    layer, conv = make(), nn.Conv2d(1, 2, 3)
    init.kmeans_(layer, x)
    init.kmeans_(conv, x)
    torch.testing.assert_close(layer(x), conv(x))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda x: init.kmeans_(nn.Conv2d(1, 2, 3).weight, x), TypeError, "not a weight tensor"),
        (lambda x: init.kmeans_(tnn.MaxoutConv2d(1, 2, 3, pieces=2), x), TypeError, "conv"),
        (lambda x: init.kmeans_(nn.LazyConv2d(2, 3), x), ValueError, "dry forward"),
        (lambda x: init.sobel_(tnn.LazyConv2d(2, 3)), ValueError, "dry forward"),
        (lambda x: init.sobel_(tnn.TiledConv2d(1, 1, 3, 2).weight), ValueError, "pass the layer"),
    ],
)
def test_layers_that_cannot_be_initialised_say_why(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.rand(4, 1, 6, 6))


@pytest.mark.parametrize("sigma", [np.float32(1.5), torch.tensor(1.5), np.array(1.5)])
def test_gaussian_takes_numpy_and_tensor_scalars(sigma):
    want = init.gaussian_(torch.empty(1, 1, 3, 3), sigma=1.5)
    torch.testing.assert_close(init.gaussian_(torch.empty(1, 1, 3, 3), sigma=sigma), want)
    per_axis = init.gaussian_(torch.empty(1, 1, 3, 3), sigma=np.array([1.5, 1.5]))
    torch.testing.assert_close(per_axis, want)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: init.gaussian_(torch.empty(1, 1, 3), sigma="1"), TypeError, "sigma"),
        (lambda: init.gaussian_(torch.empty(1, 1, 3), sigma=True), TypeError, "sigma"),
        (
            lambda: init.gaussian_(torch.empty(1, 1, 3), sigma=torch.tensor(0.0)),
            ValueError,
            "sigma",
        ),
        (lambda: init.gaussian_(torch.empty(1, 1, 3), sigma=float("inf")), ValueError, "sigma"),
        (lambda: init.average_(torch.empty(4, 2, 3), groups="2"), TypeError, "groups"),
        (lambda: init.average_(torch.empty(4, 2, 3), groups=2.0), TypeError, "groups"),
        (lambda: init.sobel_(torch.empty(1, 1, 3, 3), dim=True), TypeError, "dim"),
        (lambda: init.average_(torch.empty(1, 1, 3), channels=1), TypeError, "channels"),
        (lambda: init.decaying_average_(torch.empty(1, 1, 3), ratio="a"), TypeError, "ratio"),
    ],
)
def test_argument_types_and_values(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_numpy_integers_are_ints():
    w = init.sobel_(torch.empty(2, 1, 3, 3), dim=np.int64(0), groups=np.int64(2))
    assert torch.equal(w[0, 0], SOBEL.T)
