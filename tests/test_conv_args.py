"""Convolution arguments: torch's exception types for bad input, and messages that name the
argument (the Triton path's own checks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import torchconv_ext
from torchconv_ext import functional as TF
from torchconv_ext import nn as tnn
from torchconv_ext.functional.maxout import maxout_conv

X = torch.randn(1, 3, 5, 5)
W = torch.randn(4, 3, 3, 3)

BAD = {
    "input rank": (lambda: TF.conv2d(torch.randn(5, 5), W), RuntimeError, "Expected 3D"),
    "weight rank": (lambda: TF.conv2d(X, torch.randn(4, 3, 3)), RuntimeError, "weight"),
    "channels": (lambda: TF.conv2d(torch.randn(1, 2, 5, 5), W), RuntimeError, "to have 3 channels"),
    "groups divide": (
        lambda: TF.conv2d(X, torch.randn(4, 2, 3, 3), groups=2),
        RuntimeError,
        "channels",
    ),
    "groups out": (
        lambda: TF.conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 1, 3, 3), groups=2),
        RuntimeError,
        "divisible",
    ),
    "groups zero": (lambda: TF.conv2d(X, W, groups=0), RuntimeError, "groups"),
    # (an empty spatial dim: an output of padding alone, which ATen refuses)
    "empty spatial": (
        lambda: TF.conv2d(torch.randn(1, 3, 0, 5), torch.randn(4, 3, 1, 1), padding=1),
        RuntimeError,
        r"Only zero batch or zero channel inputs are supported, but got input shape: \[1, 3, 0, 5\]",
    ),
    "transposed empty spatial": (
        lambda: TF.conv_transpose2d(
            torch.randn(1, 3, 0, 5), torch.randn(3, 4, 2, 2), stride=2, output_padding=1
        ),
        RuntimeError,
        "Only zero batch or zero channel inputs are supported",
    ),
    "stride": (lambda: TF.conv2d(X, W, stride=0), RuntimeError, "stride"),
    "stride len": (lambda: TF.conv2d(X, W, stride=(1, 1, 1)), RuntimeError, "stride"),
    "dilation": (lambda: TF.conv2d(X, W, dilation=(1, 0)), RuntimeError, "dilation"),
    "negative padding": (lambda: TF.conv2d(X, W, padding=-1), RuntimeError, "negative padding"),
    "padding string": (lambda: TF.conv2d(X, W, padding="full"), RuntimeError, "'valid', 'same'"),
    "negative pair": (
        lambda: TF.conv2d(X, W, padding=((0, -1), 1)),
        RuntimeError,
        r"negative padding is not supported, but got padding=\(\(0, -1\), 1\)",
    ),
    "pair of three": (
        lambda: TF.conv2d(X, W, padding=((0, 1, 1), 1)),
        TypeError,
        r"one \(before, after\) pair of ints per spatial dimension",
    ),
    "pairs count": (
        lambda: TF.conv2d(X, W, padding=((0, 1), (0, 1), 1)),
        RuntimeError,
        "a list of 2 values",
    ),
    "pair kernel too big": (
        lambda: TF.conv2d(torch.randn(1, 3, 1, 5), W, padding=((0, 1), 1)),
        RuntimeError,
        r"padded input size per channel: \(2 x 7\)",
    ),
    "pair reflect too big": (
        lambda: TF.conv2d(X, W, padding=((0, 5), 1), padding_mode="reflect"),
        RuntimeError,
        r"padding \(0, 5\) should be less than the input size 5",
    ),
    "kernel too big": (lambda: TF.conv2d(torch.randn(1, 3, 2, 2), W), RuntimeError, "Kernel size"),
    "reflect too big": (
        lambda: TF.conv2d(X, W, padding=5, padding_mode="reflect"),
        RuntimeError,
        "reflect",
    ),
    "circular too big": (
        lambda: TF.conv2d(X, W, padding=6, padding_mode="circular"),
        RuntimeError,
        "circular",
    ),
    "same reflect small": (
        lambda: TF.conv2d(
            torch.randn(1, 3, 2, 2), torch.randn(4, 3, 5, 5), padding="same", padding_mode="reflect"
        ),
        RuntimeError,
        "reflect",
    ),
    "padding mode": (lambda: TF.conv2d(X, W, padding_mode="mirror"), ValueError, "padding_mode"),
    "dtype": (lambda: TF.conv2d(X.double(), W), RuntimeError, "type"),
    "bias dtype": (lambda: TF.conv2d(X, W, torch.randn(4).double()), RuntimeError, "bias type"),
    "bias shape": (lambda: TF.conv2d(X, W, torch.randn(5)), RuntimeError, "bias"),
    "device": (lambda: TF.conv2d(X, W.to("meta")), RuntimeError, "same device"),
    "module mode": (lambda: tnn.Conv2d(3, 4, 3, padding_mode="mirror"), ValueError, "padding_mode"),
}


# torch's own CPU op (the fallback) accepts a meta weight beside a CPU input; ours refuses it.
_OURS_ONLY = {"device"}
_BAD_CASES = [pytest.param(n, "triton", marks=pytest.mark.interpret, id=f"triton-{n}") for n in BAD]
_BAD_CASES += [pytest.param(n, "torch", id=f"torch-{n}") for n in BAD if n not in _OURS_ONLY]


@pytest.mark.parametrize("name,backend", _BAD_CASES)
def test_bad_input_raises_like_torch(name, backend):
    """Our checks (the Triton path) name the argument; the fallback is torch's op for the
    arguments torch accepts, so there torch's own check raises, with the same type."""
    fn, exc, fragment = BAD[name]
    with (
        torchconv_ext.use_backend(backend),
        pytest.raises(exc, match=fragment if backend == "triton" else None),
    ):
        fn()


