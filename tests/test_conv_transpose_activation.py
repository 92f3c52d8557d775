"""Transposed convolutions with a fused activation (``activation=`` / ``activation_args=``)
against torch's transposed convolution followed by torch's activation, in float64, on both
backends.

On the Triton backend the activation runs in the epilogue of the kernels that compute a
transposed convolution (the input-gradient kernels: the implicit GEMM with its stride phases,
the 1×1 GEMM, the windows and the depthwise gather); derivatives go through
``conv_transpose_act``'s backward, which reuses the transposed convolution's own gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchconv_ext
from tests.test_conv_activation import ACTIVATIONS
from torchconv_ext import functional as TF
from torchconv_ext import nn as tnn

OPS = torch.ops.torchconv_ext
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]

# name -> (input shape, weight shape, kwargs): the kernel each runs on the Triton path.
KINDS = {
    "gemm-stride-2": ((2, 4, 3, 4), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    "1x1": ((2, 5, 3, 4), (5, 3, 1, 1), {}),
    "windows": ((2, 3, 4, 4), (3, 16, 3, 3), dict(padding=1)),  # few input channels, stride 1
    "depthwise": ((2, 3, 4, 3), (3, 2, 3, 3), dict(stride=(2, 1), padding=1, groups=3)),
}
# Every activation on the implicit GEMM and the depthwise gather; a few on the others.
_ROUTES = [
    (kind, act)
    for kind in KINDS
    for act in (ACTIVATIONS if kind in ("gemm-stride-2", "depthwise") else ("prelu-one", "gelu"))
]


def _leaf(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64).requires_grad_()


def _case(kind: str, activation: str, bias: bool, channels_last: bool):
    torch.manual_seed(0)
    x_shape, w_shape, kwargs = KINDS[kind]
    x = torch.randn(*x_shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = _leaf(*w_shape)
    c_out = w_shape[1] * kwargs.get("groups", 1)
    b = _leaf(c_out) if bias else None
    name, make_args, reference = ACTIVATIONS[activation]
    args = make_args(c_out)
    if args and "weight" in args:
        args["weight"] = args["weight"].detach().requires_grad_()
    leaves = [x, w] + ([b] if b is not None else []) + ([args["weight"]] if args and "weight" in args else [])  # fmt: skip
    return (
        x,
        w,
        b,
        dict(kwargs, activation=name, activation_args=args),
        kwargs,
        args,
        reference,
        leaves,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind,activation", _ROUTES)
def test_forward_and_gradients_match_torch(kind, activation, backend):
    for bias, channels_last in ((True, False), (False, True)):
        x, w, b, ours, kwargs, args, reference, leaves = _case(
            kind, activation, bias, channels_last
        )
        with torchconv_ext.use_backend(backend):
            y = TF.conv_transpose2d(x, w, b, **ours)
        expected = reference(F.conv_transpose2d(x, w, b, **kwargs), args)
        torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
        assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
        gy = torch.randn_like(y)
        with torchconv_ext.use_backend(backend):
            got = torch.autograd.grad(y, leaves, gy)
        want = torch.autograd.grad(expected, leaves, gy)
        for g, e in zip(got, want, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def _raw_args(activation: str) -> tuple:
    """``conv_transpose_act``'s arguments: a stride-2 transposed 2-d convolution with a bias."""
    torch.manual_seed(1)
    name, make_args, _ = ACTIVATIONS[activation]
    act = torchconv_ext._activation.parse_activation(name, make_args(4))
    weight = act.weight.detach().requires_grad_() if act.weight is not None else None
    geometry = ([2, 2], [1, 0], [1, 1], [1, 1], 2, "zeros")  # (stride, padding, end, ...)
    return (_leaf(1, 4, 2, 2), _leaf(4, 2, 3, 2), _leaf(4), weight, act.kind, act.alpha,
            [4, 4], False, *geometry)  # fmt: skip


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_raw_op_gradcheck_and_gradgradcheck(activation):
    """Every activation, differentiable twice through the registered op (grouped, stride 2,
    uneven padding); the derivatives are torch ops on both backends: the fallback checks
    them all."""
    args = _raw_args(activation)
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]

    def call(*t):
        full = list(args)
        for i, v in zip(tensors, t):
            full[i] = v
        return OPS.conv_transpose_act(*full)

    inputs = [args[i] for i in tensors]
    with torchconv_ext.use_backend("torch"):
        assert torch.autograd.gradcheck(call, inputs, fast_mode=True)
        assert torch.autograd.gradgradcheck(call, inputs, fast_mode=True)


