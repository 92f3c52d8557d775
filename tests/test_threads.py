"""Calls from several threads at once, each against torch in float64: on a GPU, launches from
threads; under Triton's CPU interpreter, whose launches run on module-level state, the
launches taking turns (``triton_kernels._common``)."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
from torchconv_ext import functional as TF

pytestmark = pytest.mark.interpret


def _calls(seed: int, device: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(what, ours, torch's) for a few calls and their gradients."""
    g = torch.Generator().manual_seed(seed)
    results = []
    for channels, stride in ((2, 1), (3, 2)):
        x = torch.randn(2, channels, 6, 6, generator=g, dtype=torch.float64).to(device)
        w = torch.randn(3, channels, 3, 3, generator=g, dtype=torch.float64).to(device)
        calls = {
            "conv": lambda f, x, w: f.conv2d(x, w, stride=stride, padding=1),
            "transposed": lambda f, x, w: f.conv_transpose2d(x, w.transpose(0, 1), stride=stride),
            "pool": lambda f, x, w: f.max_pool2d(x, 2, stride),
        }
        for name, call in calls.items():
            grads = []
            for f in (TF, F):
                xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
                out = call(f, xx, ww)
                grad_x = torch.autograd.grad(out, xx, torch.ones_like(out))[0]
                grads.append((out, grad_x))
            for ours, theirs in zip(*grads):
                results.append((name, ours, theirs))
    return results


def test_threads_calling_at_once_get_torchs_results(triton_device):
    barrier = threading.Barrier(3)
    outcomes: dict[int, object] = {}

    def run(seed: int) -> None:
        barrier.wait()
        try:
            with torchconv_ext.use_backend("triton"):
                outcomes[seed] = _calls(seed, triton_device)
        except Exception as e:  # (reported below, with its thread)
            outcomes[seed] = e

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed, outcome in outcomes.items():
        assert not isinstance(outcome, Exception), (seed, outcome)
        for name, ours, theirs in outcome:
            torch.testing.assert_close(ours, theirs, msg=f"{name} in thread {seed}")
    assert len(outcomes) == 3