def test_errors_match_torch_types():
    """Where torch rejects the same call, it raises the same exception type."""
    torch_calls = {
        "input rank": lambda: nn.functional.conv2d(torch.randn(5, 5), W),
        "channels": lambda: nn.functional.conv2d(torch.randn(1, 2, 5, 5), W),
        "stride": lambda: nn.functional.conv2d(X, W, stride=0),
        "negative padding": lambda: nn.functional.conv2d(X, W, padding=-1),
        "kernel too big": lambda: nn.functional.conv2d(torch.randn(1, 3, 2, 2), W),
        "dtype": lambda: nn.functional.conv2d(X.double(), W),
        "module mode": lambda: nn.Conv2d(3, 4, 3, padding_mode="mirror"),
    }
    for name, call in torch_calls.items():
        with pytest.raises(Exception) as theirs:
            call()
        assert BAD[name][1] is type(theirs.value), name


# --------------------------------------------------------------------------------------------
# Argument forms and dtypes torch takes: the same results, or the same exception types
# --------------------------------------------------------------------------------------------

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]
F = nn.functional
n1, n2 = np.int32(1), np.int64(2)


def _same_tf(x, w, stride):
    """TensorFlow's 'same' with stride 2 on a 5x5 input and a 3x3 kernel: one pixel each side."""
    return F.conv2d(F.pad(x, [1, 1, 1, 1]), w, None, stride)


# (ours, torch's equivalent): NumPy integers wherever torch takes ints.
NUMPY = {
    "stride same": (
        lambda x, w: TF.conv2d(x, w, stride=n2, padding="same"),
        lambda x, w: _same_tf(x, w, 2),
    ),
    "tuples": (
        lambda x, w: TF.conv2d(x, w, None, (n2, n1), (n1, n2), (n1, n2), n1),
        lambda x, w: F.conv2d(x, w, None, (2, 1), (1, 2), (1, 2), 1),
    ),
    "reflect": (
        lambda x, w: TF.conv2d(x, w, None, n2, n1, padding_mode="reflect"),
        lambda x, w: F.conv2d(F.pad(x, [1] * 4, mode="reflect"), w, None, 2),
    ),
    "module": (
        lambda x, w: _with_weight(tnn.Conv2d(3, 4, 3, stride=n2, padding="same"), w)(x),
        lambda x, w: _same_tf(x, w, 2),
    ),
    "transposed": (
        lambda x, w: TF.conv_transpose2d(x, w.transpose(0, 1), None, n2, n1, n1, n1, (n1, n1)),
        lambda x, w: F.conv_transpose2d(x, w.transpose(0, 1), None, 2, 1, 1),
    ),
}


def _with_weight(layer, w):
    layer.weight.data, layer.bias = w, None
    return layer.double()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NUMPY)
