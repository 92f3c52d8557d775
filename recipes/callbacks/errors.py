"""Which classes the model confuses, and its worst mistakes, after every validation and test
epoch."""

from __future__ import annotations

import math

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure

from ._log_dir import LogDirCallback
from ._plot import DPI, FONT, display_images, publish, tile_figure, when


def confusion_figure(counts: np.ndarray, names: list[str], title: str) -> Figure:
    """Rows: true class, columns: predicted; colour: the share of the row (recall on the
    diagonal), numbers: image counts (up to 30 classes)."""
    k = len(counts)
    totals = counts.sum(axis=1, keepdims=True)
    share = counts / np.maximum(totals, 1)
    side = min(12.0, max(4.5, 0.42 * k + 2))
    fig = Figure(figsize=(side + 1.2, side), dpi=DPI)
    ax = fig.add_axes(
        (0.9 / (side + 1.2), 0.9 / side, (side - 1.3) / (side + 1.2), (side - 1.5) / side)
    )
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    bar = fig.add_axes(
        ((side - 0.2) / (side + 1.2), 0.9 / side, 0.18 / (side + 1.2), (side - 1.5) / side)
    )
    fig.colorbar(image, cax=bar, label="share of the true class's images")
    if k <= 30:
        for t in range(k):
            for p in range(k):
                if counts[t, p]:
                    ax.text(
                        p,
                        t,
                        str(int(counts[t, p])),
                        ha="center",
                        va="center",
                        fontsize=FONT,
                        color="white" if share[t, p] > 0.5 else "black",
                    )
    if k <= 50:
        ax.set_xticks(range(k), names, rotation=90 if max(map(len, names)) > 2 else 0)
        ax.set_yticks(range(k), names)
    ax.tick_params(labelsize=FONT)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=FONT + 2)
    return fig


class ErrorAnalysis(LogDirCallback):
    """After each validation epoch and after ``test``: ``confusion_matrix_<val|test>.png`` (how
    often each true class is predicted as each class) and ``worst_mistakes_<val|test>.png``
    (the wrong predictions made with the highest confidence: the image, true → predicted
    class, confidence). Also in TensorBoard, as ``confusion_matrix/<stage>`` and
    ``worst_mistakes/<stage>``.

    Args:
        mistakes: how many mistakes to show.
    """

    def __init__(self, mistakes: int = 24) -> None:
        self.mistakes = mistakes
        self._reset()

    def _reset(self) -> None:
        self._counts: torch.Tensor | None = None
        self._scores: torch.Tensor | None = None  # confidence of each kept mistake
        self._images: torch.Tensor | None = None  # their display pixels (M, H, W, 3)
        self._pairs: torch.Tensor | None = None  # (M, 2): true, predicted

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def _collect(self, trainer, pl_module, outputs, batch) -> None:
        if trainer.sanity_checking or not isinstance(outputs, dict) or "logits" not in outputs:
            return
        images, labels = batch
        probs = outputs["logits"].float().softmax(dim=1)
        k = probs.shape[1]
        confidence, preds = probs.max(dim=1)
        counts = torch.bincount(labels * k + preds, minlength=k * k).view(k, k)
        self._counts = counts if self._counts is None else self._counts + counts
        wrong = (preds != labels).nonzero().flatten()
        if self._scores is None:
            self._scores = torch.full((self.mistakes,), float("-inf"))
            self._images = torch.zeros(self.mistakes, *images.shape[2:], 3)
            self._pairs = torch.zeros(self.mistakes, 2, dtype=torch.long)
        if not len(wrong):
            return
        scores = torch.cat([self._scores, confidence[wrong].cpu()])
        keep = scores.topk(self.mistakes).indices
        new = keep >= self.mistakes
        chosen = wrong[keep[new] - self.mistakes]
        pixels = torch.from_numpy(display_images(images[chosen], trainer.datamodule))
        pairs = torch.stack([labels[chosen], preds[chosen]], dim=1).cpu()
        old = ~new
        self._images = torch.cat([self._images[keep[old]], pixels])
        self._pairs = torch.cat([self._pairs[keep[old]], pairs])
        self._scores = torch.cat([self._scores[keep[old]], scores[keep[new]]])

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._collect(trainer, pl_module, outputs, batch)

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._collect(trainer, pl_module, outputs, batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._finish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer, pl_module, "test")

    def _finish(self, trainer, pl_module, stage: str) -> None:
        if self._counts is None:
            return
        counts, scores, images, pairs = self._counts, self._scores, self._images, self._pairs
        if trainer.world_size > 1:  # every process saw part of the data
            device = pl_module.device
            counts = trainer.strategy.reduce(counts.to(device), reduce_op="sum")
            scores = pl_module.all_gather(scores.to(device)).flatten().cpu()
            images = pl_module.all_gather(images.to(device)).flatten(0, 1).cpu()
            pairs = pl_module.all_gather(pairs.to(device)).flatten(0, 1).cpu()
            keep = scores.topk(self.mistakes).indices
            scores, images, pairs = scores[keep], images[keep], pairs[keep]
        self._write(trainer, stage, counts.cpu().numpy(), scores, images, pairs)

    @rank_zero_only
    def _write(self, trainer, stage, counts, scores, images, pairs) -> None:
        names = [str(n) for n in getattr(trainer.datamodule, "class_names", ())]
        if len(names) != len(counts):
            names = [str(i) for i in range(len(counts))]
        total = int(counts.sum())
        accuracy = np.trace(counts) / max(total, 1)
        what = {"val": "validation", "test": "test"}[stage]
        step = trainer.current_epoch if stage == "val" else 0
        when_ = when(trainer)
        title = f"Confusion matrix, {what} set ({total} images, accuracy {accuracy:.2%}){when_}"
        fig = confusion_figure(counts, names, title)
        publish(
            trainer,
            fig,
            self.log_dir,
            f"confusion_matrix_{stage}.png",
            f"confusion_matrix/{stage}",
            step,
        )
        order = scores.argsort(descending=True)
        order = order[torch.isfinite(scores[order])]
        wrong = total - int(np.trace(counts))
        if len(order):
            tiles = [images[i].numpy() for i in order]
            labels = [
                f"{names[pairs[i, 0]]} → {names[pairs[i, 1]]}\n{float(scores[i]):.0%}"
                for i in order
            ]
            title = (
                f"Worst mistakes, {what} set: the {len(order)} of {wrong} wrong predictions made "
                f"with the highest confidence{when_}\ntrue class → predicted class, confidence"
            )
            fig = tile_figure(
                tiles,
                cols=min(8, math.ceil(math.sqrt(len(tiles) * 2))),
                title=title,
                labels=labels,
                tile_px=72,
            )
        else:
            fig = Figure(figsize=(5.2, 1.0), dpi=DPI)
            fig.text(
                0.5,
                0.5,
                f"No mistakes on the {total} {what} images{when_}",
                ha="center",
                va="center",
                fontsize=FONT + 2,
            )
        publish(
            trainer,
            fig,
            self.log_dir,
            f"worst_mistakes_{stage}.png",
            f"worst_mistakes/{stage}",
            step,
        )
