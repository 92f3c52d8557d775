"""Drop-in replacements for ``torch.nn.functional``: same names, signatures and results."""

from .conv import conv1d, conv2d, conv3d
from .conv_transpose import conv_transpose1d, conv_transpose2d, conv_transpose3d

__all__ = ["conv1d", "conv2d", "conv3d"]
__all__ += ["conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]