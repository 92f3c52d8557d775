"""Convolution API: errors, nn modules, convert_model, registration (opcheck, FLOPs, compile)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import torchconv_ext
from torchconv_ext import functional as TF
from torchconv_ext import nn as tnn

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
    "stride": (lambda: TF.conv2d(X, W, stride=0), RuntimeError, "stride"),
    "stride len": (lambda: TF.conv2d(X, W, stride=(1, 1, 1)), RuntimeError, "stride"),
    "dilation": (lambda: TF.conv2d(X, W, dilation=(1, 0)), RuntimeError, "dilation"),
    "negative padding": (lambda: TF.conv2d(X, W, padding=-1), RuntimeError, "negative padding"),
    "padding string": (lambda: TF.conv2d(X, W, padding="full"), RuntimeError, "'valid', 'same'"),
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
    "integer input": (lambda: TF.conv2d(X.long(), W.long()), RuntimeError, "floating"),
    "module mode": (lambda: tnn.Conv2d(3, 4, 3, padding_mode="mirror"), ValueError, "padding_mode"),
}


# torch's own CPU op (the fallback) accepts a meta weight beside a CPU input and integer
# tensors; ours refuses them (so does torch on CUDA for integers).
_OURS_ONLY = {"device", "integer input"}
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


def test_nn_modules_are_drop_in():
    torch.manual_seed(0)
    ref = nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3, padding_mode="reflect")
    ours = tnn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3, padding_mode="reflect")
    assert isinstance(ours, nn.Conv2d)
    ours.load_state_dict(ref.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(ours(x), ref(x))
    # TensorFlow 'same' with stride, refused by torch, accepted by ours.
    same = tnn.Conv1d(2, 2, 4, stride=3, padding="same")
    assert same(torch.randn(1, 2, 10)).shape == (1, 2, 4)
    with pytest.raises(ValueError):
        nn.Conv1d(2, 2, 4, stride=3, padding="same")
    assert tnn.Conv3d(2, 3, 3)(torch.randn(1, 2, 4, 4, 4)).shape == (1, 3, 2, 2, 2)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1)])
        self.heads = nn.ModuleDict(
            {"a": nn.Sequential(nn.Conv2d(8, 4, 3, stride=2, padding_mode="circular", padding=1))}
        )
        self.seq1d = nn.Conv1d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = torch.relu(b(x))
        x = self.heads["a"](x)
        x = self.seq1d(x.flatten(2)).mean(-1)
        return self.fc(x)


def _grads(model, x):
    model.zero_grad()
    out = model(x)
    out.square().sum().backward()
    return out, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_convert_model_identical_outputs_and_grads(backend):
    torch.manual_seed(0)
    model = SmallCNN().double().eval()
    calls = []
    model.stem[0].register_forward_hook(lambda m, i, o: calls.append(1))
    converted = torchconv_ext.convert_model(model)
    assert converted is not model and type(model.stem[0]) is nn.Conv2d  # original untouched
    assert type(converted.stem[0]) is tnn.Conv2d and type(converted.seq1d) is tnn.Conv1d
    assert type(converted.blocks[0]) is tnn.Conv2d and type(converted.heads["a"][0]) is tnn.Conv2d
    assert type(converted.fc) is nn.Linear and not converted.training
    assert list(converted.state_dict()) == list(model.state_dict())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    out_ref, g_ref = _grads(model, x)
    with torchconv_ext.use_backend(backend):
        out, g = _grads(converted, x)
    assert len(calls) == 2  # the hook travelled with the layer
    # The fallback runs ATen's own kernels: bitwise-equal outputs; gradients differ at most by
    # the summation order of the bias gradient. Triton: float64 round-off only.
    tol = dict(atol=0, rtol=0) if backend == "torch" else dict(atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(out, out_ref, **tol)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=max(tol["atol"], 1e-15), rtol=max(tol["rtol"], 1e-12))


def test_convert_model_inplace_keeps_parameters_and_leaves_subclasses():
    class MyConv(nn.Conv2d):
        pass

    model = nn.Sequential(nn.Conv2d(3, 3, 3), MyConv(3, 3, 3)).train()
    weight = model[0].weight
    out = torchconv_ext.convert_model(model, inplace=True)
    assert out is model and model[0].weight is weight and model.training
    assert type(model[0]) is tnn.Conv2d and type(model[1]) is MyConv
    assert type(torchconv_ext.convert_model(copy.deepcopy(model))[0]) is tnn.Conv2d


def _sample_op_args(padding_mode="zeros", layout=torch.contiguous_format):
    x = (
        torch.randn(2, 4, 6, 5, dtype=torch.float64)
        .contiguous(memory_format=layout)
        .requires_grad_()
    )
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    geo = ([2, 1], [1, 0], [2, 1], [1, 2], 2, padding_mode)
    return x, w, b, geo


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_opcheck(backend, padding_mode):
    ops = torch.ops.torchconv_ext
    for layout in (torch.contiguous_format, torch.channels_last):
        x, w, b, geo = _sample_op_args(padding_mode, layout)
        with torchconv_ext.use_backend(backend):
            y = ops.conv_fwd(x, w, b, *geo)
            gy = torch.randn_like(y)
            torch.library.opcheck(ops.conv_fwd, (x, w, b, *geo))
            cl = layout == torch.channels_last
            torch.library.opcheck(ops.conv_bwd_input, (gy, w.detach(), None, [6, 5], cl, *geo))
            torch.library.opcheck(ops.conv_bwd_weight, (gy, x.detach(), [3, 2], cl, *geo))


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_flop_counter_counts_like_aten(backend):
    torch.manual_seed(0)
    model = SmallCNN()
    x = torch.randn(2, 3, 8, 8)
    counts = []
    for m in (model, torchconv_ext.convert_model(model)):
        with FlopCounterMode(display=False) as counter, torchconv_ext.use_backend(backend):
            m(x).sum().backward()
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(0)
    model = torchconv_ext.convert_model(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, padding_mode="replicate"),
            nn.ReLU(),
            nn.Conv2d(4, 2, 3, stride=2),
        )
    )
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True)
    y_c = compiled(x)
    (gx_c,) = torch.autograd.grad(y_c.sum(), x)
    y_e = model(x)
    (gx_e,) = torch.autograd.grad(y_e.sum(), x)
    torch.testing.assert_close(y_c, y_e)
    torch.testing.assert_close(gx_c, gx_e)


def test_flops_counted_on_meta_device():
    """Lightning's measure_flops builds the model on the meta device: our ops must run there."""
    with torch.device("meta"):
        ours = tnn.Conv2d(3, 4, 3, stride=2, padding="same", padding_mode="reflect")
        ref = nn.Conv2d(3, 4, 3, stride=1, padding="same")
        x = torch.randn(2, 3, 8, 8)
    with FlopCounterMode(display=False) as counter:
        y = ours(x)
    assert y.device.type == "meta" and y.shape == (2, 4, 4, 4)
    with FlopCounterMode(display=False) as reference:
        ref(x)
    assert counter.get_total_flops() == reference.get_total_flops() // 4  # a quarter of the outputs
