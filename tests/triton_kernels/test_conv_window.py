"""Narrow convolutions through windows (``conv_window``) vs torch's convolution in float64.

The launchers (``triton_kernels.conv``) send convolutions with fewer than 16 input channels in
one group, zero padding and unit dilation along ``w`` through a padded copy of their input read
as windows; these tests call them as the ops do and compare with the explicitly padded reference
of ``test_conv_gemm``. Outputs are NaN-filled before each launch.
"""

from __future__ import annotations

import pytest
import torch

from tests.triton_kernels.test_conv_gemm import _check, _layout, _make, _poisoned, _reference
from triton_kernels import conv, conv_gemm, conv_window
from triton_kernels._common import as_5d, pack_geometry
from triton_kernels._gemm_common import channel_alignment
from triton_kernels.conv_gemm import in_bounds

pytestmark = pytest.mark.interpret

# x shape, C_out, kernel, stride, pads ((before, after) per dim: the after part sets the output
# size, negative crops), dilation, padding mode, bias, layout (of x, w, out).
WINDOW_ARGS = "x_shape,c_out,kernel,stride,pads,dilation,pad_mode,bias,layout"
WINDOW_CASES = [
    pytest.param((2, 3, 11, 9), 5, (5, 5), (2, 2), ((2, 2), (2, 2)), (1, 1), "zeros", True,
                 "contig", id="2d-rgb-stem"),
    pytest.param((2, 3, 6, 5), 4, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), "reflect", False,
                 "channels_last", id="2d-rgb-3x3-reflect"),
    pytest.param((2, 1, 20), 3, (8,), (3,), ((2, 1),), (1,), "circular", True, "strided",
                 id="1d-c1-asym-circular"),
    pytest.param((1, 3, 5, 6, 5), 4, (2, 3, 2), (1, 2, 2), ((1, 0), (1, 1), (0, 1)), (2, 1, 1),
                 "replicate", True, "channels_last", id="3d-rgb-dilated-d-replicate"),
    pytest.param((1, 5, 9, 7), 6, (3, 3), (2, 1), ((1, -1), (0, -2)), (2, 1), "zeros", False,
                 "strided", id="2d-c5-cropped"),
    pytest.param((2, 2, 6, 5), 3, (3, 1), (1, 2), ((0, 0), (0, 0)), (1, 1), "zeros", True,
                 "contig", id="2d-c2-1-wide"),
    pytest.param((1, 15, 5, 6), 17, (2, 3), (1, 3), ((0, 1), (2, 0)), (1, 1), "reflect", True,
                 "channels_last", id="2d-c15-reflect"),
]  # fmt: skip


def _geometry(stride, pads, dilation):
    return dict(stride=stride, padding=tuple(p[0] for p in pads), dilation=dilation)


@pytest.mark.parametrize(WINDOW_ARGS, WINDOW_CASES)
def test_forward(triton_device, x_shape, c_out, kernel, stride, pads, dilation, pad_mode, bias,
                 layout):  # fmt: skip
    assert conv_window.windows(x_shape[1], 1, dilation)
    x, w, b = _make(x_shape, c_out, kernel, 1, torch.float64, bias)
    ref = _reference(x, w, b, stride=stride, pads=pads, dilation=dilation, groups=1,
                     pad_mode=pad_mode)  # fmt: skip
    out = _poisoned(ref.shape, torch.float64, triton_device, layout)
    conv.conv_forward(
        _layout(x.to(triton_device), layout), _layout(w.to(triton_device), layout),
        None if b is None else b.to(triton_device), out,
        **_geometry(stride, pads, dilation), groups=1, pad_mode=pad_mode, allow_tf32=False,
    )  # fmt: skip
    _check(out, ref)


