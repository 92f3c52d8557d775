"""Pooling Triton launches: all levels of a spatial pyramid in one kernel launch, forward and
backward."""

from __future__ import annotations

import pytest
import torch

import torchconv_ext
from tests.triton_kernels.launches import launched_kernels
from torchconv_ext import functional as TF

pytestmark = pytest.mark.interpret


def test_pyramid_is_one_launch(monkeypatch):
    """All levels in one kernel launch, forward and backward."""
    import triton_kernels.pool as kernels

    launches = []
    for name in ("_pool_fwd_kernel", "_pool_bwd_input_kernel", "_global_pool_fwd_kernel"):
        kernel = getattr(kernels, name)

        class Counting:
            def __init__(self, kernel=kernel, name=name):
                self.kernel, self.name = kernel, name

            def __getitem__(self, grid):
                launches.append(self.name)
                return self.kernel[grid]

        monkeypatch.setattr(kernels, name, Counting())
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    with torchconv_ext.use_backend("triton"):
        y = TF.spatial_pyramid_pool(x, (1, 2, 4), "max")
        assert launches == ["_pool_fwd_kernel"]
        y.sum().backward()
    assert launches == ["_pool_fwd_kernel", "_pool_bwd_input_kernel"]


def _launched(monkeypatch) -> list[str]:
    """Names of the pooling kernels launched from now on."""
    import triton_kernels.pool as kernels

    return launched_kernels(monkeypatch, kernels)


