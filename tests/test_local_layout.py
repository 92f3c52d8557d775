"""Layouts on the Triton path of the locally connected and tiled convolutions: their kernels
reduce over (taps, input channels), channels fastest, so activations reach them channels-last
(one copy where they are not; one per derivative) and the weight with its input channels
innermost (a parameter repacked once per version); they store activations channels-last and
the weight gradient with its input channels innermost, and results keep torch's layouts.

A spy on the launchers records what each launch received; values are compared with the float64
definition, forward, backward and double backward.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

import torchconv_ext
from tests.references.local import reference_local
from torchconv_ext import functional as TF
from torchconv_ext._ops import _layout

pytestmark = [pytest.mark.interpret, pytest.mark.usefixtures("fresh_weight_cache")]

_LAUNCHERS = ("local_conv_forward", "local_conv_backward_input", "local_conv_backward_weight")


class Launch(NamedTuple):
    name: str
    activations: tuple[torch.Tensor, ...]  # the activations it read
    weight: torch.Tensor | None  # the weight it read (None for the weight gradient)
    result: torch.Tensor  # the tensor it wrote


@pytest.fixture
def launches(spy_launchers):
    """A :class:`Launch` for every local convolution launch in the test."""
    calls = []

    def record(name, args):
        if name == "local_conv_backward_weight":  # (x, grad_out, grad_w)
            calls.append(Launch(name, args[:2], None, args[2]))
        elif name == "local_conv_forward":  # (x, w, bias, out)
            calls.append(Launch(name, args[:1], args[1], args[3]))
        else:  # (grad_out, w, grad_in)
            calls.append(Launch(name, args[:1], args[1], args[2]))

    spy_launchers(_LAUNCHERS, record)
    return calls


def _input_channels_inner(w: torch.Tensor) -> bool:
    return w.stride(w.dim() // 2) == 1


def _both(x, w, b, tiled, **kw):
    """Ours on the Triton backend and the definition: output, input and weight gradients."""
    nd = x.dim() - 2
    ours_fn = getattr(TF, f"conv{nd}d_{'tiled' if tiled else 'local'}")
    results = []
    for fn in (ours_fn, reference_local):
        xs, ws = x.detach().requires_grad_(), w.detach().requires_grad_()
        with torchconv_ext.use_backend("triton"):
            y = fn(xs, ws, b, **kw)
        gy = torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape).sin()
        with torchconv_ext.use_backend("triton"):
            grads = torch.autograd.grad(y, (xs, ws), gy)
        results.append((y, *grads))
    return results


@pytest.mark.parametrize(
    "x_shape,w_shape,tiled,kw,x_cl",
    [
        ((2, 3, 5, 4), (2, 2, 4, 3, 3, 2), True, dict(padding=1, stride=(2, 1)), False),
        ((1, 4, 4, 4), (3, 3, 2, 4, 2, 2), False, {}, False),  # locally connected
        ((1, 4, 4, 4, 4), (2, 1, 2, 4, 2, 2, 2, 2), True, dict(groups=2, padding=1), False),
        ((2, 4, 9), (3, 6, 2, 3), True, dict(groups=2, padding=2, padding_mode="reflect"), False),
        ((2, 3, 5, 4), (2, 2, 4, 3, 3, 2), True, dict(padding=1), True),  # CL input
    ],
    ids=["nchw-2d", "nchw-locally-connected", "nchw-3d-groups", "1d-reflect", "cl-input"],
)
def test_operands_reach_the_kernels_channels_inner_and_results_keep_the_layout(
    launches, x_shape, w_shape, tiled, kw, x_cl
):
    torch.manual_seed(0)
    x = torch.randn(x_shape, dtype=torch.float64)
    if x_cl:
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)
    w = torch.randn(w_shape, dtype=torch.float64)
    ours, theirs = _both(x, w, None, tiled, **kw)
    for a, r in zip(ours, theirs):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
    layout = _layout.is_channels_last(x) and x.dim() in (4, 5)
    assert _layout.is_channels_last(ours[0]) == layout
    assert _layout.is_channels_last(ours[1]) == layout
    assert ours[2].is_contiguous()  # the weight's gradient, as the weight
    assert sorted(launch.name for launch in launches) == sorted(_LAUNCHERS)
    for launch in launches:
        assert all(_layout.is_channels_last(a) for a in launch.activations), launch.name
        assert launch.weight is None or _input_channels_inner(launch.weight), launch.name
        # activations are stored channels-last (converted once where torch's are NCHW), the
        # weight gradient with its input channels innermost (then made contiguous)
        if launch.weight is None:
            assert _input_channels_inner(launch.result)
        else:
            assert _layout.is_channels_last(launch.result), launch.name
    if not x_cl:  # one channels-last copy of the incoming gradient serves both gradients
        by_name = {launch.name: launch for launch in launches}
        read_by_input_grad = by_name["local_conv_backward_input"].activations[0]
        read_by_weight_grad = by_name["local_conv_backward_weight"].activations[1]
        assert read_by_input_grad.data_ptr() == read_by_weight_grad.data_ptr()


def test_a_local_weight_parameter_is_repacked_once_per_version(launches):
    """Inference repacks a parameter once; an in-place update makes the next call repack, and
    the result follows the updated weight."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    layer = torchconv_ext.nn.TiledConv2d(3, 4, 3, tiles=2, padding=1).double()
    with torchconv_ext.use_backend("triton"), torch.no_grad():
        for _ in range(3):
            y = layer(x)
        assert _layout.weight_cache_info()["packs"] == 1
        layer.weight.mul_(-2)  # as an optimizer step writes it
        y = layer(x)
        assert _layout.weight_cache_info()["packs"] == 2
    expected = reference_local(x, layer.weight, layer.bias, padding=1)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    assert all(_input_channels_inner(launch.weight) for launch in launches)


