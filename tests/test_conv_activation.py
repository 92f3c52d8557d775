"""Convolutions with a fused activation (``activation=`` / ``activation_args=``) against torch's
convolution followed by torch's activation, in float64, on both backends.

On the Triton backend the activation runs in the kernels' epilogue: the implicit GEMM (3×3),
the 1×1 GEMM and the depthwise kernel are each covered, NCHW and channels-last, with and without
bias. Derivatives go through ``conv_act_fwd``'s backward (first and second order against torch,
gradcheck / gradgradcheck of the registered op), and ``jvp``, ``vmap``, opcheck and
``torch.compile`` see the op as they see ``conv_fwd``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import torchconv_ext
from tests.references.nodes import entry
from torchconv_ext import functional as TF
from torchconv_ext._ops.conv_act import conv_act_z

OPS = torch.ops.torchconv_ext
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]
TRITON = [pytest.param("triton", marks=pytest.mark.interpret)]

# name -> (activation, activation_args builder from C_out, torch's activation of (z, args)).
ACTIVATIONS = {
    "relu": ("relu", lambda c: None, lambda z, a: F.relu(z)),
    "leaky_relu": ("leaky_relu", lambda c: None, lambda z, a: F.leaky_relu(z)),
    "leaky_relu-negative": (
        "leaky_relu",
        lambda c: {"negative_slope": -0.3},
        lambda z, a: F.leaky_relu(z, -0.3),
    ),
    "prelu-channels": (
        "prelu",
        lambda c: {"weight": _leaf(c).abs() * 0.5},
        lambda z, a: F.prelu(z, a["weight"]),
    ),
    "prelu-one": ("prelu", lambda c: {"weight": _leaf(1)}, lambda z, a: F.prelu(z, a["weight"])),
    "elu": ("elu", lambda c: {"alpha": 0.7}, lambda z, a: F.elu(z, 0.7)),
    "gelu": ("gelu", lambda c: None, lambda z, a: F.gelu(z)),
    "gelu-tanh": (
        "gelu",
        lambda c: {"approximate": "tanh"},
        lambda z, a: F.gelu(z, approximate="tanh"),
    ),
    "silu": ("silu", lambda c: None, lambda z, a: F.silu(z)),
    "relu6": ("relu6", lambda c: None, lambda z, a: F.relu6(z)),
    "hardswish": ("hardswish", lambda c: None, lambda z, a: F.hardswish(z)),
    "hardsigmoid": ("hardsigmoid", lambda c: None, lambda z, a: F.hardsigmoid(z)),
    "mish": ("mish", lambda c: None, lambda z, a: F.mish(z)),
    "sigmoid": ("sigmoid", lambda c: None, lambda z, a: torch.sigmoid(z)),
}

# name -> (input shape, weight shape, conv kwargs): the kernel each runs on the Triton path.
KINDS = {
    "3x3": ((2, 3, 5, 4), (4, 3, 3, 3), dict(padding=1)),  # implicit GEMM
    "1x1": ((2, 3, 4, 3), (5, 3, 1, 1), {}),  # 1×1 GEMM
    "depthwise": ((2, 3, 5, 4), (6, 1, 3, 3), dict(padding=1, stride=(2, 1), groups=3)),
}


def _leaf(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64).requires_grad_()


def _case(kind: str, activation: str, bias: bool, channels_last: bool):
    torch.manual_seed(0)
    x_shape, w_shape, kwargs = KINDS[kind]
    x = torch.randn(*x_shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w, b = _leaf(*w_shape), (_leaf(w_shape[0]) if bias else None)
    name, make_args, reference = ACTIVATIONS[activation]
    args = make_args(w_shape[0])
    if args and "weight" in args:
        args["weight"] = args["weight"].detach().requires_grad_()
    ours = dict(kwargs, activation=name, activation_args=args)
    return x, w, b, ours, kwargs, args, reference


def _inputs(x, w, b, args) -> list[torch.Tensor]:
    leaves = [x, w] + ([b] if b is not None else [])
    return leaves + ([args["weight"]] if args and "weight" in args else [])


# Every activation on every kernel; layout and bias vary together (NCHW with bias,
# channels-last without), so each of the four appears with every kernel and activation.
_FORWARD_CASES = [
    pytest.param(
        kind, act, bias, cl, backend, id=f"{kind}-{act}-{'cl' if cl else 'nchw'}-{backend}"
    )
    for kind in KINDS
    for act in ACTIVATIONS
    for bias, cl in ((True, False), (False, True))
    for backend in ("torch", "triton")
]


@pytest.mark.parametrize(
    "kind,activation,bias,channels_last,backend",
    [
        pytest.param(*p.values, marks=pytest.mark.interpret, id=p.id) if p.values[-1] == "triton"
        else p
        for p in _FORWARD_CASES
    ],
)  # fmt: skip
def test_forward_and_gradients_match_torch(kind, activation, bias, channels_last, backend):
    x, w, b, ours, kwargs, args, reference = _case(kind, activation, bias, channels_last)
    with torchconv_ext.use_backend(backend):
        y = TF.conv2d(x, w, b, **ours)
    expected = reference(F.conv2d(x, w, b, **kwargs), args)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    leaves = _inputs(x, w, b, args)
    gy = torch.randn_like(y)
    with torchconv_ext.use_backend(backend):
        got = torch.autograd.grad(y, leaves, gy)
    want = torch.autograd.grad(expected, leaves, gy)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


# --- the registered op: gradcheck, gradgradcheck, opcheck -------------------------------------

# Tiny geometries (stride, padding, padding_end, dilation, groups, padding_mode) per kernel.
_RAW = {
    "3x3": ((1, 2, 4, 3), (3, 2, 2, 2), ([1, 1], [1, 0], [0, 1], [1, 1], 1, "reflect")),
    "1x1": ((1, 3, 3, 2), (2, 3, 1, 1), ([1, 1], [0, 0], [0, 0], [1, 1], 1, "zeros")),
    "depthwise": ((1, 2, 4, 3), (4, 1, 2, 2), ([2, 1], [1, 0], [1, 1], [1, 1], 2, "zeros")),
}


def _raw_args(kind: str, activation: str, bias: bool = True) -> tuple:
    torch.manual_seed(1)
    x_shape, w_shape, geometry = _RAW[kind]
    name, make_args, _ = ACTIVATIONS[activation]
    act = torchconv_ext._activation.parse_activation(name, make_args(w_shape[0]))
    weight = act.weight.detach().requires_grad_() if act.weight is not None else None
    b = _leaf(w_shape[0]) if bias else None
    return (_leaf(*x_shape), _leaf(*w_shape), b, weight, act.kind, act.alpha, *geometry)


def _check_twice(args: tuple) -> None:
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]

    def call(*t):
        full = list(args)
        for i, v in zip(tensors, t, strict=True):
            full[i] = v
        return OPS.conv_act_fwd(*full)

    inputs = [args[i] for i in tensors]
    # fast_mode: random projections of the Jacobians, a few calls rather than one per element.
    assert torch.autograd.gradcheck(call, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(call, inputs, fast_mode=True)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_raw_op_gradcheck_and_gradgradcheck(activation):
    """Every activation, differentiable twice through the registered op (3×3, padding mode).
    The derivative formulas are torch ops on both backends: the fallback checks them all."""
    with torchconv_ext.use_backend("torch"):
        _check_twice(_raw_args("3x3", activation))


# The interpreter (slow per launch) checks each kernel's epilogue against the derivatives: the
# output-read derivative (ReLU), a recomputed one, and the PReLU weight's gradient.
@pytest.mark.interpret
@pytest.mark.parametrize(
    "kind,activation,bias",
    [("3x3", "gelu-tanh", True), ("1x1", "prelu-one", False), ("depthwise", "relu", True),
     ("depthwise", "prelu-channels", False)],
)  # fmt: skip
def test_raw_op_gradcheck_triton(kind, activation, bias):
    with torchconv_ext.use_backend("triton"):
        _check_twice(_raw_args(kind, activation, bias))


@pytest.mark.parametrize("activation", ["relu", "prelu-channels", "gelu-tanh"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(activation, backend):
    for layout in (torch.contiguous_format, torch.channels_last):
        args = list(_raw_args("3x3", activation))
        args[0] = args[0].detach().contiguous(memory_format=layout).requires_grad_()
        with torchconv_ext.use_backend(backend):
            torch.library.opcheck(OPS.conv_act_fwd, tuple(args))


# --- second order, forward mode, vmap, compile, FLOPs against torch ---------------------------


@pytest.mark.parametrize("activation", ["relu", "prelu-channels", "gelu"])
@pytest.mark.parametrize("backend", TRITON)
def test_double_backward_matches_torch(activation, backend):
    """A gradient penalty: the second derivative of the functional against torch's."""
    x, w, b, ours, kwargs, args, reference = _case("3x3", activation, True, False)
    leaves = _inputs(x, w, b, args)

    def penalty(y):
        grads = torch.autograd.grad(y.pow(2).sum(), leaves, create_graph=True)
        return sum(g.pow(2).sum() for g in grads)

    with torchconv_ext.use_backend(backend):
        got = torch.autograd.grad(penalty(TF.conv2d(x, w, b, **ours)), leaves, allow_unused=True)
    want = torch.autograd.grad(
        penalty(reference(F.conv2d(x, w, b, **kwargs), args)), leaves, allow_unused=True
    )
    for g, e in zip(got, want, strict=True):
        if e is None:  # ReLU's bias: no second-order path in torch either
            assert g is None or not g.any()
        else:
            torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "relu6"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_non_finite_gradient_where_the_output_is_not_positive(activation, backend):
    """ReLU's, leaky ReLU's and ReLU6's derivatives are read off the output with torch's own
    backward ops: a NaN or infinite incoming gradient where ReLU gives 0 yields 0, as in
    torch."""
    x, w, b, ours, kwargs, args, reference = _case("3x3", activation, True, False)
    with torchconv_ext.use_backend(backend):
        y = TF.conv2d(x, w, b, **ours)
    expected = reference(F.conv2d(x, w, b, **kwargs), args)
    assert (expected <= 0).any() and (expected > 0).any()
    non_finite = torch.tensor([float("nan"), float("inf")], dtype=y.dtype)
    non_finite = non_finite[torch.arange(y.numel()) % 2].view_as(y)
    gy = torch.where(expected.detach() <= 0, non_finite, torch.randn_like(y))
    with torchconv_ext.use_backend(backend):
        got = torch.autograd.grad(y, [x, w, b], gy)
    want = torch.autograd.grad(expected, [x, w, b], gy)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10, equal_nan=True)