def _source_vectors(monkeypatch) -> list[tuple[str, int, bool]]:
    """``(kernel, source elements a vector reads, LEAD_ROWS)`` of each row-taps launch from
    now on: the forward's ``V`` outputs read ``V·stride`` input columns, the backward's ``V``
    inputs ``V / stride`` grad_out columns."""
    import triton_kernels.pool as kernels

    seen = []
    launch = kernels.launch

    def spy(kernel, grid, args, constexprs):
        v, stride = constexprs.get("V"), constexprs.get("STRIDE_W")
        if kernel is kernels._pool_rows_taps_fwd_kernel:
            seen.append((TAPS, v * stride, constexprs["LEAD_ROWS"]))
        elif kernel is kernels._pool_rows_taps_bwd_input_kernel:
            seen.append((TAPS_BACKWARD, v // stride, constexprs["LEAD_ROWS"]))
        return launch(kernel, grid, args, constexprs)

    monkeypatch.setattr(kernels, "launch", spy)
    return seen


def _equal(ours: torch.Tensor, ref: torch.Tensor) -> bool:
    return torch.equal(ours.isnan(), ref.isnan()) and torch.equal(
        ours.nan_to_num(), ref.nan_to_num()
    )


def _awkward(*shape: int, dtype=torch.float64) -> torch.Tensor:
    """Random values with ties, NaNs and all -inf windows, which decide max pooling's indices."""
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=dtype).round(decimals=1)
    flat = x.view(-1)
    flat[torch.randperm(flat.numel())[: flat.numel() // 20]] = float("nan")
    x[0, 0] = float("-inf")
    return x


# (rank, kernel_size, stride, padding, ceil_mode): every one tiles rows along w
ROW_CASES = [
    (1, 2, 2, 0, False),
    (1, 4, 4, 0, True),
    (2, 2, 2, 0, False),
    (2, (3, 2), 2, (1, 0), True),
    (2, (2, 4), (1, 4), 0, True),
    (3, 2, 2, 0, True),
    (3, (3, 1, 2), (2, 1, 2), (1, 0, 0), False),
]


def _forward_backward(pool, x, *args, **kwargs):
    """``pool``'s outputs and the input gradient for a fixed random grad_out."""
    x = x.detach().requires_grad_()
    out = pool(x, *args, **kwargs)
    y = out[0] if isinstance(out, tuple) else out
    grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    (grad,) = torch.autograd.grad(y, x, grad_out)
    return out, grad


def _forward(pool, x, *args, **kwargs):
    return pool(x, *args, **kwargs), None


def _pools_match_torch(monkeypatch, x, args, ceil_mode, kernels, backward):
    """Max pooling (values, indices) and average pooling of ``x`` by every divisor rule in 2-d
    (the default one in 1-d and 3-d: same kernel code) equal torch's in float64, the input
    gradients too with ``backward``; each call launches ``kernels``."""
    rank = x.dim() - 2
    finite = torch.where(x.isfinite(), x, 0.0)
    divisors = [{}, {"count_include_pad": False}, {"divisor_override": 3}] if rank == 2 else [{}]
    run = _forward_backward if backward else _forward

    def pools(module):
        max_pool, avg_pool = (getattr(module, f"{k}_pool{rank}d") for k in ("max", "avg"))
        return run(max_pool, x, *args, ceil_mode=ceil_mode, return_indices=True), [
            run(avg_pool, finite, *args, ceil_mode=ceil_mode, **kw) for kw in divisors
        ]

    names = _launched(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        ((y, idx), grad), averages = pools(TF)
    assert names == kernels * (1 + len(divisors))
    ((ref_y, ref_idx), ref_grad), ref_averages = pools(torch.nn.functional)
    assert _equal(y, ref_y) and torch.equal(idx, ref_idx)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-13, atol=0)
    torch.testing.assert_close(averages, ref_averages, rtol=1e-13, atol=0)


@pytest.mark.parametrize("rank, kernel_size, stride, padding, ceil_mode", ROW_CASES)
def test_row_segments_match_torch(monkeypatch, rank, kernel_size, stride, padding, ceil_mode):
    """Windows that tile contiguous rows along w take the row-segment kernels, whose results
    (values, max indices, input gradients, every divisor rule) equal torch's in float64."""
    shape = {1: (2, 3, 13), 2: (1, 3, 7, 11), 3: (1, 2, 5, 4, 9)}[rank]
    rows = ["_pool_rows_fwd_kernel", "_pool_rows_bwd_input_kernel"]
    args = (kernel_size, stride, padding)
    _pools_match_torch(monkeypatch, _awkward(*shape), args, ceil_mode, rows, backward=True)


def test_row_segments_gradients():
    """gradcheck through both row-segment kernels (max: the forward's indices pick the inputs)."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 2, 8, dtype=torch.float64, requires_grad=True)
    with torchconv_ext.use_backend("triton"):
        assert torch.autograd.gradcheck(lambda t: TF.max_pool2d(t, 2, 2), (x,))
        assert torch.autograd.gradcheck(lambda t: TF.avg_pool2d(t, (1, 4), (1, 4)), (x,))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_row_segments_equal_generic_kernels_bitwise(monkeypatch, dtype):
    """Same taps in the same order: the row-segment kernels' bits equal the generic kernels'
    (which a channels-last copy of the input takes), at low precision too."""
    x = _awkward(2, 3, 8, 12, dtype=dtype)
    finite = torch.where(x.isfinite(), x, 0.0)
    names = _launched(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        rows = [
            _forward_backward(TF.max_pool2d, x, 2, return_indices=True),
            _forward_backward(TF.avg_pool2d, finite, (3, 4)),
        ]
        cl, finite_cl = (t.to(memory_format=torch.channels_last) for t in (x, finite))
        generic = [
            _forward_backward(TF.max_pool2d, cl, 2, return_indices=True),
            _forward_backward(TF.avg_pool2d, finite_cl, (3, 4)),
        ]
    assert (
        names
        == ["_pool_rows_fwd_kernel", "_pool_rows_bwd_input_kernel"] * 2
        + [
            "_pool_fwd_kernel",
            "_pool_bwd_input_kernel",
        ]
        * 2
    )
    ((y, idx), grad), ((y_cl, idx_cl), grad_cl) = rows[0], generic[0]
    assert _equal(y, y_cl) and torch.equal(idx, idx_cl) and torch.equal(grad, grad_cl)
    assert torch.equal(rows[1][0], generic[1][0]) and torch.equal(rows[1][1], generic[1][1])


TAPS = "_pool_rows_taps_fwd_kernel"
TAPS_BACKWARD = "_pool_rows_taps_bwd_input_kernel"
GENERIC = "_pool_fwd_kernel"
GENERIC_BACKWARD = "_pool_bwd_input_kernel"


@pytest.mark.parametrize(
    "call, kernel",
    [
        (lambda x: TF.max_pool2d(x, 3, 2), TAPS),  # overlapping windows at stride 2
        (lambda x: TF.max_pool2d(x, 2, 2, padding=1), TAPS),  # padding along w
        (lambda x: TF.avg_pool2d(x, 3, 1, padding=1), TAPS),  # stride 1
        (lambda x: TF.max_pool2d(x, 3, 3), GENERIC),  # stride 3 along w
        (lambda x: TF.max_pool2d(x, 2, 2, dilation=(1, 2)), GENERIC),  # dilation along w
        (lambda x: TF.avg_pool2d(x, 8, 8), GENERIC),  # 8 taps along w are not split
        (lambda x: TF.max_pool2d(x, (1, 7), 1, (0, 3)), GENERIC),  # taps beyond a vector
        (lambda x: TF.max_pool2d(x.transpose(2, 3), 2, 2), GENERIC),  # rows are strided
        (lambda x: TF.max_pool2d(x.to(memory_format=torch.channels_last), 2, 2), GENERIC),
    ],
)
def test_windows_that_do_not_tile_rows(monkeypatch, call, kernel):
    """Which kernel other windows take: the row-taps kernel for stride 1 or 2 along w with
    taps within a vector (fp64: 2 elements) of their output, else the generic kernel."""
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    names = _launched(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        call(x)
    assert names == [kernel]


# (rank, kernel_size, stride, padding, ceil_mode): stride 1 or 2 along w, windows that overlap
TAPS_CASES = [
    (2, 3, 2, 1, False),  # ResNet's stem pooling
    (2, (2, 3), (1, 2), (0, 1), True),
    (2, (3, 3), 1, 1, False),
    (1, 5, 2, 2, True),
    (3, (1, 3, 3), (1, 1, 2), (0, 1, 1), False),
]


@pytest.mark.parametrize("rank, kernel_size, stride, padding, ceil_mode", TAPS_CASES)
def test_row_taps_match_torch(monkeypatch, rank, kernel_size, stride, padding, ceil_mode):
    """Overlapping windows on NCHW rows (the row-taps forward and backward): values, max
    indices, input gradients and every divisor rule equal torch's in float64, with ties, NaNs
    and all -inf windows."""
    shape = {1: (2, 3, 16), 2: (1, 3, 7, 16), 3: (1, 2, 3, 4, 16)}[rank]
    args = (kernel_size, stride, padding)
    kernels = [TAPS, TAPS_BACKWARD]
    _pools_match_torch(monkeypatch, _awkward(*shape), args, ceil_mode, kernels, backward=True)


# (shape, kernel_size, stride, padding, ceil_mode): contiguous rows of odd widths, which start
# off every vector boundary, read from the boundary before each (float64: 2-element vectors)
LEAD_CASES = [
    ((2, 3, 7, 9), 3, 2, 0, False),  # AlexNet's windows: planes of odd size, two lead classes
    ((1, 5, 6, 11), 3, 2, 1, True),  # planes of even size: one lead class, rows still odd
    ((3, 2, 5, 13), 3, 1, 1, False),  # stride 1
    ((2, 3, 15), 3, 2, 1, True),
    ((3, 1, 3, 9), 3, 2, 1, False),  # one channel: planes a batch apart (a unit dim's stride)
    ((3, 1, 7, 11), 3, 2, 0, False),  # and grad_out planes of odd size: two lead classes
    ((1, 2, 3, 4, 7), (2, 3, 3), (1, 2, 2), (1, 1, 1), False),
]


@pytest.mark.parametrize("shape, kernel_size, stride, padding, ceil_mode", LEAD_CASES)
def test_rows_off_the_vector_boundaries_match_torch(
    monkeypatch, shape, kernel_size, stride, padding, ceil_mode
):
    """Rows of a contiguous input that start off the vectors' boundaries take the row-taps
    forward, each read from the boundary before it with its taps shifted by its lead, and the
    row-taps backward, which reads grad_out (and index) rows so: values, max indices, input
    gradients and every divisor rule equal torch's in float64, with ties, NaNs and all -inf
    windows (the neighbouring rows' elements read with a row never reach a result)."""
    args = (kernel_size, stride, padding)
    kernels = [TAPS, TAPS_BACKWARD]
    _pools_match_torch(monkeypatch, _awkward(*shape), args, ceil_mode, kernels, backward=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("width", [9, 11])
def test_rows_off_the_vector_boundaries_equal_generic_kernel_bitwise(monkeypatch, dtype, width):
    """The taps of rows read from the boundary before them, in the same order: the same bits
    as the generic kernel's (which a channels-last copy takes), 16-byte reads, every lead
    class."""
    x = _awkward(2, 9, 5, width, dtype=dtype)
    finite = torch.where(x.isfinite(), x, 0.0)
    leads = _source_vectors(monkeypatch)
    names = _launched(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        rows = TF.max_pool2d(x, 3, 2, return_indices=True), TF.avg_pool2d(finite, 3, 1, 1)
        cl, finite_cl = (t.to(memory_format=torch.channels_last) for t in (x, finite))
        generic = TF.max_pool2d(cl, 3, 2, return_indices=True), TF.avg_pool2d(finite_cl, 3, 1, 1)
    assert names == [TAPS] * 2 + [GENERIC] * 2
    assert leads == [(TAPS, 16 // x.element_size(), True)] * 2
    assert _equal(rows[0][0], generic[0][0]) and torch.equal(rows[0][1], generic[0][1])
    assert torch.equal(rows[1], generic[1])


def test_rows_off_the_vector_boundaries_gradients(monkeypatch):
    """gradcheck and gradgradcheck through the forward that reads rows from the boundary
    before them (odd widths), max and average."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 2, 5, dtype=torch.float64, requires_grad=True)  # (both lead classes)
    names = _launched(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        max_pool = lambda t: TF.max_pool2d(t, 3, 2, 1)
        assert torch.autograd.gradcheck(max_pool, (x,))
        assert torch.autograd.gradcheck(lambda t: TF.avg_pool2d(t, 3, 1, 1), (x,))
        assert torch.autograd.gradgradcheck(max_pool, (x,), fast_mode=True)
    assert {TAPS, TAPS_BACKWARD} <= set(names)


@pytest.mark.parametrize("width", [9, 16])  # (rows read from the boundary; aligned rows)
def test_row_taps_in_64_bits(monkeypatch, width):
    """The row-taps kernels' int64 variants (tensors past 2**31 elements), forward and input
    gradient, of rows read from the boundary before them and of aligned rows: torch's values,
    indices and gradients in float64."""
    import triton_kernels.pool as kernels

    real_launch = kernels.launch
    variants = []

    def in_64_bits(kernel, grid, args, constexprs):
        if "USE_INT64" in constexprs:
            constexprs = {**constexprs, "USE_INT64": True}
            variants.append((kernel.__name__, constexprs.get("LEAD_ROWS")))
        return real_launch(kernel, grid, args, constexprs)

    monkeypatch.setattr(kernels, "launch", in_64_bits)
    x = _awkward(2, 3, 7, width)
    _pools_match_torch(monkeypatch, x, (3, 2, 1), False, [TAPS, TAPS_BACKWARD], backward=True)
    assert set(variants) == {(TAPS, width % 2 == 1), (TAPS_BACKWARD, width % 2 == 1)}


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("width", [9, 11])
def test_backward_of_rows_off_the_vector_boundaries_equals_generic_kernel_bitwise(
    monkeypatch, dtype, width
):
    """Input rows or grad_out rows of odd widths: the row-taps backward reads each grad_out
    (and index) row from the boundary before it as 16-byte vectors and sums each input's
    outputs in the generic kernel's order (which a channels-last copy takes): the same bits,
    every lead class; a grad_out that is not contiguous takes the generic kernel."""
    x = _awkward(2, 9, 5, width, dtype=dtype)
    finite = torch.where(x.isfinite(), x, 0.0)
    launches = _source_vectors(monkeypatch)
    names = _launched(monkeypatch)
    calls = [(TF.max_pool2d, x, 3, 2), (TF.avg_pool2d, finite, 3, 1, 1)]
    with torchconv_ext.use_backend("triton"):
        rows = [_forward_backward(pool, t, *args) for pool, t, *args in calls]
        generic = [
            _forward_backward(pool, t.to(memory_format=torch.channels_last), *args)
            for pool, t, *args in calls
        ]
        y = TF.max_pool2d(x.detach().requires_grad_(), 3, 2)
        names.clear()
        y.sum().backward()  # (grad_out expanded from one element)
    assert names == [GENERIC_BACKWARD]
    backward = [launch for launch in launches if launch[0] == TAPS_BACKWARD]
    assert backward == [(TAPS_BACKWARD, 16 // x.element_size(), True)] * 2
    for (_, grad), (_, grad_cl) in zip(rows, generic):
        assert torch.equal(grad, grad_cl)


@pytest.mark.parametrize(
    "call, kernel",
    [
        (lambda x: TF.max_pool2d(x, 3, 2, 1), TAPS_BACKWARD),
        (lambda x: TF.avg_pool2d(x, (1, 3), 1, (0, 1)), TAPS_BACKWARD),
        (lambda x: TF.max_pool2d(x, (3, 1), 1, (1, 0)), TAPS_BACKWARD),  # one tap along w
        (lambda x: TF.max_pool2d(x, 3, 3), GENERIC_BACKWARD),  # stride 3 along w
        (lambda x: TF.max_pool2d(x, 2, 1, dilation=(1, 2)), GENERIC_BACKWARD),  # dilation
        (
            lambda x: TF.max_pool2d(x.to(memory_format=torch.channels_last), 3, 2, 1),
            GENERIC_BACKWARD,
        ),  # channels innermost
    ],
)
def test_backward_kernel_choice(monkeypatch, call, kernel):
    """Which kernel the input gradient of windows that do not tile rows takes."""
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    names = _launched(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        y = call(x)
        names.clear()
        (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert names == [kernel]
    x_ref = x.detach().requires_grad_()
    with torchconv_ext.use_backend("torch"):  # torch's own op
        ref = call(x_ref)
    torch.testing.assert_close(grad, torch.autograd.grad(ref, x_ref, torch.ones_like(ref))[0])


def test_row_taps_gradients(monkeypatch):
    """gradcheck and gradgradcheck (random projections: the interpreter is slow) through the
    row-taps kernels at stride 2 and 1."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, 2, 4, dtype=torch.float64, requires_grad=True)
    names = _launched(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        assert torch.autograd.gradcheck(lambda t: TF.max_pool2d(t, 3, 2, 1), (x,))
        assert torch.autograd.gradcheck(lambda t: TF.avg_pool2d(t, (1, 3), 1, (0, 1)), (x,))
        max_pool = lambda t: TF.max_pool2d(t, 3, 2, 1)
        assert torch.autograd.gradgradcheck(max_pool, (x,), fast_mode=True)
    assert set(names) == {TAPS, TAPS_BACKWARD}


def test_row_taps_backward_equals_generic_kernel_bitwise(monkeypatch):
    """The row-taps backward sums each input's outputs in the generic kernel's order: the same
    bits in float32 (4-element vectors, 2-element grad_out vectors at stride 2)."""
    x = _awkward(2, 3, 8, 16, dtype=torch.float32)
    finite = torch.where(x.isfinite(), x, 0.0)
    names = _launched(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        rows = [_forward_backward(TF.max_pool2d, x, 3, 2, 1), _forward_backward(
            TF.avg_pool2d, finite, 3, 1, 1, count_include_pad=False)]  # fmt: skip
        cl, finite_cl = (t.to(memory_format=torch.channels_last) for t in (x, finite))
        generic = [_forward_backward(TF.max_pool2d, cl, 3, 2, 1), _forward_backward(
            TF.avg_pool2d, finite_cl, 3, 1, 1, count_include_pad=False)]  # fmt: skip
    assert names == [TAPS, TAPS_BACKWARD] * 2 + [GENERIC, GENERIC_BACKWARD] * 2
    for (_, grad), (_, grad_cl) in zip(rows, generic):
        assert torch.equal(grad, grad_cl)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_row_taps_equal_generic_kernel_bitwise(monkeypatch, dtype):
    """Same taps in the same order: the row-taps kernel's bits equal the generic kernel's,
    which a channels-last copy takes. At stride 2 a vector of outputs reads one aligned
    16-byte span of source columns (4 float16 outputs over 8 columns here, 2 float32 over 4),
    which one thread holds whole."""
    x = _awkward(2, 3, 8, 16, dtype=dtype)
    finite = torch.where(x.isfinite(), x, 0.0)
    spans = _source_vectors(monkeypatch)
    names = _launched(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        rows = TF.max_pool2d(x, 3, 2, 1, return_indices=True), TF.avg_pool2d(finite, 3, 2, 1)
        cl, finite_cl = (t.to(memory_format=torch.channels_last) for t in (x, finite))
        generic = TF.max_pool2d(cl, 3, 2, 1, return_indices=True), TF.avg_pool2d(finite_cl, 3, 2, 1)
    assert names == [TAPS] * 2 + [GENERIC] * 2
    assert spans == [(TAPS, 16 // x.element_size(), False)] * 2
    assert _equal(rows[0][0], generic[0][0]) and torch.equal(rows[0][1], generic[0][1])
    assert torch.equal(rows[1], generic[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_segments_take_each_tensor_s_rows_in_its_own_units(monkeypatch, dtype):
    """The row-segment kernels pass each tensor's rows in units of its own alignment: the
    forward the input's (its loads) and the output's and indices' (its stores), the backward
    grad_in's (its stores) and grad_out's and the indices' (its loads). 12-element input rows
    and 6-element output rows are 4 and 2 fp32 elements (2 and 2 in fp64), and the stores are as
    wide as the rows allow. Results are those of element units, bitwise, and torch's."""
    import triton_kernels.pool as kernels

    chosen = []
    launch = kernels.launch
    aligns = {
        kernels._pool_rows_fwd_kernel: ("ALIGN", "ALIGN_OUT"),
        kernels._pool_rows_bwd_input_kernel: ("ALIGN_GI", "ALIGN_GO"),
    }

    def spy(kernel, grid, args, constexprs):
        chosen.append(tuple(constexprs[k] for k in aligns[kernel]))
        return launch(kernel, grid, args, constexprs)

    monkeypatch.setattr(kernels, "launch", spy)
    x = _awkward(2, 3, 4, 12, dtype=dtype)
    finite = torch.where(x.isfinite(), x, 0.0)

    def pools(module):
        (y, idx), grad = _forward_backward(module.max_pool2d, x, 2, return_indices=True)
        average, average_grad = _forward_backward(module.avg_pool2d, finite, 2)
        return [((y, idx), grad), ((average,), average_grad)]

    results = []
    for in_units in (True, False):
        if not in_units:  # every unit one element
            monkeypatch.setattr(kernels, "row_alignment", lambda *args: 1)
        with torchconv_ext.use_backend("triton"):
            results.append(pools(TF))
    rows = 4 if dtype == torch.float32 else 2
    assert chosen == [(rows, 2)] * 4 + [(1, 1)] * 4  # (forward, backward; twice)
    ours, elements = results
    for ((y, *idx), grad), ((y1, *idx1), grad1) in zip(ours, elements):
        assert _equal(y, y1) and all(map(torch.equal, idx, idx1)) and torch.equal(grad, grad1)
    for ((y, *idx), grad), ((ref_y, *ref_idx), ref_grad) in zip(ours, pools(torch.nn.functional)):
        assert _equal(y, ref_y) and all(map(torch.equal, idx, ref_idx))
        torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=0)


def test_row_segments_with_unaligned_rows(monkeypatch):
    """Strides that no power of two above 1 divides (a channel slice of odd-sized planes)."""
    x = _awkward(2, 5, 7, 10)[:, 1:4]
    names = _launched(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        y, idx = TF.max_pool2d(x, 2, return_indices=True)
    assert names == ["_pool_rows_fwd_kernel"]
    ref_y, ref_idx = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
    assert _equal(y, ref_y) and torch.equal(idx, ref_idx)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_a_batch_of_2_31_output_positions_is_bounded_in_64_bits(mode, monkeypatch):
    """The windowed kernel bounds its positions by N · output positions: past 2**31 that
    product must be computed in 64 bits (in 32 it wraps negative and masks every position
    off). Its first program is launched with a batch size that large, over a real first image
    (nothing past it is read or written)."""
    import triton_kernels.pool as kernels

    real_launch = kernels.launch

    def first_program_of_a_huge_batch(kernel, grid, args, kwargs):
        assert kernel is kernels._pool_fwd_kernel
        positions = 8 * 8  # (the output's per image)
        assert kwargs["BLOCK_P"] <= positions  # (so the first program stays in the first image)
        args = (*args[:4], 2**31 // positions + 1, *args[5:])
        real_launch(kernel, (1, *grid[1:]), args, {**kwargs, "USE_INT64": True})

    monkeypatch.setattr(kernels, "launch", first_program_of_a_huge_batch)
    x = torch.randn(1, 4, 16, 16, dtype=torch.float64).to(memory_format=torch.channels_last)
    out = torch.full((1, 4, 8, 8), float("nan"), dtype=x.dtype).to(
        memory_format=torch.channels_last
    )
    indices = torch.full(out.shape, -1, dtype=torch.int64).to(memory_format=torch.channels_last)
    geometry = dict(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0), padding_end=(0, 0))
    kernels.pool_forward(x, out, indices, mode=mode, dilation=(1, 1), **geometry)
    expected = getattr(torch.nn.functional, f"{mode}_pool2d")(x, 2)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_pyramid_levels_inside_a_graph_capture_are_written_by_launches(monkeypatch):
    """A CUDA graph's capture cannot copy from the host: there the levels are written by fill
    launches (which the graph records) and not kept; outside it they are uploaded once."""
    import triton_kernels.pool as kernels

    monkeypatch.setattr(kernels, "_uploaded_levels", {})
    monkeypatch.setattr(kernels, "_capturing", lambda device: True)

    def no_host_copy(*args, **kwargs):
        raise AssertionError("a copy from the host inside a capture")

    with monkeypatch.context() as m:
        m.setattr(kernels.torch, "tensor", no_host_copy)
        written = kernels._levels_tensor((1, 2, 4), torch.device("cpu"))
    assert written.tolist() == [1, 2, 4] and written.dtype == torch.int32
    assert not kernels._uploaded_levels
    monkeypatch.setattr(kernels, "_capturing", lambda device: False)
    uploaded = kernels._levels_tensor((1, 2, 4), torch.device("cpu"))
    assert kernels._levels_tensor((1, 2, 4), torch.device("cpu")) is uploaded


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_an_input_gradient_of_2_31_positions_is_bounded_in_64_bits(mode, monkeypatch):
    """The input gradient bounds its positions by N · input positions, which past 2**31 must be
    computed in 64 bits: its first program is launched with a batch size that large, over a
    real first image (nothing past it is read or written)."""
    import triton_kernels.pool as kernels

    real_launch = kernels.launch
    positions = 8 * 8  # (the input's per image)

    def first_program_of_a_huge_batch(kernel, grid, args, kwargs):
        assert kernel is kernels._pool_bwd_input_kernel
        assert kwargs["BLOCK_P"] <= positions and grid[1] == 1  # (the whole first image)
        args = (*args[:4], 2**31 // positions + 1, *args[5:])
        real_launch(kernel, (1, *grid[1:]), args, {**kwargs, "USE_INT64": True})

    monkeypatch.setattr(kernels, "launch", first_program_of_a_huge_batch)
    x = torch.randn(1, 4, 8, 8, dtype=torch.float64).to(memory_format=torch.channels_last)
    x.requires_grad_()
    pool = getattr(torch.nn.functional, f"adaptive_{mode}_pool2d")
    y, indices = pool(x, 3, return_indices=True) if mode == "max" else (pool(x, 3), None)
    grad_out = torch.randn_like(y)
    (expected,) = torch.autograd.grad(y, x, grad_out)
    grad_in = torch.full_like(x, float("nan")).detach()
    kernels.adaptive_pool_backward(grad_out, indices, grad_in, mode=mode)
    torch.testing.assert_close(grad_in, expected, atol=1e-12, rtol=1e-12)


GLOBAL_BACKWARD = "_global_pool_bwd_kernel"


def _laid_out(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x`` contiguous, channels-last (channels innermost, any rank) or with strided planes."""
    if layout == "channels_last":
        return x.movedim(1, -1).contiguous().movedim(-1, 1)
    if layout == "strided":
        return torch.cat([x, x], dim=-1)[..., ::2]
    return x


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_global_pooling_gradient_matches_torch(monkeypatch, rank, mode, layout):
    """The gradient of adaptive pooling to one element per plane is written in the input
    gradient's memory order by its own kernel: equal to torch's in float64 (max: ties, NaNs and
    an all -inf plane pick the forward's index), in torch's layout, whatever the input's."""
    shape = {1: (2, 3, 7), 2: (2, 3, 5, 7), 3: (2, 3, 3, 4, 5)}[rank]
    x = _laid_out(_awkward(*shape), layout)
    if mode == "avg":
        x = torch.where(x.isfinite(), x, 0.0)
    pool = f"adaptive_{mode}_pool{rank}d"
    names = _launched(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        _, grad = _forward_backward(getattr(TF, pool), x, 1)
    assert names[1:] == [GLOBAL_BACKWARD]
    _, expected = _forward_backward(getattr(torch.nn.functional, pool), x, 1)
    assert torch.equal(grad, expected) and grad.stride() == expected.stride()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_global_pooling_gradient_equals_generic_kernel_bitwise(monkeypatch, mode, dtype):
    """The global kernel divides each plane's gradient by the plane's size as the generic
    gather does (a division, not a product by the reciprocal): the same bits in every dtype."""
    import triton_kernels.pool as kernels

    x = torch.randn(2, 5, 7, 7, dtype=dtype).to(memory_format=torch.channels_last)
    pool = getattr(TF, f"adaptive_{mode}_pool2d")
    with torchconv_ext.use_backend("triton"):
        _, grad = _forward_backward(pool, x, 1)
        monkeypatch.setattr(kernels, "_global_backward", lambda *args: False)
        names = _launched(monkeypatch)
        _, generic = _forward_backward(pool, x, 1)
    assert names[1:] == ["_pool_bwd_input_kernel"]
    assert torch.equal(grad, generic)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_global_pooling_gradient_into_other_strides(monkeypatch, mode):
    """The launcher writes any ``grad_in`` it is given: the global kernel where that is dense
    in either order, else the generic gather (planes with gaps between their rows)."""
    import triton_kernels.pool as kernels

    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    pool = getattr(torch.nn.functional, f"adaptive_{mode}_pool2d")
    y, indices = pool(x, 1, return_indices=True) if mode == "max" else (pool(x, 1), None)
    grad_out = torch.randn_like(y)
    (expected,) = torch.autograd.grad(pool(x.requires_grad_(), 1), x, grad_out)
    for grad_in, kernel in [
        (torch.full_like(x, float("nan")), GLOBAL_BACKWARD),
        (torch.full_like(x, float("nan")).permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1),
         "_pool_bwd_input_kernel"),  # (positions innermost by width: w, then c, then h)
        (torch.full((2, 3, 4, 12), float("nan"), dtype=x.dtype)[..., ::2],
         "_pool_bwd_input_kernel"),
    ]:  # fmt: skip
        names = _launched(monkeypatch)
        kernels.adaptive_pool_backward(grad_out, indices, grad_in, mode=mode)
        assert names == [kernel]
        torch.testing.assert_close(grad_in, expected, atol=0, rtol=0)
        monkeypatch.undo()


def test_global_pooling_gradient_in_64_bits(monkeypatch):
    """Past 2**31 elements of the input gradient (less one program's block), the global
    kernel's flat indices are int64; the int64 path computes the same gradient."""
    import triton_kernels.pool as kernels

    chosen = []
    monkeypatch.setattr(kernels, "launch", lambda kernel, grid, args, kw: chosen.append(kw))
    block = kernels.GLOBAL_BACKWARD_BLOCK
    for elements in (2**31 - block, 2**31 - block - 1):
        grad_in = torch.empty(elements, 1, 1, device="meta")
        grad_out = torch.empty(elements, 1, 1, device="meta")
        assert kernels._global_backward(grad_out[..., 0], None, grad_in, "avg")
    # one plane of 2**31 positions: past what a fast divisor divides (int64 needs none)
    grad_in = torch.empty(1, 1, 2**31, device="meta")
    assert kernels._global_backward(torch.empty(1, 1, device="meta"), None, grad_in, "avg")
    assert [kw["USE_INT64"] for kw in chosen] == [True, False, True]
    monkeypatch.undo()

    real_launch = kernels.launch
    monkeypatch.setattr(
        kernels, "launch", lambda k, grid, a, kw: real_launch(k, grid, a, {**kw, "USE_INT64": True})
    )
    for mode in ("max", "avg"):
        x = _laid_out(torch.randn(2, 3, 5, 7, dtype=torch.float64), "channels_last")
        pool = getattr(TF, f"adaptive_{mode}_pool2d")
        with torchconv_ext.use_backend("triton"):
            _, grad = _forward_backward(pool, x, 1)
        _, expected = _forward_backward(getattr(torch.nn.functional, pool.__name__), x, 1)
        assert torch.equal(grad, expected)


def _global_launches(monkeypatch) -> list[dict]:
    """The keyword arguments of every global forward launched from now on (and run)."""
    import triton_kernels.pool as kernels

    real_launch, launches = kernels.launch, []

    def recording(kernel, grid, args, kwargs):
        if kernel is kernels._global_pool_fwd_kernel:
            launches.append(kwargs)
        real_launch(kernel, grid, args, kwargs)

    monkeypatch.setattr(kernels, "launch", recording)
    return launches


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("sizes", [(17,), (7, 7), (3, 3, 3)])
def test_global_pooling_reads_unaligned_planes_from_aligned_boundaries(
    monkeypatch, sizes, mode, dtype
):
    """Dense planes of 16 or more elements, not a multiple of 16, are read from the aligned
    boundary at or before each (the previous plane's tail loaded and left out): values equal to
    torch's (max: its indices too, over ties, NaNs and an all -inf plane; avg: to rounding)."""
    x = _awkward(3, 5, *sizes, dtype=dtype)
    if mode == "avg":
        x = torch.where(x.isfinite(), x, 0.0)
    rank = len(sizes)
    ours = getattr(TF, f"adaptive_{mode}_pool{rank}d")
    theirs = getattr(torch.nn.functional, ours.__name__)
    kwargs = {"return_indices": True} if mode == "max" else {}
    launches = _global_launches(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        got = ours(x, 1, **kwargs)
    assert [kw["ALIGN_DOWN"] for kw in launches] == [True]
    want = theirs(x, 1, **kwargs)
    if mode == "max":
        assert _equal(got[0], want[0]) and torch.equal(got[1], want[1])
    else:
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "shape, layout",
    [((2, 3, 4, 4), "contiguous"), ((2, 3, 3, 5), "contiguous"), ((2, 3, 7, 7), "channels_last"),
     ((2, 3, 7, 7), "strided")],
)  # fmt: skip
def test_global_pooling_reads_other_planes_in_place(monkeypatch, shape, layout):
    """Planes already aligned (16 elements), too small to gain (15) or not dense are read as
    they are."""
    x = _laid_out(torch.randn(*shape, dtype=torch.float64), layout)
    launches = _global_launches(monkeypatch)
    with torchconv_ext.use_backend("triton"):
        got = TF.global_avg_pool(x)
    assert [kw["ALIGN_DOWN"] for kw in launches] == [False]
    torch.testing.assert_close(got, x.mean((2, 3)))


def test_global_pooling_past_the_planes_in_64_bits(monkeypatch):
    """Read from aligned boundaries, offsets reach past the last element by up to a tile: an
    input within that of 2**31 elements takes 64-bit offsets; the 64-bit path computes the same
    values."""
    import triton_kernels.pool as kernels

    chosen = []
    monkeypatch.setattr(kernels, "launch", lambda kernel, grid, args, kw: chosen.append(kw))
    tile = kernels._global_tiles(False, 1, 49 + 15)[0]  # (positions, for planes of 49)
    reach = 15 + tile
    for planes in (-(-(2**31 - reach) // 49), (2**31 - reach) // 49):
        x = torch.empty(planes, 1, 7, 7, device="meta")
        kernels._global_forward(x, torch.empty(planes, 1, device="meta"), None, "avg")
    assert [(kw["ALIGN_DOWN"], kw["BLOCK_R"], kw["USE_INT64"]) for kw in chosen] == [
        (True, tile, True), (True, tile, False)
    ]  # fmt: skip
    monkeypatch.undo()

    real_launch = kernels.launch
    monkeypatch.setattr(
        kernels, "launch", lambda k, grid, a, kw: real_launch(k, grid, a, {**kw, "USE_INT64": True})
    )
    x = _awkward(3, 5, 7, 7)
    with torchconv_ext.use_backend("triton"):
        got_max, got_idx = TF.adaptive_max_pool2d(x, 1, return_indices=True)
        got_avg = TF.global_avg_pool(torch.where(x.isfinite(), x, 0.0))
    want_max, want_idx = torch.nn.functional.adaptive_max_pool2d(x, 1, return_indices=True)
    assert _equal(got_max, want_max) and torch.equal(got_idx, want_idx)
    torch.testing.assert_close(got_avg, torch.where(x.isfinite(), x, 0.0).mean((2, 3)))
