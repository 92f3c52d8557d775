"""``convert_model(fuse=True, example_inputs=...)``: who consumes what recorded from one run of
the model, for forward code ``torch.fx`` cannot read; outputs unchanged (float64, both
backends), the model's state unchanged by the run."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
from torch import nn
from torch.nn.modules import module as module_hooks

from torchconv_ext import convert_model, convert_model_with_report

from .test_convert_fuse import (
    BACKENDS,
    _fuse_and_compare,
    _fusions,
    _randomise_batch_norms,
    _refusals,
)


def _same_padding(x: torch.Tensor, kernel: int, stride: int = 1) -> torch.Tensor:
    """TensorFlow's 'SAME' padding, from the input's size as Python numbers (as Hugging Face's
    MobileNets compute it): ``torch.fx`` cannot trace ``int`` of a traced size."""
    pads = []
    for size in (int(x.shape[-1]), int(x.shape[-2])):
        total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
        pads += [total // 2, total - total // 2]
    return nn.functional.pad(x, pads)


class _TfConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, act: nn.Module) -> None:
        super().__init__()
        self.convolution = nn.Conv2d(cin, cout, 3, bias=False)
        self.normalization = nn.BatchNorm2d(cout)
        self.activation = act

    def forward(self, features):
        features = self.convolution(_same_padding(features, 3))
        return self.activation(self.normalization(features))


class _TfNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _TfConvLayer(3, 4, nn.ReLU6())
        self.block = _TfConvLayer(4, 4, nn.ReLU(inplace=True))  # returns its input, changed
        self.head = _TfConvLayer(4, 5, nn.SiLU())

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_forward_torch_fx_cannot_trace_fuses_from_a_recorded_run(backend):
    fused, report = _fuse_and_compare(_TfNet(), backend)
    assert _fusions(report) == {}  # (the code is not read: nothing fuses)
    fused, report = _fuse_and_compare(_TfNet(), backend, example=True)
    assert _fusions(report) == {
        f"{layer}.convolution": [f"{layer}.normalization", f"{layer}.activation"]
        for layer in ("stem", "block", "head")
    }
    assert [fused.stem.convolution.fused_activation, fused.block.convolution.fused_activation] == [
        "relu6",
        "relu",
    ]
    # Another input size takes the same path.
    x = torch.randn(1, 3, 11, 6, dtype=torch.float64)
    model = _randomise_batch_norms(_TfNet().double()).eval()
    fused = convert_model(model, fuse=True, example_inputs=(x[:, :, :5, :5],))
    torch.testing.assert_close(fused(x), model(x), rtol=1e-9, atol=1e-9)


@dataclasses.dataclass
class _Features:
    last: torch.Tensor
    hidden: tuple[torch.Tensor, ...]


class _Consumers(nn.Module):
    """Outputs with a second consumer of every kind the run must see."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_code, self.bn_code = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
        self.conv_out, self.bn_out = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
        self.conv_made, self.bn_made = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
        self.conv_twice, self.act_twice = nn.Conv2d(3, 3, 1), nn.ReLU()
        self.conv_size, self.bn_size = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv_code(x)
        x = self.bn_code(y) + y[:, :1]  # a view of the output, used by the code
        hidden = self.conv_out(x)  # returned as well, inside a dataclass
        x = self.bn_out(hidden)
        y = self.conv_made(x)
        x = self.bn_made(y) + nn.Hardswish()(y)  # a module made in the forward
        x = self.act_twice(self.conv_twice(self.act_twice(x)))
        y = self.conv_size(x)
        x = self.bn_size(y) * y.shape[1]  # a size read: no use of the values
        return _Features(last=x, hidden=(hidden,))


def _fused_from_a_run(model: nn.Module, *shape: int) -> tuple:
    """``model`` (float64, batch norms randomised, eval), an input of ``shape``, and the model
    fused from a run on it, with the report."""
    torch.manual_seed(0)
    model = _randomise_batch_norms(model.double()).eval()
    x = torch.randn(*shape, dtype=torch.float64)
    return model, x, *convert_model_with_report(model, fuse=True, example_inputs=x)


def test_every_second_consumer_the_run_sees_keeps_an_output():
    model, x, fused, report = _fused_from_a_run(_Consumers(), 2, 3, 5, 5)
    # (bn_out, after an output also returned, folds into the 1×1 convolution after it)
    assert _fusions(report) == {"conv_made": ["bn_out"], "conv_size": ["bn_size"]}
    assert _refusals(report) == {"act_twice": "called 2 times in the forward"}
    expected, got = model(x), fused(x)
    torch.testing.assert_close(got.last, expected.last, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got.hidden[0], expected.hidden[0], rtol=1e-9, atol=1e-9)


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.GELU()

    def forward(self, x, mask=None):
        y = self.act(self.bn(self.conv(x)))
        return y if mask is None else y * mask


