"""k-means initialisation: a convolution's kernels become centroids of patches of real inputs.

The notes: "kernels can be initialized with unsupervised learning algorithms (e.g., apply k-means
clustering to patches, then use centroids as kernels)" — the recipe of Coates & Ng (2011):
sample patches the size of the kernel, centre them, optionally ZCA-whiten them, cluster them
with k-means, and use the ``C_out`` centroids as the layer's filters.

Everything runs in float64 torch ops on the device of the data, driven by one seeded
``torch.Generator``: the same data (in the same order) and seed give bitwise the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.maxout import _MaxoutConvNd
from ._target import Conv, check_int, check_real, resolve

INITS: tuple[str, ...] = ("k-means++", "random")

_F64 = torch.float64


def kmeans_(
    conv: nn.Module,
    data: Tensor | Iterable,
    *,
    max_patches: int | None = 10_000,
    iterations: int = 50,
    whiten: bool = True,
    whiten_eps: float = 0.1,
    init: str = "k-means++",
    unit_variance: bool = True,
    center: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Set ``conv``'s kernels to k-means centroids of patches of ``data``; returns the weight.

    1. **Patches.** Every position where the kernel (its size and dilation) fits inside an input
       (no padding, stride 1) is a patch of ``C_in/groups × F_1 × …`` values. At most
       ``max_patches`` are kept, drawn uniformly without replacement across all batches (each
       patch draws a key from the generator; the smallest keys are kept), ``None`` keeps all.
    2. **Centring and whitening.** ``x ↦ z = W (x − μ)`` with ``μ`` the mean patch and, when
       ``whiten``, the ZCA matrix ``W = U (Λ + ε)^{-1/2} Uᵀ`` of the patch covariance
       ``U Λ Uᵀ``, ``ε = whiten_eps · mean(Λ)`` (relative, so the result does not depend on the
       data's scale); ``W = I`` otherwise.
    3. **k-means** of the ``z`` into ``k = C_out/groups`` clusters: ``init`` ``"k-means++"``
       (Arthur & Vassilvitskii) or ``"random"`` (``k`` distinct patches), then up to
       ``iterations`` Lloyd steps (assign each patch to its nearest centroid, ties to the lower
       index; move each centroid to its patches' mean), stopping early once no assignment
       changes. A cluster left empty is re-seeded with the patch farthest from its centroid
       (the farthest first, in cluster order).
    4. **Filters.** Centroid ``c`` becomes the filter ``w = W c`` with bias ``b = −w·μ``, so
       the layer's output at a patch ``x`` is ``c·z``: the centroid matched against the
       whitened patch, and each output channel has mean 0 over the sampled patches. With
       ``unit_variance`` ``w`` and ``b`` are divided by that output's standard deviation over
       the sampled patches (each channel: mean 0, variance 1 on the data).

    The bias is written only when ``center`` and the layer has one; ``center=False`` leaves it
    as it is (the outputs are then not centred). With ``groups > 1`` each group's filters are
    the centroids of the patches of its own input channels (the same sampled positions).

    Args:
        conv: a ``Conv1d``/``Conv2d``/``Conv3d`` (torch's or ``torchconv_ext.nn``'s), or a
            ``TiledConv*d``/``LocallyConnected*d``, whose every tile or position gets the same
            centroids (it then computes what the convolution would); not a weight tensor (the
            filters need the layer's dilation and groups, the centring its bias), not a
            transposed convolution (its kernels are scattered onto the output, not matched
            against input patches), and not a ``MaxoutConv*d`` (pass its ``conv``). A
            parametrized weight is written through its parametrization when that can hold the
            centroids exactly (``weight_norm``), and refused otherwise (``spectral_norm``).
        data: a tensor ``(N, C_in, *spatial)``, or an iterable of batches: tensors or
            ``(x, y, ...)`` tuples/lists whose first element is the input (a ``DataLoader``).
            Batches are moved to the first batch's device, where the work runs.
        seed / generator: the randomness (patch sample and k-means init); give one or neither
            (then ``seed=0``). A generator must be on the data's device.
    """
    name = "kmeans_"
    layer = _check_conv(name, conv)
    max_patches, iterations, whiten_eps = _check_options(
        name, max_patches, iterations, whiten_eps, init, seed, generator
    )
    k_per_group, c_in = layer.out_per_group, layer.in_per_group
    kernel_size, dilation = layer.kernel_size, tuple(layer.layer.dilation)

    sample: _Reservoir | None = None
    for x in _batches(name, data, c_in * layer.groups, kernel_size, dilation):
        if sample is None:
            device = x.device
            if generator is None:
                generator = torch.Generator(device).manual_seed(0 if seed is None else seed)
            elif generator.device != device:
                raise ValueError(
                    f"{name}: generator is on {generator.device} but the data is on {device}; "
                    "the work runs on the data's device"
                )
            sample = _Reservoir(max_patches, generator)
        sample.add(_windows(x.to(device), kernel_size, dilation))
    if sample is None:
        raise ValueError(f"{name}: data yielded no batches")
    patches = sample.patches  # (M, C_in, taps)
    if not torch.isfinite(patches).all():  # (else a linear-algebra error deep inside whitening)
        raise ValueError(f"{name}: the sampled patches of data hold NaN or infinite values")
    if patches.shape[0] < k_per_group:
        raise ValueError(
            f"{name}: {patches.shape[0]} patches sampled, fewer than the {k_per_group} "
            f"centroids to find (C_out/groups); give more data or a larger max_patches"
        )

    weights, biases = [], []
    for g in range(layer.groups):
        group = patches[:, g * c_in : (g + 1) * c_in].flatten(1)
        z, mean, zca = _centre_and_whiten(name, group, whiten, whiten_eps)
        centroids = _kmeans(z, k_per_group, iterations, init, generator)
        w, b = _filters(z, mean, zca, centroids, unit_variance)
        weights.append(w)
        biases.append(b)

    grouped = torch.cat(weights).reshape(layer.groups, k_per_group, c_in, *kernel_size)
    return layer.write(grouped, torch.cat(biases), write_bias=center)


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------


