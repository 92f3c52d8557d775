"""Layouts on the Triton path: NCHW operands reach the tensor-core kernels channels-last (but
for the 1×1 GEMM's rows of 4 or more positions), parameters are repacked once per version, and
results keep torch's layout (stored straight in NCHW where rows of 4 or more positions allow).

A spy on the kernel launchers records the layout of the operands each launch received; values
are compared with torch in float64, forward, backward and double backward (the three
convolution primitives are each other's derivatives, so gradgradcheck runs every converted
path).
"""

from __future__ import annotations

import gc
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
from torchconv_ext import functional as TF
from torchconv_ext._ops import _layout

pytestmark = [pytest.mark.interpret, pytest.mark.usefixtures("fresh_weight_cache")]

_LAUNCHERS = ("conv_forward", "conv_backward_input", "conv_backward_weight")


class Launch(NamedTuple):
    name: str
    channels_last: tuple[bool, bool]  # the two operands'
    pointers: tuple[int, int]  # the two operands' data pointers
    result: torch.Tensor  # the tensor the kernels write
    weight: torch.Tensor | None  # the weight it reads (forward and input gradient)


@pytest.fixture
def launches(spy_launchers):
    """A :class:`Launch` for every convolution launch in the test."""
    calls = []

    def record(name, args):
        operands = args[:2]
        calls.append(
            Launch(
                name,
                tuple(_layout.is_channels_last(a) for a in operands),
                tuple(a.data_ptr() for a in operands),
                args[3] if name == "conv_forward" else args[2],
                args[1] if name != "conv_backward_weight" else None,
            )
        )

    spy_launchers(_LAUNCHERS, record)
    return calls


def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.movedim(1, -1).contiguous().movedim(-1, 1)


def _conv_both(x, w, b, **kw):
    """Ours on the Triton backend and torch, forward and both gradients, in float64."""
    nd = x.dim() - 2
    conv = {1: (TF.conv1d, F.conv1d), 2: (TF.conv2d, F.conv2d), 3: (TF.conv3d, F.conv3d)}[nd]
    results = []
    for fn, backend in ((conv[0], "triton"), (conv[1], "torch")):
        xs, ws = x.detach().requires_grad_(), w.detach().requires_grad_()
        with torchconv_ext.use_backend(backend):
            y = fn(xs, ws, b, **kw)
            gy = torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape).sin()
            grads = torch.autograd.grad(y, (xs, ws), gy)
        results.append((y, *grads))
    return results


def _conv_matching_torch(x, w, b, **kw):
    """:func:`_conv_both`, checked to agree in float64; returns ``(ours, torch's)``."""
    ours, theirs = _conv_both(x, w, b, **kw)
    for a, r in zip(ours, theirs):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
    return ours, theirs


@pytest.mark.parametrize(
    "x_shape,w_shape,kw,x_cl,w_cl",
    [
        ((1, 17, 3, 3), (18, 17, 3, 3), dict(padding=1), False, False),
        ((2, 17, 3, 5), (18, 17, 1, 1), {}, False, False),  # the 1×1 GEMM
        ((1, 16, 5, 4), (6, 16, 3, 3), dict(stride=2), True, False),  # CL input, NCHW weight
        ((1, 4, 9), (6, 2, 3), dict(groups=2, padding=2, dilation=2), False, False),  # 1-d
        ((1, 16, 3, 3, 3), (17, 16, 3, 3, 3), dict(padding=1), False, False),  # 3-d
    ],
    ids=["nchw-3x3", "nchw-1x1", "cl-input-nchw-weight", "1d-groups", "3d"],
)
def test_gemm_operands_are_channels_last_and_results_keep_torchs_layout(
    launches, x_shape, w_shape, kw, x_cl, w_cl
):
    torch.manual_seed(0)
    x = torch.randn(x_shape, dtype=torch.float64)
    w = torch.randn(w_shape, dtype=torch.float64)
    x, w = (_cl(x) if x_cl else x), (_cl(w) if w_cl else w)
    b = torch.randn(w_shape[0], dtype=torch.float64)
    ours, theirs = _conv_matching_torch(x, w, b, **kw)
    if x.dim() in (4, 5):  # torch's layout rule (for 1-d there is no channels-last format)
        assert ours[0].stride() == theirs[0].stride()
        assert ours[1].stride() == theirs[1].stride() and ours[2].stride() == theirs[2].stride()
    assert sorted(launch.name for launch in launches) == sorted(_LAUNCHERS)
    assert all(launch.channels_last == (True, True) for launch in launches), launches
    # Positions per image that 4 does not divide: read and stored channels-last, converted.
    activations = [launch.result for launch in launches if launch.name != "conv_backward_weight"]
    assert all(_layout.is_channels_last(t) for t in activations)


