"""A CSV logger that never deletes a run's ``metrics.csv`` and continues it on resume.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` in its folder when it starts. The
recipe CLI uses :class:`ResumableCSVLogger` in its place (it switches the class of a plain
``lightning.pytorch.loggers.CSVLogger`` from the config):

- resuming (``keep_until`` set: the checkpoint's epoch and global step), the file is continued:
  its rows up to the checkpoint stay (rows without an epoch: those before its step), the rows the interrupted run logged after the checkpoint (they are
  logged again) move to ``metrics_before_resume_<k>.csv`` with the file as it was;
- otherwise an existing file is moved to ``metrics_before_resume_<k>.csv`` untouched.

A new run's version folder is claimed when its number is chosen: Lightning's loggers take the
number after the highest ``version_N`` they list, so two runs started at once could choose the
same folder; here the folder is created with ``os.mkdir`` (which fails where it exists), and a
number another run took first is passed over.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn


def _backup_name(folder: Path) -> Path:
    k = 1
    while (folder / f"metrics_before_resume_{k}.csv").exists():
        k += 1
    return folder / f"metrics_before_resume_{k}.csv"


class _ContinuingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, keep_until: tuple[float, float] | None) -> None:
        self.keep_until = keep_until
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self.keep_until is None:
            backup = _backup_name(path.parent)
            os.replace(path, backup)
            rank_zero_warn(f"{path} existed: moved to {backup.name} before logging this run")
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header, rows = list(reader.fieldnames or []), list(reader)

        last_epoch, next_step = self.keep_until

        def keep(row: dict[str, str]) -> bool:  # logged before the checkpoint was written?
            epoch, step = row.get("epoch") or "", row.get("step") or ""
            if epoch:
                return float(epoch) <= last_epoch
            return not step or float(step) < next_step

        kept = [r for r in rows if keep(r)]
        if len(kept) < len(rows):
            shutil.copy2(path, _backup_name(path.parent))  # the file as it was
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=header)
                writer.writeheader()
                writer.writerows(kept)
            os.replace(tmp, path)
        self.metrics_keys = header


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` that keeps an existing ``metrics.csv`` and claims a new run's
    version folder when it chooses its number (see the module)."""

    keep_until: tuple[float, float] | None = None  # (the checkpoint's epoch, its global step)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _ContinuingWriter(self.log_dir, self.keep_until)
        return self._experiment

    def _get_next_version(self) -> int:
        version = super()._get_next_version()
        # Claimed by the process that logs (the others only read the number: under DDP the
        # run folder is rank 0's), on a local disk.
        if rank_zero_only.rank != 0 or not isinstance(
            get_filesystem(self.root_dir), LocalFileSystem
        ):
            return version
        os.makedirs(self.root_dir, exist_ok=True)
        while True:
            try:
                os.mkdir(os.path.join(self.root_dir, f"version_{version}"))
                return version
            except FileExistsError:  # (chosen by another run since the listing)
                version += 1