# Values where each formula turns: 0, the hard activations' ±3 and 6, Mish's threshold of 20,
# beyond exp's range, and the non-finite ones.
_SPECIAL = [0.0, -0.0, -3.0, 3.0, 6.0, 7.0, -1.5, 2.5, 20.0, 25.0, -30.0, 100.0, -100.0, 800.0,
            float("nan"), float("inf"), float("-inf")]  # fmt: skip


#: The activations tried at :data:`_SPECIAL` (each formula's turns; a slope times ±inf).
_AT_SPECIAL_VALUES = ["relu6", "hardswish", "hardsigmoid", "mish", "sigmoid", "silu", "gelu", "elu"]
_AT_SPECIAL_VALUES += ["leaky_relu", "leaky_relu-negative"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("activation", _AT_SPECIAL_VALUES)
@pytest.mark.parametrize("backend", TRITON)
def test_the_epilogue_at_special_values(activation, dtype, backend):
    """Each epilogue formula where torch's turns, NaN and ±inf included: a 1×1 convolution
    with weight 1 hands the input to the epilogue unchanged (the 1×1 GEMM and the depthwise
    kernel)."""
    name, make_args, reference = ACTIVATIONS[activation]
    z = torch.tensor(_SPECIAL, dtype=dtype)
    for channels, groups in ((1, 1), (2, 2)):
        x = z.repeat(channels).view(1, channels, 1, -1)
        w = torch.ones(channels, 1, 1, 1, dtype=dtype)
        with torchconv_ext.use_backend(backend):
            y = TF.conv2d(x, w, groups=groups, activation=name, activation_args=make_args(1))
        # (in float64: CPU torch's float32 GELU of +inf is NaN, its float64 one and ours inf)
        expected = reference(x.double(), make_args(1)).to(dtype)
        torch.testing.assert_close(y, expected, equal_nan=True, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", TRITON)
def test_elu_near_zero_keeps_its_relative_accuracy(dtype, backend):
    """ELU's ``alpha · expm1(z)`` for small negative ``z``: ``exp(z) - 1`` cancels there (fp32's
    ELU of -1e-8 came out 0); the epilogue's expm1 stays within a few ulps of torch's, down to
    the smallest values and past exp's underflow."""
    z = torch.tensor([-0.5, -1e-2, -1e-4, -1e-6, -1e-8, -1e-12, -1e-30, -88.0, -104.0, -746.0])
    z = z.to(dtype)
    w = torch.ones(1, 1, 1, 1, dtype=dtype)
    for alpha in (1.0, 0.3):
        with torchconv_ext.use_backend(backend):
            y = TF.conv2d(
                z.view(1, 1, 1, -1), w, activation="elu", activation_args={"alpha": alpha}
            )
        ulp = torch.finfo(dtype).eps
        torch.testing.assert_close(y.flatten(), F.elu(z, alpha), rtol=4 * ulp, atol=0)


@pytest.mark.parametrize(
    "activation, backend",
    [(act, "torch") for act in ACTIVATIONS]
    + [pytest.param(act, "triton", marks=pytest.mark.interpret) for act in ("relu", "gelu")],
)
def test_jacobian_matches_torch(activation, backend):
    """``jacrev``: the backward — torch's backward op of each activation — under ``vmap`` (the
    backward's formulas are the same on both backends: the kernels' side once)."""
    torch.manual_seed(0)
    name, make_args, reference = ACTIVATIONS[activation]
    args = make_args(2)
    leaves = [torch.randn(*s, dtype=torch.float64) for s in ((1, 2, 3, 3), (2, 2, 2, 2), (2,))]
    ours = dict(activation=name, activation_args=args)
    with torchconv_ext.use_backend(backend):
        got = torch.func.jacrev(lambda *t: TF.conv2d(*t, **ours), argnums=(0, 1, 2))(*leaves)
    want = torch.func.jacrev(lambda *t: reference(F.conv2d(*t), args), argnums=(0, 1, 2))(*leaves)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("activation", ["prelu-channels", "silu"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_jvp_matches_torch(activation, backend):
    x, w, b, ours, kwargs, args, reference = _case("3x3", activation, True, False)
    leaves = _inputs(x, w, b, args)
    tangents = tuple(torch.randn_like(t) for t in leaves)

    def fn(conv, act):
        def call(*t):
            a = dict(args or {}, weight=t[3]) if len(t) == 4 else args
            return act(conv(*t[:3], a), a)

        return call

    def ours_conv(x, w, b, a):
        return TF.conv2d(x, w, b, padding_mode="circular", **dict(ours, activation_args=a))

    def torch_conv(x, w, b, a):
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), w, b)

    with torchconv_ext.use_backend(backend):
        _, got = torch.func.jvp(fn(ours_conv, lambda y, a: y), tuple(leaves), tangents)
    _, want = torch.func.jvp(fn(torch_conv, reference), tuple(leaves), tangents)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_matches_torch(backend):
    """A batch of inputs folds into N; a batch of PReLU weights runs one call per weight."""
    torch.manual_seed(0)
    xs = torch.randn(3, 2, 3, 4, 4, dtype=torch.float64)
    w, b = torch.randn(4, 3, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    slopes = torch.rand(3, 4, dtype=torch.float64)

    def ours(x, slope):
        return TF.conv2d(x, w, b, padding_mode="replicate", padding=1, activation="prelu",
                         activation_args={"weight": slope})  # fmt: skip

    def theirs(x, slope):
        return F.prelu(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w, b), slope)

    with torchconv_ext.use_backend(backend):
        got_x = torch.func.vmap(ours, (0, None))(xs, slopes[0])
        got_both = torch.func.vmap(ours)(xs, slopes)
    torch.testing.assert_close(got_x, torch.func.vmap(theirs, (0, None))(xs, slopes[0]))
    torch.testing.assert_close(got_both, torch.func.vmap(theirs)(xs, slopes))


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 3, 6, 5), torch.randn(4, 3, 3, 3), torch.randn(4)

    def fn(x):
        return TF.conv2d(x, w, b, padding=1, padding_mode="reflect", activation="gelu")

    eager = fn(x)
    torch.testing.assert_close(torch.compile(fn, fullgraph=True, backend="eager")(x), eager)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph_trains_the_training_form(backend, recwarn):
    """A compiled training step of a SiLU-fused convolution: its training form in the graph
    (torch's ops on the fallback), the gradients eager torch's, and no warning from Dynamo
    about what it traced."""
    torch.manual_seed(0)
    x, w, b = _leaf(2, 3, 6, 5), _leaf(4, 3, 3, 3), _leaf(4)

    def fn(x, w, b):
        return TF.conv2d(x, w, b, padding=1, activation="silu")

    with torchconv_ext.use_backend(backend):
        torch._dynamo.reset()
        y = torch.compile(fn, fullgraph=True, backend="aot_eager")(x, w, b)
        want = F.silu(F.conv2d(x, w, b, padding=1))
        torch.testing.assert_close(y, want)
        gy = torch.randn_like(y)
        got = torch.autograd.grad(y, (x, w, b), gy)
        for a, e in zip(got, torch.autograd.grad(want, (x, w, b), gy), strict=True):
            torch.testing.assert_close(a, e)
    assert not [str(r.message) for r in recwarn if "dynamo" in str(r.filename).lower()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_flop_counter_counts_the_convolution(backend):
    from torch.utils.flop_counter import FlopCounterMode

    x, w, b = torch.randn(2, 3, 6, 5), torch.randn(4, 3, 3, 3), torch.randn(4)
    counts = []
    for act in (None, "relu"):
        with FlopCounterMode(display=False) as counter, torchconv_ext.use_backend(backend):
            TF.conv2d(x, w, b, padding_mode="reflect", padding=1, activation=act)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0


# --- other ranks, padding, unbatched inputs, dtypes -------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dims", [1, 3])
def test_conv1d_and_conv3d(dims, backend):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *[4] * dims, dtype=torch.float64)
    w = torch.randn(4, 3, *[3] * dims, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    ours = {1: TF.conv1d, 3: TF.conv3d}[dims]
    theirs = {1: F.conv1d, 3: F.conv3d}[dims]
    with torchconv_ext.use_backend(backend):
        y = ours(
            x, w, b, padding=1, activation="leaky_relu", activation_args={"negative_slope": 0.2}
        )
    torch.testing.assert_close(y, F.leaky_relu(theirs(x, w, b, padding=1), 0.2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_modes_and_same_with_stride(backend):
    torch.manual_seed(0)
    x, w = (
        torch.randn(1, 3, 5, 6, dtype=torch.float64),
        torch.randn(4, 3, 3, 3, dtype=torch.float64),
    )
    with torchconv_ext.use_backend(backend):
        got = TF.conv2d(x, w, None, padding=1, padding_mode="reflect", activation="silu")
        same = TF.conv2d(x, w, None, stride=2, padding="same", activation="elu")
        plain = TF.conv2d(x, w, None, stride=2, padding="same")
    expected = F.silu(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), w))
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(same, F.elu(plain))


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_prelu_is_per_output_channel(backend):
    torch.manual_seed(0)
    x, w = torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    slope = torch.rand(4, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        y = TF.conv2d(x, w, activation="prelu", activation_args={"weight": slope})
        y_reflect = TF.conv2d(
            x, w, padding=1, padding_mode="reflect", activation="prelu",
            activation_args={"weight": slope},
        )  # fmt: skip
    z = F.conv2d(x.unsqueeze(0), w)
    torch.testing.assert_close(y, F.prelu(z, slope).squeeze(0))
    z = F.conv2d(F.pad(x.unsqueeze(0), (1, 1, 1, 1), mode="reflect"), w)
    torch.testing.assert_close(y_reflect, F.prelu(z, slope).squeeze(0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_repeated_fused_call_takes_its_remembered_opening(backend):
    """On our kernels, from the first call on, a fused convolution with plain activation
    arguments runs its bound primitive (the opening remembered for the next calls, which give
    the same results, unbatched too); a PReLU's weight is an operand, so a PReLU call is opened
    every time, and different arguments are opened anew. (The fallback runs torch's ops.)"""
    ours = backend == "triton"
    torch.manual_seed(0)
    w, b = _leaf(4, 3, 3, 3), _leaf(4)
    slope = torch.rand(4, dtype=torch.float64)
    leaky = {"negative_slope": 0.2}
    with torchconv_ext.use_backend(backend):
        for shape in [(2, 3, 6, 5), (2, 3, 6, 5), (3, 6, 5), (3, 6, 5)]:
            x = _leaf(*shape)
            y = TF.conv2d(x, w, b, padding=1, activation="leaky_relu", activation_args=leaky)
            node = y.grad_fn if len(shape) == 4 else y.grad_fn.next_functions[0][0]  # (squeezed)
            assert (entry(node) == "bound") == ours
            ref = F.leaky_relu(F.conv2d(x, w, b, padding=1), 0.2)
            torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
            got = torch.autograd.grad(y, (x, w, b), torch.ones_like(y))
            want = torch.autograd.grad(ref, (x, w, b), torch.ones_like(ref))
            for a, r in zip(got, want, strict=True):
                torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
        x = _leaf(2, 3, 6, 5)
        other = TF.conv2d(x, w, b, padding=1, activation="leaky_relu",
                          activation_args={"negative_slope": 0.5})  # fmt: skip
        torch.testing.assert_close(other, F.leaky_relu(F.conv2d(x, w, b, padding=1), 0.5))
        for _ in range(2):
            y = TF.conv2d(x, w, b, activation="prelu", activation_args={"weight": slope})
            assert (entry(y.grad_fn) == "eager") == ours  # (in training: its training form)
        torch.testing.assert_close(y, F.prelu(F.conv2d(x, w, b), slope))


def _graph_nodes(y: torch.Tensor) -> list[str]:
    """The names of ``y``'s autograd nodes, from ``y`` back to the leaves."""
    names, node = [], y.grad_fn
    while node is not None and type(node).__name__ != "AccumulateGrad":
        names.append(type(node).__name__)
        node = node.next_functions[0][0]
    return names


@pytest.mark.parametrize("backend", TRITON)
def test_the_training_form_runs_where_derivatives_may_be_taken_not_under_vmap_alone(
    backend, monkeypatch
):
    """``torch.func.grad`` and ``jvp`` take derivatives: SiLU's training form, which stores
    ``z``; ``vmap`` alone takes none: the fused op's batching rule, no ``z``."""
    calls = []
    real = conv_act_z.impl
    monkeypatch.setattr(conv_act_z, "impl", lambda *a: calls.append(a[4]) or real(*a))
    torch.manual_seed(0)
    x, w = torch.randn(3, 2, 4, 5, 4, dtype=torch.float64), torch.randn(4, 4, 3, 3).double()

    def f(x):
        return TF.conv2d(x, w, padding=1, activation="silu")

    with torchconv_ext.use_backend(backend):
        batched = torch.vmap(f)(x)
        assert calls == []
        torch.testing.assert_close(
            batched, F.silu(F.conv2d(x.flatten(0, 1), w, padding=1)).view_as(batched)
        )
        grad = torch.func.grad(lambda x: f(x).sum())(x[0])
        assert calls == ["silu"]
        xr = x[0].clone().requires_grad_()
        (want,) = torch.autograd.grad(F.silu(F.conv2d(xr, w, padding=1)).sum(), xr)
        torch.testing.assert_close(grad, want)
        _, tangent = torch.func.jvp(f, (x[0],), (torch.ones_like(x[0]),))
        assert calls == ["silu"] * 2
        _, want = torch.func.jvp(
            lambda x: F.silu(F.conv2d(x, w, padding=1)), (x[0],), (torch.ones_like(x[0]),)
        )
        torch.testing.assert_close(tangent, want)


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transposed"])
@pytest.mark.parametrize("backend", TRITON)
def test_in_training_an_activation_needing_the_pre_activation_stores_it_beside_its_output(
    backend, transposed
):
    """While autograd records, SiLU (its derivative needs ``z``) runs its training form: one
    node whose kernel stores ``act(z)`` and ``z``, and whose backward convolves twice, not
    three times (a recomputed ``z``); hard sigmoid too. Without gradients, and for activations
    read off the output, the fused op runs."""
    torch.manual_seed(0)
    conv = TF.conv_transpose2d if transposed else TF.conv2d
    x, w, b = _leaf(2, 4, 5, 4), _leaf(4, 4, 3, 3), _leaf(4)
    with torchconv_ext.use_backend(backend):
        for kind in ("silu", "hardsigmoid"):
            y = conv(x, w, b, padding=1, activation=kind)
            # (bound to the call's arguments, as the unfused layer's convolution is)
            assert _graph_nodes(y) == [
                "ConvTransposeActZBackward" if transposed else "ConvActZBackward"
            ]
            assert entry(y.grad_fn) == "bound"
            with torch.no_grad():
                torch.testing.assert_close(conv(x, w, b, padding=1, activation=kind), y)
        fused = conv(x, w, b, padding=1, activation="relu")
        assert _graph_nodes(fused) == [
            "ConvTransposeActBackward" if transposed else "ConvActBackward"
        ]
        # Under a dispatch mode (the traced path) too: the forward, then two gradients.
        with FlopCounterMode(display=False) as forward:
            conv(x.detach(), w.detach(), b.detach(), padding=1, activation="silu")
        with FlopCounterMode(display=False) as training:
            y = conv(x, w, b, padding=1, activation="silu")
            y.backward(torch.ones_like(y))
        assert training.get_total_flops() == 3 * forward.get_total_flops() > 0


@pytest.mark.parametrize("name", [n for n in ACTIVATIONS if not n.startswith("prelu")])
def test_each_activation_function_is_torchs_own(name):
    """What a bound decomposition calls on every training step (``_activation.function``:
    torch's C functions, their argument bound) computes what ``torch.nn.functional`` computes,
    bit for bit, at special values too."""
    from torchconv_ext import _activation

    activation, args, reference = ACTIVATIONS[name]
    act = _activation.parse_activation(activation, args(3))
    z = torch.tensor([-7.0, -3.0, -1e-3, -0.0, 0.0, 1e-3, 3.0, 6.0, 7.0, float("inf"),
                      float("-inf"), float("nan")], dtype=torch.float64)  # fmt: skip
    got = _activation.function(act.kind, act.alpha)(z)
    torch.testing.assert_close(got, reference(z, None), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_and_default_activation_unchanged(backend):
    """fp32 matches torch; ``activation=None`` is today's convolution, bit for bit."""
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 3, 6, 5), torch.randn(4, 3, 3, 3), torch.randn(4)
    with torchconv_ext.use_backend(backend):
        fused = TF.conv2d(x, w, b, padding=1, activation="relu")
        plain = TF.conv2d(x, w, b, padding=1)
        default = TF.conv2d(x, w, b, padding=1, activation=None, activation_args=None)
    torch.testing.assert_close(fused, F.relu(F.conv2d(x, w, b, padding=1)))
    assert torch.equal(default, plain)


def test_complex_dtype_runs_torch_ops():
    x = torch.randn(1, 2, 4, 4, dtype=torch.complex64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.complex64)
    got = TF.conv2d(x, w, padding=1, padding_mode="reflect", activation="silu")
    torch.testing.assert_close(got, F.silu(F.conv2d(F.pad(x, (1,) * 4, mode="reflect"), w)))


# --- bad arguments ----------------------------------------------------------------------------

_X, _W = torch.randn(1, 3, 4, 4), torch.randn(4, 3, 3, 3)


@pytest.mark.parametrize(
    "activation,activation_args,error,match",
    [
        ("tanh", None, ValueError, r"activation must be None or one of .*'relu'"),
        ("ReLU", None, ValueError, "got 'ReLU'"),
        (1, None, TypeError, "activation must be None or one of"),
        (None, {"alpha": 1.0}, TypeError, "activation_args given without an activation"),
        ("relu", {"negative_slope": 0.1}, TypeError, "'relu' takes no arguments"),
        ("elu", {"negative_slope": 0.1}, TypeError, "'elu' takes 'alpha', got unexpected"),
        ("elu", [("alpha", 1.0)], TypeError, "activation_args must be a dict"),
        ("leaky_relu", {"negative_slope": "0.1"}, TypeError, r"\['negative_slope'\].*real number"),
        ("gelu", {"approximate": "fast"}, ValueError, "'none' or 'tanh', got 'fast'"),
        ("prelu", None, TypeError, "'prelu' needs activation_args"),
        ("prelu", {"weight": 0.25}, TypeError, "must be a Tensor"),
        ("prelu", {"weight": torch.ones(2, 2)}, ValueError, "0-d or 1-d"),
        ("prelu", {"weight": torch.ones(3)}, ValueError, "1 or out_channels=4 values, got 3"),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments(activation, activation_args, error, match, backend):
    with torchconv_ext.use_backend(backend), pytest.raises(error, match=match):
        TF.conv2d(_X, _W, activation=activation, activation_args=activation_args)


def _halved(module: torch.nn.Module, name: str) -> None:
    class Half(torch.nn.Module):
        def forward(self, weight):
            return 0.5 * weight

    torch.nn.utils.parametrize.register_parametrization(module, name, Half())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "utility",
    [
        _halved,
        lambda module, name: torch.nn.utils.prune.l1_unstructured(module, name, amount=0.5),
        lambda module, name: torch.nn.utils.parametrizations.weight_norm(module, name, dim=0),
    ],
    ids=["parametrization", "prune", "weight_norm"],
)
def test_a_fused_prelus_weight_takes_torchs_weight_utilities(utility, backend):
    """A parametrization, pruning or weight norm of a fused PReLU's ``activation_weight``
    computes it, as on torch's ``nn.PReLU``'s ``weight``: same values, and gradients reach what
    the utility holds."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3).double()
    prelu = torch.nn.PReLU(4).double()
    with torch.no_grad():
        prelu.weight.copy_(torch.tensor([0.1, -0.3, 0.6, 0.2]))
    ours = torchconv_ext.nn.Conv2d(3, 4, 3, activation="prelu",
                                   activation_args={"weight": prelu.weight}).double()  # fmt: skip
    ours.load_state_dict(conv.state_dict() | {"activation_weight": prelu.weight.detach()})
    utility(prelu, "weight")
    utility(ours, "activation_weight")
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        out = ours(x)
        out.square().sum().backward()
    expected = prelu(conv(x))
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected)
    held = {n: p.grad for n, p in ours.named_parameters() if "activation_weight" in n}
    theirs = {n.replace("weight", "activation_weight", 1): p.grad
              for n, p in prelu.named_parameters()}  # fmt: skip
    assert held.keys() == theirs.keys()
    for name in held:
        torch.testing.assert_close(held[name], theirs[name], msg=name)


def test_reset_parameters_gives_a_fused_prelu_its_weight_again():
    """Deferred initialisation — built on the meta device, ``to_empty``, ``reset_parameters`` —
    gets the PReLU weight's values back, as torch's ``nn.PReLU`` gets its ``init``; values given
    on the meta device are unknown, and resetting says so."""
    given = torch.tensor([0.25, -0.5, 0.1, 0.3])
    with torch.device("meta"):
        layer = torchconv_ext.nn.ConvTranspose2d(3, 4, 3, activation="prelu",
                                                 activation_args={"weight": given.to("cpu")})  # fmt: skip
        unknown = torchconv_ext.nn.Conv2d(3, 4, 3, activation="prelu",
                                          activation_args={"weight": torch.ones(4)})  # fmt: skip
    layer.to_empty(device="cpu").double()
    layer.reset_parameters()
    torch.testing.assert_close(layer.activation_weight, given.double())
    with torch.no_grad():
        layer.activation_weight.mul_(3)  # (trained)
    layer.reset_parameters()
    torch.testing.assert_close(layer.activation_weight, given.double())
    unknown.to_empty(device="cpu")
    with pytest.raises(RuntimeError, match=r"activation_weight.*meta device"):
        unknown.reset_parameters()
    plain = torchconv_ext.nn.Conv2d(3, 4, 3, activation="relu")
    plain.reset_parameters()  # (nothing of its own to reset)


@pytest.mark.parametrize("backend", TRITON)
def test_the_training_forms_jvp_and_batching_rule_give_both_outputs(backend):
    """``conv_act_z`` itself under ``torch.func``: the tangents of ``act(z)`` and ``z``, and
    both outputs batched over inputs (folded into N) and over weights (one call each)."""
    torch.manual_seed(0)
    x, w = torch.randn(2, 4, 5, 4, dtype=torch.float64), torch.randn(4, 4, 3, 3).double()
    b = torch.randn(4, dtype=torch.float64)
    geometry = ([1, 1], [1, 1], [1, 1], [1, 1], 1, "zeros")

    def ours(x, w):
        return conv_act_z(x, w, b, None, "gelu", 0.0, *geometry)

    def theirs(x, w):
        z = F.conv2d(x, w, b, padding=1)
        return F.gelu(z), z

    with torchconv_ext.use_backend(backend):
        primals, tangents = (x, w), (torch.randn_like(x), torch.zeros_like(w))
        got, want = (
            torch.func.jvp(ours, primals, tangents),
            torch.func.jvp(theirs, primals, tangents),
        )
        torch.testing.assert_close(got, want)
        xs, ws = torch.randn(3, *x.shape, dtype=torch.float64), torch.stack([w, 2 * w])
        torch.testing.assert_close(
            torch.vmap(ours, (0, None))(xs, w), torch.vmap(theirs, (0, None))(xs, w)
        )
        torch.testing.assert_close(
            torch.vmap(ours, (None, 0))(x, ws), torch.vmap(theirs, (None, 0))(x, ws)
        )
