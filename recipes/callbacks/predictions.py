"""``predict``'s output: a CSV file with one row per image, and a picture of the predictions."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from ._log_dir import LogDirCallback
from ._plot import display_images, publish, tile_figure


class PredictionWriter(LogDirCallback, BasePredictionWriter):
    """Writes ``<run folder>/<filename>`` (``predictions_rank<R>.csv`` per process when several
    run) with columns ``index, path, label, pred, class, confidence`` in dataset order (``path``
    for a folder of your own images, ``label`` when the data set has one), and
    ``predictions.png``: the first ``grid`` images as the network saw them, with the predicted
    class and its probability (red when it differs from a known label).
    """

    def __init__(self, filename: str = "predictions.csv", grid: int = 48) -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename
        self.grid = grid
        self._shown: list[tuple[np.ndarray, int, int, float, str]] = []
        self._counted = 0

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._shown = []
        self._counted = 0

    def on_predict_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        room = self.grid - len(self._shown)
        if room <= 0 or not trainer.is_global_zero:
            return
        images = batch[0][:room]
        pixels = display_images(images, trainer.datamodule)
        indices = self._batch_indices(trainer, dataloader_idx, len(batch[0]))[:room]
        paths = self._paths(trainer)
        for i, image in enumerate(pixels):
            index = indices[i] if i < len(indices) else -1
            path = paths[index] if paths and index >= 0 else ""
            self._shown.append(
                (
                    image,
                    int(outputs["label"][i]),
                    int(outputs["pred"][i]),
                    float(outputs["confidence"][i]),
                    Path(path).name if path else "",
                )
            )

    def _batch_indices(self, trainer, dataloader_idx: int, size: int) -> list[int]:
        """Dataset indices of the batch just predicted (Lightning records them for writers that
        write at the end of the epoch; else, the loader being sequential, count them)."""
        seen = getattr(trainer.predict_loop, "epoch_batch_indices", None)
        if seen and len(seen) > dataloader_idx and seen[dataloader_idx]:
            return list(seen[dataloader_idx][-1])
        start = self._counted
        self._counted += size
        return list(range(start, start + size))

    @staticmethod
    def _paths(trainer) -> list[str] | None:
        dataset = getattr(trainer.predict_dataloaders, "dataset", None)
        paths = getattr(dataset, "paths", None)
        return [str(p) for p in paths] if paths is not None else None

    @staticmethod
    def _names(trainer, k: int) -> list[str]:
        names = [str(n) for n in getattr(trainer.datamodule, "class_names", ())]
        return names if len(names) >= k else [str(i) for i in range(k)]

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        folder = self.log_dir
        folder.mkdir(parents=True, exist_ok=True)
        name = self.filename
        if trainer.world_size > 1:
            name = f"{Path(name).stem}_rank{trainer.global_rank}{Path(name).suffix}"
        # ``batch_indices`` has one list per dataloader; ``predictions`` too unless there is
        # only one dataloader (as here).
        if predictions and isinstance(predictions[0], dict):
            predictions = [predictions]
        k = next((p["probs"].shape[1] for preds in predictions for p in preds), 0)
        names = self._names(trainer, k)
        paths = self._paths(trainer)
        with open(folder / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "path", "label", "pred", "class", "confidence"])
            for preds, indices in zip(predictions, batch_indices):
                for out, idx in zip(preds, indices):
                    for i, y, p, c in zip(
                        idx, out["label"].tolist(), out["pred"].tolist(), out["confidence"].tolist()
                    ):
                        path = paths[i] if paths else ""
                        writer.writerow([i, path, "" if y < 0 else y, p, names[p], f"{c:.6f}"])
        if trainer.is_global_zero and self._shown:
            self._write_grid(trainer, names)

    def _write_grid(self, trainer, names: list[str]) -> None:
        tiles, labels, colours = [], [], []
        for image, label, pred, confidence, file in self._shown:
            tiles.append(image)
            text = f"{names[pred]} {confidence:.0%}"
            if file:
                stem = Path(file).stem
                text = f"{stem if len(stem) <= 16 else stem[:7] + '…' + stem[-8:]}\n{text}"
            elif label >= 0 and label != pred:
                text += f"\n(true {names[label]})"
            labels.append(text)
            colours.append("red" if 0 <= label != pred else "black")
        source = "your images" if any(s[4] for s in self._shown) else "the data set"
        title = (
            f"Predictions on {source}: the first {len(tiles)} images as the network sees "
            "them\npredicted class and its probability (red: differs from the label)"
        )
        cols = min(8, math.ceil(math.sqrt(len(tiles) * 2)))
        tile_px = 96 if any(s[4] for s in self._shown) else 72  # (room for the file names)
        fig = tile_figure(
            tiles, cols=cols, title=title, labels=labels, label_colors=colours, tile_px=tile_px
        )
        publish(trainer, fig, self.log_dir, "predictions.png", "predictions", 0)
