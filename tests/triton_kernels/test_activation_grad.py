"""The fused activation's gradient, read off its output (``activation_grad_from_output``:
torch's backward ops' values bit for bit) or off the pre-activation ``z``
(``activation_grad_from_input``: torch's values to rounding, its exponentials and error
function being others), under the interpreter on CPU: at special values, in every layout pair
the convolutions' backward takes (the transposition to channels-last included), every element
written; the layouts it refuses; and the eager backwards that launch it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
import triton_kernels
from torchconv_ext import functional as TF
from triton_kernels.activation_grad import (
    FROM_INPUT,
    activation_grad_from_input,
    activation_grad_from_output,
    launchable,
)

pytestmark = pytest.mark.interpret

ATEN = torch.ops.aten


def _opmath(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


#: Each activation: torch's own backward op of its result, and the slope where it takes one.
REFERENCES = {
    "relu": lambda g, y, a: ATEN.threshold_backward(g, y, 0),
    # (CUDA's kernel and ATen's scalar CPU loop: 0 outside (0, 6), else ``g`` — at a NaN ``y``
    # too, where ATen's vectorised CPU loop gives 0)
    "relu6": lambda g, y, a: torch.where((y <= 0) | (y >= 6), 0.0, g),
    "leaky_relu": lambda g, y, a: ATEN.leaky_relu_backward(g, y, a, True),
    # (as CUDA's kernel: in float32 for 16-bit tensors, where ATen's CPU loop for float16
    # rounds every step)
    "sigmoid": lambda g, y, a: (_opmath(g) * (1 - _opmath(y)) * _opmath(y)).to(g.dtype),
}
SPECIAL = [0.0, -0.0, 6.0, -6.0, 1e-30, -1e-30, 0.5, 1.0, float("inf"), float("-inf"), float("nan")]
#: Each activation: torch's own backward op of its input ``z``, and its argument where it takes one.
FROM_Z = {
    "leaky_relu": (lambda g, z, a: ATEN.leaky_relu_backward(g, z, a, False), -0.2),
    "elu": (lambda g, z, a: ATEN.elu_backward(g, a, 1, 1, False, z), 0.7),
    "gelu": (lambda g, z, a: ATEN.gelu_backward(g, z), 0.0),
    "gelu_tanh": (lambda g, z, a: ATEN.gelu_backward(g, z, approximate="tanh"), 0.0),
    "silu": (lambda g, z, a: ATEN.silu_backward(g, z), 0.0),
    "hardswish": (lambda g, z, a: ATEN.hardswish_backward(g, z), 0.0),
    "hardsigmoid": (lambda g, z, a: ATEN.hardsigmoid_backward(g, z), 0.0),
    "mish": (lambda g, z, a: ATEN.mish_backward(g, z), 0.0),
}
#: Where each formula turns: ±3 (hard swish and sigmoid), 20 (Mish's threshold) and beyond.
TURNS = [3.0, -3.0, 20.0, -20.0, 21.0, 2.9, -2.9, 40.0, -40.0, 90.0, -90.0]


def _layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if not channels_last:
        return t.contiguous()
    formats = {3: None, 4: torch.channels_last, 5: torch.channels_last_3d}
    if t.dim() == 3:  # (N, C, L) channels-last: the channels innermost
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    return t.contiguous(memory_format=formats[t.dim()])


def _values(shape, dtype, seed):
    """Random values with :data:`SPECIAL` among them (the first elements)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g, dtype=torch.float64) * 4
    special = torch.tensor(SPECIAL, dtype=torch.float64)
    n = min(special.numel(), t.numel())
    t.view(-1)[:n] = special[:n]
    return t.to(dtype)


@pytest.mark.parametrize("activation", list(REFERENCES))
# (bfloat16: the interpreter rounds its conversions otherwise than a GPU; float16 it rounds alike)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize(
    "shape", [(2, 5, 7), (2, 70, 3, 5), (1, 3, 2, 3, 4)], ids=["1d", "2d", "3d"]
)
@pytest.mark.parametrize("layouts", ["nchw-cl", "cl-cl", "nchw-nchw", "cl-nchw"])
def test_matches_torchs_backward_op_bit_for_bit(activation, dtype, shape, layouts):
    alpha = 0.2 if activation == "leaky_relu" else 0.0
    source, target = (part == "cl" for part in layouts.split("-"))
    g = _layout(_values(shape, dtype, 1), source)
    y = _layout(_values(shape, dtype, 2), source)
    # A y off the activation's range still goes through the same formula (torch's op takes any).
    expected = REFERENCES[activation](g, y, alpha)
    out = _layout(torch.full(shape, float("nan"), dtype=dtype), target)
    activation_grad_from_output(g, y, out, activation=activation, alpha=alpha)
    if dtype == torch.float64 and activation == "leaky_relu":
        # (the slope in two float32 parts: a product each, within an ulp of torch's one)
        torch.testing.assert_close(out, expected, equal_nan=True)
    else:
        torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(out.isnan(), expected.isnan())  # (every element written: poisoned first)


