"""CUDA autocast: every layer and padding mode, float16 and bfloat16, gives torch's dtype and
torch's accuracy, forward and backward, on the Triton kernels (backend "auto" on CUDA).

Torch's CUDA autocast casts convolutions to the autocast dtype and (torch 2.13) runs nearest
upsampling in float32; ``torchconv_ext.functional._autocast`` reads which ops it casts from
torch's dispatcher, and this checks the result against torch's own layers.
"""

from __future__ import annotations

import pytest
import torch

from tests.references.autocast import IDS, LAYERS, check_like_torch
from torchconv_ext.functional._autocast import FLOAT32_OPS

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", range(len(LAYERS)), ids=IDS)
def test_cuda_autocast_like_torch(case, autocast_dtype, input_dtype):
    check_like_torch(case, "auto", autocast_dtype, input_dtype, device="cuda", batch=8, size=16)


def test_float32_ops_read_from_torch():
    """What the dispatcher says CUDA autocast runs in float32, as torch's own ops do."""
    x = torch.randn(1, 2, 4, 4, device="cuda", dtype=torch.float16)
    with torch.autocast("cuda", dtype=torch.float16):
        upsampled = torch.nn.functional.interpolate(x, scale_factor=2)
        pooled = torch.nn.functional.max_pool2d(x, 2)
    assert (upsampled.dtype == torch.float32) == ("upsample_nearest2d" in FLOAT32_OPS["cuda"])
    assert pooled.dtype == torch.float16 and "max_pool2d" not in FLOAT32_OPS["cuda"]