def test_numpy_integers_accepted(name, backend):
    ours, theirs = NUMPY[name]
    x, w = (
        torch.randn(1, 3, 5, 5, dtype=torch.float64),
        torch.randn(4, 3, 3, 3, dtype=torch.float64),
    )
    with torchconv_ext.use_backend(backend):
        got = ours(x, w)
    torch.testing.assert_close(got, theirs(x, w))


NOT_INTS = {
    "stride": dict(stride=2.0),
    "padding": dict(padding=1.0),
    "padding tuple": dict(padding=(1, 1.0)),
    "padding pair": dict(padding=((0, 1.0), 1)),
    "dilation": dict(dilation=1.0),
    "groups": dict(groups=1.0),
    "bool stride": dict(stride=True),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("extension", [{}, {"padding_mode": "reflect"}], ids=["torch's", "mode"])
@pytest.mark.parametrize("name", NOT_INTS)
def test_non_integers_raise_type_error_like_torch(name, extension, backend):
    kwargs = NOT_INTS[name]
    with pytest.raises(TypeError):
        F.conv2d(X, W, **kwargs)
    with torchconv_ext.use_backend(backend), pytest.raises(TypeError):
        TF.conv2d(X, W, **{"padding": 1, **kwargs, **extension})
    with torchconv_ext.use_backend(backend), pytest.raises(TypeError):
        TF.conv2d(X, W, **{"padding": "same", **kwargs, "stride": 2.0})
    with pytest.raises(TypeError):
        F.conv_transpose2d(X, W.transpose(0, 1), output_padding=1.0, stride=2)
    with torchconv_ext.use_backend(backend), pytest.raises(TypeError):
        TF.conv_transpose2d(X, W.transpose(0, 1), output_padding=1.0, stride=2, padding="valid")


def _torch_module_recipe(x, w, b, padding, mode):
    """nn.ConvNd's own computation: F.pad with the mode, then the convolution."""
    pads = [padding] * 4
    return F.conv2d(F.pad(x, pads, mode=mode) if mode != "zeros" else F.pad(x, pads), w, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.complex128])
def test_integer_and_complex_inputs_compute_like_torch(dtype, mode, backend):
    """Dtypes the kernels do not compute run torch's own ops on every backend (complex
    gradients by torch's rules)."""
    g = torch.Generator().manual_seed(0)
    x, w, b = (
        torch.randn(s, generator=g, dtype=torch.float64) for s in ((2, 3, 5, 5), (4, 3, 3, 3), (4,))
    )
    x, w, b = (t.mul(3).to(dtype) for t in (x, w, b))
    if dtype.is_complex:
        x, w = x.requires_grad_(), w.requires_grad_()
    with torchconv_ext.use_backend(backend):
        got = TF.conv2d(x, w, b, padding=1, padding_mode=mode)
    want = _torch_module_recipe(x, w, b, 1, mode)
    assert got.dtype == dtype
    torch.testing.assert_close(got, want)
    if dtype.is_complex:
        gy = torch.randn_like(want)
        with torchconv_ext.use_backend(backend):
            ours = torch.autograd.grad(got, (x, w), gy)
        for a, e in zip(ours, torch.autograd.grad(want, (x, w), gy)):
            torch.testing.assert_close(a, e)


