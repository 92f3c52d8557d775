"""Implicit-GEMM convolution launchers vs torch's convolution in float64.

The reference pads explicitly with ``F.pad`` (any mode, asymmetric) and convolves with padding 0;
gradients come from ``torch.autograd.grad`` of that reference. Every output is NaN-filled before
the launch, so an element the kernel fails to write fails the comparison. Shapes are tiny: under
``TRITON_INTERPRET=1`` each launch runs on the CPU interpreter.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from triton_kernels import _gemm_common, conv_gemm
from triton_kernels.conv_gemm import (
    gemm_conv_backward_input,
    gemm_conv_backward_weight,
    gemm_conv_forward,
)

pytestmark = pytest.mark.interpret

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_TORCH_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
              "circular": "circular"}  # fmt: skip


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # grad_out tensors come from the global generator


def _reference(x, w, b, *, stride, pads, dilation, groups, pad_mode):
    """torch's convolution of the explicitly padded input; ``pads`` = ((before, after), ...)."""
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad lists the last dim first
    xp = F.pad(x, flat, mode=_TORCH_PAD[pad_mode])
    return _CONV[len(pads)](xp, w, b, stride=stride, dilation=dilation, groups=groups)


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout (a view for 'strided')."""
    if layout == "contig":
        return t.contiguous()
    if layout == "channels_last":  # channels fastest, for any rank
        return t.movedim(1, -1).contiguous().movedim(-1, 1)
    if layout == "strided":  # every other element of a buffer with dims 0 and 1 swapped
        shape = (t.shape[1], t.shape[0], *t.shape[2:-1], 2 * t.shape[-1])
        big = torch.full(shape, float("nan"), dtype=t.dtype, device=t.device)
        view = big.transpose(0, 1)[..., ::2]
        view.copy_(t)
        return view
    raise ValueError(layout)


def _poisoned(shape, dtype, device, layout) -> torch.Tensor:
    out = _layout(torch.empty(shape, dtype=dtype, device=device), layout)
    return out.fill_(float("nan"))


def _make(x_shape, c_out, kernel, groups, dtype, bias=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=g, dtype=torch.float64)
    w = torch.randn((c_out, x_shape[1] // groups, *kernel), generator=g, dtype=torch.float64)
    b = torch.randn(c_out, generator=g, dtype=torch.float64) if bias else None
    cast = lambda t: None if t is None else t.to(dtype)
    return cast(x), cast(w), cast(b)


def _geometry(stride, pads, dilation, groups):
    return dict(stride=stride, padding=tuple(p[0] for p in pads), dilation=dilation, groups=groups)


def _check(ours: torch.Tensor, ref64: torch.Tensor, torch_lowp: torch.Tensor | None = None):
    """fp64/fp32: close to the fp64 reference. fp16: error at most 2× torch's own fp16 error."""
    ours = ours.cpu()
    if ours.dtype == torch.float64:
        torch.testing.assert_close(ours, ref64, rtol=1e-10, atol=1e-10)
    elif ours.dtype == torch.float32:
        torch.testing.assert_close(ours.double(), ref64, rtol=1e-5, atol=1e-5)
    else:
        assert torch_lowp is not None and not ours.isnan().any()
        err = (ours.double() - ref64).abs().max().item()
        torch_err = (torch_lowp.double() - ref64).abs().max().item()
        atol = 2.0**-11 * ref64.abs().max().item()
        assert err <= 2 * torch_err + atol, (err, torch_err, atol)


