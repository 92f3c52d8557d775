"""Depthwise convolution launchers vs torch's grouped convolution in float64.

Runs the Triton kernels directly (CUDA, or the CPU interpreter set up by tests/conftest.py). Every
output is NaN-filled before the launch, so an element the kernel fails to write fails the check.
Shapes are tiny on purpose: the interpreter is slow.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

from tests.triton_kernels.launches import launched_kernels
from triton_kernels import conv_depthwise as dw

pytestmark = pytest.mark.interpret

PAD_MODES = ("zeros", "reflect", "replicate", "circular")
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    # One fp16 rounding of an fp32 accumulator is ≤ 2^-11 relative; fp16 accumulation would fail.
    torch.float16: dict(rtol=1e-3, atol=1e-3),
}


class Case(NamedTuple):
    spatial: tuple[int, ...]
    channels: int
    mult: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad_before: tuple[int, ...]
    pad_after: tuple[int, ...]
    dilation: tuple[int, ...]
    batch: int = 2

    @property
    def out_spatial(self) -> tuple[int, ...]:
        return tuple(
            (s + pb + pa - d * (k - 1) - 1) // st + 1
            for s, k, st, pb, pa, d in zip(
                self.spatial,
                self.kernel,
                self.stride,
                self.pad_before,
                self.pad_after,
                self.dilation,
                strict=True,
            )
        )

    def conv_kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.pad_before, dilation=self.dilation)


CASES = {
    "1d": Case((9,), 3, 1, (3,), (1,), (1,), (1,), (1,)),
    "1d_mult2_asym": Case((10,), 3, 2, (3,), (2,), (2,), (1,), (2,)),
    "1d_s2_d3": Case((13,), 2, 1, (3,), (2,), (2,), (1,), (3,)),  # dilation of 1 stride + 1
    "2d": Case((6, 7), 3, 1, (3, 3), (1, 2), (1, 1), (1, 0), (1, 1)),
    "2d_mult2_asym": Case((5, 6), 2, 2, (3, 2), (2, 1), (1, 0), (2, 1), (2, 1)),
    "3d": Case((2, 3, 4), 2, 1, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), batch=1),
    "3d_mult2_asym": Case(
        (4, 4, 5), 2, 2, (2, 3, 3), (1, 2, 2), (0, 1, 2), (1, 0, 1), (1, 1, 2), batch=1
    ),
}
# Stride larger than the (dilated) kernel: some inputs feed no output and get a zero gradient.
GAP_CASES = {
    "1d_gap": Case((11,), 2, 1, (2,), (3,), (1,), (0,), (1,)),
    "2d_gap_mult2": Case((7, 8), 2, 2, (2, 1), (3, 4), (0, 1), (1, 0), (1, 1)),
    # 2 rows at stride 3: the input gradient's third phase along h holds no position
    "2d_gap_empty_phase": Case((2, 9), 2, 1, (1, 3), (3, 2), (0, 1), (0, 1), (1, 1)),
}
LAYOUTS = ("channels_last", "strided")


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _conv_ref(x, w, b, case: Case, pad_mode: str):
    """torch's grouped convolution on an explicitly padded input (handles every mode/asymmetry)."""
    pads = []
    for pb, pa in zip(reversed(case.pad_before), reversed(case.pad_after), strict=True):
        pads += [pb, pa]
    xp = F.pad(x, pads, mode="constant" if pad_mode == "zeros" else pad_mode)
    conv = (F.conv1d, F.conv2d, F.conv3d)[x.dim() - 3]
    return conv(xp, w, b, stride=case.stride, dilation=case.dilation, groups=x.shape[1])