@pytest.mark.parametrize(WINDOW_ARGS, WINDOW_CASES)
def test_backward_weight(triton_device, x_shape, c_out, kernel, stride, pads, dilation, pad_mode,
                         bias, layout):  # fmt: skip
    x, w, _ = _make(x_shape, c_out, kernel, 1, torch.float64)
    w.requires_grad_()
    ref_out = _reference(x, w, None, stride=stride, pads=pads, dilation=dilation, groups=1,
                         pad_mode=pad_mode)  # fmt: skip
    grad_out = torch.randn_like(ref_out)
    (ref,) = torch.autograd.grad(ref_out, w, grad_out)
    grad_w = _poisoned(w.shape, torch.float64, triton_device, layout)
    conv.conv_backward_weight(
        _layout(x.to(triton_device), layout), _layout(grad_out.to(triton_device), layout), grad_w,
        **_geometry(stride, pads, dilation), groups=1, pad_mode=pad_mode, allow_tf32=False,
    )  # fmt: skip
    _check(grad_w, ref)


# Input gradients of stride-1 convolutions with few output channels: x shape, C_out, kernel,
# pads, dilation, bias (a transposed convolution's, per input channel), layout.
INPUT_GRAD_ARGS = "x_shape,c_out,kernel,pads,dilation,bias,layout"
INPUT_GRAD_CASES = [
    pytest.param((2, 6, 7, 8), 3, (3, 3), ((1, 1), (1, 1)), (1, 1), False, "contig",
                 id="2d-to-rgb"),
    pytest.param((2, 5, 9), 1, (5,), ((2, 1),), (1,), True, "strided", id="1d-to-one-asym"),
    pytest.param((1, 7, 5, 6, 7), 2, (3, 2, 3), ((1, 1), (0, 1), (2, 0)), (2, 1, 1), True,
                 "channels_last", id="3d-dilated-d"),
    pytest.param((1, 16, 6, 5), 4, (3, 3), ((3, 3), (0, 0)), (1, 1), False, "channels_last",
                 id="2d-padding-past-the-kernel"),
]  # fmt: skip


@pytest.mark.parametrize(INPUT_GRAD_ARGS, INPUT_GRAD_CASES)
def test_backward_input(triton_device, x_shape, c_out, kernel, pads, dilation, bias, layout):
    """The convolution of grad_out with the flipped, transposed weight, through windows."""
    assert conv_window.windows(c_out, 1, dilation)
    x, w, _ = _make(x_shape, c_out, kernel, 1, torch.float64)
    b = torch.randn(x_shape[1], dtype=torch.float64) if bias else None
    x.requires_grad_()
    ref_out = _reference(x, w, None, stride=(1,) * len(kernel), pads=pads, dilation=dilation,
                         groups=1, pad_mode="zeros")  # fmt: skip
    grad_out = torch.randn_like(ref_out)
    (ref,) = torch.autograd.grad(ref_out, x, grad_out)
    if b is not None:
        ref = ref + b.view(-1, *[1] * len(kernel))
    grad_in = _poisoned(x.shape, torch.float64, triton_device, layout)
    conv.conv_backward_input(
        _layout(grad_out.to(triton_device), layout), _layout(w.to(triton_device), layout),
        grad_in, stride=(1,) * len(kernel), padding=tuple(p[0] for p in pads), dilation=dilation,
        groups=1, allow_tf32=False, bias=None if b is None else b.to(triton_device),
    )  # fmt: skip
    _check(grad_in, ref)


