"""Drawing and writing the recipes' pictures: PNG files in the run folder (written atomically),
and the same image in TensorBoard (or any logger whose ``experiment`` has ``add_image``)."""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

DPI = 100
FONT = 7  # points: about 10 pixels at DPI 100
MISSING = (0.72, 0.83, 0.95)  # pale blue: pixels outside the image (a receptive field past it)


def render(fig: Figure) -> np.ndarray:
    """The figure as an RGB uint8 array (H, W, 3)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def write_png(image: np.ndarray, path: Path) -> None:
    """Write ``image`` (uint8, (H, W) or (H, W, 3)) to ``path`` atomically: a viewer never sees a
    half-written file, and an interruption leaves the previous picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def publish(
    trainer: L.Trainer, image: np.ndarray | Figure, folder: Path, relpath: str, tag: str, step: int
) -> Path:
    """Write a picture to ``folder/relpath`` and send it to every logger that takes images
    (TensorBoard's ``add_image``). Call on rank zero only."""
    array = render(image) if isinstance(image, Figure) else image
    path = folder / relpath
    write_png(array, path)
    for logger in trainer.loggers:
        add_image = getattr(logger.experiment, "add_image", None)
        if callable(add_image):
            add_image(tag, array, step, dataformats="HW" if array.ndim == 2 else "HWC")
    return path


def when(trainer: L.Trainer) -> str:
    """``", epoch N"`` while fitting; nothing for ``validate``/``test`` (which do not restore the
    epoch count of the checkpoint they evaluate)."""
    return f", epoch {trainer.current_epoch}" if trainer.state.fn == "fit" else ""


def display_images(images: torch.Tensor, datamodule) -> np.ndarray:
    """Network inputs (N, C, H, W) as RGB pixels (N, H, W, 3) in [0, 1]: the data module's
    normalisation undone (else each image stretched to its own range); grey repeated to RGB."""
    x = images.detach().float().cpu()
    denormalize = getattr(datamodule, "denormalize", None)
    if denormalize is not None:
        x = denormalize(x)
    else:
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    if x.shape[1] != 3:
        x = x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).numpy()


def diverging(values: np.ndarray, scale: float) -> np.ndarray:
    """Signed values as RGB: blue negative, white zero, red positive, ±``scale`` saturated."""
    return colormaps["RdBu_r"](0.5 + 0.5 * np.clip(values / max(scale, 1e-12), -1, 1))[..., :3]


def sequential(values: np.ndarray, scale: float) -> np.ndarray:
    """Non-negative values as RGB (magma: black 0 … light yellow ``scale``)."""
    return colormaps["magma"](np.clip(values / max(scale, 1e-12), 0, 1))[..., :3]


def tile_figure(
    tiles: Sequence[np.ndarray],
    *,
    cols: int,
    title: str,
    labels: Sequence[str] | None = None,
    label_colors: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    tile_px: int = 64,
    gap: int = 4,
    min_width: int = 520,
) -> Figure:
    """Equal-sized RGB tiles ((h, w, 3) in [0, 1]; NaN shows as light grey) on a grid, each
    scaled up by a whole factor to about ``tile_px`` pixels (nearest, so every pixel stays
    visible), with a caption under each tile and optional row and column headings. NaN pixels
    (outside an image) show pale blue."""
    n = len(tiles)
    rows = max(1, math.ceil(n / cols))
    h, w = tiles[0].shape[:2]
    zoom = max(1, round(tile_px / max(h, w)))
    th, tw = h * zoom, w * zoom
    label_lines = max((lbl.count("\n") + 1 for lbl in labels), default=0) if labels else 0
    label_h = 11 * label_lines + (2 if label_lines else 0)
    cell_h, cell_w = th + label_h + gap, tw + gap
    canvas = np.ones((rows * cell_h + gap, cols * cell_w + gap, 3))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = gap + r * cell_h, gap + c * cell_w
        big = np.repeat(np.repeat(np.asarray(tile, dtype=float), zoom, 0), zoom, 1)
        canvas[y : y + th, x : x + tw] = np.where(np.isnan(big), np.array(MISSING), big)
    left = 64 if row_labels else 0
    title_h = 14 * (title.count("\n") + 1) + 8
    top = title_h + (14 if col_labels else 0)
    title_w = 6 * max(map(len, title.splitlines())) + 16  # (about 6 pixels a character)
    height = canvas.shape[0] + top
    width = max(min_width, canvas.shape[1] + left + 8, title_w)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    x0 = left + (width - left - canvas.shape[1]) // 2
    ax = fig.add_axes(
        (x0 / width, 0, canvas.shape[1] / width, canvas.shape[0] / height), frameon=False
    )
    ax.imshow(canvas, interpolation="nearest", extent=(0, canvas.shape[1], canvas.shape[0], 0))
    ax.set_axis_off()
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = gap + r * cell_h, gap + c * cell_w
        if labels:
            color = label_colors[i] if label_colors else "black"
            ax.text(
                x + tw / 2,
                y + th + 1,
                labels[i],
                ha="center",
                va="top",
                fontsize=FONT,
                color=color,
                linespacing=1.0,
            )
    for r, text in enumerate(row_labels or ()):
        y = gap + r * cell_h + th / 2
        ax.text(-4, y, text, ha="right", va="center", fontsize=FONT, clip_on=False)
    for c, text in enumerate(col_labels or ()):
        ax.text(
            gap + c * cell_w + tw / 2,
            -3,
            text,
            ha="center",
            va="bottom",
            fontsize=FONT,
            clip_on=False,
        )
    fig.text(0.5, 1 - 4 / height, title, ha="center", va="top", fontsize=FONT + 1)
    return fig