@pytest.mark.parametrize(
    "x_shape,w_shape,kw",
    [
        ((2, 3, 7, 6), (5, 3, 3, 3), dict(stride=2, padding=1)),
        ((1, 1, 3, 4, 5), (4, 1, 2, 3, 3), {}),
    ],
    ids=["2d-rgb", "3d-one-channel"],
)
def test_narrow_convolutions_read_their_input_as_given(launches, x_shape, w_shape, kw):
    """Stems pack their input and weight into padded windows themselves: no channels-last
    copies first."""
    torch.manual_seed(0)
    x = torch.randn(x_shape, dtype=torch.float64)
    w = torch.randn(w_shape, dtype=torch.float64)
    ours, theirs = _conv_matching_torch(x, w, None, **kw)
    assert [t.stride() for t in ours] == [t.stride() for t in theirs]
    ptrs = {launch.name: launch.pointers for launch in launches}
    assert ptrs["conv_forward"] == (x.data_ptr(), w.data_ptr())
    assert ptrs["conv_backward_weight"][0] == x.data_ptr()


def test_a_stems_windowed_weight_is_packed_once_per_version(launches):
    """A stem's weight parameter goes to the launch as it is, with its windowed form made once
    per version: not again for the same weight, again after an in-place update."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, 3, 3, 3, dtype=torch.float64))
    with torchconv_ext.use_backend("triton"), torch.no_grad():
        for step in range(4):
            x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
            torch.testing.assert_close(
                TF.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1), rtol=1e-10, atol=1e-10
            )
            if step == 1:
                w.mul_(0.5)
    assert all(launch.pointers[1] == w.data_ptr() for launch in launches)
    assert _layout.weight_cache_info()["packs"] == 2


def test_narrow_outputs_read_their_gradient_as_given(launches):
    """The input gradient of a stride-1 convolution with few output channels reads the output's
    gradient through windows: as it is (no channels-last copy, when no weight gradient wants
    one), with the weight as given and its windowed form made once per version for a
    parameter — after an in-place update, afresh (the third call replays its tape)."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 17, 3, 3, dtype=torch.float64), requires_grad=False)
    with torchconv_ext.use_backend("triton"):
        for step in range(3):
            x = torch.randn(2, 17, 5, 6, dtype=torch.float64, requires_grad=True)
            y = TF.conv2d(x, w, padding=1)
            gy = torch.randn_like(y)
            (gx,) = torch.autograd.grad(y, x, gy)
            (ref,) = torch.autograd.grad(F.conv2d(x, w, padding=1), x, gy)
            torch.testing.assert_close(gx, ref, rtol=1e-10, atol=1e-10)
            if step == 1:
                with torch.no_grad():
                    w.mul_(0.5)  # a new version: the windowed copy is made again
    grads = [launch for launch in launches if launch.name == "conv_backward_input"]
    assert len(grads) == 2
    assert all(g.channels_last[0] is False and g.pointers[1] == w.data_ptr() for g in grads)
    # Per version: the forward's channels-last copy and the input gradient's windowed one.
    assert _layout.weight_cache_info()["packs"] == 4


