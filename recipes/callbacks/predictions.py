"""Write ``predict``'s output as CSV: one row per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from ._log_dir import LogDirCallback


class PredictionWriter(LogDirCallback, BasePredictionWriter):
    """Writes ``<log dir>/<filename>`` (``predictions_rank<R>.csv`` per process when several
    run) with columns ``index, label, pred, confidence`` in dataset order."""

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename

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
        with open(folder / name, "w") as f:
            f.write("index,label,pred,confidence\n")
            for preds, indices in zip(predictions, batch_indices):
                for out, idx in zip(preds, indices):
                    rows = zip(
                        idx, out["label"].tolist(), out["pred"].tolist(), out["confidence"].tolist()
                    )
                    f.writelines(f"{i},{y},{p},{c:.6f}\n" for i, y, p, c in rows)
