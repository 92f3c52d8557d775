"""GPU-only convolution checks: reduced precision, real layer shapes, > 2**31 elements."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
from torchconv_ext import functional as TF

pytestmark = pytest.mark.gpu

LAYERS = [  # (N, C_in, H, W, C_out, k, stride, padding, groups): real layers at small batch
    (8, 3, 224, 224, 64, 11, 4, 2, 1),  # AlexNet conv1
    (8, 64, 56, 56, 64, 3, 1, 1, 1),  # VGG-16 / ResNet-50 3×3
    (8, 256, 56, 56, 64, 1, 1, 0, 1),  # ResNet-50 1×1
    (8, 144, 56, 56, 144, 3, 2, 1, 144),  # MobileNetV2 depthwise
]


def _relative_check(ours, ref_lowp, ref64, slack=2.0, atol=1e-3):
    """Our error vs float64 is at most ``slack`` × torch's own error in the same dtype (+ atol)."""
    ours_err = (ours.double() - ref64).abs().max().item()
    torch_err = (ref_lowp.double() - ref64).abs().max().item()
    assert ours_err <= slack * torch_err + atol * ref64.abs().max().item(), (ours_err, torch_err)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_reduced_precision_forward_backward(layer, dtype, channels_last):
    n, ci, h, w, co, k, s, p, g = layer
    torch.manual_seed(0)
    x64 = torch.randn(n, ci, h, w, device="cuda", dtype=torch.float64)
    w64 = (
        torch.randn(co, ci // g, k, k, device="cuda", dtype=torch.float64)
        / (ci // g * k * k) ** 0.5
    )
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x64.to(dtype).contiguous(memory_format=fmt).requires_grad_()
    wt = w64.to(dtype).requires_grad_()
    y = TF.conv2d(x, wt, None, s, p, 1, g)
    y_torch = F.conv2d(x, wt, None, s, p, 1, g)
    x_ref, w_ref = x.detach().double().requires_grad_(), wt.detach().double().requires_grad_()
    y64 = F.conv2d(x_ref, w_ref, None, s, p, 1, g)
    _relative_check(y, y_torch, y64)
    assert y.stride() == y_torch.stride()
    gy = torch.randn_like(y64)
    ours = torch.autograd.grad(y, (x, wt), gy.to(dtype))
    theirs = torch.autograd.grad(y_torch, (x, wt), gy.to(dtype))
    ref = torch.autograd.grad(y64, (x_ref, w_ref), gy)
    for a, b, c in zip(ours, theirs, ref):
        _relative_check(a, b, c)


@pytest.mark.parametrize("channels_last", [False, True])
def test_unproven_tap_configs_prove_themselves_here(tmp_path, monkeypatch, channels_last):
    """The tap loops' 8-warp tiles are unproven candidates (``triton_kernels._gemm_common``): a
    tuner drops one whose results differ from a 4-warp config's, with a warning. On this GPU
    none may differ: the forward, input and weight gradients of a layer big enough for the
    large tiles, tuned afresh (its own cache directory, sizes no other test tunes)."""
    monkeypatch.setenv("TORCHCONV_EXT_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(16, 128, 38, 38, device="cuda", dtype=torch.bfloat16)
    x = x.contiguous(memory_format=fmt).requires_grad_()
    w = (torch.randn(256, 128, 3, 3, device="cuda") / 34).to(torch.bfloat16).requires_grad_()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*computed other results")
        y = TF.conv2d(x, w, padding=1)
        y.backward(torch.randn_like(y))
    x64, w64 = x.detach().double(), w.detach().double()
    _relative_check(y, F.conv2d(x, w, padding=1), F.conv2d(x64, w64, padding=1))


def test_fp32_follows_tf32_switch():
    torch.manual_seed(0)
    x = torch.randn(4, 64, 32, 32, device="cuda")
    w = torch.randn(64, 64, 3, 3, device="cuda")
    y64 = F.conv2d(x.double(), w.double(), padding=1)
    flag = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = False
        exact = (TF.conv2d(x, w, padding=1).double() - y64).abs().max().item()
        torch.backends.cudnn.allow_tf32 = True
        tf32 = (TF.conv2d(x, w, padding=1).double() - y64).abs().max().item()
    finally:
        torch.backends.cudnn.allow_tf32 = flag
    assert exact < 1e-3 < tf32


def test_3d_and_transposed_large():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 32, 64, 64, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(32, 32, 3, 3, 3, device="cuda", dtype=torch.bfloat16) / 30
    _relative_check(
        TF.conv3d(x, w, padding=1),
        F.conv3d(x, w, padding=1),
        F.conv3d(x.double(), w.double(), padding=1),
    )
    wt = torch.randn(32, 16, 2, 2, 2, device="cuda", dtype=torch.bfloat16)
    _relative_check(
        TF.conv_transpose3d(x, wt, stride=2),
        F.conv_transpose3d(x, wt, stride=2),
        F.conv_transpose3d(x.double(), wt.double(), stride=2),
    )


def test_more_than_2_pow_31_elements():
    """Offsets past 2**31 need 64-bit index math: compare the far end of a huge tensor."""
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * 2**30:
        pytest.skip("needs 24 GiB of free GPU memory")
    x = torch.randn(1, 1, 2**16, 2**15 + 8, device="cuda", dtype=torch.float16)  # > 2**31 elements
    w = torch.randn(2, 1, 3, 3, device="cuda", dtype=torch.float16)
    with torchconv_ext.use_backend("triton"):
        y = TF.conv2d(x, w, padding=1)
    tail = x[..., -64:, :]
    y_tail = F.conv2d(tail.double(), w.double(), padding=1)
    torch.testing.assert_close(
        y[..., -63:-1, :].double(), y_tail[..., 1:-1, :], atol=2e-2, rtol=2e-2
    )
    del y
    gx = torch.autograd.grad(TF.conv2d(x.requires_grad_(), w, padding=1).sum(), x)[0]
    assert torch.isfinite(gx[..., -8:, -8:]).all()


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("layout", ["input", "weight"])
def test_padding_modes_keep_the_layout_torchs_padding_gives(mode, layout):
    """On CUDA every pad but zeros returns a contiguous tensor, and so does its gradient (the
    CPU's reflection and replication pads keep channels-last): torch's nn.Conv2d's result and
    gradients follow, and ours."""
    x = torch.randn(2, 32, 12, 12, device="cuda")
    w = torch.randn(32, 32, 3, 3, device="cuda")
    if layout == "input":
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        w = w.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w.requires_grad_()
    conv = torch.nn.Conv2d(32, 32, 3, padding=1, padding_mode=mode, device="cuda")
    ref = conv._conv_forward(x, w, None)
    with torchconv_ext.use_backend("triton"):
        y = TF.conv2d(x, w, None, padding=1, padding_mode=mode)
    assert y.stride() == ref.stride()
    gy = torch.randn_like(ref)
    for ours, theirs in zip(
        torch.autograd.grad(y, (x, w), gy), torch.autograd.grad(ref, (x, w), gy)
    ):
        assert ours.stride() == theirs.stride()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_layer_on_the_second_gpu_runs_there():
    """A convolution and a pooling whose operands are on ``cuda:1`` while ``cuda:0`` is the
    current device (a model spread over GPUs in one process), forward and backward, match
    torch's on that device."""
    torch.manual_seed(0)
    assert torch.cuda.current_device() == 0
    x = torch.randn(2, 16, 20, 20, device="cuda:1", requires_grad=True)
    conv = torchconv_ext.nn.Conv2d(16, 32, 3, padding=1).to("cuda:1")
    with torchconv_ext.use_backend("triton"):
        y = TF.max_pool2d(conv(x), 2)
        grads = torch.autograd.grad(y.square().sum(), (x, conv.weight))
    with torchconv_ext.use_backend("torch"):
        y_torch = F.max_pool2d(F.conv2d(x, conv.weight, conv.bias, padding=1), 2)
        want = torch.autograd.grad(y_torch.square().sum(), (x, conv.weight))
    assert y.device == torch.device("cuda:1")
    torch.testing.assert_close(y, y_torch, rtol=1e-2, atol=1e-2)  # (TF32 on either side)
    for got, ref in zip(grads, want, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-2, atol=1e-2)


def test_a_packed_weight_read_on_a_side_stream_outlives_its_kernels():
    """A parameter's packed copy made on the default stream and read on a side stream: when a
    new version drops it, its memory is not handed out on the default stream while the side
    stream's kernels may still read it (the cache records that stream on the copy)."""
    from torchconv_ext._ops import _layout

    torch.manual_seed(0)
    conv = torchconv_ext.nn.Conv2d(64, 64, 3, padding=1, bias=False).cuda()
    x = torch.randn(8, 64, 32, 32, device="cuda")
    side = torch.cuda.Stream()
    with torchconv_ext.use_backend("triton"), torch.no_grad():
        torchconv_ext.clear_weight_cache()
        conv(x)  # packed on the default stream
        ((_, _, packed, *_),) = _layout._entries.values()
        old = (packed.data_ptr(), packed.untyped_storage().nbytes())
        del packed
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            torch.cuda._sleep(200_000_000)  # the side stream is busy for a while
            y = conv(x)  # reads the cached copy there
        conv.weight.add_(1.0)  # a new version: the next call repacks, dropping the old copy
        conv(x)
        fresh = torch.empty(old[1], dtype=torch.uint8, device="cuda")
        assert fresh.data_ptr() != old[0]  # the old copy's memory waits for the side stream
        torch.cuda.synchronize()
        ref = F.conv2d(x, conv.weight - 1.0, padding=1)
    torch.testing.assert_close(y, ref, rtol=1e-2, atol=1e-2)  # (TF32 on either side)