def test_merged_groups_read_one_block_diagonal_weight_per_version(launches):
    """Groups of a few channels (4 here) merge in the forward and the input gradient: both
    launches get the weight as it is and its block-diagonal form
    (``triton_kernels.merged_weight``), made once per version for a parameter and shared by
    both — after an in-place update, afresh (the third call replays its tape)."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(16, 4, 3, 3, dtype=torch.float64))
    with torchconv_ext.use_backend("triton"):
        for step in range(3):
            x = torch.randn(2, 16, 5, 4, dtype=torch.float64, requires_grad=True)
            y = TF.conv2d(x, w, padding=1, groups=4)
            gy = torch.randn_like(y)
            ours = (y, *torch.autograd.grad(y, (x, w), gy))
            ref = F.conv2d(x, w, padding=1, groups=4)
            for a, b in zip(ours, (ref, *torch.autograd.grad(ref, (x, w), gy)), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
            if step == 1:
                with torch.no_grad():
                    w.mul_(0.5)  # a new version: the block-diagonal copy is made again
    sums = [launch for launch in launches if launch.name != "conv_backward_weight"]
    # (the third call replays its tape: no launcher runs)
    assert [launch.name for launch in sums] == ["conv_forward", "conv_backward_input"] * 2
    assert all(launch.pointers[1] == w.data_ptr() for launch in sums)
    assert _layout.weight_cache_info()["packs"] == 2


def test_depthwise_operands_are_read_as_given(launches):
    """The depthwise kernels read NCHW directly: no conversion pass."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 5, dtype=torch.float64)
    w = torch.randn(8, 1, 3, 3, dtype=torch.float64)
    ours, _ = _conv_matching_torch(x, w, None, padding=1, groups=4)
    ptrs = {launch.name: launch.pointers for launch in launches}
    assert ptrs["conv_forward"] == (x.data_ptr(), w.data_ptr())  # read in place, not copied
    assert ptrs["conv_backward_input"][1] == w.data_ptr()
    assert ptrs["conv_backward_weight"][0] == x.data_ptr()


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transposed"])
def test_depthwise_weights_over_channels_last_are_read_channels_inner(launches, transposed):
    """Over channels-last activations the depthwise kernels load each tap's weights for a
    vector of channels: the forward and the input gradient get the weight with its channels
    innermost, made once per version of a parameter (again after an in-place update) and
    shared by both; float64 results equal torch's. Over NCHW the weight goes as it is."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 1, 3, 3, dtype=torch.float64))
    ours_fn, torch_fn = (TF.conv_transpose2d, F.conv_transpose2d) if transposed else (
        TF.conv2d, F.conv2d
    )  # fmt: skip
    with torchconv_ext.use_backend("triton"):
        for step in range(3):
            x = _cl(torch.randn(2, 8, 5, 6, dtype=torch.float64)).requires_grad_()
            y = ours_fn(x, w, padding=1, groups=8)
            gy = torch.randn_like(y)
            ours = (y, *torch.autograd.grad(y, (x, w), gy))
            ref = torch_fn(x, w, padding=1, groups=8)
            for a, b in zip(ours, (ref, *torch.autograd.grad(ref, (x, w), gy)), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
            if step == 1:
                with torch.no_grad():
                    w.mul_(0.5)
    reads = [launch for launch in launches if launch.name != "conv_backward_weight"]
    # (the third call replays its tape: no launcher runs)
    assert len(reads) == 4
    assert all(launch.weight.stride(0) == 1 for launch in reads)
    assert len({launch.weight.data_ptr() for launch in reads} - {w.data_ptr()}) == 1
    assert _layout.weight_cache_info()["packs"] == 2

    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)  # NCHW: the weight as it is
    with torchconv_ext.use_backend("triton"), torch.no_grad():
        ours_fn(x, w, padding=1, groups=8)
    assert launches[-1].weight is w or launches[-1].weight.data_ptr() == w.data_ptr()


@pytest.mark.parametrize("kernel", [3, 1])
def test_transposed_convolution_with_bias_from_nchw(launches, kernel):
    torch.manual_seed(0)
    y = torch.randn(2, 20, 3, 4, dtype=torch.float64)
    w = torch.randn(20, 6, kernel, kernel, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    stride = 2 if kernel == 3 else 1
    with torchconv_ext.use_backend("triton"):
        ours = TF.conv_transpose2d(y, w, b, stride=stride, padding=kernel // 2)
    ref = F.conv_transpose2d(y, w, b, stride=stride, padding=kernel // 2)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    assert ours.stride() == ref.stride()
    read_as_is = kernel == 1  # the 1×1 GEMM reads NCHW rows of 12 positions as they are
    assert [launch[:2] for launch in launches] == [("conv_backward_input", (not read_as_is, True))]


@pytest.mark.parametrize(
    "kernel,size,straight",
    [(3, (4, 4), True), (3, (4, 3), True), (1, (4, 3), True), (1, (3, 5), False)],
    ids=["3x3-16", "3x3-12", "1x1-12", "1x1-15"],
)
def test_nchw_results_are_stored_straight_where_rows_allow(launches, kernel, size, straight):
    """The tensor-core kernels store the NCHW result and input gradient themselves (no
    channels-last copy converted at the end) when 4 divides the positions per image; the 1×1
    GEMM then also reads the NCHW input and output gradient as they are."""
    torch.manual_seed(0)
    x = torch.randn(2, 17, *size, dtype=torch.float64)
    w = torch.randn(18, 17, kernel, kernel, dtype=torch.float64)
    b = torch.randn(18, dtype=torch.float64)
    ours, theirs = _conv_matching_torch(x, w, b, padding=kernel // 2)
    assert [a.stride() for a in ours] == [r.stride() for r in theirs]
    by_name = {launch.name: launch for launch in launches}
    assert (by_name["conv_forward"].result.data_ptr() == ours[0].data_ptr()) == straight
    assert (by_name["conv_backward_input"].result.data_ptr() == ours[1].data_ptr()) == straight
    read_as_is = kernel == 1 and straight
    assert (by_name["conv_forward"].pointers[0] == x.data_ptr()) == read_as_is
    assert by_name["conv_backward_input"].channels_last == (not read_as_is, True)
    assert by_name["conv_backward_weight"].channels_last == (not read_as_is, not read_as_is)
    assert (by_name["conv_backward_weight"].pointers[0] == x.data_ptr()) == read_as_is


@pytest.mark.parametrize(
    ("size", "stride", "straight"),
    [((8, 8), 2, True), ((8, 6), 2, False), ((8, 8), (2, 1), False)],
    ids=["width-8", "width-6", "stride-1-along-w"],
)
def test_strided_input_gradient_is_stored_in_nchw_rows_or_channels_last(
    launches, size, stride, straight
):
    """Stride 2 along the width: a program computes both column phases of its rows and stores
    them interleaved, whole NCHW rows, where the width is a multiple of 4; other strided input
    gradients (phases of strided rows) are stored channels-last and converted. The forward's
    NCHW result is stored straight either way (16 positions per image)."""
    torch.manual_seed(0)
    x = torch.randn(1, 6, *size, dtype=torch.float64)
    w = torch.randn(4, 6, 3, 3, dtype=torch.float64)
    _conv_matching_torch(x, w, None, stride=stride, padding=1)
    by_name = {launch.name: launch for launch in launches}
    assert by_name["conv_forward"].result.is_contiguous()
    assert by_name["conv_backward_input"].result.is_contiguous() == straight
    assert _layout.is_channels_last(by_name["conv_backward_input"].result) != straight


def test_a_backward_converts_its_incoming_gradient_once(launches):
    """Both gradient primitives of one derivative read the incoming NCHW gradient
    channels-last: it is copied once and both launches read that copy (a convolution's input
    and weight gradients; a transposed convolution's input gradient — a forward convolution of
    it — and weight gradient)."""
    torch.manual_seed(0)
    x = torch.randn(1, 16, 5, 3, dtype=torch.float64)
    w = torch.randn(16, 16, 3, 3, dtype=torch.float64)
    _conv_matching_torch(x, w, None, padding=1)
    by_name = {launch.name: launch for launch in launches}
    assert by_name["conv_backward_input"].channels_last[0]
    assert by_name["conv_backward_input"].pointers[0] == by_name["conv_backward_weight"].pointers[1]

    launches.clear()
    y = torch.randn(1, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(16, 16, 2, 2, dtype=torch.float64, requires_grad=True)
    with torchconv_ext.use_backend("triton"):
        out = TF.conv_transpose2d(y, wt, stride=2)
        gy = torch.randn_like(out)
        grads = torch.autograd.grad(out, (y, wt), gy)
    ref = F.conv_transpose2d(y, wt, stride=2)
    for got, want in zip(grads, torch.autograd.grad(ref, (y, wt), gy), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        assert got.stride() == want.stride()
    backward = [launch for launch in launches if launch.name != "conv_backward_input"]
    assert [launch.name for launch in backward] == ["conv_forward", "conv_backward_weight"]
    copy = backward[0].pointers[0]
    assert backward[0].channels_last[0] and copy != gy.data_ptr()
    assert backward[1].pointers[0] == copy


@pytest.mark.parametrize(
    "kernel,size,channels", [(2, 3, 16), (2, 2, 2), (1, 3, 16), (1, 4, 16), (3, 5, 3)]
)
def test_gradgradcheck_through_the_converted_paths(kernel, size, channels):
    """NCHW input and weight, both backends: the second derivatives run all three primitives
    on converted operands, on NCHW results stored straight (2×2 kernels: 3×3 maps give a 4×4
    result, 2×2 maps a 2×2 input gradient), 1×1 on 4×4 maps, on NCHW operands read as they
    are, and with 2 or 3 channels (and 4 outputs) through the windows of narrow convolutions."""
    torch.manual_seed(0)
    x = torch.randn(1, channels, size, size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, channels, kernel, kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b):
        return TF.conv2d(x, w, b, padding=kernel // 2)

    for backend in ("torch", "triton"):
        with torchconv_ext.use_backend(backend):
            assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=True)
            assert torch.autograd.gradgradcheck(fn, (x, w, b), fast_mode=True)


# --- the weight cache -------------------------------------------------------------------------


def _param(*shape: int) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.randn(*shape, dtype=torch.float64))


def test_a_parameter_is_repacked_once_per_version():
    torch.manual_seed(0)
    w = _param(6, 16, 3, 3)
    x = torch.randn(1, 16, 4, 4, dtype=torch.float64)
    with torchconv_ext.use_backend("triton"), torch.no_grad():
        for _ in range(3):
            y = TF.conv2d(x, w, padding=1)
        assert _layout.weight_cache_info()["packs"] == 1  # inference: packed once
        torch.testing.assert_close(y, F.conv2d(x, w, padding=1), rtol=1e-10, atol=1e-10)
        w.mul_(-2.0)  # an in-place update: a new version
        y = TF.conv2d(x, w, padding=1)
    assert _layout.weight_cache_info()["packs"] == 2
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1), rtol=1e-10, atol=1e-10)


def test_training_repacks_each_weight_once_per_optimizer_step():
    """Forward and input gradient share one repack per step; the optimizer's in-place update
    makes the next step repack, and the trained weights match torch's exactly (float64)."""
    torch.manual_seed(0)
    x = torch.randn(1, 16, 4, 4, dtype=torch.float64)
    target = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    models = []
    for backend in ("triton", "torch"):
        torch.manual_seed(1)
        conv1 = torchconv_ext.nn.Conv2d(16, 16, 3, padding=1).double()
        conv2 = torchconv_ext.nn.Conv2d(16, 4, 1).double()
        opt = torch.optim.SGD([*conv1.parameters(), *conv2.parameters()], lr=0.1, momentum=0.9)
        with torchconv_ext.use_backend(backend):
            for step in range(3):
                xs = x.clone().requires_grad_()  # the input gradient runs too
                loss = F.mse_loss(conv2(torch.tanh(conv1(xs))), target)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if backend == "triton":  # conv2's 1×1 weight is channels-last already
                    assert _layout.weight_cache_info()["packs"] == step + 1
        models.append((conv1, conv2))
    for ours, ref in zip(models[0], models[1]):
        torch.testing.assert_close(ours.weight, ref.weight, rtol=1e-10, atol=1e-12)


