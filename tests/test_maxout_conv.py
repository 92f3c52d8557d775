"""The maxout convolution (``nn.MaxoutConv*d``, ``torchconv_ext::maxout_conv_fwd``) against
torch's convolution followed by a reference maxout, in float64, on both backends.

On the Triton backend the max is taken in the GEMM kernels' epilogue: the implicit GEMM (tap
and flattened loops, grouped), the 1×1 GEMM and — unfused — the depthwise kernel are each
covered, NCHW and channels-last, with and without bias, with 1 to 3 pieces. Derivatives go
through ``maxout_bwd`` and the convolution's primitives: first and second order against torch,
gradcheck / gradgradcheck of the registered op, ``jvp``, ``vmap``, opcheck and
``torch.compile``. A spy on the kernel launches proves the ``C_out·pieces`` channels are never
written on the fused path.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
from torchconv_ext import nn as tnn
from torchconv_ext._backend import kernels
from torchconv_ext.functional.maxout import maxout_conv

OPS = torch.ops.torchconv_ext
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]
TRITON = [pytest.param("triton", marks=pytest.mark.interpret)]
TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def reference_maxout(z: torch.Tensor, pieces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Maxout over dim 1 written out piece by piece (a NaN wins, the first; ties keep the
    first piece): independent of the package's maxout."""
    groups = z.unflatten(1, (-1, pieces))
    best, winner = groups.select(2, 0), torch.zeros_like(groups.select(2, 0), dtype=torch.int64)
    for k in range(1, pieces):
        v = groups.select(2, k)
        take = (v > best) | (v.isnan() & ~best.isnan())
        best, winner = torch.where(take, v, best), torch.where(take, k, winner)
    return best, winner


def _leaf(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64).requires_grad_()


# name -> (input shape, units C_out, weight's spatial kernel, conv kwargs): what each runs on the
# Triton path.
KINDS = {
    "3x3": ((2, 3, 5, 4), 2, (3, 3), dict(padding=1)),  # implicit GEMM, flattened loop
    "3x3-tap": ((1, 16, 3, 3), 2, (3, 3), dict(padding=1, stride=(1, 2))),  # tap loop
    "grouped": ((1, 4, 5, 6), 2, (2, 3), dict(groups=2, stride=2, dilation=(1, 2))),
    "1x1": ((2, 3, 4, 3), 3, (1, 1), {}),  # 1×1 GEMM
    "depthwise": ((2, 3, 5, 4), 3, (3, 3), dict(padding=1, groups=3)),  # unfused
}


