"""Drop-in ``torch.nn`` layers: subclasses of torch's with identical constructors and state."""

from .conv import Conv1d, Conv2d, Conv3d
from .conv_transpose import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d

__all__ = ["Conv1d", "Conv2d", "Conv3d"]
__all__ += ["ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]