# x shape, C_out, kernel, stride, pads ((before, after) per dim), dilation, groups, pad_mode,
# bias, layout (of x, w, out).
CONV_ARGS = "x_shape,c_out,kernel,stride,pads,dilation,groups,pad_mode,bias,layout"
CONV_CASES = [
    pytest.param((2, 3, 9), 5, (3,), (2,), ((1, 2),), (1,), 1, "zeros", True, "contig",
                 id="1d-rgb-asym"),
    pytest.param((1, 20, 8), 6, (3,), (1,), ((2, 1),), (2,), 1, "reflect", False,
                 "channels_last", id="1d-c20-reflect-dil"),
    pytest.param((2, 1, 6, 5), 4, (3, 2), (2, 1), ((1, 1), (2, 0)), (1, 1), 1, "replicate",
                 True, "channels_last", id="2d-c1-replicate"),
    pytest.param((1, 20, 5, 6), 20, (3, 3), (1, 2), ((1, 1), (1, 2)), (1, 2), 1, "circular",
                 True, "strided", id="2d-c20-circular"),
    pytest.param((2, 4, 5, 5), 6, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 2, "zeros", True,
                 "contig", id="2d-groups2"),
    pytest.param((2, 3, 7, 6), 5, (3, 2), (1, 2), ((2, 1), (0, 1)), (2, 3), 1, "zeros", True,
                 "strided", id="2d-rgb-dilated"),
    pytest.param((1, 4, 6, 6), 8, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 4, "reflect", True,
                 "channels_last", id="2d-depthwise"),
    pytest.param((1, 3, 4, 5, 4), 4, (2, 3, 2), (1, 2, 2), ((1, 0), (1, 1), (0, 1)), (1, 1, 1),
                 1, "zeros", True, "channels_last", id="3d-rgb"),
    pytest.param((2, 2, 3, 4, 4), 4, (2, 2, 3), (2, 1, 1), ((1, 1), (0, 1), (1, 1)), (1, 2, 1),
                 2, "replicate", False, "strided", id="3d-groups2-replicate"),
    pytest.param((1, 18, 3, 3, 4), 3, (1, 2, 2), (1, 1, 2), ((0, 0), (1, 1), (1, 0)), (1, 1, 1),
                 1, "circular", True, "contig", id="3d-c18-circular"),
    # No padding: every tap in bounds (IN_BOUNDS); 24 channels: runs of 8 (channel_alignment).
    pytest.param((2, 24, 7, 6), 5, (3, 2), (2, 2), ((0, 0), (0, 0)), (1, 2), 1, "reflect", True,
                 "channels_last", id="2d-c24-in-bounds"),
    pytest.param((1, 20, 4, 5, 6), 4, (2, 2, 3), (1, 2, 1), ((0, 0), (0, 0), (0, 0)),
                 (2, 1, 1), 1, "zeros", False, "contig", id="3d-c20-in-bounds"),
    pytest.param((2, 24, 5, 4), 24, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, "zeros", True,
                 "channels_last", id="2d-c24-tap"),
    # Groups of 8 output channels, channels-last: stored as runs of 8 (OUT_ALIGN).
    pytest.param((2, 16, 5, 4), 16, (3, 3), (2, 1), ((1, 1), (1, 0)), (1, 1), 2, "zeros", True,
                 "channels_last", id="2d-groups2-out8"),
]  # fmt: skip


@pytest.mark.parametrize(CONV_ARGS, CONV_CASES)
def test_forward(triton_device, x_shape, c_out, kernel, stride, pads, dilation, groups, pad_mode,
                 bias, layout):  # fmt: skip
    x, w, b = _make(x_shape, c_out, kernel, groups, torch.float64, bias)
    ref = _reference(x, w, b, stride=stride, pads=pads, dilation=dilation, groups=groups,
                     pad_mode=pad_mode)  # fmt: skip
    out = _poisoned(ref.shape, torch.float64, triton_device, layout)
    if b is not None and layout == "strided":  # a strided bias too
        b = torch.stack([b, torch.full_like(b, float("nan"))], 1)[:, 0]
    gemm_conv_forward(
        _layout(x.to(triton_device), layout), _layout(w.to(triton_device), layout),
        None if b is None else b.to(triton_device), out,
        **_geometry(stride, pads, dilation, groups), pad_mode=pad_mode, allow_tf32=False,
    )  # fmt: skip
    _check(out, ref)


