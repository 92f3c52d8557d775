"""Where callbacks write: the run's log directory, looked up once on every process."""

from __future__ import annotations

from pathlib import Path

import lightning as L


class LogDirCallback(L.Callback):
    """Stores ``trainer.log_dir`` as ``self.log_dir`` in ``setup``, which every process runs:
    under DDP reading ``trainer.log_dir`` is a collective (a broadcast), so it must not be
    read in hooks only rank 0 runs."""

    log_dir: Path

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # (None with a logger that has no directory, such as fast_dev_run's)
        self.log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        super().setup(trainer, pl_module, stage)