class _DataSGD(torch.optim.Optimizer):
    """Plain SGD written as older code writes it: through ``.data`` (no version bump)."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.data.add_(p.grad, alpha=-group["lr"])


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, fused=True),
        lambda ps: torch.optim.Adam(ps, lr=0.1, fused=True),
        lambda ps: _DataSGD(ps, lr=0.1),
    ],
    ids=["fused-sgd", "fused-adam", "data-sgd"],
)
def test_optimizer_steps_that_bump_no_version_are_seen(optimizer):
    """Fused optimizers, and optimizers writing through ``.data``, update parameters without
    bumping their version counters: every optimizer step forgets its parameters' packed copies,
    so training matches torch's exactly (float64)."""
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    results = []
    for backend in ("triton", "torch"):
        torch.manual_seed(1)
        conv = torchconv_ext.nn.Conv2d(3, 4, 3, padding=1).double()
        opt = optimizer(conv.parameters())
        with torchconv_ext.use_backend(backend):
            for _ in range(3):
                opt.zero_grad()
                conv(x).square().sum().backward()
                opt.step()
            results.append((conv.weight.detach().clone(), conv(x).detach()))
    assert _layout.weight_cache_info()["packs"] == 4  # once per step, and once after
    for ours, ref in zip(*results, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_an_optimizer_step_forgets_only_its_own_parameters():
    stepped, kept = _param(6, 16, 3, 3), _param(6, 16, 3, 3)
    x = torch.randn(1, 16, 3, 3, dtype=torch.float64)
    opt = torch.optim.SGD([stepped], lr=0.1)
    with torchconv_ext.use_backend("triton"):
        for w in (stepped, kept):
            TF.conv2d(x, w).sum().backward()
        assert _layout.weight_cache_info()["entries"] == 2
        opt.step()
        assert _layout.weight_cache_info()["entries"] == 1
        for w in (stepped, kept):
            y = TF.conv2d(x, w)
            torch.testing.assert_close(y, F.conv2d(x, w), rtol=1e-10, atol=1e-10)
    assert _layout.weight_cache_info()["packs"] == 3  # the stepped weight once more


def test_a_new_weight_at_a_freed_weights_address_is_not_served_stale():
    """The entry dies with its weight's storage: a new parameter of the same shape, possibly at
    the same address and with the same version, is packed afresh."""
    x = torch.randn(1, 16, 3, 3, dtype=torch.float64)
    with torchconv_ext.use_backend("triton"), torch.no_grad():
        for _ in range(5):
            w = _param(6, 16, 3, 3)
            y = TF.conv2d(x, w, padding=1)
            torch.testing.assert_close(y, F.conv2d(x, w, padding=1), rtol=1e-10, atol=1e-10)
            assert _layout.weight_cache_info()["entries"] == 1
            del w
            gc.collect()
            assert _layout.weight_cache_info()["entries"] == 0


def test_plain_tensors_are_never_cached():
    """Writes through ``.data`` (as gradcheck perturbs its inputs) bypass the version counter,
    so only parameters are cached: a plain weight written that way is read afresh."""
    torch.manual_seed(0)
    w = torch.randn(6, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(1, 16, 3, 3, dtype=torch.float64)
    with torchconv_ext.use_backend("triton"), torch.no_grad():
        TF.conv2d(x, w, padding=1)
        w.data.mul_(3.0)
        y = TF.conv2d(x, w, padding=1)
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1), rtol=1e-10, atol=1e-10)
    assert _layout.weight_cache_info() == {"entries": 0, "hits": 0, "packs": 2}


