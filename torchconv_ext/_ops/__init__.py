"""Registered ``torch.ops.torchconv_ext.*`` primitives (forward and backward of each op)."""

from . import conv as _conv  # noqa: F401  (registers the ops)
from . import conv_act as _conv_act  # noqa: F401  (registers the ops)
from . import local as _local  # noqa: F401  (registers the ops)
from . import maxout as _maxout  # noqa: F401  (registers the ops)
from . import maxout_conv as _maxout_conv  # noqa: F401  (registers the ops)
from . import pool as _pool  # noqa: F401  (registers the ops)
from . import upsample as _upsample  # noqa: F401  (registers the ops)
