"""Activation checkpointing (``torch.utils.checkpoint``) over converted layers, both backends:
the recomputed forward must save what the first one did (non-reentrant checkpointing checks
the saved tensors' metadata), and the gradients must be torch's."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    checkpoint_sequential,
    create_selective_checkpoint_contexts,
)

import torchconv_ext

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]


def _keep_convolutions(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """A selective-checkpointing policy: our convolutions' results saved, the rest recomputed."""
    if "conv" in str(op):
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


RUNS = {
    "reentrant": lambda m, x: checkpoint(m, x, use_reentrant=True),
    "non-reentrant": lambda m, x: checkpoint(m, x, use_reentrant=False),
    "sequential": lambda m, x: checkpoint_sequential(m, 3, x, use_reentrant=False),
    "selective": lambda m, x: checkpoint(
        m, x, use_reentrant=False,
        context_fn=lambda: create_selective_checkpoint_contexts(_keep_convolutions),
    ),
}  # fmt: skip


def _gradients(model: nn.Module, run, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    x = x.clone().requires_grad_()
    y = run(model, x)
    y.square().sum().backward()
    return [y.detach(), x.grad, *(p.grad for p in model.parameters())]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", list(RUNS))
def test_checkpointed_layers_match_torch(backend, how):
    """A block of every layer kind under each kind of checkpointing, twice (the second call
    replays the tapes the first recorded: the recomputation included)."""
    torch.manual_seed(0)
    ref = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2), nn.Upsample(scale_factor=2), nn.ConvTranspose2d(4, 3, 3, padding=1),
        nn.Conv2d(3, 3, 3, padding=1, groups=3),
    ).double()  # fmt: skip
    ours = torchconv_ext.convert_model(copy.deepcopy(ref))
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        for _ in range(2):
            got = _gradients(ours, RUNS[how], x)
            want = _gradients(ref, RUNS[how], x)
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
