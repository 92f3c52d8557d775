"""The first convolution's filters as a picture after every training epoch, as the lecture
notes and the AlexNet paper show the 96 first-layer kernels: for RGB input each filter is a
small colour image; for other inputs, a map of signed weights."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure
from torch import nn

from ._log_dir import LogDirCallback
from ._plot import diverging, publish, tile_figure


def first_conv(module: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first ``Conv2d`` (in registration order) and its name."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise ValueError(f"{type(module).__name__} has no Conv2d layer")


def filter_tiles(weight: torch.Tensor) -> tuple[list[np.ndarray], list[float], bool]:
    """``(C_out, C_in, kH, kW)`` filters as RGB tiles, each on its own scale: ``(tiles,
    scales, rgb)`` with ``scales[i]`` = max |w| of filter i.

    With 3 input channels a filter is shown as the colour image it responds to most: mid-grey
    is 0 and each channel runs from 0 (weight −scale) to 1 (+scale). With another number of
    input channels, the weights summed over them are shown signed: blue negative, white zero,
    red positive."""
    w = weight.detach().float().cpu()
    scales = w.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12)
    rgb = w.shape[1] == 3
    tiles = []
    for f, s in zip(w, scales):
        if rgb:
            tiles.append((0.5 + 0.5 * f / s).permute(1, 2, 0).numpy())
        else:
            summed = f.sum(dim=0).numpy()
            tiles.append(diverging(summed, float(np.abs(summed).max())))
    return tiles, scales.tolist(), rgb


def filter_figure(weight: torch.Tensor, name: str, epoch: int | None = None) -> Figure:
    tiles, scales, rgb = filter_tiles(weight)
    n, c, kh, kw = weight.shape
    cols = min(16, math.ceil(math.sqrt(n * 2)))
    when = f", epoch {epoch}" if epoch is not None else ""
    if rgb:
        how = "RGB; mid-grey = 0, each filter scaled to its own max |w| (the number under it)"
    elif c == 1:
        how = "blue < 0 < red, each filter scaled to its own max |w| (the number under it)"
    else:
        how = (
            f"sum over the {c} input channels; blue < 0 < red, each filter on its own scale "
            "(the number under it: max |w|)"
        )
    title = f"First-layer filters {name} ({n} × {c} × {kh} × {kw}){when}\n{how}"
    labels = [f"#{i} {s:.2g}" for i, s in enumerate(scales)]
    return tile_figure(tiles, cols=cols, title=title, labels=labels, tile_px=64)


class FilterGrid(LogDirCallback):
    """Writes ``<run folder>/filters/epoch_<N>.png`` after every training epoch (and adds it to
    TensorBoard as ``first_layer_filters``).

    Args:
        dirname: folder under the run folder.
    """

    def __init__(self, dirname: str = "filters") -> None:
        self.dirname = dirname

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        name, conv = first_conv(getattr(pl_module, "net", pl_module))
        epoch = trainer.current_epoch
        fig = filter_figure(conv.weight, name, epoch)
        relpath = f"{self.dirname}/epoch_{epoch:03d}.png"
        publish(trainer, fig, self.log_dir, relpath, "first_layer_filters", epoch)