def _relayout(t: torch.Tensor, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(view, base)``: ``t``'s values in the given memory layout; ``base`` owns the storage.

    "strided" interleaves a NaN sentinel after every element (all strides doubled), so a write
    outside the view shows up in ``base[..., 1]``.
    """
    if layout == "contiguous":
        v = t.contiguous()
        return v, v
    if layout == "channels_last":
        nd = t.dim()
        v = t.permute(0, *range(2, nd), 1).contiguous().permute(0, nd - 1, *range(1, nd - 1))
        assert v.shape[1] == 1 or (v.stride(1) == 1 and not v.is_contiguous())
        return v, v
    assert layout == "strided"
    base = torch.full((*t.shape, 2), float("nan"), dtype=t.dtype, device=t.device)
    base[..., 0] = t
    return base[..., 0], base


def _poisoned(shape, dtype, device, layout="contiguous"):
    return _relayout(torch.full(shape, float("nan"), dtype=dtype, device=device), layout)


def _check_untouched(base: torch.Tensor, layout: str):
    if layout == "strided":
        assert base[..., 1].isnan().all(), "kernel wrote outside the output view"


def _inputs(case: Case, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    c, co = case.channels, case.channels * case.mult
    x = torch.randn(case.batch, c, *case.spatial, generator=g, dtype=torch.float64)
    w = torch.randn(co, 1, *case.kernel, generator=g, dtype=torch.float64)
    b = torch.randn(co, generator=g, dtype=torch.float64)
    go = torch.randn(case.batch, co, *case.out_spatial, generator=g, dtype=torch.float64)
    return [t.to(dtype=dtype, device=device) for t in (x, w, b, go)]


def _assert_close(actual, expected, dtype):
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), **TOL[dtype])


def _run_forward(case, pad_mode, dtype, device, layout="contiguous", bias=True):
    x, w, b, _ = _inputs(case, dtype, device)
    x, _ = _relayout(x, layout)
    w, _ = _relayout(w, layout)
    b = _relayout(b.unsqueeze(0), "strided")[0][0] if layout == "strided" else b
    out, base = _poisoned((case.batch, w.shape[0], *case.out_spatial), dtype, device, layout)
    dw.depthwise_conv_forward(
        x, w, b if bias else None, out, pad_mode=pad_mode, **case.conv_kwargs()
    )
    _check_untouched(base, layout)
    ref = _conv_ref(x.double(), w.double(), b.double() if bias else None, case, pad_mode)
    _assert_close(out, ref, dtype)


def _grads_ref(x, w, go, case: Case, pad_mode: str):
    x = x.double().requires_grad_()
    w = w.double().requires_grad_()
    out = _conv_ref(x, w, None, case, pad_mode)
    return torch.autograd.grad(out, (x, w), go.double())


def _run_backward_input(case, dtype, device, layout="contiguous"):
    x, w, _, go = _inputs(case, dtype, device)
    go, _ = _relayout(go, layout)
    w, _ = _relayout(w, layout)
    gi, base = _poisoned(x.shape, dtype, device, layout)
    dw.depthwise_conv_backward_input(go, w, gi, **case.conv_kwargs())
    _check_untouched(base, layout)
    _assert_close(gi, _grads_ref(x, w, go, case, "zeros")[0], dtype)


def _run_backward_weight(case, pad_mode, dtype, device, layout="contiguous"):
    x, w, _, go = _inputs(case, dtype, device)
    x, _ = _relayout(x, layout)
    go, _ = _relayout(go, layout)
    gw, base = _poisoned(w.shape, dtype, device, layout)
    dw.depthwise_conv_backward_weight(x, go, gw, pad_mode=pad_mode, **case.conv_kwargs())
    _check_untouched(base, layout)
    _assert_close(gw, _grads_ref(x, w, go, case, pad_mode)[1], dtype)
    return gw


# ------------------------------------------------------------------------------------------------
# Forward
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("name", CASES)
def test_forward(name, pad_mode, triton_device):
    _run_forward(CASES[name], pad_mode, torch.float64, triton_device)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", CASES)
def test_forward_layouts_no_bias(name, layout, triton_device):
    pad_mode = "reflect" if layout == "strided" else "zeros"
    _run_forward(CASES[name], pad_mode, torch.float64, triton_device, layout, bias=False)


@pytest.mark.parametrize("layout", ("contiguous", "channels_last"))
@pytest.mark.parametrize("dtype", (torch.float32, torch.float16))
def test_forward_low_precision(dtype, layout, triton_device):
    _run_forward(CASES["2d_mult2_asym"], "circular", dtype, triton_device, layout)


# ------------------------------------------------------------------------------------------------
# Grad input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*CASES, *GAP_CASES])
def test_backward_input(name, triton_device):
    _run_backward_input({**CASES, **GAP_CASES}[name], torch.float64, triton_device)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["2d_gap_mult2", "3d_mult2_asym"])
def test_backward_input_layouts(name, layout, triton_device):
    _run_backward_input({**CASES, **GAP_CASES}[name], torch.float64, triton_device, layout)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float16))
def test_backward_input_low_precision(dtype, triton_device):
    _run_backward_input(CASES["2d_mult2_asym"], dtype, triton_device, "channels_last")


def test_backward_input_gap_gets_zeros(triton_device):
    # With stride 3 > kernel 2 every third input column feeds no output: exact zeros, not NaN.
    case = GAP_CASES["1d_gap"]
    _, w, _, go = _inputs(case, torch.float64, triton_device)
    gi, _ = _poisoned((case.batch, case.channels, *case.spatial), torch.float64, triton_device)
    dw.depthwise_conv_backward_input(go, w, gi, **case.conv_kwargs())
    assert (gi[..., 1::3] == 0).all() and not gi.isnan().any()


# ------------------------------------------------------------------------------------------------
# Grad weight
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("name", CASES)
def test_backward_weight(name, pad_mode, triton_device):
    _run_backward_weight(CASES[name], pad_mode, torch.float64, triton_device)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["2d_mult2_asym", "3d_mult2_asym"])
def test_backward_weight_layouts(name, layout, triton_device):
    _run_backward_weight(CASES[name], "replicate", torch.float64, triton_device, layout)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float16))
def test_backward_weight_low_precision(dtype, triton_device):
    _run_backward_weight(CASES["2d_mult2_asym"], "reflect", dtype, triton_device, "channels_last")


@pytest.mark.parametrize("want_split", (False, True))
def test_backward_weight_split_paths(want_split, triton_device):
    # One split writes grad_w directly; several go through the fp32 workspace + torch sum.
    # (Reflect padding keeps these on the positions tiles; the row segments split below.)
    case = Case((40,), 4, 1, (3,), (1,), (1,), (1,), (1,), batch=2 if want_split else 1)
    if not want_split:
        case = case._replace(spatial=(8,))
    m = case.batch * case.out_spatial[0]
    split, _ = dw.backward_weight_split(m, case.channels * case.mult, 3)
    assert (split > 1) == want_split
    for dtype in (torch.float64, torch.float16):
        _run_backward_weight(case, "reflect", dtype, triton_device)


def test_backward_weight_bitwise_deterministic(triton_device):
    case = Case((40,), 4, 2, (3,), (2,), (1,), (2,), (1,))
    m = case.batch * case.out_spatial[0]
    assert dw.backward_weight_split(m, case.channels * case.mult, 3)[0] > 1
    first = _run_backward_weight(case, "circular", torch.float32, triton_device)
    again = _run_backward_weight(case, "circular", torch.float32, triton_device)
    assert torch.equal(first, again)


def test_backward_weight_empty_batch_gives_zeros(triton_device):
    case = CASES["2d"]._replace(batch=0)
    x, w, _, go = _inputs(case, torch.float64, triton_device)
    gw, _ = _poisoned(w.shape, torch.float64, triton_device)
    dw.depthwise_conv_backward_weight(x, go, gw, pad_mode="zeros", **case.conv_kwargs())
    assert (gw == 0).all()


# ------------------------------------------------------------------------------------------------
# Row segments: NCHW rows, unit stride along w, taps within one vector of their output
# ------------------------------------------------------------------------------------------------

# Unit stride and dilation along w, zero padding; strides, dilation and asymmetric padding along
# the other dims; "d16" rows of 16 elements give 8-element (fp16) and 2-element (fp64) vectors.
ROW_CASES = {
    "1d": Case((16,), 3, 1, (3,), (1,), (1,), (1,), (1,)),
    "2d_mult2": Case((5, 12), 2, 2, (3, 5), (2, 1), (1, 2), (2, 2), (2, 1)),
    "2d_asym_w": Case((4, 16), 3, 1, (2, 4), (1, 1), (0, 1), (1, 2), (1, 1)),
    "3d_5taps": Case((3, 4, 16), 2, 1, (1, 3, 5), (1, 2, 1), (0, 1, 2), (0, 1, 2), (1, 1, 1), 1),
    # 2 rows at stride 3: the input gradient's third phase along h holds no row
    "2d_empty_phase": Case((2, 16), 2, 1, (2, 3), (3, 1), (1, 1), (0, 1), (1, 1)),
}
# Dilation along w: taps further apart, the same shifted views.
DILATED_ROW_CASES = {
    "1d_d2": Case((16,), 2, 1, (3,), (1,), (2,), (2,), (2,)),
    "2d_d2_mult2": Case((4, 12), 2, 2, (3, 2), (1, 1), (1, 1), (1, 1), (1, 2)),
    "2d_s2_d2": Case((5, 16), 2, 1, (2, 3), (1, 2), (0, 2), (0, 1), (1, 2)),
}
# Stride 2 along w: the forward and the weight gradient read the rows' two phases, the input
# gradient half-width grad_out vectors under its rows.
STRIDE2_ROW_CASES = {
    "1d_s2": Case((16,), 3, 1, (3,), (2,), (1,), (0,), (1,)),
    "2d_s2_mult2": Case((5, 12), 2, 2, (3, 4), (2, 2), (1, 1), (1, 1), (2, 1)),
    "2d_s2_valid": Case((4, 16), 2, 1, (3, 3), (1, 2), (0, 0), (0, 0), (1, 1)),
}


def _launches(monkeypatch) -> list[str]:
    """Names of the depthwise kernels launched from now on (tuned or not)."""
    return launched_kernels(monkeypatch, dw, (dw._FWD, dw._BWD_INPUT))


# fp64 rows hold 2-element vectors; fp16 rows of 16 elements the widest, 8-element ones.
@pytest.mark.parametrize(
    "name, dtype",
    [(name, torch.float64) for name in ROW_CASES]
    + [("1d", torch.float16), ("3d_5taps", torch.float16)],
)
def test_row_segments_match_torch(name, dtype, monkeypatch, triton_device):
    """The forward, the input gradient (the adjoint, with a transposed convolution's bias) and
    the weight gradient of NCHW rows take the row-segment kernels and match torch."""
    case = ROW_CASES[name]
    names = _launches(monkeypatch)
    _run_forward(case, "zeros", dtype, triton_device)
    _run_backward_input(case, dtype, triton_device)
    _run_backward_weight(case, "zeros", dtype, triton_device)
    x, w, b, go = _inputs(case, dtype, triton_device)
    if case.mult == 1:  # the transposed convolution's bias, added in the kernel
        gi, _ = _poisoned(x.shape, dtype, triton_device)
        dw.depthwise_conv_backward_input(go, w, gi, bias=b, **case.conv_kwargs())
        ref = _grads_ref(x, w, go, case, "zeros")[0] + b.double().view(-1, *[1] * len(case.spatial))
        _assert_close(gi, ref, dtype)
    assert set(names) == {"_conv_depthwise_rows_kernel", "_conv_depthwise_rows_bwd_weight_kernel"}


@pytest.mark.parametrize("dtype", (torch.float64, torch.float16))
@pytest.mark.parametrize("name", STRIDE2_ROW_CASES)
def test_stride2_row_segments_match_torch(name, dtype, monkeypatch, triton_device):
    """At stride 2 along w the forward, the input gradient (with a transposed convolution's
    bias) and the weight gradient take the row-segment kernels and match torch."""
    case = STRIDE2_ROW_CASES[name]
    names = _launches(monkeypatch)
    _run_forward(case, "zeros", dtype, triton_device)
    _run_backward_weight(case, "zeros", dtype, triton_device)
    _run_backward_input(case, dtype, triton_device)
    x, w, b, go = _inputs(case, dtype, triton_device)
    if case.mult == 1:
        gi, _ = _poisoned(x.shape, dtype, triton_device)
        dw.depthwise_conv_backward_input(go, w, gi, bias=b, **case.conv_kwargs())
        ref = _grads_ref(x, w, go, case, "zeros")[0] + b.double().view(-1, *[1] * len(case.spatial))
        _assert_close(gi, ref, dtype)
    rows = "_conv_depthwise_rows_kernel"
    # grad_out rows of odd width have no vectors: the input gradient takes the positions tiles
    adjoint = rows if case.out_spatial[-1] % 2 == 0 else "_conv_depthwise_bwd_input_kernel"
    n_adjoint = 2 if case.mult == 1 else 1
    assert names == [rows, "_conv_depthwise_rows_bwd_weight_kernel"] + [adjoint] * n_adjoint


@pytest.mark.parametrize(
    "name, dtype",
    [(name, torch.float64) for name in DILATED_ROW_CASES] + [("2d_s2_d2", torch.float16)],
)
def test_dilated_row_segments_match_torch(name, dtype, monkeypatch, triton_device):
    """Dilation along w: the forward, input and weight gradients take the row-segment kernels
    (taps within a vector: fp64 rows hold 2 elements) and match torch."""
    case = DILATED_ROW_CASES[name]
    names = _launches(monkeypatch)
    _run_forward(case, "zeros", dtype, triton_device)
    _run_backward_input(case, dtype, triton_device)
    _run_backward_weight(case, "zeros", dtype, triton_device)
    assert set(names) == {"_conv_depthwise_rows_kernel", "_conv_depthwise_rows_bwd_weight_kernel"}


def test_stride2_row_segments_second_order(monkeypatch):
    """gradgradcheck (random projections) of a depthwise convolution at stride 2 on NCHW rows:
    its input gradient, and the gradients of that, run the row kernels."""
    import torchconv_ext
    import torchconv_ext.functional as TF

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 2, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 1, 3, generator=g, dtype=torch.float64, requires_grad=True)
    names = _launches(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        conv = lambda a, b: TF.conv2d(a, b, stride=(1, 2), padding=(0, 1), groups=2)
        assert torch.autograd.gradgradcheck(conv, (x, w), fast_mode=True)
    assert "_conv_depthwise_rows_kernel" in names


@pytest.mark.parametrize("dtype", (torch.float32, torch.float16))
def test_stride2_input_gradient_equals_positions_tiles_bitwise(dtype, monkeypatch, triton_device):
    """At stride 2 the row-segment input gradient sums the same taps in the same order as the
    positions tiles (which channels-last operands take): the same bits."""
    case = STRIDE2_ROW_CASES["2d_s2_mult2"]
    x, w, _, go = _inputs(case, dtype, triton_device)
    names = _launches(monkeypatch)
    results = []
    for layout in ("contiguous", "channels_last"):
        gi = torch.empty(x.shape, dtype=dtype, device=triton_device)
        dw.depthwise_conv_backward_input(_relayout(go, layout)[0], w, gi, **case.conv_kwargs())
        results.append(gi)
    assert names == ["_conv_depthwise_rows_kernel", "_conv_depthwise_bwd_input_kernel"]
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize(
    "case",
    [
        ROW_CASES["2d_mult2"],
        Case((5, 11), 9, 1, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),  # (every fp16 lead)
    ],
    ids=["aligned rows", "rows read from the boundary before them"],
)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float16))
def test_row_segments_equal_positions_tiles_bitwise(case, dtype, monkeypatch, triton_device):
    """Same taps in the same order, a row's lead whatever: the row-segment kernel's bits equal
    the positions tiles' (which channels-last operands take), forward and input gradient."""
    x, w, b, go = _inputs(case, dtype, triton_device)
    names = _launches(monkeypatch)
    results = []
    for layout in ("contiguous", "channels_last"):
        x_in, go_in = _relayout(x, layout)[0], _relayout(go, layout)[0]
        y = torch.empty(go.shape, dtype=dtype, device=triton_device)
        dw.depthwise_conv_forward(x_in, w, b, y, pad_mode="zeros", **case.conv_kwargs())
        gi = torch.empty(x.shape, dtype=dtype, device=triton_device)
        dw.depthwise_conv_backward_input(go_in, w, gi, **case.conv_kwargs())
        results.append((y, gi))
    assert names == ["_conv_depthwise_rows_kernel"] * 2 + [
        "_conv_depthwise_fwd_kernel",
        "_conv_depthwise_bwd_input_kernel",
    ]
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_row_segments_int64_offsets(monkeypatch, triton_device):
    monkeypatch.setattr(dw, "needs_int64", lambda *tensors: True)
    names = _launches(monkeypatch)
    _run_forward(ROW_CASES["3d_5taps"], "zeros", torch.float64, triton_device)
    _run_backward_input(ROW_CASES["2d_mult2"], torch.float64, triton_device)
    _run_backward_weight(ROW_CASES["2d_mult2"], "zeros", torch.float64, triton_device)
    assert set(names) == {"_conv_depthwise_rows_kernel", "_conv_depthwise_rows_bwd_weight_kernel"}


def test_row_segments_take_int64_where_a_row_tile_reaches_two_to_the_31(monkeypatch, triton_device):
    """The row kernel splits its rows by multiply-shift, which holds below 2**31: where a
    phase's rows plus a row tile reach that (the limit lowered here to a small problem's), it
    takes its int64 variant, which divides, and still matches torch; below, it does not."""
    case = ROW_CASES["2d_mult2"]  # (stride 2 along h: the input gradient's phases)
    real_launch, variants = dw.launch, []

    def spy(kernel, grid, args, constexprs):
        variants.append(constexprs["USE_INT64"])
        return real_launch(kernel, grid, args, constexprs)

    monkeypatch.setattr(dw, "launch", spy)
    _run_backward_input(case, torch.float64, triton_device)
    rows = case.batch * case.channels * -(-case.spatial[0] // case.stride[0])  # phase 0's
    monkeypatch.setattr(dw, "INT32_LIMIT", rows + dw.row_tiles(case.spatial[1], 2)[0])
    _run_backward_input(case, torch.float64, triton_device)
    _run_forward(case, "zeros", torch.float64, triton_device)
    assert variants == [False, True, True]


def test_row_segments_weight_gradient_split_and_repeatable(monkeypatch, triton_device):
    """Rows split over several programs per (channel, tap) go through the workspace, in a
    fixed order: two runs agree bit for bit."""
    case = Case((12, 8), 1, 1, (1, 3), (1, 1), (0, 1), (0, 1), (1, 1))
    rows, taps = case.batch * case.out_spatial[0], 3
    assert dw._reduction_split(rows, dw.row_tiles(8, 2)[0], case.channels * taps)[0] > 1
    names = _launches(monkeypatch)
    first = _run_backward_weight(case, "zeros", torch.float32, triton_device)
    again = _run_backward_weight(case, "zeros", torch.float32, triton_device)
    assert set(names) == {"_conv_depthwise_rows_bwd_weight_kernel"}
    assert torch.equal(first, again)


# Rows that no vector divides (odd widths, MobileNetV2's 7×7 maps) of contiguous tensors, one
# output channel per input channel: read from the boundary before each row, its taps shifted by
# its lead. fp64 vectors of 2, fp16 of 8 elements; stride 2 in the forward only (the input
# gradient's stride-2 rows take the positions tiles); rows of 14 keep the aligned kernels.
LEAD_ROW_CASES = {
    "2d_7x7": Case((7, 7), 3, 1, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),
    "2d_14_wide": Case((3, 14), 2, 1, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 3),
    "2d_s2_9_wide": Case((5, 9), 3, 1, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)),
    "1d_valid_13": Case((13,), 3, 1, (2,), (1,), (0,), (0,), (1,)),
    "2d_one_channel": Case((3, 9), 1, 1, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 3),
    "3d_5_wide": Case((2, 3, 5), 2, 1, (2, 3, 3), (1, 1, 1), (1, 1, 1), (0, 1, 1), (1, 1, 1)),
}


def _lead_rows(monkeypatch) -> list[tuple[bool, bool]]:
    """``(ADJOINT, LEAD_ROWS)`` of each row-segment launch from now on."""
    steps = []
    launch = dw.launch

    def spy(kernel, grid, args, constexprs):
        if kernel is dw._conv_depthwise_rows_kernel:
            steps.append((constexprs["ADJOINT"], constexprs["LEAD_ROWS"]))
        return launch(kernel, grid, args, constexprs)

    monkeypatch.setattr(dw, "launch", spy)
    return steps


@pytest.mark.parametrize("dtype", (torch.float64, torch.float16))
@pytest.mark.parametrize("name", LEAD_ROW_CASES)
def test_rows_off_the_vector_boundaries_match_torch(name, dtype, monkeypatch, triton_device):
    """The forward and (at stride 1) the input gradient, with a transposed convolution's bias,
    read rows that start off the vectors' boundaries from the boundary before each, and match
    torch (the neighbouring rows' elements read with a row never reach a result)."""
    case = LEAD_ROW_CASES[name]
    steps = _lead_rows(monkeypatch)
    _run_forward(case, "zeros", dtype, triton_device)
    _run_backward_input(case, dtype, triton_device)
    x, w, b, go = _inputs(case, dtype, triton_device)
    gi, _ = _poisoned(x.shape, dtype, triton_device)
    dw.depthwise_conv_backward_input(go, w, gi, bias=b, **case.conv_kwargs())
    ref = _grads_ref(x, w, go, case, "zeros")[0] + b.double().view(-1, *[1] * len(case.spatial))
    _assert_close(gi, ref, dtype)

    # (rows aligned to 2 elements or more keep the aligned kernel)
    assert steps[0] == (False, case.spatial[-1] % 2 == 1)  # (the forward's src: x)
    if case.stride[-1] == 1:  # (the input gradient's: grad_out)
        assert steps[1:] == [(True, case.out_spatial[-1] % 2 == 1)] * 2


def test_rows_off_the_vector_boundaries_with_channel_multipliers_read_no_leads(
    monkeypatch, triton_device
):
    """Two output channels per input channel: a program's planes would not share their
    leads, so such rows are never read from the boundary before them (forward and input
    gradient), and the results still match torch."""
    case = Case((3, 7), 2, 2, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1))
    steps = _lead_rows(monkeypatch)
    _run_forward(case, "zeros", torch.float16, triton_device)
    _run_backward_input(case, torch.float16, triton_device)
    assert not any(lead_rows for _, lead_rows in steps)


def test_rows_off_the_vector_boundaries_second_order(monkeypatch):
    """gradcheck and gradgradcheck (random projections) through rows of 5 elements read from
    the boundary before each."""
    import torchconv_ext
    import torchconv_ext.functional as TF

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 2, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 1, 3, generator=g, dtype=torch.float64, requires_grad=True)
    steps = _lead_rows(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        conv = lambda a, b: TF.conv2d(a, b, padding=(0, 1), groups=2)
        assert torch.autograd.gradcheck(conv, (x, w))
        assert torch.autograd.gradgradcheck(conv, (x, w), fast_mode=True)
    assert {lead_rows for _, lead_rows in steps} == {True}


@pytest.mark.parametrize(
    "case, pad_mode, layout",
    [
        (ROW_CASES["1d"]._replace(stride=(3,)), "zeros", "contiguous"),  # stride 3 along w
        (ROW_CASES["1d"]._replace(dilation=(3,)), "zeros", "contiguous"),  # fp64: 3 > 2
        (ROW_CASES["1d"], "reflect", "contiguous"),  # padding that is not zeros
        (ROW_CASES["1d"], "zeros", "channels_last"),  # channels innermost
        (ROW_CASES["1d"]._replace(spatial=(15,)), "zeros", "strided"),  # rows off vectors, not
        # contiguous (read from the boundary before them only where the tensor is contiguous)
        (Case((16,), 2, 1, (7,), (1,), (3,), (3,), (1,)), "zeros", "contiguous"),  # fp64: 3 > 2
    ],
)
def test_other_rows_take_the_positions_tiles(case, pad_mode, layout, monkeypatch, triton_device):
    names = _launches(monkeypatch)
    _run_forward(case, pad_mode, torch.float64, triton_device, layout)
    assert names == ["_conv_depthwise_fwd_kernel"]


# ------------------------------------------------------------------------------------------------
# Offsets and argument checks
# ------------------------------------------------------------------------------------------------


def test_int64_offsets_path(monkeypatch, triton_device):
    # Tensors past 2**31 elements do not fit here; force the int64 variant on a small problem.
    monkeypatch.setattr(dw, "needs_int64", lambda *tensors: True)
    case = CASES["3d_mult2_asym"]
    _run_forward(case, "reflect", torch.float64, triton_device, "channels_last")
    _run_backward_input(case, torch.float64, triton_device)
    _run_backward_weight(case, "circular", torch.float64, triton_device)


def test_bad_shapes_raise(triton_device):
    x = torch.randn(1, 3, 5, device=triton_device)
    w = torch.randn(4, 1, 3, device=triton_device)  # 4 output channels: not a multiple of 3
    out = torch.empty(1, 4, 3, device=triton_device)
    with pytest.raises(ValueError):
        dw.depthwise_conv_forward(
            x, w, None, out, stride=(1,), padding=(0,), dilation=(1,), pad_mode="zeros"
        )
    with pytest.raises(ValueError):
        dw.depthwise_conv_forward(
            x, w[:3], None, out[:, :3], stride=(1, 1), padding=(0,), dilation=(1,), pad_mode="zeros"
        )


def test_a_kernel_of_more_than_65535_taps_fits_the_weight_gradients_grid(monkeypatch):
    """Taps go on the first grid axis (2**31 - 1 programs), channel tiles and splits on the
    others (65535): the grid checked, nothing launched."""
    grids = []
    monkeypatch.setattr(dw, "launch", lambda kernel, grid, *args: grids.append(grid))
    taps = 70_000
    x, grad_out = torch.zeros(1, 2, taps), torch.zeros(1, 2, 1)
    grad_w = torch.zeros(2, 1, taps)
    geometry = dict(stride=(1,), padding=(0,), dilation=(1,), pad_mode="zeros")
    dw.depthwise_conv_backward_weight(x, grad_out, grad_w, **geometry)
    assert len(grids) == 1 and grids[0][0] == taps and max(grids[0][1:]) <= 65535, grids
