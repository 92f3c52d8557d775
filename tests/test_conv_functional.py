"""Convolution numerics, both backends, against torch in float64: forward and every gradient."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchconv_ext
from tests.references.conv import reference_conv
from torchconv_ext import functional as TF

CONV = {1: TF.conv1d, 2: TF.conv2d, 3: TF.conv3d}

# (ndim, N, C_in, C_out, spatial, kernel, stride, padding, dilation, groups, padding_mode)
CASES = [
    (1, 2, 3, 4, (9,), (3,), 1, 1, 1, 1, "zeros"),
    (1, 2, 4, 6, (10,), (4,), 3, "same", 2, 2, "reflect"),
    (1, 1, 2, 2, (6,), (2,), 2, 0, 1, 2, "zeros"),  # depthwise
    (2, 2, 3, 5, (7, 6), (3, 3), 1, 1, 1, 1, "zeros"),
    (2, 2, 3, 4, (8, 7), (3, 2), (2, 1), (1, 0), (1, 2), 1, "zeros"),
    (2, 1, 4, 6, (6, 7), (3, 3), 2, "same", 1, 2, "zeros"),  # TF 'same' with stride
    (2, 2, 2, 4, (5, 6), (3, 3), 1, "same", 2, 1, "zeros"),  # torch's 'same'
    (2, 1, 3, 3, (6, 5), (2, 2), 1, "valid", 1, 1, "zeros"),
    (2, 2, 3, 3, (6, 6), (3, 3), 1, 2, 1, 3, "reflect"),  # depthwise + reflect
    (2, 1, 4, 8, (5, 6), (3, 3), 2, 1, 1, 4, "replicate"),  # depthwise, multiplier 2
    (2, 1, 2, 3, (5, 5), (3, 3), 1, (2, 1), 1, 1, "circular"),
    (2, 1, 1, 2, (5, 5), (1, 1), 3, 0, 1, 1, "zeros"),  # stride > kernel
    (2, 1, 20, 5, (4, 4), (3, 3), 1, 1, 1, 1, "zeros"),  # C_in not a multiple of 16
    (3, 1, 2, 3, (4, 5, 4), (2, 3, 2), 1, 1, 1, 1, "zeros"),
    (3, 1, 2, 2, (4, 4, 5), (3, 3, 3), 2, "same", 1, 2, "replicate"),
]


def _ids(case):
    nd, n, ci, co, size, k, s, p, d, g, mode = case
    return f"{nd}d-c{ci}-{co}-k{'x'.join(map(str, k))}-s{s}-p{p}-d{d}-g{g}-{mode}"


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last" and t.dim() in (4, 5):
        fmt = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
        return t.contiguous(memory_format=fmt)
    if layout == "strided":  # a non-contiguous view: every other element of the last dim
        big = torch.repeat_interleave(t, 2, dim=-1)
        return big[..., ::2]
    return t


def make_inputs(case, dtype=torch.float64, layout="contiguous", bias=True, seed=0):
    nd, n, ci, co, size, k, s, p, d, g, mode = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, ci, *size, generator=gen, dtype=torch.float64)
    w = torch.randn(co, ci // g, *k, generator=gen, dtype=torch.float64)
    b = torch.randn(co, generator=gen, dtype=torch.float64) if bias else None
    x = _layout(x.to(dtype), layout).requires_grad_()
    w = w.to(dtype).requires_grad_()
    b = b.to(dtype).requires_grad_() if bias else None
    return x, w, b


def check_against_torch(
    case, backend, dtype=torch.float64, layout="contiguous", bias=True, atol=1e-10, rtol=1e-7
):
    nd, n, ci, co, size, k, s, p, d, g, mode = case
    x, w, b = make_inputs(case, dtype, layout, bias)
    with torchconv_ext.use_backend(backend):
        y = CONV[nd](x, w, b, s, p, d, g, padding_mode=mode)
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_() if bias else None
    ref = reference_conv(x64, w64, b64, s, p, d, g, mode)
    torch.testing.assert_close(y.double(), ref, atol=atol, rtol=rtol)

    gy = torch.randn_like(ref)
    inputs = [x, w] + ([b] if bias else [])
    with torchconv_ext.use_backend(backend):
        grads = torch.autograd.grad(y, inputs, gy.to(dtype))
    refs = torch.autograd.grad(ref, [x64, w64] + ([b64] if bias else []), gy)
    for got, want, name in zip(grads, refs, ["input", "weight", "bias"]):
        torch.testing.assert_close(
            got.double(), want, atol=atol * 10, rtol=rtol, msg=lambda m, n=name: f"grad {n}: {m}"
        )
    return y, grads


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_fallback_matches_torch(case, layout):
    check_against_torch(case, "torch", layout=layout)


@pytest.mark.interpret
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_triton_matches_torch(case):
    layout = "channels_last" if case[0] == 2 and case[-1] == "zeros" else "contiguous"
    check_against_torch(case, "triton", layout=layout, bias=case[9] == 1)


@pytest.mark.interpret
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_triton_layouts(layout):
    check_against_torch(CASES[4], "triton", layout=layout)
    check_against_torch(CASES[8], "triton", layout=layout)


@pytest.mark.interpret
@pytest.mark.parametrize(
    "dtype,atol,rtol", [(torch.float32, 1e-4, 1e-4), (torch.float16, 2e-2, 1e-2)]
)
def test_triton_low_precision(dtype, atol, rtol):
    for case in (CASES[3], CASES[9]):
        check_against_torch(case, "triton", dtype=dtype, atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fallback_dtypes_equal_torch(dtype):
    """On the fallback, ours is torch's own computation: equal in every dtype torch runs."""
    case = CASES[4]
    x, w, b = make_inputs(case, dtype)
    with torchconv_ext.use_backend("torch"):
        y = TF.conv2d(x, w, b, (2, 1), (1, 0), (1, 2))
    torch.testing.assert_close(
        y, torch.nn.functional.conv2d(x, w, b, (2, 1), (1, 0), (1, 2)), atol=0, rtol=0
    )
    assert y.dtype == dtype


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("layout", ["input", "weight", "none"])
def test_output_memory_format_like_aten(backend, nd, layout):
    """Channels-last output when either operand is channels-last (cuDNN's and oneDNN's rule).

    Shapes are ones ATen's CPU convolution sends to oneDNN: for tiny channel counts ATen's CPU
    falls back to a path that always returns contiguous outputs, a heuristic we do not copy.
    """
    x = torch.randn(2, 3, *[6] * nd)
    w = torch.randn(4, 3, *[3] * nd)
    fmt = {2: torch.channels_last, 3: torch.channels_last_3d}.get(nd)
    if fmt is not None and layout == "input":
        x = x.contiguous(memory_format=fmt)
    if fmt is not None and layout == "weight":
        w = w.contiguous(memory_format=fmt)
    with torchconv_ext.use_backend(backend):
        y = CONV[nd](x, w, padding=1)
    ref = getattr(torch.nn.functional, f"conv{nd}d")(x, w, padding=1)
    assert y.stride() == ref.stride()


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize("view", ["crop", "stride", "odd size-1 strides"])
@pytest.mark.parametrize("op", ["conv2d", "conv2d replicate", "conv_transpose2d"])
def test_views_take_the_layout_their_strides_suggest(backend, view, op):
    """ATen reads an operand's layout from the order of its strides
    (``Tensor.suggest_memory_format()``), dense or not: a crop or a strided slice of a
    channels-last tensor is channels-last, and a dense channels-last tensor whose size-1 dim
    has a stride out of that order is not. Results and gradients follow, ours too."""
    cl = torch.randn(2, 4, 8, 12, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    if view == "crop":
        x = cl[..., 1:-1, 2:]
    elif view == "stride":
        x = cl[..., ::2]
    else:  # dense channels-last (C, then W), but the size-1 H's stride is below W's block
        x = torch.randn(24, dtype=torch.float64).as_strided((1, 4, 1, 6), (24, 1, 4, 4))
    x.requires_grad_()
    transposed = op == "conv_transpose2d"
    w = torch.randn(4, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    kwargs = {"stride": 2} if transposed else {"padding": 1}
    if op == "conv2d replicate":
        torch_conv = torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="replicate", bias=False)
        ref = torch_conv._conv_forward(x, w, None)
        kwargs["padding_mode"] = "replicate"
    else:
        ref = getattr(torch.nn.functional, op)(x, w, **kwargs)
    with torchconv_ext.use_backend(backend):
        y = getattr(TF, op.split()[0])(x, w, **kwargs)
    torch.testing.assert_close(y, ref)
    assert y.stride() == ref.stride()
    gy = torch.randn_like(ref)
    for ours, theirs in zip(
        torch.autograd.grad(y, (x, w), gy), torch.autograd.grad(ref, (x, w), gy)
    ):
        torch.testing.assert_close(ours, theirs)
        assert ours.stride() == theirs.stride()


def _dense_with_a_unit_dim_stepping_otherwise(t: torch.Tensor, dim: int, step: int):
    """``t``'s values channels-last, dense, but its size-1 ``dim`` stepping ``step``: what
    ``unsqueeze`` gives (a channels-last image lifted to a batch of one)."""
    cl = t.detach().contiguous(memory_format=torch.channels_last)
    strides = list(cl.stride())
    strides[dim] = step
    return cl.as_strided(cl.shape, strides).requires_grad_()


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize("padding", [0, "same"])
@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("operand", ["lifted input", "unbatched input", "weight"])
def test_operands_dense_but_for_a_size_one_dims_stride(backend, padding, op, operand):
    """ATen's CPU convolutions take an operand dense in their layout for one laid out like a
    new tensor, whatever its size-1 dims' strides: with groups, the weight gradient of a
    channels-last weight is wrong when the input's batch of one steps by its channels (as
    ``x.unsqueeze(0)`` of a channels-last image does; torch's own unbatched convolution
    lifts it so), and such a weight gives wrong input gradients or "grad_weight must be
    contiguous". Ours hands ATen those operands with their layout's own strides, torch's
    functional ops included; the kernels read strides as they are."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 6, 4, generator=gen, dtype=torch.float64)
    kernel = (1, 2) if operand == "weight" else (2, 2)
    w = torch.randn(4, 2, *kernel, generator=gen, dtype=torch.float64)
    reference_x, reference_w = x.clone().requires_grad_(), w.clone().requires_grad_()
    if operand == "weight":  # a 1×2 kernel channels-last, its kernel's height stepping 7
        w = _dense_with_a_unit_dim_stepping_otherwise(w, 2, 7)
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    else:  # a channels-last weight, and the input's batch of one stepping by its channels
        w = w.contiguous(memory_format=torch.channels_last).requires_grad_()
        x = _dense_with_a_unit_dim_stepping_otherwise(x, 0, 4)
    if operand == "unbatched input":  # a channels-last image: (C, H, W) with C fastest
        x = x.detach()[0].requires_grad_()
        reference_x = reference_x.detach()[0].requires_grad_()
    transposed = op == "conv_transpose2d"
    args = (None, 1, padding, 0, 2) if transposed else (None, 1, padding, 1, 2)  # (2 groups)
    gy = None
    results = []  # ours on these operands, then on dense copies ('same' is not torch's)
    for run_on, operands in ((backend, (x, w)), ("torch", (reference_x, reference_w))):
        with torchconv_ext.use_backend(run_on):
            y = getattr(TF, op)(*operands, *args)
            if gy is None:
                gy = torch.randn(y.shape, generator=gen, dtype=y.dtype).requires_grad_()
            grads = torch.autograd.grad(y, operands, gy, create_graph=True)
            v = [torch.ones_like(g) for g in grads]  # second order: through both gradients
            second = torch.autograd.grad(grads, (*operands, gy), v)
        results.append((y, *grads, *second))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs)
    y = results[0][0]
    if padding == 0:  # torch's own forward reads them right: its layout is kept
        assert y.stride() == getattr(torch.nn.functional, op)(x, w, *args).stride()


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("layout", ["input", "weight"])
def test_padding_modes_keep_the_layout_torchs_padding_gives(backend, nd, mode, padding, layout):
    """torch's ``nn.ConvNd`` convolves ``F.pad(input)`` for a padding mode other than zeros,
    even with no padding: the CPU's circular pad returns a contiguous tensor where its
    reflection and replication pads keep a channels-last input — the result's layout follows
    (and a fused activation's or maxout's, whose convolution is the same). So do the gradients:
    the weight's is the convolution's of the padded input, the input's the pad's gradient
    (the input's layout where the pad keeps it, else contiguous)."""
    fmt = {2: torch.channels_last, 3: torch.channels_last_3d}[nd]
    x = torch.randn(2, 8, *[5 if nd == 2 else 4] * nd)  # (3-d: small, for the interpreter)
    w = torch.randn(8, 8, *[3] * nd)
    if layout == "input":
        x = x.contiguous(memory_format=fmt)
    else:
        w = w.contiguous(memory_format=fmt)
    x.requires_grad_()
    w.requires_grad_()
    torch_conv = getattr(torch.nn, f"Conv{nd}d")(8, 8, 3, padding=padding, padding_mode=mode)
    ref = torch_conv._conv_forward(x, w, None)
    with torchconv_ext.use_backend(backend):
        y = CONV[nd](x, w, None, padding=padding, padding_mode=mode)
        fused = CONV[nd](x, w, None, padding=padding, padding_mode=mode, activation="relu")
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)  # (float32: oneDNN's layouts)
    assert y.is_contiguous(memory_format=fmt) == ref.is_contiguous(memory_format=fmt)
    assert fused.stride() == y.stride()
    gy = torch.randn_like(ref)
    grads = torch.autograd.grad(y, (x, w), gy)
    fused_grads = torch.autograd.grad(fused, (x, w), gy * (fused > 0))
    for ours, fused_grad, theirs in zip(grads, fused_grads, torch.autograd.grad(ref, (x, w), gy)):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
        assert ours.is_contiguous(memory_format=fmt) == theirs.is_contiguous(memory_format=fmt)
        assert fused_grad.stride() == ours.stride()


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs MKL-DNN")
def test_mkldnn_operands_go_to_torchs_op_on_the_fallback():
    """MKL-DNN tensors (CPU inference) have no strides: the fallback hands them to torch's op
    as they are, a batch of one too; the primitives that compute on the fallback (adaptive
    pooling) run them untaped (tapes read strides), kernels loaded or not."""
    torchconv_ext._backend.kernels()  # (loaded, eager calls go through tapes)
    x, w, b = torch.randn(1, 16, 6, 6), torch.randn(8, 16, 3, 3), torch.randn(8)
    calls = [
        lambda f, x: f.conv2d(x, w.to_mkldnn(), b.to_mkldnn(), padding=1),
        lambda f, x: f.conv2d(x, w, b, stride=2),
        lambda f, x: f.max_pool2d(x, 3, 2, 1),
        lambda f, x: f.avg_pool2d(x, 2),
        lambda f, x: f.adaptive_avg_pool2d(x, 1),
    ]
    with torchconv_ext.use_backend("torch"):
        for call in calls:
            ours, theirs = call(TF, x.to_mkldnn()), call(torch.nn.functional, x.to_mkldnn())
            assert ours.is_mkldnn
            torch.testing.assert_close(ours.to_dense(), theirs.to_dense())


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_unbatched_and_empty_batch(backend):
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 2, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        torch.testing.assert_close(
            TF.conv2d(x, w, padding=1), torch.nn.functional.conv2d(x, w, padding=1)
        )
        empty = torch.randn(0, 3, 6, 5, dtype=torch.float64, requires_grad=True)
        y = TF.conv2d(empty, w, padding=1)
        assert y.shape == (0, 4, 6, 6)
        y.sum().backward()
        assert empty.grad.shape == empty.shape


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_gradcheck(backend):
    for case in (CASES[1], CASES[5], CASES[10]):
        x, w, b = make_inputs(case)
        nd, *_, s, p, d, g, mode = case
        with torchconv_ext.use_backend(backend):
            # fast_mode checks random projections of the Jacobian: a few kernel launches, not one
            # per input element (each launch is slow under the interpreter).
            assert torch.autograd.gradcheck(
                lambda x, w, b: CONV[nd](x, w, b, s, p, d, g, padding_mode=mode),
                (x, w, b),
                fast_mode=backend == "triton",
            )


@pytest.mark.interpret
def test_triton_weight_grad_is_bitwise_repeatable():
    x, w, _ = make_inputs(CASES[4], torch.float32)
    with torchconv_ext.use_backend("triton"):
        runs = [
            torch.autograd.grad(TF.conv2d(x, w, None, (2, 1), (1, 0), (1, 2)).sum(), w)[0]
            for _ in range(2)
        ]
    assert torch.equal(runs[0], runs[1])


_config = st.fixed_dictionaries(
    {
        "nd": st.integers(1, 3),
        "n": st.integers(1, 2),
        "groups": st.integers(1, 3),
        "cin_per_group": st.integers(1, 3),
        "cout_per_group": st.integers(1, 3),
        "kernel": st.integers(1, 3),
        "stride": st.integers(1, 3),
        "dilation": st.integers(1, 2),
        "padding": st.one_of(st.integers(0, 2), st.sampled_from(["same", "valid"])),
        "mode": st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
        "extra": st.integers(0, 3),
    }
)


def _random_case(c):
    nd = c["nd"]
    span = c["dilation"] * (c["kernel"] - 1) + 1
    size = tuple(max(span, 3) + c["extra"] + i for i in range(nd))  # reflect needs size > padding
    return (
        nd,
        c["n"],
        c["groups"] * c["cin_per_group"],
        c["groups"] * c["cout_per_group"],
        size,
        (c["kernel"],) * nd,
        c["stride"],
        c["padding"],
        c["dilation"],
        c["groups"],
        c["mode"],
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_config)
def test_property_fallback(c):
    check_against_torch(_random_case(c), "torch")


@pytest.mark.interpret
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_config.filter(lambda c: c["nd"] < 3))
def test_property_triton(c):
    check_against_torch(_random_case(c), "triton")
