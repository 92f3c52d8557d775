"""Nearest upsampling Triton launches (interpreter on CPU): the index rule over many
geometries, the power-of-two fast path against the generic one, the int64-offset path and the
backward's tile order, compared with ``references.upsample`` and torch."""

from __future__ import annotations

import pytest
import torch

import torchconv_ext
import triton_kernels.upsample as kernels
from tests.references.upsample import check_against_reference, layout, random_geometries, run
from torchconv_ext import functional as TF

pytestmark = pytest.mark.interpret


def test_index_rule_over_many_geometries(monkeypatch):
    """Hundreds of (size, scale, mode) combinations on 1-d tensors, in one tile each (a wide
    tile keeps the interpreter fast): forward indices and backward ranges are torch's."""
    monkeypatch.setattr(kernels, "_MAX_INNER", 8192)
    monkeypatch.setattr(kernels, "_FWD_TILE", 8192)
    monkeypatch.setattr(kernels, "_BWD_TILE", 8192)
    for n, o, s, exact in random_geometries(120, seed=7, max_size=3000):
        x = torch.arange(n, dtype=torch.float64).view(1, 1, n)
        mode = "nearest-exact" if exact else "nearest"
        kwargs = dict(scale_factor=s) if s > 0 else dict(size=o)
        check_against_reference(x, mode, **kwargs)


def test_fast_path_equals_generic_path(monkeypatch):
    x = layout(torch.randn(2, 3, 3, 5, 4, dtype=torch.float64), "strided")
    out_size, scales = (6, 10, 16), (2.0, 2.0, 4.0)
    assert kernels.fast_factors(x.shape[2:], out_size, (0.5, 0.5, 0.25)) == (2, 2, 4)
    fast = run(x, scale_factor=scales)
    monkeypatch.setattr(kernels, "fast_factors", lambda *args: None)
    generic = run(x, scale_factor=scales)
    assert torch.equal(fast[1], generic[1])
    torch.manual_seed(0)
    go = torch.randn(fast[1].shape, dtype=x.dtype)
    grads = []
    for fn in (lambda *a: (2, 2, 4), lambda *a: None):
        monkeypatch.setattr(kernels, "fast_factors", fn)
        xi = x.detach().requires_grad_()
        with torchconv_ext.use_backend("triton"):
            grads.append(torch.autograd.grad(TF.interpolate(xi, scale_factor=scales), xi, go)[0])
    assert torch.equal(grads[0], grads[1])


def test_fast_path_only_for_exact_power_of_two_factors():
    assert kernels.fast_factors((4, 5), (8, 5), (0.5, 1.0)) == (2, 1)
    assert kernels.fast_factors((4,), (16,), (0.25,)) == (4,)
    assert kernels.fast_factors((4,), (12,), (1 / 3,)) is None  # not a power of two
    assert kernels.fast_factors((10,), (20,), (0.48780488,)) is None  # scale_factor 2.05
    assert kernels.fast_factors((10,), (10,), (0.95238096,)) is None  # scale_factor 1.05


def test_int64_offsets(monkeypatch):
    """The int64 path (chosen for tensors past 2**31 elements) gives the same results."""
    monkeypatch.setattr(kernels, "needs_int64", lambda *tensors: True)
    check_against_reference(torch.randn(2, 3, 5, 4, dtype=torch.float64), scale_factor=2)
    check_against_reference(
        layout(torch.randn(2, 3, 5, 4, dtype=torch.float64), "channels_last"),
        "nearest-exact",
        size=(7, 9),
    )


@pytest.mark.parametrize("factors", [(2, 2), (1, 4), (4, 1), (2, 8)], ids=str)
@pytest.mark.parametrize("memory", ["contiguous", "channels_last"])
def test_integer_backward_equals_generic_backward(monkeypatch, factors, memory):
    """The integer-factor backward (row segments split in registers along w for factors 2 and
    4 on NCHW-like tiles) sums in the generic kernel's order: bitwise equal."""
    torch.manual_seed(0)
    x = layout(torch.randn(2, 3, 5, 7, dtype=torch.float64), memory)
    size = tuple(s * f for s, f in zip(x.shape[2:], factors))
    go = torch.randn(2, 3, *size, dtype=torch.float64)
    assert kernels.fast_factors(x.shape[2:], size, [1 / f for f in factors]) == factors
    grads = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(kernels, "fast_factors", lambda *args: None)
        xi = x.detach().requires_grad_()
        with torchconv_ext.use_backend("triton"):
            y = TF.interpolate(xi, size=size, mode="nearest")
            grads.append(torch.autograd.grad(y, xi, go)[0])
    assert torch.equal(grads[0], grads[1])
    xr = x.detach().requires_grad_()
    ref = torch.autograd.grad(torch.nn.functional.interpolate(xr, size=size), xr, go)[0]
    torch.testing.assert_close(grads[0], ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [(6, 8, 10), (5, 7, 9)], ids=["integer", "generic"])