def test_a_windowed_weight_made_earlier_is_what_the_launch_would_pack(triton_device):
    """``window_weight`` made once and passed as ``windowed_weight``: bitwise the results of
    packing at each launch, forward and input gradient; a mismatched one is refused."""
    x, w, b = _make((2, 3, 7, 6), 5, (3, 3), 1, torch.float64, bias=True)
    x, w, b = x.to(triton_device), w.to(triton_device), b.to(triton_device)
    geo = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, allow_tf32=False)
    outs = []
    for windowed in (None, conv_window.window_weight(w)):
        out = _poisoned((2, 5, 7, 6), torch.float64, triton_device, "contig")
        conv.conv_forward(x, w, b, out, pad_mode="zeros", windowed_weight=windowed, **geo)
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    grads = []
    grad_out = torch.randn(2, 5, 7, 6, dtype=torch.float64, device=triton_device)
    for windowed in (None, conv_window.window_weight(w, input_gradient=True)):
        grad_in = _poisoned(x.shape, torch.float64, triton_device, "contig")
        conv.conv_backward_input(grad_out, w, grad_in, windowed_weight=windowed, **geo)
        grads.append(grad_in)
    assert torch.equal(grads[0], grads[1])
    with pytest.raises(ValueError, match="windowed_weight: expected"):
        conv.conv_forward(x, w, b, outs[0], pad_mode="zeros",
                          windowed_weight=conv_window.window_weight(w[:, :, :2]), **geo)  # fmt: skip
    wide = torch.randn(5, 16, 3, 3, dtype=torch.float64, device=triton_device)
    with pytest.raises(ValueError, match="conv_forward: windowed_weight is for convolutions"):
        conv.conv_forward(torch.randn(2, 16, 7, 6, dtype=torch.float64, device=triton_device),
                          wide, None, outs[0], pad_mode="zeros",
                          windowed_weight=conv_window.window_weight(w), **geo)  # fmt: skip
    with pytest.raises(ValueError, match="conv_backward_input: windowed_weight is for"):
        conv.conv_backward_input(grad_out, w, grads[0], windowed_weight=grads[0],
                                 **dict(geo, stride=(2, 2)))  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_reduced_precision(triton_device, dtype):
    """Within twice torch's own error (fp16), or close (fp32), like the tap loop it runs."""
    x, w, b = _make((2, 3, 9, 8), 6, (5, 5), 1, torch.float64, True)
    geometry = dict(stride=(2, 2), padding=(2, 2), dilation=(1, 1))
    pads = ((2, 2), (2, 2))
    ref = _reference(x, w, b, stride=(2, 2), pads=pads, dilation=(1, 1), groups=1,
                     pad_mode="zeros")  # fmt: skip
    lowp = _reference(*(t.to(dtype) for t in (x, w, b)), stride=(2, 2), pads=pads,
                      dilation=(1, 1), groups=1, pad_mode="zeros")  # fmt: skip
    out = torch.full(ref.shape, float("nan"), dtype=dtype, device=triton_device)
    conv.conv_forward(
        *(t.to(dtype).to(triton_device) for t in (x, w, b)), out, **geometry, groups=1,
        pad_mode="zeros", allow_tf32=False,
    )  # fmt: skip
    _check(out, ref, lowp)


def test_non_finite_inputs_spread_as_in_torch(triton_device):
    """The padded channels and a block's channels past a window are zeros, never products of a
    zero weight with the input: an inf or NaN reaches exactly the outputs torch's reaches."""
    x, w, _ = _make((1, 3, 9, 10), 4, (3, 3), 1, torch.float64)
    x[0, 1, 4, 5] = float("inf")
    x[0, 2, 0, 9] = float("nan")
    ref = _reference(x, w, None, stride=(2, 1), pads=((1, 1), (1, 1)), dilation=(1, 1),
                     groups=1, pad_mode="zeros")  # fmt: skip
    assert ref.isinf().any() and ref.isnan().any()
    out = torch.zeros_like(ref, device=triton_device)
    conv.conv_forward(
        x.to(triton_device), w.to(triton_device), None, out, stride=(2, 1), padding=(1, 1),
        dilation=(1, 1), groups=1, pad_mode="zeros", allow_tf32=False,
    )  # fmt: skip
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-10, atol=1e-10, equal_nan=True)


def test_fused_epilogue(triton_device):
    """The activation and maxout epilogues run on the windowed tap loop as on the GEMM."""
    x, w, b = _make((2, 3, 7, 6), 8, (3, 3), 1, torch.float64, True)
    z = _reference(x, w, b, stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=1,
                   pad_mode="zeros")  # fmt: skip
    args = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, pad_mode="zeros",
                allow_tf32=False)  # fmt: skip
    x, w, b = x.to(triton_device), w.to(triton_device), b.to(triton_device)
    out = torch.full_like(z, float("nan"), device=triton_device)
    conv.conv_forward(x, w, b, out, activation="leaky_relu", alpha=0.1, **args)
    _check(out, torch.nn.functional.leaky_relu(z, 0.1))
    out = torch.full((2, 4, 7, 6), float("nan"), dtype=torch.float64, device=triton_device)
    winner = torch.full(out.shape, -1, dtype=torch.int64, device=triton_device)
    conv.conv_forward(x, w, b, out, pieces=2, winner=winner, **args)
    pieces = z.unflatten(1, (4, 2))
    _check(out, pieces.amax(2))
    assert torch.equal(winner.cpu(), pieces.argmax(2))


