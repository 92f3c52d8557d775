"""Output allocation (``_memory``): one ``empty_strided`` with torch's own strides."""

from __future__ import annotations

import itertools

import pytest
import torch

from torchconv_ext._memory import (
    channels_last_format,
    empty_in_layout,
    new_output,
    own_strides,
    to_layout,
)


@pytest.mark.parametrize("rank", [3, 4, 5])
def test_allocations_have_torchs_strides_for_every_shape(rank):
    """Contiguous and channels-last outputs, sizes 0 to 2 in every dim: torch's strides (for
    channels-last: its memory format's, where one exists and the tensor is not empty; else
    channels after the spatial dims, dims of size 0 stepping as size 1, as ``movedim`` of a
    contiguous ``(N, *spatial, C)`` tensor gives)."""
    like = torch.empty(1, dtype=torch.float16)
    fmt = channels_last_format(rank)
    for shape in itertools.product([0, 1, 2], repeat=rank):
        plain = empty_in_layout(shape, like, False)
        assert plain.stride() == torch.empty(shape).stride() and plain.dtype == torch.float16
        assert new_output(shape, like).stride() == plain.stride()
        flipped = torch.empty(shape[0], *shape[2:], shape[1]).movedim(-1, 1)
        last = empty_in_layout(shape, like, True, torch.int64)
        if fmt is not None and 0 not in shape:
            assert last.stride() == torch.empty(shape, memory_format=fmt).stride()
        assert last.stride() == flipped.stride() and last.dtype == torch.int64
        if fmt is not None:
            assert (
                new_output(shape, like, fmt).stride()
                == torch.empty(shape, memory_format=fmt).stride()
            )
        if 0 not in shape:  # (an empty tensor in any strides is copied: nothing to copy)
            assert to_layout(last, True) is last and to_layout(plain, False) is plain


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_crop_of_a_bigger_buffer_is_copied_to_the_start_of_its_own(channels_last):
    # (an op's fake says its result is fresh; a crop would also keep the whole buffer alive)
    buffer = torch.randn(1, 1, 6, 10)
    crop = buffer[..., 2:5, :]  # contiguous in either layout, but at an offset
    out = to_layout(crop, channels_last)
    assert out.storage_offset() == 0 and out.untyped_storage().nbytes() == crop.nbytes
    assert torch.equal(out, crop)
    whole = buffer[..., :3, :]
    assert to_layout(whole, False) is whole  # (at the start: no copy)


def test_own_strides_gives_a_dense_tensor_its_formats_strides_and_leaves_the_rest():
    """A view with the strides a new tensor has, where only size-1 dims step otherwise."""
    image = torch.randn(6, 4, 3).permute(2, 0, 1)  # (C, H, W), channels fastest
    lifted = image.unsqueeze(0)  # a batch of one stepping by C
    assert lifted.stride() == (3, 1, 12, 3)
    own = own_strides(lifted, torch.channels_last)
    assert own.stride() == (72, 1, 12, 3)
    assert own.data_ptr() == lifted.data_ptr() and torch.equal(own, lifted)
    fresh = torch.empty(1, 3, 6, 4, memory_format=torch.channels_last)
    assert own_strides(fresh, torch.channels_last) is fresh  # already its own
    assert own_strides(lifted, torch.contiguous_format) is lifted  # not dense in that format
    both = torch.empty(2, 2, 1, 1)  # dense in both formats, a new contiguous tensor's strides
    assert own_strides(both, torch.channels_last) is both  # (ATen reads it as contiguous)
    sliced = torch.randn(2, 3, 4, 5)[..., ::2]
    assert own_strides(sliced, torch.contiguous_format) is sliced  # not dense: as it is


@pytest.mark.parametrize("channels_last", [True, False])
def test_exact_gives_size_1_dims_the_layouts_strides_too(channels_last):
    """A result stored in the other layout may already be dense in its own when a dim has size
    1 (one channel); with ``exact`` it gets that layout's strides, which ATen's layout rule
    reads downstream. Without, it is left as it is (kernels' operands)."""
    shape = (2, 1, 3, 4)
    stored = torch.empty(
        shape, memory_format=torch.contiguous_format if channels_last else torch.channels_last
    )
    stored.copy_(torch.randn(shape))
    fresh = torch.empty(
        shape, memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )
    assert stored.stride() != fresh.stride()
    out = to_layout(stored, channels_last, exact=True)
    assert out.stride() == fresh.stride() and torch.equal(out, stored)
    assert to_layout(stored, channels_last) is stored
    assert to_layout(fresh, channels_last, exact=True) is fresh
