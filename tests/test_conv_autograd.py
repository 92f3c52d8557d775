"""Convolution derivatives to any order, both backends, against torch in float64.

The three primitives (``conv_fwd``, ``conv_bwd_input``, ``conv_bwd_weight``) are each other's
derivatives, so gradcheck and gradgradcheck of each raw op cover every order; the functional
ops' second derivatives and a gradient penalty through a small network are compared to torch.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
from tests.references.conv import reference_conv
from torchconv_ext import functional as TF

OPS = torch.ops.torchconv_ext
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]


def _leaf(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


# 1-d, stride 2, asymmetric padding (1 before, 2 after), dilation 1, depthwise with channel
# multiplier 2 (the cheaper kernels under the interpreter; the network below runs the implicit
# GEMM): x (1, 2, 7) and w (4, 1, 3) give y (1, 4, 4).
_GEOMETRY = ([2], [1], [2], [1], 2)


def _raw_calls(padding_mode: str, bias: bool):
    """``(op, args)`` of each primitive on the geometry above."""
    torch.manual_seed(0)
    geometry = (*_GEOMETRY, padding_mode)
    x, w, gy = _leaf(1, 2, 7), _leaf(4, 1, 3), _leaf(1, 4, 4)
    b, bias_t = (_leaf(4), _leaf(2)) if bias else (None, None)
    return {
        "fwd": (OPS.conv_fwd, (x, w, b, *geometry)),
        "bwd_input": (OPS.conv_bwd_input, (gy, w, bias_t, [7], False, *geometry)),
        "bwd_weight": (OPS.conv_bwd_weight, (gy, x, [3], False, *geometry)),
        "bwd_weight_bias": (OPS.conv_bwd_weight_bias, (gy, x, [3], False, *geometry)),
    }


# The derivative formulas are the same code on both backends: the fallback checks each primitive
# (with zero padding, and with a padding mode whose adjoint folds the padding); the interpreter,
# slow per launch, checks the convolution without bias, whose second derivative runs all three
# primitives (the gradcheck of the Triton path is in test_conv.py).
_RAW_CASES = [
    pytest.param(op, mode, "torch", id=f"{op}-{mode}-torch")
    for op in ("fwd", "bwd_input", "bwd_weight", "bwd_weight_bias")
    for mode in ("zeros", "reflect")
]
_RAW_CASES.append(pytest.param("fwd", "reflect", "triton", marks=pytest.mark.interpret))


@pytest.mark.parametrize("op,padding_mode,backend", _RAW_CASES)
def test_raw_ops_gradcheck_and_gradgradcheck(op, padding_mode, backend):
    """Every primitive is differentiable twice through its registered op (so the convolution
    is, three times)."""
    fn, args = _raw_calls(padding_mode, bias=backend == "torch")[op]
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    rest = args[len(tensors) :]

    def call(*t):
        return fn(*t, *rest)

    # fast_mode checks random projections of the Jacobians: a few calls, not one per element.
    with torchconv_ext.use_backend(backend):
        if backend == "torch":
            assert torch.autograd.gradcheck(call, tensors, fast_mode=True)
        assert torch.autograd.gradgradcheck(call, tensors, fast_mode=True)


# --- second order against torch ---------------------------------------------------------------


def _transposed_same_reference(y, w, b):
    """torch's stride-2 transposed convolution of a 3-tap kernel, cropped to ``2·size``: our
    ``padding='same'`` (an odd crop, all at the end)."""
    full = F.conv_transpose2d(y, w, b, stride=2)
    return full[..., : 2 * y.shape[2], : 2 * y.shape[3]]


def _network(conv, conv_transpose, x, params):
    """A TF-'same' strided circular convolution (the implicit GEMM on Triton), then a transposed
    convolution with an odd crop."""
    w1, b1, w2, b2 = params
    y = torch.tanh(conv(x, w1, b1))
    return conv_transpose(y, w2, b2)


def _ours_conv(x, w, b):
    return TF.conv2d(x, w, b, 2, "same", padding_mode="circular")


def _ours_conv_transpose(y, w, b):
    return TF.conv_transpose2d(y, w, b, stride=2, padding="same")


OURS = (_ours_conv, _ours_conv_transpose)


def _torch_conv(x, w, b):
    return reference_conv(x, w, b, 2, "same", 1, 1, "circular")


TORCH = (_torch_conv, _transposed_same_reference)


def _inputs():
    torch.manual_seed(1)
    x = _leaf(2, 2, 6, 5)  # 'same' with stride 2: padding (0, 1) and (1, 1)
    params = [_leaf(4, 2, 3, 3), _leaf(4), _leaf(4, 3, 3, 3), _leaf(3)]
    return x, params


def test_hessian_vector_products_match_torch():
    """First and second derivatives (``create_graph=True``) of a loss through both ops, in every
    operand (the gradient penalty below runs the second order on both backends)."""
    x, params = _inputs()
    leaves = [x, *params]
    directions = [torch.randn_like(t) for t in leaves]
    results = []
    for layers in (OURS, TORCH):
        with torchconv_ext.use_backend("torch"):
            loss = _network(*layers, x, params).square().sum()
            grads = torch.autograd.grad(loss, leaves, create_graph=True)
            projected = sum((g * d).sum() for g, d in zip(grads, directions))
            hvp = torch.autograd.grad(projected, leaves)
        results.append([g.detach() for g in grads] + list(hvp))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_penalty_matches_torch(backend):
    """The penalty ``|d loss / d x|²``, differentiated with respect to every layer's weights."""
    x, params = _inputs()
    results = []
    for layers in (OURS, TORCH):
        with torchconv_ext.use_backend(backend):
            loss = _network(*layers, x, params).sin().sum()
            (grad_x,) = torch.autograd.grad(loss, x, create_graph=True)
            penalty = grad_x.square().sum()
            results.append(torch.autograd.grad(penalty, params))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=1e-8)


