"""What the recipe CLI adds to the config's checkpoints: ``last.ckpt`` written at the end of
every training epoch whatever the validation schedule, and the temporary files of interrupted
checkpoint writes removed when a run starts."""

from __future__ import annotations

import importlib
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from ..checkpoint_io import remove_stale_temporaries
from .summary import display_path


def _imported(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def as_list(value) -> list:
    """A config's value that may be one item or a list of them, as a list."""
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def last_checkpoints_every_epoch(config) -> list[int]:
    """Make the config's checkpoints without a monitored metric (``last.ckpt``) save at the end
    of every training epoch, whatever the validation schedule; return the positions, in
    ``trainer.callbacks``, of those :class:`SaveAtEpochEnd` saves.

    Lightning's ModelCheckpoint saves at the end of a training epoch (after its validation) only
    when validation runs once, at the end of every epoch; otherwise only after validations, so
    with ``check_val_every_n_epoch: 2`` the epochs without validation, the run's last one too,
    end unsaved. Where validation runs at most once per epoch (``val_check_interval`` 1.0), these
    checkpoints get ``save_on_train_epoch_end: true``: every epoch is then saved, after its
    validation if it has one, as with ``check_val_every_n_epoch: 1``. Where it also runs within
    epochs (``val_check_interval`` below 1, a number of batches or a time), they keep saving after
    each validation, and the epochs that end without one are saved at their end. A checkpoint
    that monitors a metric, or sets ``save_on_train_epoch_end`` itself, is left as configured.
    """
    trainer = config["trainer"]
    interval = trainer.get("val_check_interval")
    once_per_epoch = interval is None or (isinstance(interval, float) and interval == 1.0)
    if trainer.get("check_val_every_n_epoch", 1) == 1 and once_per_epoch:
        return []  # (Lightning saves them at the end of every epoch)
    positions = []
    for i, callback in enumerate(as_list(trainer.get("callbacks"))):
        init = getattr(callback, "init_args", None)
        cls = _imported(getattr(callback, "class_path", ""))
        if init is None or not (isinstance(cls, type) and issubclass(cls, ModelCheckpoint)):
            continue
        if init.get("monitor") is not None or init.get("save_on_train_epoch_end") is not None:
            continue
        if once_per_epoch:
            init["save_on_train_epoch_end"] = True
        else:
            positions.append(i)
    return positions


class SaveAtEpochEnd(L.Callback):
    """Saves ModelCheckpoints that save after each validation also at the end of every training
    epoch (see :func:`last_checkpoints_every_epoch`): it calls their end-of-validation save,
    which does nothing where they saved at this step already (the epoch ended with validation)."""

    def __init__(self, checkpoints: list[ModelCheckpoint]) -> None:
        self.checkpoints = checkpoints

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for checkpoint in self.checkpoints:
            checkpoint.on_validation_end(trainer, pl_module)


class RemoveStaleTemporaries(L.Callback):
    """When ``fit`` starts, removes from the run's checkpoint folders the temporary files that
    interrupted checkpoint writes left there (a process killed with ``kill -9`` mid-write)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        folders = {
            str(c.dirpath)
            for c in trainer.checkpoint_callbacks
            if isinstance(c, ModelCheckpoint) and c.dirpath and "://" not in str(c.dirpath)
        }
        for folder in sorted(folders):
            for path in remove_stale_temporaries(folder):
                print(f"Removed {display_path(path)}: left by a checkpoint write that was cut off")
