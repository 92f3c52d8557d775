"""Hand-designed kernels from the lecture notes, written in place into convolution weights.

Each initialiser builds one kernel ``K`` of the layer's kernel size (1D, 2D or 3D) and writes it
into every ``(output channel, input channel)`` slot of the weight by the rule ``channels``:

* ``"each"`` (default): output channel ``o`` of a group applies ``K`` to input channel
  ``o mod (C_in/groups)`` of its group and ignores the others. With ``C_out == C_in`` each
  channel is filtered on its own (``dirac_`` is then the identity); a depthwise layer filters
  each channel; with more outputs than inputs the inputs repeat in order.
* ``"mean"``: every output channel applies ``K / (C_in/groups)`` to every input channel of its
  group: the filter of the group's channel mean.

Given a layer, its bias (if any) is zeroed, so the layer computes exactly the filter; given a
weight tensor, only the tensor is written (``groups`` says how it is grouped, default 1).
A tiled or locally connected layer gets ``K`` in every tile or position, and each unit of a
maxout convolution in all its pieces, so these layers too compute exactly the filter.
For a transposed convolution the same ``K`` is stored; the layer scatters it onto the output,
which correlates with ``K`` flipped: symmetric kernels (averages, Gaussian, second difference,
Dirac) act the same, antisymmetric ones (difference, Sobel, Prewitt) change sign.

Every function returns the weight tensor, like ``torch.nn.init``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._target import Target, check_int, check_real, resolve

CHANNELS: tuple[str, ...] = ("each", "mean")

_F64 = torch.float64


def _fill(
    name: str,
    target: Target,
    build: Callable[[tuple[int, ...]], Tensor],
    channels: str,
    groups: int | None,
) -> Tensor:
    """Build ``K`` for the target's kernel size and write it by the ``channels`` rule."""
    conv = resolve(target, groups, name)
    if not isinstance(channels, str):
        raise TypeError(f"{name}: channels must be a str, but got channels={channels!r}")
    if channels not in CHANNELS:
        raise ValueError(f"{name}: channels must be one of {CHANNELS}, but got {channels!r}")
    kernel = build(conv.kernel_size)
    c_out, c_in = conv.out_per_group, conv.in_per_group
    if channels == "each":
        # A maxout unit's pieces all get its kernel: the max of equal pieces is the filter.
        unit = torch.arange(c_out) // conv.pieces
        mix = (unit[:, None] % c_in == torch.arange(c_in)[None, :]).to(_F64)
    else:
        mix = torch.full((c_out, c_in), 1.0 / c_in, dtype=_F64)
    per_group = mix.reshape(c_out, c_in, *(1,) * kernel.dim()) * kernel
    return conv.write(per_group.expand(conv.groups, *per_group.shape))  # a layer's bias: 0


def _axis(name: str, dim: int, ndim: int) -> int:
    """A spatial axis ``dim`` (``-1`` = the last, e.g. width) as an index in ``range(ndim)``."""
    dim = check_int(name, "dim", dim)
    if not -ndim <= dim < ndim:
        raise ValueError(
            f"{name}: dim must be a spatial axis in [{-ndim}, {ndim - 1}] for a {ndim}D kernel, "
            f"but got dim={dim!r}"
        )
    return dim % ndim


def _need_odd(name: str, size: Sequence[int], axes: Sequence[int]) -> None:
    """Kernels placed at a centre tap need an odd size along ``axes``."""
    even = [size[a] for a in axes if size[a] % 2 == 0]
    if even:
        raise ValueError(
            f"{name}: needs an odd kernel size (a centre tap) along the axes it uses, but got "
            f"kernel_size={tuple(size)}"
        )


def _outer(factors: Sequence[Tensor]) -> Tensor:
    """The separable kernel ``K[i, j, ...] = f0[i] · f1[j] · ...``."""
    kernel = factors[0]
    for f in factors[1:]:
        kernel = kernel[..., None] * f
    return kernel


