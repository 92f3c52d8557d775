"""Convolution modules: drop-in ``torch.nn`` subclasses, and ``convert_model`` on a small CNN
(identical outputs and gradients, hooks, parameters and subclasses kept)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import torchconv_ext
from tests.references.conv import SmallCNN
from torchconv_ext import nn as tnn


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


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_padding_pairs_are_a_zero_pad_before_the_layer(backend):
    """``padding=((top, bottom), (left, right))``: what ``nn.ZeroPad2d`` before torch's layer
    computes, with its parameters, ``state_dict`` and ``repr``."""
    torch.manual_seed(0)
    ref = nn.Sequential(nn.ZeroPad2d((2, 0, 0, 1)), nn.Conv2d(3, 4, 3, stride=2))
    ours = tnn.Conv2d(3, 4, 3, stride=2, padding=((0, 1), (2, 0)))
    ours.load_state_dict(ref[1].state_dict())
    assert "padding=((0, 1), (2, 0))" in repr(ours)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    ref, ours = ref.double(), ours.double()
    with torchconv_ext.use_backend(backend):
        out, grads = _grads(ours, x)
    expected, expected_grads = _grads(ref, x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grads, expected_grads)


# (constructor arguments, a change made to the layer after, unbatched input): torch's layer
# pads by the list its __init__ recorded, for padding strings too.
RECORDED_PADDING_CASES = [
    (dict(kernel_size=3, padding=1), lambda m: setattr(m, "padding", (2, 2)), False),
    (dict(kernel_size=3, padding=1), lambda m: setattr(m, "padding", "valid"), False),
    (dict(kernel_size=2, padding="same"), lambda m: setattr(m, "dilation", (2, 2)), False),
    # (left, right, top, bottom)
    (dict(kernel_size=3, padding=1), lambda m: setattr(m, "_reversed_padding_repeated_twice", [0, 2, 1, 0]), False),
    (dict(kernel_size=2, padding="same"), lambda m: setattr(m, "_reversed_padding_repeated_twice", [0, 2, 0, 2]), False),
    # a negative entry crops, as F.pad's does (torch's layer takes a negative padding then)
    (dict(kernel_size=3, padding=-1), lambda m: None, False),
    (dict(kernel_size=2, padding=(1, -2)), lambda m: None, False),
    (dict(kernel_size=3, padding=1), lambda m: setattr(m, "_reversed_padding_repeated_twice", [-1, 2, 2, -2]), False),
    (dict(kernel_size=3, padding=1, activation="relu"), lambda m: setattr(m, "_reversed_padding_repeated_twice", [2, -1, -1, 0]), False),
    # F.pad pads the last dims of an unbatched input by a shorter list
    (dict(kernel_size=3, padding=(1,)), lambda m: None, True),
    (dict(kernel_size=2, padding="same", dilation=(2,)), lambda m: None, True),
]  # fmt: skip


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize("mode", ["reflect", "circular", "replicate"])
@pytest.mark.parametrize(("arguments", "change", "unbatched"), RECORDED_PADDING_CASES)
def test_a_padding_mode_pads_as_torchs_layer_records_it(
    backend, mode, arguments, change, unbatched
):
    """In a padding mode other than zeros torch's layer pads by what ``__init__`` recorded
    (``_reversed_padding_repeated_twice``, with ``F.pad``): a later change of ``padding`` or
    ``dilation`` is not seen, and a list set by hand (an asymmetric padding) is, a negative
    entry cropping; converted, ours pads the same."""
    torch.manual_seed(0)
    x = torch.randn(3, 7, 6, dtype=torch.float64) if unbatched else torch.randn(2, 3, 7, 6).double()
    arguments = dict(arguments)
    activation = arguments.pop("activation", None)
    ref = nn.Conv2d(3, 4, padding_mode=mode, **arguments).double()
    ours = torchconv_ext.convert_model(ref)
    if activation is not None:
        ours.set_activation(activation)
        ref = nn.Sequential(ref, nn.ReLU())
    change(ref[0] if activation else ref)
    change(ours)
    with torchconv_ext.use_backend(backend):
        out, grads = _grads(ours, x)
    expected, expected_grads = _grads(ref, x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grads, expected_grads)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: nn.Conv2d(2, 2, 3, padding=(1,), padding_mode="reflect"), "Padding size 2"),
        (lambda: nn.Conv3d(2, 2, 3, padding=(1, 2), padding_mode="circular"), "Padding size 4"),
        (lambda: nn.Conv1d(2, 2, 3, padding=(), padding_mode="replicate"), "Padding size 0"),
        (lambda: _set(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), "padding_mode", "bogus"),
         "Unrecognised padding mode bogus"),
    ],
)  # fmt: skip
def test_a_recorded_padding_f_pad_refuses_is_refused_as_torch_refuses_it(make, match):
    ref = make()
    ours = torchconv_ext.convert_model(ref)
    x = torch.randn(1, 2, *[6] * (ref.weight.dim() - 2))
    for layer in (ref, ours):
        with pytest.raises(NotImplementedError, match=match):
            layer(x)


def _set(module, name, value):
    setattr(module, name, value)
    return module


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
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
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


def test_convert_model_inplace_keeps_parameters_and_subclasses():
    class MyConv(nn.Conv2d):
        pass

    model = nn.Sequential(nn.Conv2d(3, 3, 3), MyConv(3, 3, 3)).train()
    weight = model[0].weight
    out = torchconv_ext.convert_model(model, inplace=True)
    assert out is model and model[0].weight is weight and model.training
    assert type(model[0]) is tnn.Conv2d
    assert isinstance(model[1], MyConv) and isinstance(model[1], tnn.Conv2d)
    assert type(torchconv_ext.convert_model(copy.deepcopy(model))[0]) is tnn.Conv2d


def test_a_recorded_padding_of_the_channels_is_refused_by_name():
    """torch's layer hands ``F.pad`` a list longer than the spatial dims as it is, padding the
    channels too; ours pads spatial dims only and says so."""
    ref = nn.Conv2d(4, 2, 1, padding=1, padding_mode="reflect")
    ref._reversed_padding_repeated_twice = [1] * 6
    ours = torchconv_ext.convert_model(ref)
    x = torch.randn(1, 2, 5, 5)
    assert ref(x).shape == (1, 2, 7, 7)  # (its 2 channels reflected into 4)
    with pytest.raises(
        NotImplementedError, match=r"\[1, 1, 1, 1, 1, 1\] pads more than the spatial"
    ):
        ours(x)


@pytest.mark.parametrize("ours", [tnn.Conv2d, tnn.ConvTranspose2d])
def test_a_subclass_keeps_its_own_constructor(ours):
    """As of torch's layers: a subclass's ``__init__`` runs, with its own arguments."""

    class Scaled(ours):
        def __init__(self, channels, scale=2.0):
            super().__init__(channels, channels, 3, padding=1, activation="relu")
            self.scale = scale

        def forward(self, x):
            return super().forward(x) * self.scale

    layer = Scaled(4, scale=3.0).double()
    assert layer.scale == 3.0 and layer.fused_activation == "relu"
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    plain = getattr(nn, ours.__name__)(4, 4, 3, padding=1).double()
    plain.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x), 3.0 * torch.relu(plain(x)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("torch_layer", [nn.Conv2d, nn.ConvTranspose2d])
def test_an_attribute_named_activation_stays_the_layers_own(torch_layer):
    """A fused activation is ``fused_activation``: a layer's own ``activation`` — a submodule
    its subclass applies, a tag — is neither hidden nor fused, before or after conversion."""

    class WithActivation(torch_layer):
        def __init__(self):
            super().__init__(4, 4, 3, padding=1)
            self.activation = nn.Tanh()

        def forward(self, x):
            return self.activation(super().forward(x))

    tagged = torch_layer(4, 4, 3, padding=1).double()
    tagged.activation = "relu"  # (a tag some code keeps on its layers)
    model = nn.Sequential(WithActivation(), tagged).double()
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    converted = torchconv_ext.convert_model(model)
    assert isinstance(converted[0].activation, nn.Tanh) and converted[1].activation == "relu"
    assert converted[0].fused_activation is None and converted[1].fused_activation is None
    torch.testing.assert_close(converted(x), model(x), rtol=1e-12, atol=1e-12)
    ours = getattr(tnn, torch_layer.__name__)(4, 4, 3, padding=1)
    ours.activation = nn.Tanh()
    assert isinstance(ours.activation, nn.Tanh) and ours.fused_activation is None
