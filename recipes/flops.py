"""FLOPs of one sample through a network, counted by ``torch.utils.flop_counter``.

torchconv_ext's ops register FLOP formulas (the ones torch uses for ``aten.convolution``), so
the count is the same for both layer sets. FLOP counts of convolutions and linear layers are
linear in the batch size, so one sample, scaled, gives any batch's exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_flops(net: nn.Module, sample: torch.Tensor, backward: bool) -> int:
    """FLOPs of ``net`` on the batch ``sample`` (forward, plus backward if ``backward``).

    Runs in eval mode (no batch-norm statistics or random-number state change; neither
    batch norm nor dropout is counted) and leaves no gradients behind. Safe to call under
    ``torch.inference_mode`` (as Lightning's ``ThroughputMonitor`` does).
    """
    was_training = net.training
    params = [p for p in net.parameters() if p.requires_grad]
    counter = FlopCounterMode(display=False)
    try:
        net.eval()
        with torch.inference_mode(False), torch.enable_grad(), counter:
            out = net(sample.clone())
            if backward and params:
                torch.autograd.grad(out.sum(), params)
    finally:
        net.train(was_training)
    return counter.get_total_flops()