@pytest.mark.parametrize(CONV_ARGS, CONV_CASES)
def test_backward_weight(triton_device, x_shape, c_out, kernel, stride, pads, dilation, groups,
                         pad_mode, bias, layout):  # fmt: skip
    x, w, _ = _make(x_shape, c_out, kernel, groups, torch.float64)
    w.requires_grad_()
    ref_out = _reference(x, w, None, stride=stride, pads=pads, dilation=dilation, groups=groups,
                         pad_mode=pad_mode)  # fmt: skip
    grad_out = torch.randn_like(ref_out)
    (ref,) = torch.autograd.grad(ref_out, w, grad_out)
    grad_w = _poisoned(w.shape, torch.float64, triton_device, layout)
    gemm_conv_backward_weight(
        _layout(x.to(triton_device), layout), _layout(grad_out.to(triton_device), layout), grad_w,
        **_geometry(stride, pads, dilation, groups), pad_mode=pad_mode, allow_tf32=False,
    )  # fmt: skip
    _check(grad_w, ref)


# Zero padding only (other modes are folded by the caller); asymmetric padding shows up as the
# grad_out size. x shape, C_out, kernel, stride, pads, dilation, groups, layout.
BWD_INPUT_ARGS = "x_shape,c_out,kernel,stride,pads,dilation,groups,layout"
BWD_INPUT_CASES = [
    # stride > kernel: inputs no tap reaches, and a phase with no taps at all
    pytest.param((2, 3, 10), 4, (2,), (3,), ((0, 0),), (1,), 1, "contig",
                 id="1d-stride-gt-kernel"),
    # gcd(stride, dilation) = 2: tap step 2, odd phases get no taps
    pytest.param((1, 2, 11), 3, (3,), (4,), ((2, 1),), (2,), 1, "channels_last",
                 id="1d-stride4-dil2"),
    pytest.param((2, 4, 7, 6), 6, (3, 2), (2, 3), ((1, 2), (0, 1)), (2, 1), 2, "channels_last",
                 id="2d-asym-groups2"),
    pytest.param((1, 6, 5, 5), 20, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1, "strided",
                 id="2d-cout20"),
    pytest.param((1, 4, 5, 6), 4, (3, 3), (1, 2), ((1, 1), (1, 1)), (1, 1), 4, "contig",
                 id="2d-depthwise"),
    # depth 1 < stride 2: an empty phase
    pytest.param((1, 2, 1, 5, 3), 3, (1, 2, 2), (2, 2, 3), ((0, 0), (0, 0), (0, 0)), (1, 1, 1),
                 1, "channels_last", id="3d-size-lt-stride"),
    pytest.param((2, 3, 4, 4, 5), 5, (2, 2, 3), (1, 2, 2), ((0, 1), (1, 0), (1, 1)), (2, 1, 1),
                 1, "strided", id="3d-general"),
    # stride 1 into NCHW: rows of flat positions (``FLAT_Y``), 16 per image and 15
    pytest.param((2, 5, 4, 4), 6, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, "contig",
                 id="2d-stride1-nchw"),
    pytest.param((2, 3, 3, 5), 4, (2, 3), (1, 1), ((1, 0), (0, 2)), (1, 1), 1, "contig",
                 id="2d-stride1-nchw-asym"),
    # stride 1, fewer than 16 output channels: the flat index split by constants (FLAT_KH/KW)
    pytest.param((1, 3, 3, 4, 4), 5, (2, 3, 2), (1, 1, 1), ((1, 0), (1, 3), (0, 1)), (1, 2, 1),
                 1, "channels_last", id="3d-stride1-dilated"),
    pytest.param((2, 6, 5, 4), 4, (3, 2), (1, 1), ((1, 1), (1, 0)), (1, 1), 2, "strided",
                 id="2d-stride1-groups2"),
]  # fmt: skip