@pytest.mark.parametrize("backend", BACKENDS)
def test_complex_layers_after_convert_model(backend):
    theirs = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect", dtype=torch.complex64)
    transposed = nn.ConvTranspose2d(3, 2, 3, stride=2, dtype=torch.complex64)
    x = torch.randn(2, 3, 5, 5, dtype=torch.complex64)
    with torchconv_ext.use_backend(backend):
        got = torchconv_ext.convert_model(theirs)(x)
        got_t = torchconv_ext.convert_model(transposed)(x)
        same = TF.conv_transpose2d(x, transposed.weight, transposed.bias, 2, "same")
    torch.testing.assert_close(got, theirs(x))
    torch.testing.assert_close(got_t, transposed(x))
    # 'same': input·stride = 10 of the full 11, the odd pixel cropped at the end
    torch.testing.assert_close(same, transposed(x)[..., :10, :10])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bool_input_raises_like_torch(backend):
    x, w = X.bool(), W.bool()
    for mode in ("zeros", "reflect"):
        with pytest.raises(Exception) as want:
            _torch_module_recipe(x, w, None, 1, mode)
        with torchconv_ext.use_backend(backend), pytest.raises(type(want.value)):
            TF.conv2d(x, w, padding=1, padding_mode=mode)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_channels_like_torch(backend):
    """Torch's convolution gives an empty result for empty input channels (and refuses empty
    output channels or kernels); a padding mode refuses to pad empty channels."""
    x0 = torch.randn(2, 0, 5, 5)
    w0 = torch.randn(4, 0, 3, 3)
    b = torch.randn(4)
    cases = [
        (lambda f: f.conv2d(x0, w0, b, padding=1), None),
        (lambda f: f.conv2d(X, torch.randn(0, 3, 3, 3)), None),
        (lambda f: f.conv2d(X, torch.randn(4, 3, 0, 3)), None),
        (lambda f: f.conv_transpose2d(X, torch.randn(3, 0, 3, 3)), None),
        (lambda f: f.conv_transpose2d(x0, torch.randn(0, 4, 3, 3)), None),
        (lambda f: f.conv2d(x0, w0, b, padding=1, padding_mode="reflect"), "reflect"),
    ]
    for call, mode in cases:

        def theirs(call=call, mode=mode):
            if mode is None:
                return call(F)
            return F.conv2d(F.pad(x0, [1] * 4, mode=mode), w0, b)

        try:
            want = theirs()
        except Exception as e:
            with torchconv_ext.use_backend(backend), pytest.raises(type(e)):
                call(TF)
            continue
        with torchconv_ext.use_backend(backend):
            got = call(TF)
        assert got.shape == want.shape and got.dtype == want.dtype
    with torchconv_ext.use_backend(backend):  # TF-style 'same': padded, then as torch
        got = TF.conv2d(x0, w0, b, stride=2, padding="same")
    assert got.shape == F.conv2d(F.pad(x0, [1] * 4), w0, b, 2).shape


# Operands that are not tensors, by op: torch's argument parser raises a TypeError for its own
# ops; ours name the argument (the ops without a torch counterpart too).
_NOT_TENSORS = {
    "conv2d weight": (lambda v: TF.conv2d(X, v), "weight"),
    "conv2d bias": (lambda v: TF.conv2d(X, W, v), "bias"),
    "conv1d bias": (lambda v: TF.conv1d(X[0], W[..., 0], v), "bias"),
    "fused conv weight": (lambda v: TF.conv2d(X, v, activation="relu"), "weight"),
    "transposed weight": (lambda v: TF.conv_transpose2d(X, v), "weight"),
    "transposed bias": (lambda v: TF.conv_transpose2d(X, W.transpose(0, 1), v), "bias"),
    "local input": (lambda v: TF.conv2d_local(v, torch.randn(3, 3, 4, 3, 3, 3)), "input"),
    "local weight": (lambda v: TF.conv2d_local(X, v), "weight"),
    "local bias": (lambda v: TF.conv2d_local(X, torch.randn(3, 3, 4, 3, 3, 3), v), "bias"),
    "tiled weight": (lambda v: TF.conv2d_tiled(X, v), "weight"),
    "maxout conv weight": (lambda v: maxout_conv("MaxoutConv2d", 2, X, v, None, 2), "weight"),
    "maxout input": (lambda v: TF.maxout(v, 2), "input"),
    "pyramid input": (lambda v: TF.spatial_pyramid_pool(v), "input"),
    "global pool input": (lambda v: TF.global_max_pool(v), "input"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [[1.0], 2.0, np.ones(3)], ids=["list", "float", "ndarray"])
@pytest.mark.parametrize("case", _NOT_TENSORS)
def test_operands_that_are_not_tensors_raise_type_error(case, value, backend):
    """A TypeError, as torch's own ops raise, never an AttributeError from deep inside; ours
    name the op and the argument (torch's own op gives the error where the fallback is it)."""
    call, label = _NOT_TENSORS[case]
    with torchconv_ext.use_backend(backend), pytest.raises(TypeError) as raised:
        call(value)
    ops_of_torch = ("conv2d", "conv1d", "fused", "transposed", "maxout conv")
    if backend == "triton" or not case.startswith(ops_of_torch):
        assert f"argument '{label}' must be Tensor" in str(raised.value)