def test_third_derivative_matches_torch():
    """The third derivative of a cubic in the weight, through three levels of primitives."""
    torch.manual_seed(2)
    x, w = _leaf(1, 2, 6), _leaf(2, 2, 3)

    def third(conv):
        (g1,) = torch.autograd.grad(conv(x, w).pow(3).sum(), w, create_graph=True)
        (g2,) = torch.autograd.grad(g1.sum(), w, create_graph=True)
        return torch.autograd.grad(g2.sum(), w)[0]

    with torchconv_ext.use_backend("torch"):
        ours = third(lambda a, b: TF.conv1d(a, b, padding=1, padding_mode="replicate"))
    theirs = third(lambda a, b: reference_conv(a, b, None, 1, 1, 1, 1, "replicate"))
    torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=1e-8)


@pytest.mark.interpret
def test_biased_convolution_twice_differentiable_on_the_kernels():
    """On the Triton kernels a biased convolution's weight and bias gradients come from one
    kernel (``conv_bwd_weight_bias``: the bias in a tile of its own); both, and their own
    derivatives, against finite differences in float64."""
    torch.manual_seed(4)
    x, w, b = _leaf(1, 4, 5, 5), _leaf(6, 4, 3, 3), _leaf(6)
    with torchconv_ext.use_backend("triton"):

        def conv(x, w, b):
            return TF.conv2d(x, w, b, padding=1)

        assert torch.autograd.gradcheck(conv, (x, w, b), fast_mode=True)
        assert torch.autograd.gradgradcheck(conv, (x, w, b), fast_mode=True)


@pytest.mark.interpret
@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transposed"])
def test_stride_2_nchw_rows_twice_differentiable_on_the_kernels(transposed):
    """At stride 2 along a width of 4 or 8, NCHW: the input gradient (a transposed
    convolution's result) is stored as whole rows, both column phases of a row from one program
    (``conv_gemm.paired_width``); every derivative through it, to second order, against finite
    differences in float64."""
    torch.manual_seed(5)
    if transposed:
        x, w, b = _leaf(1, 3, 3, 2), _leaf(3, 2, 3, 3), _leaf(2)
        conv = lambda x, w, b: TF.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)
    else:
        x, w, b = _leaf(1, 3, 4, 8), _leaf(2, 3, 3, 3), _leaf(2)
        conv = lambda x, w, b: TF.conv2d(x, w, b, stride=2, padding=1)
    with torchconv_ext.use_backend("triton"):
        assert torch.autograd.gradcheck(conv, (x, w, b), fast_mode=True)
        assert torch.autograd.gradgradcheck(conv, (x, w, b), fast_mode=True)
