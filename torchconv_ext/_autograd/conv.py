"""Differentiable convolution and transposed convolution over their registered primitives."""

from __future__ import annotations

import torch

from .. import _ops  # noqa: F401  (registers torch.ops.torchconv_ext.*)
from ._linear import differentiable

ops = torch.ops.torchconv_ext

ConvFunction = differentiable("ConvFunction", ops.conv_fwd, ops.conv_bwd_input, ops.conv_bwd_weight)
ConvTransposeFunction = differentiable(
    "ConvTransposeFunction",
    ops.conv_transpose_fwd,
    ops.conv_transpose_bwd_input,
    ops.conv_transpose_bwd_weight,
)