def _case(kind: str, pieces: int, bias: bool, channels_last: bool):
    torch.manual_seed(0)
    x_shape, units, kernel, kwargs = KINDS[kind]
    x = torch.randn(*x_shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    c_in = x_shape[1] // kwargs.get("groups", 1)
    w = _leaf(units * pieces, c_in, *kernel)
    b = _leaf(units * pieces) if bias else None
    return x, w, b, kwargs


def _geometry(kwargs: dict, dims: int = 2) -> tuple:
    """The op's trailing geometry arguments for these (int) conv kwargs."""

    def per_dim(v):
        return list(v) if isinstance(v, tuple) else [v] * dims

    padding = per_dim(kwargs.get("padding", 0))
    return (
        per_dim(kwargs.get("stride", 1)), padding, padding, per_dim(kwargs.get("dilation", 1)),
        kwargs.get("groups", 1), "zeros",
    )  # fmt: skip


_CASES = [
    pytest.param(
        kind, pieces, bias, cl, backend,
        marks=[pytest.mark.interpret] if backend == "triton" else [],
        id=f"{kind}-p{pieces}-{'bias' if bias else 'nobias'}-{'cl' if cl else 'nchw'}-{backend}",
    )
    for kind in KINDS
    for pieces in (1, 2, 3)
    for bias, cl in ((True, False), (False, True))
    for backend in ("torch", "triton")
]  # fmt: skip


@pytest.mark.parametrize("kind,pieces,bias,channels_last,backend", _CASES)
def test_forward_winner_and_gradients_match_composition(kind, pieces, bias, channels_last, backend):
    x, w, b, kwargs = _case(kind, pieces, bias, channels_last)
    with torchconv_ext.use_backend(backend):
        y = maxout_conv("test", 2, x, w, b, pieces, **kwargs)
        out, winner = OPS.maxout_conv_fwd(x, w, b, pieces, *_geometry(kwargs))
    expected, expected_winner = reference_maxout(F.conv2d(x, w, b, **kwargs), pieces)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert torch.equal(winner, expected_winner)
    for t in (y, out, winner):
        assert t.is_contiguous(memory_format=torch.channels_last) == channels_last
    leaves = [x, w] + ([b] if b is not None else [])
    gy = torch.randn_like(y)
    with torchconv_ext.use_backend(backend):
        got = torch.autograd.grad(y, leaves, gy)
    want = torch.autograd.grad(expected, leaves, gy)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.interpret
def test_nchw_result_and_winner_stored_straight(monkeypatch):
    """16 positions per image (4×4): the values and winners are stored NCHW by the kernel."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w, b = _leaf(4, 3, 3, 3), _leaf(4)
    k = kernels()
    stored = []
    forward = k.conv_forward

    def spy(*args, **kwargs):
        stored.extend((args[3], kwargs["winner"]))
        return forward(*args, **kwargs)

    with torchconv_ext.use_backend("triton"):
        monkeypatch.setattr(k, "conv_forward", spy)
        out, winner = OPS.maxout_conv_fwd(x, w, b, 2, *_geometry(dict(padding=1)))
        monkeypatch.undo()
        got = torch.autograd.grad(out, [x, w, b], torch.ones_like(out))
    assert [t.data_ptr() for t in stored] == [out.data_ptr(), winner.data_ptr()]
    expected, expected_winner = reference_maxout(F.conv2d(x, w, b, padding=1), 2)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert torch.equal(winner, expected_winner)
    assert out.is_contiguous() and winner.is_contiguous()
    want = torch.autograd.grad(expected, [x, w, b], torch.ones_like(out))
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_modules_of_every_rank_match_composition(dims, backend):
    torch.manual_seed(0)
    cls = {1: tnn.MaxoutConv1d, 2: tnn.MaxoutConv2d, 3: tnn.MaxoutConv3d}[dims]
    m = cls(3, 2, 3, pieces=2, padding=1, stride=2).double()
    x = torch.randn(2, 3, *[4] * dims, dtype=torch.float64, requires_grad=True)
    with torchconv_ext.use_backend(backend):
        y = m(x)
        unbatched = m(x[1])
        grads = torch.autograd.grad(y.sum(), [x, m.conv.weight, m.conv.bias])
    z = TORCH_CONV[dims](x, m.conv.weight, m.conv.bias, stride=2, padding=1)
    expected = reference_maxout(z, 2)[0]
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(unbatched, expected[1])
    want = torch.autograd.grad(expected.sum(), [x, m.conv.weight, m.conv.bias])
    for g, e in zip(grads, want, strict=True):
        torch.testing.assert_close(g, e)
    assert list(m.state_dict()) == ["conv.weight", "conv.bias"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_padding_pairs_match_a_padded_input(mode, backend):
    torch.manual_seed(0)
    m = tnn.MaxoutConv2d(3, 2, 3, pieces=2, padding=((0, 2), 1), padding_mode=mode).double()
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    with torchconv_ext.use_backend(backend):
        y = m(x)
        grads = torch.autograd.grad(y.sum(), [x, m.conv.weight, m.conv.bias])
    padded = F.pad(x, (1, 1, 0, 2), mode="constant" if mode == "zeros" else mode)
    expected = reference_maxout(F.conv2d(padded, m.conv.weight, m.conv.bias), 2)[0]
    torch.testing.assert_close(y, expected)
    want = torch.autograd.grad(expected.sum(), [x, m.conv.weight, m.conv.bias])
    for g, e in zip(grads, want, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["3x3", "1x1", "depthwise"])
def test_ties_keep_the_first_piece_and_the_first_nan_wins(kind, backend):
    """Three pieces with identical weights; unit 0 ties everywhere (winner 0), unit 1's
    pieces 1 and 2 have NaN biases (winner 1, NaN), unit 2's last piece is largest (winner 2)."""
    torch.manual_seed(0)
    x_shape, _, kernel, kwargs = KINDS[kind]
    x = torch.randn(*x_shape, dtype=torch.float64)
    units = x_shape[1] if kind == "depthwise" else 3
    c_in = x_shape[1] // kwargs.get("groups", 1)
    w = torch.randn(units, 1, c_in, *kernel, dtype=torch.float64).expand(-1, 3, -1, -1, -1)
    w = w.flatten(0, 1).contiguous()
    b = torch.zeros(units, 3, dtype=torch.float64)
    b[1, 1:] = float("nan")
    b[2, 2] = 1e3
    b = b.flatten()
    with torchconv_ext.use_backend(backend):
        out, winner = OPS.maxout_conv_fwd(x, w, b, 3, *_geometry(kwargs))
    z = F.conv2d(x, w[::3].contiguous(), None, **kwargs)  # one piece's convolution
    assert (winner[:, 0] == 0).all() and (winner[:, 1] == 1).all() and (winner[:, 2] == 2).all()
    torch.testing.assert_close(out[:, 0], z[:, 0])
    assert out[:, 1].isnan().all()
    torch.testing.assert_close(out[:, 2], z[:, 2] + 1e3)


@pytest.mark.parametrize("kind", ["3x3", "1x1"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_pieces_compare_in_the_output_dtype(kind, backend):
    """In float16, piece 1 exceeds piece 0 by 2^-12 before rounding, nothing after: a tie in the
    stored convolution, so piece 0 wins, as the maxout of torch's float16 convolution has it."""
    padding = 1 if kind == "3x3" else 0
    x = torch.zeros(1, 2, 3, 3, dtype=torch.float16)
    x[:, :, 1, 1] = 1.0
    w = torch.zeros(2, 2, 2 * padding + 1, 2 * padding + 1, dtype=torch.float16)
    w[:, 0, padding, padding] = 1.0
    b = torch.tensor([0.0, 2.0**-12], dtype=torch.float16)
    with torchconv_ext.use_backend(backend):
        out, winner = OPS.maxout_conv_fwd(x, w, b, 2, *_geometry(dict(padding=padding)))
    z = F.conv2d(x.double(), w.double(), b.double(), padding=padding).half()
    expected, expected_winner = reference_maxout(z, 2)
    assert z[0, 1, 1, 1] == z[0, 0, 1, 1] == 1.0 and expected_winner[0, 0, 1, 1] == 0
    assert torch.equal(winner, expected_winner)
    assert torch.equal(out, expected)


# --- the registered op: gradcheck, gradgradcheck, opcheck -------------------------------------

# Tiny operands (input, weight) and geometry per kernel.
_RAW = {
    "3x3": ((1, 2, 4, 3), (4, 2, 2, 2), ([1, 1], [1, 0], [0, 1], [1, 1], 1, "reflect")),
    "1x1": ((1, 3, 3, 2), (4, 3, 1, 1), ([1, 1], [0, 0], [0, 0], [1, 1], 1, "zeros")),
    "depthwise": ((1, 2, 4, 3), (4, 1, 2, 2), ([2, 1], [1, 0], [1, 1], [1, 1], 2, "zeros")),
}


def _raw_args(kind: str, bias: bool = True, pieces: int = 2) -> tuple:
    torch.manual_seed(1)
    x_shape, w_shape, geometry = _RAW[kind]
    b = _leaf(w_shape[0]) if bias else None
    return (_leaf(*x_shape), _leaf(*w_shape), b, pieces, *geometry)


def _check_twice(args: tuple) -> None:
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]

    def call(*t):
        full = list(args)
        for i, v in zip(tensors, t, strict=True):
            full[i] = v
        return OPS.maxout_conv_fwd(*full)[0]

    inputs = [args[i] for i in tensors]
    assert torch.autograd.gradcheck(call, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(call, inputs, fast_mode=True)


@pytest.mark.parametrize("backend,kind,bias", [
    ("torch", "3x3", True), ("torch", "depthwise", False),
    pytest.param("triton", "3x3", True, marks=pytest.mark.interpret),
    pytest.param("triton", "1x1", False, marks=pytest.mark.interpret),
    pytest.param("triton", "depthwise", True, marks=pytest.mark.interpret),
])  # fmt: skip
def test_raw_op_gradcheck_and_gradgradcheck(backend, kind, bias):
    with torchconv_ext.use_backend(backend):
        _check_twice(_raw_args(kind, bias))


@pytest.mark.parametrize("kind", ["3x3", "1x1"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(kind, backend):
    for layout in (torch.contiguous_format, torch.channels_last):
        args = list(_raw_args(kind))
        args[0] = args[0].detach().contiguous(memory_format=layout).requires_grad_()
        with torchconv_ext.use_backend(backend):
            torch.library.opcheck(OPS.maxout_conv_fwd, tuple(args))


# --- second order, forward mode, vmap, compile, FLOPs against torch ---------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_backward_matches_composition(backend):
    """A gradient penalty: the second derivative against torch's convolution and maxout."""
    x, w, b, kwargs = _case("3x3", 2, True, False)
    leaves = [x, w, b]

    def penalty(y):
        grads = torch.autograd.grad(y.pow(2).sum(), leaves, create_graph=True)
        return sum(g.pow(2).sum() for g in grads)

    with torchconv_ext.use_backend(backend):
        got = torch.autograd.grad(penalty(maxout_conv("t", 2, x, w, b, 2, **kwargs)), leaves)
    want = torch.autograd.grad(penalty(reference_maxout(F.conv2d(x, w, b, **kwargs), 2)[0]), leaves)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jvp_matches_composition(backend):
    x, w, b, kwargs = _case("3x3", 3, True, False)
    leaves = (x.detach(), w.detach(), b.detach())
    tangents = tuple(torch.randn_like(t) for t in leaves)

    def ours(x, w, b):
        return maxout_conv("t", 2, x, w, b, 3, **kwargs)

    def theirs(x, w, b):
        return reference_maxout(F.conv2d(x, w, b, **kwargs), 3)[0]

    with torchconv_ext.use_backend(backend):
        _, got = torch.func.jvp(ours, leaves, tangents)
    _, want = torch.func.jvp(theirs, leaves, tangents)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_matches_composition(backend):
    """A batch of inputs folds into N; a batch of weights runs one call per weight."""
    torch.manual_seed(0)
    xs = torch.randn(3, 2, 3, 4, 4, dtype=torch.float64)
    ws = torch.randn(3, 4, 3, 3, 3, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)

    def ours(x, w):
        return maxout_conv("t", 2, x, w, b, 2, padding=1)

    def theirs(x, w):
        return reference_maxout(F.conv2d(x, w, b, padding=1), 2)[0]

    with torchconv_ext.use_backend(backend):
        got_x = torch.func.vmap(ours, (0, None))(xs, ws[0])
        got_both = torch.func.vmap(ours)(xs, ws)
    torch.testing.assert_close(got_x, torch.func.vmap(theirs, (0, None))(xs, ws[0]))
    torch.testing.assert_close(got_both, torch.func.vmap(theirs)(xs, ws))


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    m = tnn.MaxoutConv2d(3, 2, 3, pieces=3, padding=1, padding_mode="reflect")
    x = torch.randn(2, 3, 6, 5)
    with torchconv_ext.use_backend("torch"):
        eager = m(x)
        compiled = torch.compile(m, fullgraph=True, backend="eager")(x)
    torch.testing.assert_close(compiled, eager)


def test_flop_counter_counts_the_wide_convolution():
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    x, w, b = torch.randn(2, 3, 6, 5), torch.randn(6, 3, 3, 3), torch.randn(6)
    geometry = _geometry(dict(padding=1))
    with FlopCounterMode(display=False) as fused, torchconv_ext.use_backend("torch"):
        OPS.maxout_conv_fwd(x, w, b, 3, *geometry)
    with FlopCounterMode(display=False) as plain:
        F.conv2d(x, w, b, padding=1)
    assert fused.get_total_flops() == plain.get_total_flops() > 0


# --- the fused path writes the narrow result only ---------------------------------------------


@pytest.mark.interpret
@pytest.mark.parametrize("kind", ["3x3", "1x1"])
def test_triton_path_never_writes_the_wide_convolution(kind, monkeypatch):
    """Every tensor a kernel launch gets is no larger than the narrow result (or an operand),
    the launches carry ``PIECES``, and no separate maxout kernel runs."""
    import triton_kernels
    from triton_kernels import _tuning

    launches = []
    original = _tuning.Tuner.launch

    def spy(self, key, grid, args, constexprs):
        launches.append((self.name, args, constexprs))
        return original(self, key, grid, args, constexprs)

    def no_maxout(*args, **kwargs):
        raise AssertionError("the maxout ran apart from the convolution")

    monkeypatch.setattr(_tuning.Tuner, "launch", spy)
    monkeypatch.setattr(triton_kernels, "maxout_forward", no_maxout)
    x, w, b, kwargs = _case(kind, 3, True, False)
    x, w, b = x.detach(), w.detach(), b.detach()
    with torchconv_ext.use_backend("triton"):
        out, winner = OPS.maxout_conv_fwd(x, w, b, 3, *_geometry(kwargs))
    assert [c["PIECES"] for _, _, c in launches] == [3]
    wide = out.numel() * 3
    tensors = [a for a in launches[0][1] if isinstance(a, torch.Tensor)]
    # (but the operands: the weight, and the windows a narrow convolution reads its input as)
    assert all(t.numel() < wide or t is tensors[0] or t is tensors[1] for t in tensors)
    narrow = [t for t in tensors if t.shape[:2] == out.shape[:2] and t.numel() == out.numel()]
    assert sorted(t.dtype for t in narrow if t.dtype == torch.int64) == [torch.int64]
    torch.testing.assert_close(out, reference_maxout(F.conv2d(x, w, b, **kwargs), 3)[0])


# --- composition cases, errors ----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_units_spanning_groups_run_the_composition(backend):
    """The functional takes any weight whose channels divide by pieces; a unit whose pieces lie
    in two groups runs the convolution, then the maxout, with the same result."""
    torch.manual_seed(0)
    x, w = (
        torch.randn(1, 4, 4, 4, dtype=torch.float64),
        torch.randn(6, 2, 3, 3, dtype=torch.float64),
    )
    with torchconv_ext.use_backend(backend):
        y = maxout_conv("t", 2, x, w, None, 2, groups=2)  # 3 wide channels per group
    torch.testing.assert_close(y, reference_maxout(F.conv2d(x, w, groups=2), 2)[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_child_with_activation_or_hook_keeps_the_composition(backend):
    torch.manual_seed(0)
    m = tnn.MaxoutConv2d(3, 2, 3, pieces=2).double()
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    calls = []
    handle = m.conv.register_forward_hook(lambda *a: calls.append(1))
    with torchconv_ext.use_backend(backend):
        y = m(x)
    handle.remove()
    assert calls == [1]
    torch.testing.assert_close(y, reference_maxout(m.conv(x), 2)[0])
    m.conv.set_activation("relu")
    with torchconv_ext.use_backend(backend):
        y = m(x)
    expected = F.relu(F.conv2d(x, m.conv.weight, m.conv.bias))
    torch.testing.assert_close(y, reference_maxout(expected, 2)[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments(backend):
    x, w = torch.randn(1, 3, 4, 4), torch.randn(6, 3, 3, 3)
    with torchconv_ext.use_backend(backend):
        with pytest.raises(RuntimeError, match="divisible by pieces=4"):
            maxout_conv("MaxoutConv2d", 2, x, w, None, 4)
        with pytest.raises(RuntimeError, match="pieces must be positive"):
            maxout_conv("MaxoutConv2d", 2, x, w, None, 0)
        with pytest.raises(TypeError, match="pieces must be an int"):
            maxout_conv("MaxoutConv2d", 2, x, w, None, 2.0)
        with pytest.raises(RuntimeError, match=r"Expected 3D .* or 4D"):
            maxout_conv("MaxoutConv2d", 2, x[0, 0], w, None, 2)


@pytest.mark.interpret
def test_launcher_refuses_what_it_cannot_fuse():
    from triton_kernels import conv_forward

    x, w = torch.randn(1, 4, 3, 3), torch.randn(4, 4, 1, 1)
    out = torch.empty(1, 2, 3, 3)
    geometry = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), pad_mode="zeros",
                    allow_tf32=False)  # fmt: skip
    winner = torch.empty(1, 2, 3, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="do not combine"):
        conv_forward(x, w, None, out, groups=1, pieces=2, winner=winner, activation="relu",
                     **geometry)  # fmt: skip
    with pytest.raises(ValueError, match="needs a winner"):
        conv_forward(x, w, None, out, groups=1, pieces=2, **geometry)
    with pytest.raises(ValueError, match="int64 with the output's shape and strides"):
        conv_forward(x, w, None, out, groups=1, pieces=2, winner=winner.int(), **geometry)
    with pytest.raises(ValueError, match="depthwise convolution has no fused maxout"):
        conv_forward(x, torch.randn(4, 1, 1, 1), None, out, groups=4, pieces=2, winner=winner,
                     **geometry)  # fmt: skip