def test_parameters_made_under_inference_mode_are_never_cached():
    """An inference tensor (a model built or loaded under ``torch.inference_mode()``) has no
    version counter to tell its in-place writes: its weight is repacked on every call, and
    written in place between calls, never read stale (replayed tapes too)."""
    torch.manual_seed(0)
    x = torch.randn(1, 16, 3, 3, dtype=torch.float64)
    with torchconv_ext.use_backend("triton"), torch.inference_mode():
        w = _param(6, 16, 3, 3)
        assert w.is_inference()
        for _ in range(4):
            w.mul_(-2.0)
            y = TF.conv2d(x, w, padding=1)
            torch.testing.assert_close(y, F.conv2d(x, w, padding=1), rtol=1e-10, atol=1e-10)
    assert _layout.weight_cache_info() == {"entries": 0, "hits": 0, "packs": 4}


def test_replayed_lookups_serve_what_a_full_lookup_serves(tapes_on, monkeypatch):
    """A tape's replays look the weight up by what its key fixes (``for_replays``): in-place
    updates, a new parameter of the same shape, an inference tensor on the same tape and the
    cache switched off all get what the full lookup gives them, checked against torch."""
    from triton_kernels import _tape

    torch.manual_seed(0)
    x = torch.randn(1, 16, 3, 3, dtype=torch.float64)

    def check(w: torch.Tensor) -> None:
        torch.testing.assert_close(
            TF.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1), rtol=1e-10, atol=1e-10
        )

    with torchconv_ext.use_backend("triton"), torch.no_grad():
        w = _param(6, 16, 3, 3)
        for _ in range(4):  # recorded at the second call, replayed from the third
            check(w)
        assert _layout.weight_cache_info() == {"entries": 1, "hits": 3, "packs": 1}
        w.mul_(-2.0)  # a new version: the replay repacks once
        check(w)
        check(w)
        assert _layout.weight_cache_info() == {"entries": 1, "hits": 4, "packs": 2}
        for _ in range(2):  # new parameters of the shape (at the same address, perhaps)
            w = _param(6, 16, 3, 3)
            check(w)
            gc.collect()
        assert _layout.weight_cache_info()["packs"] == 4
        with torch.inference_mode():
            frozen = _param(6, 16, 3, 3)
        replayed = _tape.tape_info()["replayed"]
        for _ in range(2):  # no version counter: packed on every call, never cached
            frozen.data.mul_(-1.0)
            check(frozen)
        assert _layout.weight_cache_info()["packs"] == 6
        monkeypatch.setattr(_layout, "ENABLED", False)
        check(w)
        assert _layout.weight_cache_info()["packs"] == 7
        assert _tape.tape_info()["replayed"] == replayed + 3  # (all on the one tape)