def _check_conv(name: str, conv: nn.Module) -> Conv:
    """``conv`` as a :class:`Conv`, or an error saying why it cannot take centroids."""
    if isinstance(conv, Tensor):
        raise TypeError(
            f"{name}: conv must be a layer, not a weight tensor: the filters depend on its "
            "dilation and groups, and the centring on its bias"
        )
    if isinstance(conv, _MaxoutConvNd):
        # The max over several centred features is no longer centred: say what is meant.
        raise TypeError(
            f"{name}: a {type(conv).__name__}'s outputs are maxima of its convolution's; pass "
            "its child layer.conv to make its out_channels·pieces kernels centroids"
        )
    if not isinstance(conv, nn.Module):
        raise TypeError(f"{name}: conv must be a convolution layer, but got {type(conv).__name__}")
    layer = resolve(conv, None, name)
    if layer.transposed:
        raise ValueError(
            f"{name}: conv is a transposed convolution ({type(conv).__name__}); its kernels are "
            "scattered onto the output, not matched against input patches"
        )
    return layer


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_options(
    name, max_patches, iterations, whiten_eps, init, seed, generator
) -> tuple[int | None, int, float]:
    """The checked ``max_patches``, ``iterations`` and ``whiten_eps`` as Python numbers (NumPy
    and 0-d tensor scalars too): a wrong type is a ``TypeError``, a value out of range a
    ``ValueError``, each naming the argument."""
    if max_patches is not None:
        max_patches = check_int(name, "max_patches", max_patches)
        if max_patches <= 0:
            raise ValueError(f"{name}: max_patches must be positive or None, but got {max_patches}")
    iterations = check_int(name, "iterations", iterations)
    if iterations <= 0:
        raise ValueError(f"{name}: iterations must be positive, but got {iterations}")
    whiten_eps = check_real(name, "whiten_eps", whiten_eps)
    if not 0 < whiten_eps < math.inf:
        raise ValueError(f"{name}: whiten_eps must be positive and finite, but got {whiten_eps}")
    if init not in INITS:
        raise ValueError(f"{name}: init must be one of {INITS}, but got {init!r}")
    if seed is not None and generator is not None:
        raise ValueError(f"{name}: give seed or generator, not both")
    if seed is not None and not _is_int(seed):
        raise TypeError(f"{name}: seed must be an int, but got {seed!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name}: generator must be a torch.Generator, but got {generator!r}")
    return max_patches, iterations, whiten_eps


