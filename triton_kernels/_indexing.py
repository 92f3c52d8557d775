"""Index arithmetic shared by the kernels: padding modes applied to source coordinates.

A padded input is never materialised: a kernel computes the unpadded coordinate ``i`` it would
read (possibly outside ``[0, size)``) and maps it here, so reflect / replicate / circular padding
cost a few integer ops per load instead of a padded copy.
"""

import triton
import triton.language as tl


@triton.jit
def map_padded(i, size, PAD_MODE: tl.constexpr):
    """Map coordinate ``i`` of the padded input to ``(source index, in_bounds)``.

    PAD_MODE: 0 zeros (out-of-range reads are masked), 1 reflect (edge not repeated),
    2 replicate (clamp), 3 circular (wrap). Modes 1 and 3 assume the padding is smaller than
    ``size`` (reflect) or not larger than it (circular), which the argument checks guarantee.
    """
    if PAD_MODE == 0:
        src = i
        ok = (i >= 0) & (i < size)
    elif PAD_MODE == 1:
        src = tl.where(i < 0, -i, i)
        src = tl.where(src >= size, 2 * (size - 1) - src, src)
        ok = src == src
    elif PAD_MODE == 2:
        src = tl.minimum(tl.maximum(i, 0), size - 1)
        ok = src == src
    else:
        src = tl.where(i < 0, i + size, i)
        src = tl.where(src >= size, src - size, src)
        ok = src == src
    return src, ok