def test_empty_batch_has_a_zero_weight_gradient(triton_device):
    x = torch.empty(0, 3, 6, 6, dtype=torch.float64, device=triton_device)
    grad_out = torch.empty(0, 4, 3, 3, dtype=torch.float64, device=triton_device)
    grad_w = torch.full((4, 3, 3, 3), float("nan"), dtype=torch.float64, device=triton_device)
    conv.conv_backward_weight(
        x, grad_out, grad_w, stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1,
        pad_mode="zeros", allow_tf32=False,
    )  # fmt: skip
    assert torch.equal(grad_w.cpu(), torch.zeros(4, 3, 3, 3, dtype=torch.float64))


@pytest.mark.parametrize("pad_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("layout", ["contig", "channels_last", "strided"])
@pytest.mark.parametrize(
    "x_shape,kernel,stride,padding,dilation,out_sizes",
    [
        ((2, 3, 1, 6, 5), (1, 3, 3), (1, 2, 1), (0, 1, 2), (1, 2, 1), (1, 2, 4)),  # cols unread
        ((1, 2, 3, 7, 4), (2, 2, 3), (1, 3, 2), (1, 0, 1), (1, 1, 1), (3, 2, 2)),  # rows unread
    ],
)
def test_the_packed_copy_is_the_padded_input(
    triton_device, x_shape, kernel, stride, padding, dilation, out_sizes, layout, pad_mode
):
    """Every element of the buffer is written (torch fills new memory with NaN here): the input
    padded by its mode where windows read, zeros in the padded channels and in the columns that
    only align the rows."""
    x5 = _layout(torch.randn(x_shape, dtype=torch.float64), layout).to(triton_device)
    cp = 4
    geometry = (kernel, stride, padding, dilation)
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    try:
        torch.utils.deterministic.fill_uninitialized_memory = True
        view = conv_window._windowed_input(x5, out_sizes, cp, geometry, pad_mode)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.utils.deterministic.fill_uninitialized_memory = fill
    buffer = view._base
    c = x5.shape[1]
    used = (*buffer.shape[1:3], (out_sizes[2] - 1) * stride[2] + kernel[2])
    after = [max(e - size - p, 0) for e, size, p in zip(used, x5.shape[2:], padding)]
    pads = [q for d in (2, 1, 0) for q in (padding[d], after[d])]  # F.pad: the last dim first
    mode = "constant" if pad_mode == "zeros" else pad_mode
    padded = torch.nn.functional.pad(x5.cpu(), pads, mode=mode)[
        ..., : used[0], : used[1], : used[2]
    ]
    expected = torch.zeros(buffer.shape, dtype=torch.float64)
    expected[..., : used[2], :c] = padded.permute(0, 2, 3, 4, 1)
    assert torch.equal(buffer.cpu(), expected)
    # The view's channel kw·Cp + c at output column ow is buffer column ow·stride + kw.
    ow = out_sizes[2] - 1
    window = buffer[:, :, :, ow * stride[2] : ow * stride[2] + kernel[2]]
    assert torch.equal(view[:, :, :, :, ow].cpu(), window.flatten(3).permute(0, 3, 1, 2).cpu())


def test_which_convolutions_take_windows():
    assert conv_window.windows(3, 1, (1, 1))
    assert conv_window.windows(15, 1, (2, 2, 1))  # dilated but along w
    assert not conv_window.windows(16, 1, (1, 1))  # wide: the tap loop
    assert not conv_window.windows(4, 2, (1, 1))  # groups: flattened loop
    assert not conv_window.windows(3, 1, (1, 2))  # w-dilated windows have gaps


@pytest.mark.parametrize(
    "c_in,kernel_w,channels",
    [(3, 7, 4), (3, 11, 4), (3, 3, 8), (1, 3, 8), (1, 80, 1), (2, 1, 16), (9, 5, 16), (5, 4, 8)],
)
def test_window_channels_fill_a_tensor_core_operand(c_in, kernel_w, channels):
    cp = conv_window.window_channels(c_in, kernel_w)
    assert cp == channels
    assert cp >= c_in and cp & (cp - 1) == 0 and kernel_w * cp >= 16


def test_the_stem_windows_load_channel_runs_as_vectors():
    """ResNet's 7×7/2 stem: windows of 28 channels, 8 elements apart, rows 16-aligned: runs of 4
    channels (8-byte bf16 vectors); VGG's 3×3/1: 24 channels, 8 apart: runs of 8 (16 bytes)."""
    for (kernel, stride, padding), run in [((7, 2, 3), 4), ((3, 1, 1), 8)]:
        x5 = as_5d(torch.empty(2, 3, 32, 30, dtype=torch.bfloat16))
        out = (30 + 2 * padding - kernel) // stride + 1, (32 + 2 * padding - kernel) // stride + 1
        cp = conv_window.window_channels(3, kernel)
        geometry = conv_window._geometry((kernel,) * 2, (stride,) * 2, (padding,) * 2, (1, 1))
        view = conv_window._windowed_input(x5, (1, *out[::-1]), cp, geometry, "zeros")
        weight = conv_window._windowed_weight(torch.empty(8, 3, 1, kernel, kernel), cp)
        assert view.shape[1] == kernel * cp
        assert channel_alignment(view.shape[1], view, weight) == run
        y5 = torch.empty(2, 8, 1, *out[::-1])
        assert in_bounds(view, y5, weight, pack_geometry(((1, stride, 1), 1), ((0, 0, 0), 0),
                                                          ((1, 1, 1), 1)))  # fmt: skip


def test_channel_alignment():
    cl = _layout(torch.empty(2, 24, 5, 6), "channels_last")
    assert channel_alignment(24, as_5d(cl)) == 8
    assert channel_alignment(32, as_5d(_layout(torch.empty(2, 32, 5, 6), "channels_last"))) == 16
    assert channel_alignment(24, as_5d(torch.empty(2, 24, 5, 6))) == 1  # NCHW: not channels-inner
    sliced = _layout(torch.empty(2, 27, 5, 6), "channels_last")[:, :24]
    assert channel_alignment(24, as_5d(sliced)) == 1  # positions 27 apart


def test_in_bounds():
    x5, w5 = torch.empty(1, 1, 1, 7, 7), torch.empty(1, 1, 1, 3, 3)
    fits = pack_geometry(((2, 2), 1), ((0, 0), 0), ((1, 1), 1))
    assert in_bounds(x5, torch.empty(1, 1, 1, 3, 3), w5, fits)
    padded = pack_geometry(((2, 2), 1), ((1, 1), 0), ((1, 1), 1))
    assert not in_bounds(x5, torch.empty(1, 1, 1, 4, 4), w5, padded)
    # TensorFlow-style 'same' padding only after: the last window leaves the input.
    assert not in_bounds(x5, torch.empty(1, 1, 1, 4, 4), w5, fits)


def test_int64_indexing_path(triton_device, monkeypatch):
    """The int64 offset variants of the pack kernel and the tap loop (chosen for > 2**31-element
    tensors), forced on a small case."""
    monkeypatch.setattr(conv_window, "needs_int64", lambda *tensors: True)
    monkeypatch.setattr(conv_gemm, "needs_int64", lambda *tensors: True)
    x, w, b = _make((2, 3, 7, 6), 4, (3, 3), 1, torch.float64, True)
    pads = ((1, 1), (2, 0))
    ref = _reference(x, w, b, stride=(2, 1), pads=pads, dilation=(1, 1), groups=1,
                     pad_mode="zeros")  # fmt: skip
    out = _poisoned(ref.shape, torch.float64, triton_device, "channels_last")
    conv.conv_forward(
        x.to(triton_device), w.to(triton_device), b.to(triton_device), out, stride=(2, 1),
        padding=(1, 2), dilation=(1, 1), groups=1, pad_mode="zeros", allow_tf32=False,
    )  # fmt: skip
    _check(out, ref)