def test_backward_tiles_follow_the_larger_grad_out(monkeypatch, size):
    """A 3-d channels-last input: torch returns its gradient contiguous while grad_out is
    channels-last and 8 times larger, so the backward tiles channels innermost (vector reads of
    grad_out) and still writes the contiguous gradient torch returns."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 3, 4, 5, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    go = torch.randn(2, 3, *size, dtype=torch.float64)
    go = go.contiguous(memory_format=torch.channels_last_3d)
    orders = []
    launch = kernels.launch

    def spy(kernel, grid, args, constexprs):
        orders.append((kernel.fn.__name__, constexprs["CHANNELS_INNER"]))
        return launch(kernel, grid, args, constexprs)

    monkeypatch.setattr(kernels, "launch", spy)
    grads = []
    for fn, backend in ((TF.interpolate, "triton"), (torch.nn.functional.interpolate, "torch")):
        xi = x.detach().requires_grad_()
        with torchconv_ext.use_backend(backend):
            grads.append(torch.autograd.grad(fn(xi, size=size, mode="nearest"), xi, go)[0])
    ours, ref = grads
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    assert ours.stride() == ref.stride() and ours.is_contiguous()
    backward = [inner for name, inner in orders if "bwd" in name]
    assert backward == [True], orders


@pytest.mark.parametrize(
    "width, memory, dtype, units",
    [
        (34, "contiguous", torch.bfloat16, (2, 4, 4, 2)),  # FPN's 25×34 map: 68-wide rows
        (68, "contiguous", torch.bfloat16, (4, 8, 8, 4)),
        (68, "contiguous", torch.float32, (4, 4, 4, 4)),  # (16 bytes: 4 fp32 elements)
        (7, "contiguous", torch.float64, (1, 2, 2, 1)),
        (34, "strided", torch.bfloat16, (2, 4, 2, 1)),  # (what divides views' odd strides)
        (34, "channels_last", torch.bfloat16, (4, 4, 4, 4)),  # 12 channels innermost
    ],
)
def test_integer_path_passes_rows_in_aligned_units(monkeypatch, width, memory, dtype, units):
    """The integer fast path passes the tile's inner size and the row dims' strides in units of
    the largest power of two (up to 16 bytes) dividing them, so that rows whose length is no
    multiple of 16 elements are still stored (forward) and read (backward) as vectors. The
    results are those of element units, bitwise: torch's forward, and the same gradient."""
    chosen = []
    launch = kernels.launch

    def spy(kernel, grid, args, constexprs):
        chosen.extend(v for k, v in constexprs.items() if k.startswith("UNIT"))
        return launch(kernel, grid, args, constexprs)

    monkeypatch.setattr(kernels, "launch", spy)
    torch.manual_seed(0)
    x = layout(torch.randn(2, 12, 3, width).to(dtype), memory)
    go = layout(torch.randn(2, 12, 6, 2 * width).to(dtype), memory)
    results = []
    for in_units in (True, False):
        if not in_units:  # every unit one element: the strides as they are
            monkeypatch.setattr(kernels, "_in_units", lambda t5, *args: (1, list(t5.stride())))
        xi = x.detach().requires_grad_()
        with torchconv_ext.use_backend("triton"):
            y = TF.interpolate(xi, scale_factor=2)
            results.append((y, torch.autograd.grad(y, xi, go)[0]))
    assert tuple(chosen[:4]) == units  # (forward: input, output; backward: grad_out, grad_in)
    (y, grad), (y_elements, grad_elements) = results
    assert torch.equal(y, torch.nn.functional.interpolate(x, scale_factor=2))
    assert torch.equal(y, y_elements) and torch.equal(grad, grad_elements)
