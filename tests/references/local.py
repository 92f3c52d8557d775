"""Float64 references for locally connected and tiled convolution, written from their definition
with torch's own ops (no code shared with the package), and the inputs their tests share."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tests.references.conv import F_PAD_MODE, tf_same_pads

_O, _K = "abc", "def"  # einsum letters of output positions and kernel taps


def _pairs(padding, sizes, kernel, stride, dilation):
    if padding == "same":
        return [tf_same_pads(*a) for a in zip(sizes, kernel, stride, dilation)]
    if padding == "valid":
        return [(0, 0)] * len(sizes)
    p = (padding,) * len(sizes) if isinstance(padding, int) else tuple(padding)
    return [(q, q) if isinstance(q, int) else tuple(q) for q in p]  # (or (before, after))


def reference_local(x, w, b, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """Tiled convolution by definition: ``x`` (N, C_in, *S), ``w`` (*tiles, C_out, C_in/groups,
    *kernel), ``b`` (*tiles, C_out) or None. Output position ``o`` uses ``w[o mod tiles]``
    (tiles equal to the output size: locally connected). Windows come from ``Tensor.unfold``,
    the per-position kernels from indexing the weight; one einsum contracts them."""
    nd = x.dim() - 2
    tiles, kernel = w.shape[:nd], w.shape[nd + 2 :]
    stride = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    dilation = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    pairs = _pairs(padding, x.shape[2:], kernel, stride, dilation)
    flat = [v for pair in reversed(pairs) for v in pair]
    if any(flat):
        x = F.pad(x, flat, mode=F_PAD_MODE[padding_mode])
    for i in range(nd):  # windows: (N, C, *out, *kernel)
        x = x.unfold(2 + i, dilation[i] * (kernel[i] - 1) + 1, stride[i])[..., :: dilation[i]]
    out = x.shape[2 : 2 + nd]
    at = torch.meshgrid(*[torch.arange(o) % t for o, t in zip(out, tiles)], indexing="ij")
    w_pos = w[at].unflatten(nd, (groups, -1))  # (*out, G, C_out/G, C_in/G, *kernel)
    o, k = _O[:nd], _K[:nd]
    y = torch.einsum(f"ngi{o}{k},{o}goi{k}->ngo{o}", x.unflatten(1, (groups, -1)), w_pos)
    y = y.flatten(1, 2)
    return y if b is None else y + b[at].movedim(-1, 0)


def local_inputs(nd, n, c_in, c_out, size, kernel, lead, groups, bias=True, seed=0):
    """float64 leaves: x (n, c_in, *size), w (*lead, c_out, c_in/groups, *kernel), b."""
    gen = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    x = leaf(n, c_in, *size)
    w = leaf(*lead, c_out, c_in // groups, *kernel)
    b = leaf(*lead, c_out) if bias else None
    return x, w, b


def output_size(size, kernel, stride, padding, dilation):
    """Output size per dim, written from torch's and TensorFlow's documentation."""
    nd = len(size)
    stride = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    dilation = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    pairs = _pairs(padding, size, kernel, stride, dilation)
    return tuple(
        (s + b + e - d * (k - 1) - 1) // st + 1
        for s, k, st, (b, e), d in zip(size, kernel, stride, pairs, dilation)
    )


def per_position_weight(w: torch.Tensor, out) -> torch.Tensor:
    """A tiled weight written out as a locally connected one (``w[o mod tiles]`` at every
    output position): autograd through the indexing sums each tile's positions."""
    nd = len(out)
    at = torch.meshgrid(*[torch.arange(o) % t for o, t in zip(out, w.shape[:nd])], indexing="ij")
    return w[at]