def _batches(
    name: str,
    data: Tensor | Iterable,
    in_channels: int,
    kernel_size: tuple[int, ...],
    dilation: tuple[int, ...],
) -> Iterator[Tensor]:
    """The input tensors of ``data``, each checked against the layer."""
    if isinstance(data, Tensor):
        items: Iterable = [data]
    elif isinstance(data, Iterable):
        items = data
    else:
        raise TypeError(
            f"{name}: data must be a tensor (N, C, *spatial) or an iterable of batches, but got "
            f"{type(data).__name__}"
        )
    nd = len(kernel_size)
    span = [d * (k - 1) + 1 for k, d in zip(kernel_size, dilation)]
    for item in items:
        x = item[0] if isinstance(item, tuple | list) and item else item
        if not isinstance(x, Tensor):
            raise TypeError(
                f"{name}: each batch of data must be a tensor or a tuple/list starting with one, "
                f"but got {type(x).__name__}"
            )
        if x.dim() != nd + 2 or x.shape[1] != in_channels:
            raise ValueError(
                f"{name}: data batches must be (N, {in_channels}, *{nd} spatial sizes) for "
                f"this layer, but got a batch of size {list(x.shape)}"
            )
        if any(s < k for s, k in zip(x.shape[2:], span)):
            raise ValueError(
                f"{name}: data's spatial size {list(x.shape[2:])} is smaller than the kernel's "
                f"span {span} (kernel size with dilation)"
            )
        if x.is_complex():
            raise TypeError(f"{name}: data must be real, but got {x.dtype}")
        yield x


# ---------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------