def test_clear_weight_cache_after_a_write_through_data():
    w = _param(6, 16, 3, 3)
    x = torch.randn(1, 16, 3, 3, dtype=torch.float64)
    with torchconv_ext.use_backend("triton"), torch.no_grad():
        TF.conv2d(x, w, padding=1)
        w.data.mul_(3.0)  # invisible to the version counter: the documented escape hatch
        torchconv_ext.clear_weight_cache()  # (public)
        assert torchconv_ext.weight_cache_info() == {"entries": 0, "hits": 0, "packs": 0}
        y = TF.conv2d(x, w, padding=1)
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1), rtol=1e-10, atol=1e-10)


def test_cache_is_bounded_and_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(_layout, "CAPACITY", 2)
    weights = [_param(4, 16, 2, 2) for _ in range(3)]
    x = torch.randn(1, 16, 2, 2, dtype=torch.float64)
    with torchconv_ext.use_backend("triton"), torch.no_grad():
        for w in weights:
            TF.conv2d(x, w)
        assert _layout.weight_cache_info() == {"entries": 2, "hits": 0, "packs": 3}
        TF.conv2d(x, weights[-1])  # the most recent one is still there
        assert _layout.weight_cache_info() == {"entries": 2, "hits": 1, "packs": 3}
        monkeypatch.setattr(_layout, "ENABLED", False)  # TORCHCONV_EXT_WEIGHT_CACHE=0
        _layout.clear_weight_cache()
        TF.conv2d(x, weights[-1])
        TF.conv2d(x, weights[-1])
    assert _layout.weight_cache_info() == {"entries": 0, "hits": 0, "packs": 2}


