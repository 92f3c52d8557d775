"""torchconv_ext: Triton kernels for convolutional-network layers as differentiable PyTorch ops.

* :mod:`torchconv_ext.functional` — drop-in ``torch.nn.functional`` ops;
* :mod:`torchconv_ext.nn` — drop-in ``torch.nn`` layers;
* :func:`convert_model` — swap the supported layers of an existing model;
* :func:`set_backend` / :func:`use_backend` — ``"auto"``, ``"triton"`` or ``"torch"``;
* :func:`clear_weight_cache` / :func:`weight_cache_info` — the weights repacked for the
  tensor-core kernels, cached once per version of each parameter (clear it after writing a
  parameter through ``.data``, which its version counter does not see).
"""

from . import (
    _ops,  # noqa: F401  (registers torch.ops.torchconv_ext.*)
    functional,
    init,
    nn,
)
from ._backend import BACKENDS, get_backend, set_backend, use_backend
from ._ops._layout import clear_weight_cache, weight_cache_info
from .convert import ConversionReport, convert_model, convert_model_with_report
from .summary import summary

__all__ = [
    "BACKENDS",
    "ConversionReport",
    "clear_weight_cache",
    "convert_model",
    "convert_model_with_report",
    "functional",
    "get_backend",
    "init",
    "nn",
    "set_backend",
    "summary",
    "use_backend",
    "weight_cache_info",
]
__version__ = "0.1.0"