def _windows(x: Tensor, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> Tensor:
    """A view ``(N, C, *positions, *kernel)`` of every patch of ``x`` (no copy)."""
    for axis, (k, d) in enumerate(zip(kernel, dilation)):
        x = x.unfold(2 + axis, d * (k - 1) + 1, 1)[..., ::d]
    return x


class _Reservoir:
    """A uniform sample, without replacement, of at most ``cap`` patches of a stream of
    batches: each patch draws a random key and the ``cap`` smallest keys are kept."""

    def __init__(self, cap: int | None, generator: torch.Generator):
        self.cap = cap
        self.generator = generator
        self.patches: Tensor | None = None  # (M, C, taps)
        self.keys: Tensor | None = None

    def add(self, windows: Tensor) -> None:
        nd = (windows.dim() - 2) // 2
        positions = windows.shape[2 : 2 + nd]
        per_image = math.prod(positions)
        count = windows.shape[0] * per_image
        keys = torch.rand(count, generator=self.generator, device=windows.device, dtype=_F64)
        kept = 0 if self.keys is None else len(self.keys)
        if self.cap is None:
            new, old = torch.arange(count, device=windows.device), None
        else:
            both = keys if self.keys is None else torch.cat([self.keys, keys])
            chosen = both.topk(min(self.cap, len(both)), largest=False).indices
            old, new = chosen[chosen < kept], chosen[chosen >= kept] - kept
        image, position = new // per_image, new % per_image
        coords = torch.unravel_index(position, positions)
        patches = windows[(image, slice(None), *coords)].flatten(2).to(_F64)  # (m, C, taps)
        if self.patches is not None:
            kept_patches = self.patches if old is None else self.patches[old]
            kept_keys = self.keys if old is None else self.keys[old]
            patches = torch.cat([kept_patches, patches])
            keys = torch.cat([kept_keys, keys[new]])
        else:
            keys = keys[new]
        self.patches, self.keys = patches, keys


# ---------------------------------------------------------------------------------------------
# Whitening, k-means, filters
# ---------------------------------------------------------------------------------------------


def _centre_and_whiten(
    name: str, patches: Tensor, whiten: bool, eps: float
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(z, μ, W)``: the centred (and ZCA-whitened) patches, the mean patch, ``W`` or None."""
    mean = patches.mean(0)
    centred = patches - mean
    if not whiten:
        return centred, mean, None
    cov = centred.T @ centred / len(centred)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    eigenvalues = eigenvalues.clamp_min(0)
    if not bool(eigenvalues.sum() > 0):
        raise ValueError(f"{name}: every sampled patch of data is the same: nothing to whiten")
    scale = (eigenvalues + eps * eigenvalues.mean()).rsqrt()
    zca = (eigenvectors * scale) @ eigenvectors.T
    return centred @ zca, mean, zca


def _squared_distances(z: Tensor, centroids: Tensor) -> Tensor:
    """``(M, k)``: ``|z_i − c_j|²``."""
    return (z * z).sum(1, keepdim=True) - 2 * z @ centroids.T + (centroids * centroids).sum(1)


def _kmeans_plus_plus(z: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++: the first centre uniformly, each next one with probability ∝ D², D the
    distance to the nearest centre so far."""
    first = torch.randint(len(z), (1,), generator=generator, device=z.device)
    chosen = [first]
    nearest = ((z - z[first]) ** 2).sum(1)
    for _ in range(1, k):
        if bool(nearest.sum() > 0):
            pick = torch.multinomial(nearest, 1, generator=generator)
        else:  # fewer distinct patches than centres: any patch
            pick = torch.randint(len(z), (1,), generator=generator, device=z.device)
        chosen.append(pick)
        nearest = torch.minimum(nearest, ((z - z[pick]) ** 2).sum(1))
    return z[torch.cat(chosen)]


def _kmeans(z: Tensor, k: int, iterations: int, init: str, generator: torch.Generator) -> Tensor:
    """Lloyd's k-means of the rows of ``z``: the ``(k, D)`` centroids."""
    if init == "k-means++":
        centroids = _kmeans_plus_plus(z, k, generator)
    else:
        centroids = z[torch.randperm(len(z), generator=generator, device=z.device)[:k]]
    labels = None
    for _ in range(iterations):
        distances = _squared_distances(z, centroids)
        assigned = distances.argmin(1)
        if labels is not None and torch.equal(assigned, labels):
            break
        labels = assigned
        # Sums by a one-hot matrix product, not index_add_: no atomics, bitwise repeatable.
        one_hot = F.one_hot(labels, k).to(z.dtype)
        counts = one_hot.sum(0)
        centroids = (one_hot.T @ z) / counts.clamp_min(1)[:, None]
        empty = (counts == 0).nonzero().flatten()
        if len(empty):
            own = distances.gather(1, labels[:, None]).flatten()
            farthest = own.sort(descending=True, stable=True).indices[: len(empty)]
            centroids[empty] = z[farthest]
    return centroids


def _filters(
    z: Tensor, mean: Tensor, zca: Tensor | None, centroids: Tensor, unit_variance: bool
) -> tuple[Tensor, Tensor]:
    """Centroids as filters on raw patches, ``(w, b)`` with ``w·x + b = c·z``."""
    weight = centroids if zca is None else centroids @ zca  # W is symmetric: (W c)ᵀ = cᵀ W
    bias = -(weight @ mean)
    if unit_variance:
        std = (z @ centroids.T).pow(2).mean(0).sqrt()
        std = torch.where(std > 0, std, torch.ones_like(std))
        weight, bias = weight / std[:, None], bias / std
    return weight, bias