def test_channels_last_weights_need_no_repack():
    w = torch.nn.Parameter(_cl(torch.randn(6, 20, 3, 3, dtype=torch.float64)))
    assert _layout.packed_weight(w) is w
    assert _layout.weight_cache_info()["entries"] == 0


@pytest.mark.parametrize("transposed", [False, True])
def test_one_channel_results_have_atens_strides(transposed):
    """A result or gradient of one channel stored channels-last is already contiguous, yet
    must be returned with contiguous strides on its channel dim as ATen's are (its layout
    rule would read it as channels-last in the next op): outputs, input and weight
    gradients."""
    g = torch.Generator().manual_seed(0)
    op, ref = (TF.conv_transpose2d, F.conv_transpose2d) if transposed else (TF.conv2d, F.conv2d)
    shapes = [((2, 4, 5, 5), (4, 1, 3, 3)), ((2, 1, 5, 5), (1, 4, 3, 3))]
    if not transposed:
        shapes = [((2, 4, 5, 5), (1, 4, 3, 3)), ((2, 1, 5, 5), (4, 1, 3, 3))]
    for x_shape, w_shape in shapes:
        x = torch.randn(x_shape, generator=g, dtype=torch.float64, requires_grad=True)
        w = torch.randn(w_shape, generator=g, dtype=torch.float64, requires_grad=True)
        with torchconv_ext.use_backend("triton"):
            ours = op(x, w, stride=2)
            ours_grads = torch.autograd.grad(ours, (x, w), torch.ones_like(ours))
        theirs = ref(x, w, stride=2)
        their_grads = torch.autograd.grad(theirs, (x, w), torch.ones_like(theirs))
        for a, b in zip((ours, *ours_grads), (theirs, *their_grads)):
            torch.testing.assert_close(a, b)
            assert a.stride() == b.stride(), (x_shape, w_shape, a.shape)


_EMPTY_BATCH_CALLS = {
    "conv": (lambda f, x, w, b: f.conv2d(x, w, b, stride=2), False),
    "conv-relu": (lambda f, x, w, b: _relu(f, f.conv2d, x, w, b, stride=2), False),
    "conv-reflect": (lambda f, x, w, b: _reflect(f, x, w, b), False),
    "transposed": (lambda f, x, w, b: f.conv_transpose2d(x, w, b, stride=2), True),
    "transposed-relu": (lambda f, x, w, b: _relu(f, f.conv_transpose2d, x, w, b, stride=2), True),
}


def _relu(f, op, *args, **kwargs):
    if f is TF:
        return op(*args, **kwargs, activation="relu")
    return F.relu(op(*args, **kwargs))


def _reflect(f, x, w, b):
    if f is TF:
        return TF.conv2d(x, w, b, padding=1, padding_mode="reflect")
    return F.conv2d(F.pad(x, [1] * 4, mode="reflect"), w, b)  # (nn.Conv2d's recipe)