def test_gradgradcheck_through_the_converted_paths():
    """Every primitive at second order, on NCHW operands that the kernels read converted."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    with torchconv_ext.use_backend("triton"):

        def call(x, w):
            return TF.conv2d_tiled(x, w, stride=1)

        assert torch.autograd.gradcheck(call, (x, w), fast_mode=True)
        assert torch.autograd.gradgradcheck(call, (x, w), fast_mode=True)


@pytest.mark.parametrize(
    "x_shape,w_shape,kw",
    [
        ((2, 1, 6, 6), (4, 4, 3, 1, 3, 3), {}),  # one input channel
        ((2, 1, 6, 6), (6, 6, 3, 1, 3, 3), dict(padding=1, padding_mode="reflect")),
        ((0, 4, 6, 6), (4, 4, 3, 4, 3, 3), {}),  # an empty batch
        ((0, 4, 6, 6), (6, 6, 3, 4, 3, 3), dict(padding=1, padding_mode="reflect")),
    ],
    ids=["one-channel", "one-channel-reflect", "empty", "empty-reflect"],
)
def test_results_stored_channels_last_get_the_fallbacks_strides(x_shape, w_shape, kw):
    """A one-channel or empty result is contiguous in both layouts: stored channels-last by
    the kernels, it must still come back with the strides the fallback (ATen's layout) gives
    — the input gradient came back channels-last, or with the strides of its padded buffer."""
    torch.manual_seed(0)
    x = torch.randn(x_shape, dtype=torch.float64)
    w = torch.randn(w_shape, dtype=torch.float64)
    results = {}
    for backend in ("triton", "torch"):
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        with torchconv_ext.use_backend(backend):
            y = TF.conv2d_local(xx, ww, **kw)
            results[backend] = (y, *torch.autograd.grad(y, (xx, ww), torch.ones_like(y)))
    for ours, fallback in zip(results["triton"], results["torch"]):
        torch.testing.assert_close(ours, fallback)
        assert ours.stride() == fallback.stride(), ours.shape
