"""Plot the training curves (loss, accuracy, learning rate per epoch) after every epoch."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._log_dir import LogDirCallback
from ._plot import publish

PANELS = {
    "loss": ("train_loss_epoch", "val_loss"),
    "top-1 accuracy": ("train_acc", "val_acc"),
    "top-5 accuracy": ("train_acc_top5", "val_acc_top5"),
}
TRAIN, VAL = zip(*PANELS.values())


class TrainingCurves(LogDirCallback):
    """Records the epoch metrics and the learning rate, and writes ``<run folder>/<filename>``
    after every training epoch (so after its validation): a run can be watched while it trains.
    The history is part of the checkpoint, so a resumed run plots every epoch, not only those
    after the resume.
    """

    def __init__(self, filename: str = "training_curves.png") -> None:
        self.filename = filename
        self.history: list[dict[str, float]] = []
        self._lr = math.nan
        self._val: dict[str, float] = {}

    @staticmethod
    def _read(trainer: L.Trainer, names: tuple[str, ...]) -> dict[str, float]:
        return {n: float(trainer.callback_metrics.get(n, math.nan)) for n in names}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The learning rate this epoch trains with (epoch schedulers step before epoch end).
        self._lr = float(trainer.optimizers[0].param_groups[0]["lr"])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val = self._read(trainer, VAL)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Epochs without validation (check_val_every_n_epoch > 1) get NaN, not stale values.
        val, self._val = self._val or dict.fromkeys(VAL, math.nan), {}
        self.history.append(
            {
                "epoch": float(trainer.current_epoch),
                "lr": self._lr,
                **self._read(trainer, TRAIN),
                **val,
            }
        )
        self._plot(trainer)

    @rank_zero_only
    def _plot(self, trainer: L.Trainer) -> None:
        panels = {
            title: names
            for title, names in PANELS.items()
            if any(not math.isnan(r[n]) for r in self.history for n in names)
        }
        fig = Figure(figsize=(4 * (len(panels) + 1), 3.4), dpi=100)
        axes = fig.subplots(1, len(panels) + 1, squeeze=False)[0]
        fig.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.84, wspace=0.28)
        epochs = [r["epoch"] for r in self.history]
        for ax, (title, names) in zip(axes, panels.items()):
            for name in names:
                ax.plot(
                    epochs,
                    [r[name] for r in self.history],
                    marker=".",
                    label=name.removesuffix("_epoch"),
                )
            ax.set(title=title, xlabel="epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend()
        axes[-1].plot(epochs, [r["lr"] for r in self.history], marker=".")
        axes[-1].set(title="learning rate", xlabel="epoch")
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[-1].grid(alpha=0.3)
        fig.suptitle(f"Training curves, epochs 0–{int(epochs[-1])}", fontsize=10)
        publish(trainer, fig, self.log_dir, self.filename, "training_curves", int(epochs[-1]))

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