@pytest.mark.parametrize("activation", list(FROM_Z))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("layouts", ["nchw-cl", "cl-nchw"])
def test_from_the_pre_activation_matches_torchs_backward_op(activation, dtype, layouts):
    """Against torch's op in the computation's dtype (float32 for float16, as CUDA's opmath),
    then rounded: special values and the formulas' turning points first, NaN where torch's."""
    reference, alpha = FROM_Z[activation]
    source, target = (part == "cl" for part in layouts.split("-"))
    shape = (2, 70, 3, 5)
    g = _layout(_values(shape, dtype, 1), source)
    z = _values(shape, torch.float64, 2)
    z.view(-1)[len(SPECIAL) : len(SPECIAL) + len(TURNS)] = torch.tensor(TURNS, dtype=z.dtype)
    z = _layout(z.to(dtype), source)
    expected = reference(_opmath(g), _opmath(z), alpha).to(dtype)
    out = _layout(torch.full(shape, float("nan"), dtype=dtype), target)
    activation_grad_from_input(g, z, out, activation=activation, alpha=alpha)
    torch.testing.assert_close(out, expected, equal_nan=True)
    assert torch.equal(out.isnan(), expected.isnan())  # (every element written: poisoned first)


def test_every_activation_needing_its_pre_activation_is_covered():
    from torchconv_ext import _activation

    needing = {k for k in _activation.KINDS if not _activation.from_output(k, -1.0)}
    assert set(FROM_INPUT) == set(FROM_Z) == needing - {"prelu"}  # (PReLU: torch's op)


def test_the_layouts_it_takes():
    x = torch.empty(2, 3, 4, 5)
    assert launchable(x, x.contiguous(memory_format=torch.channels_last))
    assert launchable(x, torch.empty(2, 3, 1, 1))  # (one position)
    assert launchable(x, torch.empty(2, 3, 4, 10)[..., ::2])  # positions two apart
    assert not launchable(x, x.transpose(2, 3).contiguous().transpose(2, 3))
    assert not launchable(x, torch.empty(2, 3, 4, 6)[..., :5])  # rows with gaps between them


def test_refusals_name_the_argument():
    g = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="activation must be one of"):
        activation_grad_from_output(g, g, g.clone(), activation="silu")
    with pytest.raises(ValueError, match="activation_grad_from_input: activation must be one of"):
        activation_grad_from_input(g, g, g.clone(), activation="prelu")
    with pytest.raises(ValueError, match="one shape"):
        activation_grad_from_output(g, g, torch.empty(1, 2, 3, 5), activation="relu")
    with pytest.raises(ValueError, match="one run of one stride"):
        activation_grad_from_output(
            g, g, torch.empty(1, 2, 4, 3).transpose(2, 3), activation="relu"
        )


def _spied(monkeypatch, name="activation_grad_from_output"):
    """The calls of the launcher ``name`` the eager backward reaches, and the gradients it
    wrote."""
    calls = {"kernel": 0, "written": []}
    original = getattr(triton_kernels, name)

    def kernel(*args, **kwargs):
        calls["kernel"] += 1
        calls["written"].append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(triton_kernels, name, kernel)
    return calls


@pytest.mark.parametrize("activation", ["relu", "silu"])
@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transposed"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_the_eager_backward_takes_one_pass_and_matches_torch(
    monkeypatch, activation, transposed, channels_last
):
    """Outside a graph the fused activation's backward launches this kernel — ReLU's read off
    the output, SiLU's off the ``z`` its training form saved — whose result the gradient GEMMs
    read as it is (written channels-last for them); the gradients are torch's. A graph of the
    backward (``create_graph``) takes torch's differentiable op instead."""
    torch.manual_seed(0)
    of_input = activation == "silu"
    calls = _spied(monkeypatch, f"activation_grad_from_{'input' if of_input else 'output'}")
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.randn(4, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    ours, theirs = (
        (TF.conv_transpose2d, F.conv_transpose2d) if transposed else (TF.conv2d, F.conv2d)
    )
    y_ref = getattr(F, activation)(theirs(x, w, b, padding=1))
    gy = torch.randn_like(y_ref)
    expected = torch.autograd.grad(y_ref, (x, w, b), gy)
    with torchconv_ext.use_backend("triton"):
        for _ in range(3):  # (the second call records the backward's tape, the third replays)
            y = ours(x, w, b, padding=1, activation=activation)
            got = torch.autograd.grad(y, (x, w, b), gy)
            for e, g in zip(expected, got):
                torch.testing.assert_close(g, e)
        assert calls["kernel"] == 2  # plainly, then while the tape records
        y = ours(x, w, b, padding=1, activation=activation)
        (gx,) = torch.autograd.grad(y, x, gy, create_graph=True)
        assert calls["kernel"] == 2 and gx.requires_grad
        torch.testing.assert_close(gx, expected[0])


@pytest.mark.parametrize(
    ("groups", "channels_last", "written_channels_last"),
    [(1, False, True), (1, True, True), (4, False, False), (4, True, True)],
    ids=["dense-nchw", "dense-cl", "depthwise-nchw", "depthwise-cl"],
)
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_the_gradient_is_written_in_the_layout_its_readers_take(
    monkeypatch, groups, channels_last, written_channels_last, activation
):
    """Channels-last for the tensor-core GEMMs (which would copy an NCHW one so); for the
    depthwise kernels, which read either, the incoming gradient's own layout (no transposition)."""
    torch.manual_seed(0)
    of_input = activation == "gelu"
    calls = _spied(monkeypatch, f"activation_grad_from_{'input' if of_input else 'output'}")
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 4 // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    with torchconv_ext.use_backend("triton"):
        y = TF.conv2d(x.requires_grad_(), w, padding=1, groups=groups, activation=activation)
        torch.autograd.grad(y, (x, w), torch.ones_like(y))
    (written,) = calls["written"]
    assert written.is_contiguous(memory_format=torch.channels_last) == written_channels_last
    assert written.is_contiguous() != written_channels_last