@pytest.mark.parametrize(BWD_INPUT_ARGS, BWD_INPUT_CASES)
def test_backward_input(triton_device, x_shape, c_out, kernel, stride, pads, dilation, groups,
                        layout):  # fmt: skip
    x, w, _ = _make(x_shape, c_out, kernel, groups, torch.float64)
    x.requires_grad_()
    ref_out = _reference(x, w, None, stride=stride, pads=pads, dilation=dilation, groups=groups,
                         pad_mode="zeros")  # fmt: skip
    grad_out = torch.randn_like(ref_out)
    (ref,) = torch.autograd.grad(ref_out, x, grad_out)
    grad_in = _poisoned(x.shape, torch.float64, triton_device, layout)
    gemm_conv_backward_input(
        _layout(grad_out.to(triton_device), layout), _layout(w.to(triton_device), layout),
        grad_in, **_geometry(stride, pads, dilation, groups), allow_tf32=False,
    )  # fmt: skip
    _check(grad_in, ref)


@pytest.mark.parametrize("size", [(4, 4), (4, 3), (3, 5)], ids=["rows-of-16", "of-4", "of-1"])
def test_nchw_results_match_channels_last_bitwise(triton_device, size):
    """Stored straight into NCHW (rows of flat positions, in aligned runs of 16, 4 or 1) or
    channels-last, the forward and the input gradient are the same sums: identical bits in
    float32."""
    x, w, b = _make((2, 6, *size), 5, (3, 3), 1, torch.float32, bias=True)
    x, w, b = x.to(triton_device), w.to(triton_device), b.to(triton_device)
    bias_in = torch.randn(6, device=triton_device)  # (the input gradient's: one per input channel)
    geometry = _geometry((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    grad_out = torch.randn(2, 5, *size, device=triton_device)
    results = []
    for layout in ("contig", "channels_last"):
        out = _poisoned((2, 5, *size), torch.float32, triton_device, layout)
        gemm_conv_forward(x, w, b, out, **geometry, pad_mode="zeros", allow_tf32=False)
        grad_in = _poisoned(x.shape, torch.float32, triton_device, layout)
        gemm_conv_backward_input(grad_out, w, grad_in, **geometry, allow_tf32=False, bias=bias_in)
        results.append((out, grad_in))
    for nchw, cl in zip(*results):
        assert nchw.is_contiguous() and not cl.is_contiguous()
        assert torch.equal(nchw, cl)


# --- fp32 / fp16 ---------------------------------------------------------------------------

# (x shape, C_out, kernel, stride, pads, dilation, groups, pad_mode): flattened-K and tap paths.
_LOWP_CASES = {
    "flat": ((2, 3, 6, 5), 4, (3, 2), (2, 1), ((1, 1), (2, 0)), (1, 1), 1, "reflect"),
    "tap": ((1, 20, 5, 6), 18, (3, 3), (1, 2), ((1, 1), (1, 2)), (1, 2), 1, "zeros"),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", sorted(_LOWP_CASES))
def test_low_precision(triton_device, dtype, case):
    """All three launchers in fp32 (IEEE dot) and fp16 (fp32 accumulation) vs fp64."""
    x_shape, c_out, kernel, stride, pads, dilation, groups, pad_mode = _LOWP_CASES[case]
    x, w, b = _make(x_shape, c_out, kernel, groups, dtype, bias=True)
    geo = dict(stride=stride, pads=pads, dilation=dilation, groups=groups)

    def reference(dt, mode):
        xr, wr = (t.to(dt).requires_grad_() for t in (x, w))
        out = _reference(xr, wr, b.to(dt), pad_mode=mode, **geo)
        return out, xr, wr

    ref_out, _, ref_w = reference(torch.float64, pad_mode)
    grad_out = torch.randn_like(ref_out).to(dtype)
    ref_gw = torch.autograd.grad(ref_out, ref_w, grad_out.double())[0]
    zero_out, zx, _ = reference(torch.float64, "zeros")
    ref_gx = torch.autograd.grad(zero_out, zx, grad_out.double())[0]
    lowp = [None] * 3
    if dtype == torch.float16:  # torch's own fp16 error sets the bar
        lo_out, _, lo_w = reference(dtype, pad_mode)
        lo_gw = torch.autograd.grad(lo_out, lo_w, grad_out)[0]
        lo_zero, lo_x, _ = reference(dtype, "zeros")
        lo_gx = torch.autograd.grad(lo_zero, lo_x, grad_out)[0]
        lowp = [lo_out.detach(), lo_gx, lo_gw]

    dev = lambda t: t.to(triton_device)
    kw = dict(**_geometry(stride, pads, dilation, groups), allow_tf32=False)
    out = _poisoned(ref_out.shape, dtype, triton_device, "channels_last")
    gemm_conv_forward(dev(x), dev(w), dev(b), out, pad_mode=pad_mode, **kw)
    _check(out, ref_out.detach(), lowp[0])
    grad_in = _poisoned(x.shape, dtype, triton_device, "contig")
    gemm_conv_backward_input(dev(grad_out), dev(w), grad_in, **kw)
    _check(grad_in, ref_gx, lowp[1])
    grad_w = _poisoned(w.shape, dtype, triton_device, "contig")
    gemm_conv_backward_weight(dev(x), dev(grad_out), grad_w, pad_mode=pad_mode, **kw)
    _check(grad_w, ref_gw, lowp[2])


# --- split-K, determinism, int64 indexing --------------------------------------------------


@pytest.mark.parametrize("layout", ["contig", "channels_last"])
@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32, torch.float16], ids=["fp64", "fp32", "fp16"]
)
def test_backward_weight_split_k_is_deterministic(triton_device, dtype, layout, monkeypatch):
    """Split-K through the workspace (laid out like the weight gradient): correct, and two runs
    are bitwise equal."""
    monkeypatch.setattr(_gemm_common, "SPLIT_MIN_POSITIONS", 8)
    x_shape, c_out, kernel, stride, pads, dilation = (2, 3, 6, 5), 5, (3, 3), (1, 1), \
        ((1, 1), (1, 1)), (1, 1)  # fmt: skip
    x, w, _ = _make(x_shape, c_out, kernel, 1, dtype)
    positions = x_shape[0] * x_shape[2] * x_shape[3]
    assert _gemm_common.choose_split(1, positions) > 1  # the workspace path really runs

    xr, wr = x.double(), w.double().requires_grad_()
    ref_out = _reference(xr, wr, None, stride=stride, pads=pads, dilation=dilation, groups=1,
                         pad_mode="replicate")  # fmt: skip
    grad_out = torch.randn_like(ref_out).to(dtype)
    (ref,) = torch.autograd.grad(ref_out, wr, grad_out.double())
    lowp = None
    if dtype == torch.float16:
        wl = w.clone().requires_grad_()
        lo = _reference(x, wl, None, stride=stride, pads=pads, dilation=dilation, groups=1,
                        pad_mode="replicate")  # fmt: skip
        lowp = torch.autograd.grad(lo, wl, grad_out)[0]

    results = []
    for _ in range(2):
        grad_w = _poisoned(w.shape, dtype, triton_device, layout)
        gemm_conv_backward_weight(
            _layout(x.to(triton_device), layout), _layout(grad_out.to(triton_device), layout),
            grad_w, **_geometry(stride, pads, dilation, 1), pad_mode="replicate",
            allow_tf32=False,
        )  # fmt: skip
        results.append(grad_w)
    _check(results[0], ref, lowp)
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("c_in", [18, 3], ids=["tap", "flat"])
def test_int64_indexing_path(triton_device, monkeypatch, c_in):
    """The int64 offset variant (chosen for > 2**31-element tensors), forced on a small case."""
    monkeypatch.setattr(conv_gemm, "needs_int64", lambda *tensors: True)
    x_shape, c_out, kernel, stride, pads, dilation, groups = (1, c_in, 4, 5), 3, (3, 2), \
        (2, 1), ((1, 2), (1, 0)), (1, 2), 1  # fmt: skip
    x, w, b = _make(x_shape, c_out, kernel, groups, torch.float64, bias=True)
    x.requires_grad_()
    w.requires_grad_()
    geo = dict(stride=stride, pads=pads, dilation=dilation, groups=groups)
    ref_out = _reference(x, w, b, pad_mode="zeros", **geo)
    grad_out = torch.randn_like(ref_out)
    ref_gx, ref_gw = torch.autograd.grad(ref_out, (x, w), grad_out)
    dev = lambda t: t.detach().to(triton_device)
    kw = dict(**_geometry(stride, pads, dilation, groups), allow_tf32=False)

    out = _poisoned(ref_out.shape, torch.float64, triton_device, "channels_last")
    gemm_conv_forward(dev(x), dev(w), dev(b), out, pad_mode="zeros", **kw)
    _check(out, ref_out.detach())
    grad_in = _poisoned(x.shape, torch.float64, triton_device, "strided")
    gemm_conv_backward_input(dev(grad_out), dev(w), grad_in, **kw)
    _check(grad_in, ref_gx)
    grad_w = _poisoned(w.shape, torch.float64, triton_device, "contig")
    gemm_conv_backward_weight(dev(x), dev(grad_out), grad_w, pad_mode="zeros", **kw)
    _check(grad_w, ref_gw)


def test_dense_positions_are_one_stride_apart():
    """Which grad_outputs the weight gradient addresses as ``position·stride``: dense
    channels-last ones (size-1 dims with any stride), not NCHW with channels between images nor
    views that skip positions."""
    cl = torch.empty(2, 5, 6, 3, 4).movedim(-1, 1)  # (N, C, D, H, W), channels innermost
    assert conv_gemm.dense_positions(cl)
    assert conv_gemm.dense_positions(cl[:, 1:3])  # a channel slice: positions stay dense
    assert conv_gemm.dense_positions(torch.empty(2, 1, 4, 5, 6))  # NCHW with one channel
    assert conv_gemm.dense_positions(
        torch.empty(1, 3, 1, 1, 7).as_strided((1, 3, 1, 1, 7), (99, 1, 5, 21, 3))
    )
    assert not conv_gemm.dense_positions(torch.empty(2, 3, 4, 5, 6))  # NCHW
    assert not conv_gemm.dense_positions(cl[..., ::2])
    assert not conv_gemm.dense_positions(cl[:, :, :, 1:])
    assert not conv_gemm.dense_positions(cl.transpose(3, 4))


def test_a_strided_input_gradient_of_2_31_positions_bounds_its_rows_in_64_bits(monkeypatch):
    """A strided input gradient bounds each phase's rows by N · the phase's positions: past
    2**31 that product must be computed in 64 bits (in 32 it wraps negative and masks every
    row off). Its first program — the first row tile of phase (0, 0) — is launched with a batch
    size that large, over a real first image (nothing past it is read or written)."""
    from triton_kernels import _tuning

    real_launch = _tuning.launch
    positions = 8 * 8  # (phase (0, 0)'s per image, at stride 2)
    tile = {}

    def first_program_of_a_huge_batch(kernel, grid, args, kwargs):
        tile.update(rows=kwargs["BLOCK_M"], columns=kwargs["BLOCK_N"])
        assert tile["rows"] <= positions and kwargs["FLAT_Y"] == 0
        i = kernel.arg_names.index("N")
        args = (*args[:i], 2**31 // positions + 1, *args[i + 1 :])
        real_launch(kernel, (1,), args, {**kwargs, "USE_INT64": True})

    monkeypatch.setattr(_tuning, "launch", first_program_of_a_huge_batch)
    torch.manual_seed(0)
    x = torch.randn(1, 16, 16, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, 16, 3, 3, dtype=torch.float64)
    grad_out = torch.randn(1, 16, 8, 8, dtype=torch.float64)
    grad_in = torch.full_like(x, float("nan"))
    geometry = dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1)
    gemm_conv_backward_input(grad_out, w, grad_in, allow_tf32=False, **geometry)
    (expected,) = torch.autograd.grad(F.conv2d(x, w, **geometry), x, grad_out)
    rows, columns = tile["rows"], tile["columns"]  # (the first program's tile)
    torch.testing.assert_close(
        grad_in[:, :columns, ::2, ::2].flatten(2)[..., :rows],
        expected[:, :columns, ::2, ::2].flatten(2)[..., :rows],
    )


@pytest.mark.parametrize("c_out, out_align", [(16, 8), (12, 2), (10, 1)])
def test_forward_stores_channel_runs_of_a_group(triton_device, monkeypatch, c_out, out_align):
    """The forward stores a channels-last output's channels of a group as runs of
    ``OUT_ALIGN`` — the largest power of two up to 16 dividing the channels per group and the
    output's position strides — which it rebuilds those values with, so that Triton sees them
    aligned (ResNeXt's 8 channels a group, else stored element by element): the results are
    the convolution's either way."""
    from triton_kernels._tuning import Tuner

    chosen = []
    launch = Tuner.launch

    def spy(self, key, grid, args, constexprs):
        chosen.append(constexprs["OUT_ALIGN"])
        return launch(self, key, grid, args, constexprs)

    monkeypatch.setattr(Tuner, "launch", spy)
    x, w, b = _make((2, 16, 5, 4), c_out, (3, 3), 2, torch.float64, bias=True)
    geometry = dict(stride=(1, 2), pads=((1, 1), (0, 1)), dilation=(1, 1), groups=2)
    ref = _reference(x, w, b, pad_mode="zeros", **geometry)
    out = _poisoned(ref.shape, torch.float64, triton_device, "channels_last")
    gemm_conv_forward(
        _layout(x.to(triton_device), "channels_last"), w.to(triton_device), b.to(triton_device),
        out, **_geometry(**geometry), pad_mode="zeros", allow_tf32=False,
    )  # fmt: skip
    assert chosen == [out_align]
    _check(out, ref)


def test_grouped_channel_runs_to_second_order(monkeypatch):
    """gradcheck and gradgradcheck (float64) of a channels-last convolution with 8 channels a
    group, whose forward stores runs of 8 (``OUT_ALIGN``) wherever its derivatives call it."""
    import torchconv_ext
    from torchconv_ext import functional as TF
    from triton_kernels._tuning import Tuner

    chosen = set()
    launch = Tuner.launch

    def spy(self, key, grid, args, constexprs):
        chosen.add(constexprs.get("OUT_ALIGN"))
        return launch(self, key, grid, args, constexprs)

    monkeypatch.setattr(Tuner, "launch", spy)
    cl = torch.channels_last
    x = torch.randn(1, 16, 4, 4, dtype=torch.float64).to(memory_format=cl).requires_grad_()
    w = torch.randn(16, 8, 3, 3, dtype=torch.float64).to(memory_format=cl).requires_grad_()
    conv = lambda x, w: TF.conv2d(x, w, None, padding=1, groups=2)
    with torchconv_ext.use_backend("triton"):
        assert torch.autograd.gradcheck(conv, (x, w), fast_mode=True)
        assert torch.autograd.gradgradcheck(conv, (x, w), fast_mode=True)
    assert 8 in chosen


# --- stride 2 along w into NCHW: both w phases of a row in one program ------------------------

# (x shape, C_out, kernel, stride, pads, dilation, groups): even widths, so the rows pair.
_PAIRED_CASES = {
    "3x3-s2": ((2, 5, 6, 8), 6, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),
    "k2-s2": ((1, 4, 4, 8), 3, (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1), 1),  # one tap a phase
    "k4-s2-groups": ((2, 4, 6, 4), 6, (4, 4), (2, 2), ((1, 1), (1, 1)), (1, 1), 2),
    "1x1-s2": ((1, 3, 4, 8), 5, (1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1), 1),  # w phase 1: none
    "h1-w2-dilated": ((1, 3, 5, 12), 4, (2, 3), (1, 2), ((1, 0), (2, 1)), (1, 2), 1),
    "1d": ((2, 3, 16), 4, (3,), (2,), ((1, 1),), (1,), 1),
    "3d": ((1, 3, 3, 4, 8), 4, (2, 3, 3), (2, 2, 2), ((0, 1), (1, 1), (1, 1)), (1, 1, 1), 1),
}


@pytest.mark.parametrize("case", sorted(_PAIRED_CASES))
def test_paired_w_phases_store_whole_nchw_rows(triton_device, monkeypatch, case):
    """At stride 2 along an even width, an NCHW input gradient is stored by programs that sum
    both w phases of their rows (``PAIR_W``) and interleave them: torch's values in float64, with
    a bias, and the same bits in float32 as the channels-last launch, whose programs take one
    phase each."""
    x_shape, c_out, kernel, stride, pads, dilation, groups = _PAIRED_CASES[case]
    paired = []
    real_launch = conv_gemm.Tuner.launch

    def spy(self, key, grid, args, kwargs):
        paired.append(kwargs.get("PAIR_W", 0))
        return real_launch(self, key, grid, args, kwargs)

    monkeypatch.setattr(conv_gemm.Tuner, "launch", spy)
    x, w, _ = _make(x_shape, c_out, kernel, groups, torch.float64)
    x.requires_grad_()
    ref_out = _reference(x, w, None, stride=stride, pads=pads, dilation=dilation, groups=groups,
                         pad_mode="zeros")  # fmt: skip
    grad_out = torch.randn_like(ref_out)
    (ref,) = torch.autograd.grad(ref_out, x, grad_out)
    bias = torch.randn(x_shape[1], dtype=torch.float64)
    geometry = _geometry(stride, pads, dilation, groups)
    grad_in = _poisoned(x.shape, torch.float64, triton_device, "contig")
    gemm_conv_backward_input(grad_out, w, grad_in, **geometry, allow_tf32=False, bias=bias)
    _check(grad_in, ref + bias.view(-1, *[1] * (x.dim() - 2)))
    assert paired[0] > 0
    results = []
    for layout in ("contig", "channels_last"):
        out = _poisoned(x.shape, torch.float32, triton_device, layout)
        gemm_conv_backward_input(grad_out.float(), w.float(), out, **geometry, allow_tf32=False)
        results.append(out)
    assert paired[1:] == [paired[0], 0]
    assert torch.equal(*results)


def test_which_input_gradients_pair_their_w_phases():
    nchw = torch.empty(2, 3, 1, 6, 8)
    assert conv_gemm.paired_width(nchw, (1, 2, 2), False) == 8
    assert conv_gemm.paired_width(torch.empty(2, 3, 1, 6, 12), (1, 1, 2), False) == 4
    assert conv_gemm.paired_width(nchw, (1, 2, 1), False) == 0  # stride 1 along w
    assert conv_gemm.paired_width(nchw, (1, 2, 3), False) == 0
    assert conv_gemm.paired_width(torch.empty(2, 3, 1, 6, 7), (1, 2, 2), False) == 0  # odd width
    assert conv_gemm.paired_width(nchw, (1, 2, 2), True) == 0  # merged groups
    assert conv_gemm.paired_width(nchw.movedim(1, -1).contiguous().movedim(-1, 1), (1, 2, 2),
                                  False) == 0  # channels-last  # fmt: skip
    from triton_kernels import stores_nchw

    assert stores_nchw((6, 8), (2, 2), input_gradient=True)
    assert not stores_nchw((6, 6), (2, 2), input_gradient=True)  # runs of 2: channels-last
    assert not stores_nchw((6, 8), (2, 2), input_gradient=True, merged=True)
    assert not stores_nchw((6, 8), (1, 3), input_gradient=True)
