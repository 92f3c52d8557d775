"""Save the first convolution's filters as a PNG grid each epoch (as the AlexNet paper shows
its 96 first-layer kernels)."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torch import nn
from torch.nn import functional as F

from ._log_dir import LogDirCallback


def first_conv(module: nn.Module) -> nn.Conv2d:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise ValueError(f"{type(module).__name__} has no Conv2d layer")


def filter_grid(weight: torch.Tensor, zoom: int = 8, gap: int = 1) -> np.ndarray:
    """``(C_out, C_in, kH, kW)`` filters as one uint8 image, each filter min-max scaled on its
    own; RGB when ``C_in == 3``, else the channel mean in grey. ``(H, W)`` or ``(H, W, 3)``."""
    w = weight.detach().float().cpu()
    w = w if w.shape[1] == 3 else w.mean(dim=1, keepdim=True)
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp_min(1e-12)
    n, c = w.shape[:2]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tiles = w.repeat_interleave(zoom, dim=2).repeat_interleave(zoom, dim=3)
    tiles = F.pad(tiles, (gap, 0, gap, 0), value=1.0)  # a white gap above and left of each
    th, tw = tiles.shape[2:]
    tiles = torch.cat([tiles, tiles.new_ones(rows * cols - n, c, th, tw)])
    grid = tiles.view(rows, cols, c, th, tw).permute(2, 0, 3, 1, 4).reshape(c, rows * th, cols * tw)
    grid = F.pad(grid, (0, gap, 0, gap), value=1.0)
    image = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return image[..., 0] if c == 1 else image


class FilterGrid(LogDirCallback):
    """Writes ``<log dir>/filters/epoch_<N>.png`` after every training epoch (and adds the
    grid to TensorBoard when a ``TensorBoardLogger`` is in use).

    Args:
        zoom: pixels per filter tap.
        dirname: folder under the run's log directory.
    """

    def __init__(self, zoom: int = 8, dirname: str = "filters") -> None:
        self.zoom = zoom
        self.dirname = dirname

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        folder = self.log_dir / self.dirname
        folder.mkdir(parents=True, exist_ok=True)
        grid = filter_grid(first_conv(pl_module).weight, self.zoom)
        Image.fromarray(grid).save(folder / f"epoch_{trainer.current_epoch:03d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(
                    "first_layer_filters",
                    grid,
                    trainer.current_epoch,
                    dataformats="HW" if grid.ndim == 2 else "HWC",
                )