def test_a_forward_of_several_inputs_fuses_on_the_path_of_its_example():
    torch.manual_seed(0)
    model = _randomise_batch_norms(_TwoInputs().double()).eval()
    x, mask = torch.randn(2, 3, 6, 6, dtype=torch.float64), torch.rand(2, 4, 6, 6).double()
    assert not _fusions(convert_model_with_report(model, fuse=True)[1])
    fused, report = convert_model_with_report(model, fuse=True, example_inputs=(x, mask))
    assert _fusions(report) == {"conv": ["bn", "act"]}
    torch.testing.assert_close(fused(x, mask), model(x, mask), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-9, atol=1e-9)


class _Stochastic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.act = nn.ReLU()
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.bn(self.act(self.conv(x))))


def test_the_run_changes_no_buffer_no_random_state_and_leaves_no_hook():
    model = _Stochastic().train()  # the batch norm updates its statistics on every batch
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = (dict(module_hooks._global_forward_pre_hooks), dict(module_hooks._global_forward_hooks))
    x = torch.randn(2, 3, 4, 4)
    torch.manual_seed(3)
    expected_draw = torch.rand(3)
    torch.manual_seed(3)
    fused, report = convert_model_with_report(model, inplace=True, fuse=True, example_inputs=x)
    assert torch.equal(torch.rand(3), expected_draw)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert _fusions(report) == {"conv": ["act"]}  # (a training batch norm is never folded)
    after = (dict(module_hooks._global_forward_pre_hooks), dict(module_hooks._global_forward_hooks))
    assert after == hooks
    # Also when the forward fails.
    with pytest.raises(RuntimeError):
        convert_model(model, fuse=True, example_inputs=torch.randn(2, 5, 4, 4))
    after = (dict(module_hooks._global_forward_pre_hooks), dict(module_hooks._global_forward_hooks))
    assert after == hooks
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


class _Threaded(nn.Module):
    """A forward that also runs its activation in another thread."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.SiLU()

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        other = threading.Thread(target=lambda: self.act(torch.zeros(1)))
        other.start()
        other.join()
        return y


def test_a_module_another_thread_calls_during_the_run_is_left():
    model, x, fused, report = _fused_from_a_run(_Threaded(), 2, 3, 4, 4)
    assert _fusions(report) == {"conv": ["bn"]}
    assert _refusals(report) == {"act": "called 2 times in the forward"}
    torch.testing.assert_close(fused(x), model(x), rtol=1e-9, atol=1e-9)


class _Chunked(nn.Module):
    """A block run once per chunk of the input (as Wan's and CogVideoX's causal video
    convolutions run per time chunk): zero pad, convolution, batch norm and an activation that
    runs after both convolutions; with ``tap_last`` the last chunk returns the first
    convolution's output too."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((1, 1, 2, 0))
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.act = nn.SiLU()
        self.tap_last = False

    def forward(self, x):
        chunks = x.split(3, dim=2)
        outputs = []
        for i, chunk in enumerate(chunks):
            y = self.conv1(self.pad(chunk))
            if self.tap_last and i == len(chunks) - 1:
                outputs.append(y)  # a second consumer, on one of the runs only
            y = self.act(self.bn2(self.conv2(self.act(self.bn1(y)))))
            outputs.append(y)
        return torch.cat(outputs, dim=2)


def test_a_block_run_once_per_chunk_fuses_as_a_block_run_once():
    """Every call of each module is the same chain, run once per chunk: the pad folds, the batch
    norms fold and the shared activation fuses into both convolutions (float64, as before)."""
    model, x, fused, report = _fused_from_a_run(_Chunked(), 2, 3, 9, 5)
    assert _fusions(report) == {"conv1": ["pad", "bn1", "act"], "conv2": ["bn2", "act"]}
    assert _refusals(report) == {}
    assert (fused.conv1.padding, fused.conv1.fused_activation) == (((2, 0), 1), "silu")
    torch.testing.assert_close(fused(x), model(x), rtol=1e-9, atol=1e-9)


def test_a_chain_that_one_chunk_leaves_is_left():
    """The last chunk hands the first convolution's output on to the code as well: that
    convolution's batch norm stays (its pad still folds: every call of it feeds the
    convolution alone); the rest fuses as before."""
    block = _Chunked()
    block.tap_last = True
    model, x, fused, report = _fused_from_a_run(block, 2, 3, 9, 5)
    assert _fusions(report) == {"conv1": ["pad"], "conv2": ["bn2"]}
    assert _refusals(report) == {"bn1": "called 3 times in the forward",
                                 "act": "called 6 times in the forward"}  # fmt: skip
    torch.testing.assert_close(fused(x), model(x), rtol=1e-9, atol=1e-9)


def test_example_inputs_need_fuse_and_the_forward_arguments():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="example_inputs is read only with fuse=True"):
        convert_model(model, example_inputs=x)
    with pytest.raises(TypeError, match=r"example_inputs must be a tensor or a tuple.*list"):
        convert_model(model, fuse=True, example_inputs=[x])
