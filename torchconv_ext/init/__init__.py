"""Kernel initialisers for convolution layers, in place like ``torch.nn.init``.

Each function takes a convolution layer — 1D/2D/3D, torch's or ours, transposed or not, tiled,
locally connected or maxout (see each function for the exceptions) — and the hand-designed
kernels also a bare weight tensor ``(C_out, C_in/groups, *kernel)``; it writes the weight in
place and returns it. A layer whose weight is parametrized (``torch.nn.utils.parametrize``) is
written through the parametrization when the layer then computes exactly the values asked for
(``weight_norm``); otherwise (``spectral_norm``, the hook-based ``torch.nn.utils.weight_norm``)
it is refused with an error before anything is written:

* the lecture notes' hand-designed kernels — :func:`average_`, :func:`decaying_average_`,
  :func:`difference_`, :func:`second_difference_`, :func:`sobel_`, :func:`prewitt_`,
  :func:`gaussian_`, :func:`dirac_` (see :mod:`torchconv_ext.init.kernels` for how a kernel
  fills the ``C_out × C_in/groups`` channel pairs);
* :func:`kmeans_` — k-means centroids of (whitened) patches of real inputs.
"""

from .kernels import (
    CHANNELS,
    average_,
    decaying_average_,
    difference_,
    dirac_,
    gaussian_,
    prewitt_,
    second_difference_,
    sobel_,
)
from .kmeans import kmeans_

__all__ = [
    "CHANNELS",
    "average_",
    "decaying_average_",
    "difference_",
    "dirac_",
    "gaussian_",
    "kmeans_",
    "prewitt_",
    "second_difference_",
    "sobel_",
]