@pytest.mark.interpret
@pytest.mark.parametrize("weight_layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("call", _EMPTY_BATCH_CALLS)
def test_empty_batches_have_atens_strides(call, layout, weight_layout):
    """An empty batch is contiguous in every layout, yet ATen gives its results and gradients
    layouts of their own (a contiguous output, gradients laid out as the operands): ours too
    (a stride-2 transposed result, stored channels-last, kept those strides; a channels-last
    input's gradient came back contiguous)."""
    g = torch.Generator().manual_seed(0)
    op, transposed = _EMPTY_BATCH_CALLS[call]
    x = torch.randn(0, 4, 6, 6, generator=g, dtype=torch.float64)
    w = torch.randn((4, 3, 2, 2) if transposed else (3, 4, 2, 2), generator=g, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    if weight_layout == "channels_last":
        w = w.contiguous(memory_format=torch.channels_last)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    results = {}
    for f in (TF, F):
        operands = [
            t.clone(memory_format=torch.preserve_format).requires_grad_() for t in (x, w, b)
        ]
        with torchconv_ext.use_backend("triton"):
            out = op(f, *operands)
            results[f] = (out, *torch.autograd.grad(out, operands, torch.ones_like(out)))
    for ours, theirs in zip(results[TF], results[F]):
        torch.testing.assert_close(ours, theirs)
        assert ours.stride() == theirs.stride(), ours.shape


@pytest.mark.interpret
@pytest.mark.parametrize("activation", [None, "relu", "sigmoid"])
@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transposed"])
def test_one_channel_results_of_channels_last_inputs_have_torchs_strides(transposed, activation):
    """A channels-last input with one output channel: the result — with an activation, the
    result of torch's pair, whose elementwise op reads the size-1 channel dim as in no order —
    and every gradient have torch's strides. In float32, with channels that ATen's CPU
    convolution hands to oneDNN, whose layouts are cuDNN's (its float64 path computes some
    gradients contiguous: the rule we do not copy, ``test_conv_functional``)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn((16, 1, 3, 3) if transposed else (1, 16, 3, 3), generator=g)
    b = torch.randn(1, generator=g)
    op, ref = (TF.conv_transpose2d, F.conv_transpose2d) if transposed else (TF.conv2d, F.conv2d)
    results = []
    for ours in (True, False):
        operands = [
            t.clone(memory_format=torch.preserve_format).requires_grad_() for t in (x, w, b)
        ]
        with torchconv_ext.use_backend("triton"):
            if ours:
                out = op(*operands, stride=2, activation=activation)
            else:
                out = ref(*operands, stride=2)
                out = out if activation is None else getattr(torch, activation)(out)
            results.append((out, *torch.autograd.grad(out, operands, torch.ones_like(out))))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        assert a.stride() == b.stride(), a.shape


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_an_activated_one_channel_result_has_its_fakes_strides(channels_last, backend):
    """What a compiled graph expects of the fused op (its fake) is what it returns, strides of
    a one-channel result included (the fallback's, torch's activation, had differed too)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    x = torch.randn(2, 16, 6, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    args = (x, torch.randn(1, 16, 3, 3), torch.randn(1), None, "sigmoid", 0.0,
            [1, 1], [0, 0], [0, 0], [1, 1], 1, "zeros")  # fmt: skip
    op = torch.ops.torchconv_ext.conv_act_fwd
    with torchconv_ext.use_backend(backend):
        real = op(*args)
        with FakeTensorMode() as mode:
            fake = op(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args])
    assert fake.stride() == real.stride() == (16, 16, 4, 1)


def test_a_copy_read_on_another_stream_is_recorded_there(monkeypatch):
    """A cached copy read on a stream other than the one it was packed on is recorded on that
    stream (``record_stream``), so dropping it never frees memory a kernel there may still
    read; on its own stream nothing is recorded. (Streams stood in for on the CPU; the GPU
    suite checks the allocator.)"""

    class Copy:
        device = torch.device("cuda", 0)

        def __init__(self):
            self.recorded: list[str] = []

        def record_stream(self, stream):
            self.recorded.append(stream)

    current = {"raw": 7}
    monkeypatch.setattr(_layout, "_raw_stream", lambda index: current["raw"])
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: f"stream {current['raw']}")
    copy = Copy()
    _layout._mark_use_on_stream(copy, packed_on=7, device_index=0)
    assert copy.recorded == []
    current["raw"] = 9
    _layout._mark_use_on_stream(copy, packed_on=7, device_index=0)
    assert copy.recorded == ["stream 9"]