@pytest.mark.parametrize("activation", ["relu", "prelu-channels", "mish"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(activation, backend):
    for layout in (torch.contiguous_format, torch.channels_last):
        args = list(_raw_args(activation))
        args[0] = args[0].detach().contiguous(memory_format=layout).requires_grad_()
        args[7] = layout == torch.channels_last
        with torchconv_ext.use_backend(backend):
            torch.library.opcheck(OPS.conv_transpose_act, tuple(args))


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_backward_jvp_and_vmap_match_torch(backend):
    torch.manual_seed(0)
    x, w, b = _leaf(2, 3, 3, 3), _leaf(3, 2, 3, 3), _leaf(2)
    slopes = torch.rand(3, 2, dtype=torch.float64)

    def ours(x, w, b, slope=None, activation="silu"):
        args = None if slope is None else {"weight": slope}
        return TF.conv_transpose2d(x, w, b, stride=2, activation=activation, activation_args=args)

    def theirs(x, w, b, slope=None, activation="silu"):
        z = F.conv_transpose2d(x, w, b, stride=2)
        return F.silu(z) if slope is None else F.prelu(z, slope)

    def penalty(fn):
        grads = torch.autograd.grad(fn(x, w, b).pow(2).sum(), (x, w, b), create_graph=True)
        return torch.autograd.grad(sum(g.pow(2).sum() for g in grads), (x, w, b))

    tangents = tuple(torch.randn_like(t) for t in (x, w, b))
    xs = torch.randn(3, 2, 3, 3, 3, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        got = penalty(ours)
        got_jvp = torch.func.jvp(ours, (x, w, b), tangents)[1]
        got_vmap = torch.func.vmap(lambda t: ours(t, w, b))(xs)
        got_slopes = torch.func.vmap(lambda t, s: ours(t, w, b, s, "prelu"))(xs, slopes)
    for g, e in zip(got, penalty(theirs), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got_jvp, torch.func.jvp(theirs, (x, w, b), tangents)[1])
    torch.testing.assert_close(got_vmap, torch.func.vmap(lambda t: theirs(t, w, b))(xs))
    want = torch.func.vmap(lambda t, s: theirs(t, w, b, s, "prelu"))(xs, slopes)
    torch.testing.assert_close(got_slopes, want)


def test_torch_compile_fullgraph_and_flops():
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    x, w, b = torch.randn(2, 3, 4, 5), torch.randn(3, 4, 3, 3), torch.randn(4)

    def fn(x):
        return TF.conv_transpose2d(x, w, b, stride=2, padding="same", activation="hardswish")

    eager = fn(x)
    torch.testing.assert_close(torch.compile(fn, fullgraph=True, backend="eager")(x), eager)
    with FlopCounterMode(display=False) as ours:
        fn(x)
    with FlopCounterMode(display=False) as theirs:
        F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)
    assert ours.get_total_flops() == theirs.get_total_flops() > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_modules_take_an_activation(backend):
    torch.manual_seed(0)
    layer = tnn.ConvTranspose1d(2, 3, 3, stride=2, activation="leaky_relu",
                                activation_args={"negative_slope": 0.2}).double()  # fmt: skip
    x = torch.randn(2, 2, 5, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        y = layer(x, output_size=[12])
    z = F.conv_transpose1d(x, layer.weight, layer.bias, stride=2, output_padding=1)
    torch.testing.assert_close(y, F.leaky_relu(z, 0.2))
    assert "activation='leaky_relu'" in repr(layer)
    assert list(layer.state_dict()) == ["weight", "bias"]
    prelu = tnn.ConvTranspose3d(2, 4, 1, activation="prelu",
                                activation_args={"weight": torch.full((4,), 0.1)})  # fmt: skip
    assert "activation_weight" in dict(prelu.named_parameters())
    with pytest.raises(ValueError, match="out_channels=4"):
        prelu.set_activation("prelu", {"weight": torch.ones(2)})
    assert prelu.fused_activation == "prelu" and prelu.activation_weight.shape == (
        4,
    )  # (unchanged)
    # Unbatched: the PReLU weight is still per output channel (dim 0 of the result).
    u = torch.randn(2, 3, 3, 3)
    with torchconv_ext.use_backend(backend):
        got = prelu(u)
    want = F.prelu(F.conv_transpose3d(u[None], prelu.weight, prelu.bias), prelu.activation_weight)
    torch.testing.assert_close(got, want[0])


def test_bad_arguments():
    x, w = torch.randn(1, 3, 4, 4), torch.randn(3, 2, 3, 3)
    with pytest.raises(ValueError, match="activation must be None or one of"):
        TF.conv_transpose2d(x, w, activation="tanh")
    with pytest.raises(ValueError, match=r"out_channels=2 values, got 3"):
        TF.conv_transpose2d(x, w, activation="prelu", activation_args={"weight": torch.ones(3)})
    with pytest.raises(TypeError, match="activation_args given without an activation"):
        TF.conv_transpose2d(x, w, activation_args={"alpha": 1.0})
    # The convolution's own checks come first, as without an activation.
    with pytest.raises(RuntimeError, match="weight"):
        TF.conv_transpose2d(x, torch.randn(4, 2, 3, 3), activation="relu")


def test_converted_generator_fuses_its_activations():
    """DCGAN's generator: transposed convolution, batch norm, ReLU; the last one with tanh,
    which stays (not an epilogue activation)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.ConvTranspose2d(4, 6, 4, 1, 0, bias=False), nn.BatchNorm2d(6), nn.ReLU(True),
        nn.ConvTranspose2d(6, 3, 4, 2, 1, bias=False), nn.Tanh(),
    ).double().eval()  # fmt: skip
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 1, 1, dtype=torch.float64)
    fused = torchconv_ext.convert_model(model, fuse=True)
    assert fused[0].fused_activation == "relu" and type(fused[4]) is nn.Tanh
    torch.testing.assert_close(fused(x), model(x), rtol=1e-9, atol=1e-9)