def _centre_tap(size: int) -> Tensor:
    """``(0, …, 1, …, 0)``: the identity along one axis (centre ``(size - 1) // 2``)."""
    t = torch.zeros(size, dtype=_F64)
    t[(size - 1) // 2] = 1.0
    return t


def _along(size: Sequence[int], axis: int, profile: Tensor, across: Callable) -> Tensor:
    """``profile`` (centred) along ``axis``, ``across(n)`` along every other axis."""
    line = torch.zeros(size[axis], dtype=_F64)
    c = (size[axis] - 1) // 2
    r = len(profile) // 2
    line[c - r : c + r + 1] = profile
    return _outer([line if a == axis else across(n) for a, n in enumerate(size)])


# ---------------------------------------------------------------------------------------------
# Averages
# ---------------------------------------------------------------------------------------------


def average_(target: Target, *, channels: str = "each", groups: int | None = None) -> Tensor:
    r"""Uniform averaging: every tap ``1/F`` for a kernel of ``F`` taps (the notes' 1D
    ``K = (1/5, 1/5, 1/5, 1/5, 1/5)``; ``1/(F_h·F_w)`` in 2D). Sums to 1."""

    def build(size):
        return torch.full(size, 1.0 / math.prod(size), dtype=_F64)

    return _fill("average_", target, build, channels, groups)


def decaying_average_(
    target: Target, ratio: float = 0.5, *, channels: str = "each", groups: int | None = None
) -> Tensor:
    r"""Averaging with weights that decay away from the centre: ``K_i ∝ ratio^{|i - c|}``
    along each axis (``c = (F - 1)/2``), the product over axes, normalised to sum 1.

    ``ratio=0.5`` on 5 taps gives the notes' ``K = (0.1, 0.2, 0.4, 0.2, 0.1)``.
    """
    ratio = check_real("decaying_average_", "ratio", ratio)
    if not 0 < ratio <= 1:
        raise ValueError(f"decaying_average_: ratio must be in (0, 1], but got ratio={ratio!r}")

    def profile(n: int) -> Tensor:
        p = ratio ** (torch.arange(n, dtype=_F64) - (n - 1) / 2).abs()
        return p / p.sum()

    return _fill(
        "decaying_average_", target, lambda s: _outer([profile(n) for n in s]), channels, groups
    )


def gaussian_(
    target: Target,
    sigma: float | Sequence[float] | None = None,
    *,
    channels: str = "each",
    groups: int | None = None,
) -> Tensor:
    r"""Gaussian blur: ``K_i ∝ exp(-(i - c)² / (2σ²))`` along each axis (``c = (F - 1)/2``), the
    product over axes, normalised to sum 1.

    ``sigma``: one value or one per spatial axis; default per axis
    ``σ = 0.3·((F - 1)/2 - 1) + 0.8`` (the rule OpenCV uses for a kernel of ``F`` taps).
    """

    def build(size):
        sigmas = sigma.tolist() if getattr(sigma, "ndim", 0) == 1 else sigma  # a 1-D array
        sigmas = sigmas if isinstance(sigmas, Sequence) else [sigmas] * len(size)
        if len(sigmas) != len(size):
            raise ValueError(
                f"gaussian_: sigma needs one value or {len(size)} (one per spatial axis), but "
                f"got sigma={sigma!r}"
            )
        factors = []
        for n, s in zip(size, sigmas):
            s = 0.3 * ((n - 1) / 2 - 1) + 0.8 if s is None else check_real("gaussian_", "sigma", s)
            if not 0 < s < math.inf:
                raise ValueError(
                    f"gaussian_: sigma must be positive and finite, but got sigma={sigma!r}"
                )
            p = torch.exp(-((torch.arange(n, dtype=_F64) - (n - 1) / 2) ** 2) / (2 * s * s))
            factors.append(p / p.sum())
        return _outer(factors)

    return _fill("gaussian_", target, build, channels, groups)


# ---------------------------------------------------------------------------------------------
# Differences and edges
# ---------------------------------------------------------------------------------------------


def difference_(
    target: Target, dim: int = -1, *, channels: str = "each", groups: int | None = None
) -> Tensor:
    r"""Change detection along spatial axis ``dim``: the notes' ``K = (-1, 0, +1)``, i.e.
    ``f' ≈ z_{t+1} - z_{t-1}``, at the centre of the other axes.

    ``dim=-1`` is the last spatial axis (width). Needs an odd kernel size on every axis (a
    centre tap), at least 3 along ``dim``; the taps beyond the centre three are zero.
    """

    def build(size):
        axis = _axis("difference_", dim, len(size))
        _need_odd("difference_", size, range(len(size)))
        if size[axis] < 3:
            raise ValueError(f"difference_: needs 3 taps along dim={dim}, kernel_size={size}")
        return _along(size, axis, torch.tensor([-1.0, 0.0, 1.0], dtype=_F64), _centre_tap)

    return _fill("difference_", target, build, channels, groups)


def second_difference_(
    target: Target, dim: int | None = -1, *, channels: str = "each", groups: int | None = None
) -> Tensor:
    r"""Change-of-change detection along ``dim``: the notes' ``K = (+1, -2, +1)``, i.e.
    ``f'' ≈ (z_{t+1} - z_t) - (z_t - z_{t-1})``, at the centre of the other axes.

    ``dim=None`` sums it over every spatial axis: the discrete Laplacian (``-2·ndim`` at the
    centre, ``+1`` at each face neighbour). Needs odd kernel sizes of at least 3.
    """

    def build(size):
        axes = range(len(size)) if dim is None else [_axis("second_difference_", dim, len(size))]
        _need_odd("second_difference_", size, range(len(size)))
        if any(size[a] < 3 for a in axes):
            raise ValueError(
                f"second_difference_: needs 3 taps along dim={dim}, but got kernel_size={size}"
            )
        profile = torch.tensor([1.0, -2.0, 1.0], dtype=_F64)
        return sum(_along(size, a, profile, _centre_tap) for a in axes)

    return _fill("second_difference_", target, build, channels, groups)


def _edge(name: str, smoothing: list[float], target, dim, normalize, channels, groups) -> Tensor:
    """``(-1, 0, +1)`` along ``dim`` times ``smoothing`` along every other axis (3 taps each)."""
    smooth = torch.tensor(smoothing, dtype=_F64)

    def build(size):
        axis = _axis(name, dim, len(size))
        if any(n != 3 for n in size):
            raise ValueError(f"{name}: needs a kernel of 3 taps per axis, but got {size}")
        kernel = _along(size, axis, torch.tensor([-1.0, 0.0, 1.0], dtype=_F64), lambda n: smooth)
        if normalize:  # a ramp of slope 1 along dim gives 2·(Σ smoothing)^(ndim-1)
            kernel = kernel / (2 * float(smooth.sum()) ** (len(size) - 1))
        return kernel

    return _fill(name, target, build, channels, groups)


def sobel_(
    target: Target,
    dim: int = -1,
    *,
    normalize: bool = False,
    channels: str = "each",
    groups: int | None = None,
) -> Tensor:
    r"""Sobel edge detector for changes along ``dim``: the difference ``(-1, 0, +1)`` along
    ``dim`` times the smoothing ``(1, 2, 1)`` along every other axis (3 taps per axis).

    In 2D with ``dim=-1``: ``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]``. A ramp of slope ``a``
    along ``dim`` gives ``2·4^{ndim-1}·a``; ``normalize=True`` divides by ``2·4^{ndim-1}``, so
    the output estimates the slope.
    """
    return _edge("sobel_", [1.0, 2.0, 1.0], target, dim, normalize, channels, groups)


def prewitt_(
    target: Target,
    dim: int = -1,
    *,
    normalize: bool = False,
    channels: str = "each",
    groups: int | None = None,
) -> Tensor:
    r"""Prewitt edge detector: like :func:`sobel_` with the smoothing ``(1, 1, 1)``.

    A ramp of slope ``a`` along ``dim`` gives ``2·3^{ndim-1}·a`` (``normalize=True``: ``a``).
    """
    return _edge("prewitt_", [1.0, 1.0, 1.0], target, dim, normalize, channels, groups)


# ---------------------------------------------------------------------------------------------
# Identity
# ---------------------------------------------------------------------------------------------


def dirac_(target: Target, *, channels: str = "each", groups: int | None = None) -> Tensor:
    r"""Dirac delta at tap ``(F - 1) // 2`` of every axis: with ``channels="each"`` and
    ``C_out == C_in`` the layer is the identity under ``padding='same'`` (or ``(F - 1)/2`` for
    odd ``F``), stride 1.

    Unlike ``torch.nn.init.dirac_`` (tap ``F // 2``), the delta sits where ``'same'`` padding
    (torch's and TensorFlow's: the odd element at the end) keeps it the identity for even ``F``
    too; with more outputs than inputs the inputs repeat instead of leaving zero channels.
    """
    return _fill("dirac_", target, lambda s: _outer([_centre_tap(n) for n in s]), channels, groups)
