"""Operands on another GPU than the current one: our primitives run on their operands' device.

Triton launches on the current device; torch's own ops switch to their operands' device first,
so a layer placed on a second GPU (pipeline or model parallelism, ``device_map='auto'``) works
wherever the current device is. Without a second GPU here, these tests stand in for one: a
tensor that says it is on ``cuda:1`` and a recording ``torch.cuda.device``.
"""

import contextlib

import pytest
import torch

from torchconv_ext._ops import _primitive
from torchconv_ext._ops.pool import pool_fwd


class _OnSecondGpu(torch.Tensor):
    """A CPU tensor that says it is on ``cuda:1``."""

    is_cuda = True

    def get_device(self) -> int:
        return 1


@pytest.fixture
def two_gpus(monkeypatch):
    """Two CUDA devices, the current one ``cuda:0``; yields the devices switched to."""
    switched = []
    current = [0]

    @contextlib.contextmanager
    def device(index):
        switched.append(index)
        before, current[0] = current[0], index
        try:
            yield
        finally:
            current[0] = before

    monkeypatch.setattr(_primitive, "_several_gpus", True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "device", device)
    return switched


def test_an_operand_on_another_gpu_is_found(two_gpus):
    x = torch.zeros(1, 2, 4, 4).as_subclass(_OnSecondGpu)
    assert _primitive._elsewhere((x, None)) == 1
    assert _primitive._elsewhere((None, 3, x)) == 1  # (the first tensor decides)
    assert _primitive._elsewhere((torch.zeros(1),)) is None  # a CPU tensor
    assert _primitive._elsewhere((3,)) is None
    with torch.cuda.device(1):
        assert _primitive._elsewhere((x,)) is None  # on the current device


def test_one_gpu_never_asks_for_the_current_device(monkeypatch):
    monkeypatch.setattr(_primitive, "_several_gpus", False)
    monkeypatch.setattr(torch.cuda, "current_device", pytest.fail)
    x = torch.zeros(1, 2, 4, 4).as_subclass(_OnSecondGpu)
    assert _primitive._elsewhere((x,)) is None
    out, _ = pool_fwd.bind("max", [2, 2], [2, 2], [0, 0], [0, 0], [1, 1], False, True, None)(
        torch.randn(1, 2, 4, 4)
    )
    assert out.shape == (1, 2, 2, 2)


@pytest.mark.parametrize("bound", [False, True])
def test_a_primitive_runs_on_its_operands_device(two_gpus, monkeypatch, bound):
    """Plain and bound calls switch to the operands' device around the implementation (and
    its tape, whose key holds the current device), and only then."""
    seen = []
    real = _primitive._elsewhere
    monkeypatch.setattr(
        _primitive, "_elsewhere", lambda args: 1 if torch.cuda.current_device() != 1 else real(args)
    )
    impl = pool_fwd.impl
    monkeypatch.setattr(
        pool_fwd, "impl", lambda *a: seen.append(torch.cuda.current_device()) or impl(*a)
    )
    static = ("max", [2, 2], [2, 2], [0, 0], [0, 0], [1, 1], False, True, None)
    x = torch.randn(1, 2, 4, 4)
    call = pool_fwd.bind(*static) if bound else (lambda x: pool_fwd.run(x, *static))
    out, _ = call(x)
    torch.testing.assert_close(out, torch.nn.functional.max_pool2d(x, 2))
    assert two_gpus == [1] and seen == [1]
