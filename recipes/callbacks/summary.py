"""One short summary at the end of every command, and on Ctrl+C: where the run went and how to
go on."""

from __future__ import annotations

import os
import shlex
import time
from collections import Counter
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..checkpoint_io import CheckpointWriteError


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def resume_command(command: list[str] | None, ckpt: str | os.PathLike) -> str:
    """``python -m recipes fit <the same arguments> --ckpt_path <ckpt>``."""
    args = list(command or [])
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--ckpt_path":
            skip = True
        elif not a.startswith("--ckpt_path="):
            out.append(a)
    index = next((i for i, a in enumerate(out) if not a.startswith("-")), None)
    if index is not None:
        out[index] = "fit"
    else:
        out.insert(0, "fit")
    return shlex.join(["python", "-m", "recipes", *out, "--ckpt_path", display_path(ckpt)])


class RunSummary(L.Callback):
    """Prints, at the end of ``fit``/``validate``/``test``/``predict``, on Ctrl+C and when a
    checkpoint cannot be written: the run folder, the best monitored metric and its checkpoint,
    the last checkpoint, the pictures written, and the command that resumes training. The recipe
    CLI adds it to every run.

    Args:
        command: the command line (after ``python -m recipes``), for the resume command.
    """

    def __init__(self, command: list[str] | None = None) -> None:
        self.command = command
        self.log_dir: Path | None = None
        self.started = time.time()
        self.printed = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.log_dir = Path(trainer.log_dir or trainer.default_root_dir)  # (collective)
        self.started = time.time()
        self.printed = False

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.is_global_zero and not self.printed:
            self._print(trainer, getattr(stage, "value", str(stage)), interrupted=False)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # Ctrl+C, SIGTERM (a killed or preempted job), or a checkpoint that could not be
        # written (the recipe CLI prints the error after this): where the run stopped and how
        # to go on.
        if (
            isinstance(exception, (KeyboardInterrupt, SIGTERMException, CheckpointWriteError))
            and trainer.is_global_zero
        ):
            stage = trainer.state.fn.value if trainer.state.fn else "fit"
            self._print(trainer, stage, interrupted=True)

    def _pictures(self) -> str:
        if self.log_dir is None or not self.log_dir.is_dir():
            return "none"
        new = sorted(
            p.relative_to(self.log_dir)
            for p in self.log_dir.rglob("*.png")
            if p.stat().st_mtime >= self.started - 1
        )
        top = [str(p) for p in new if len(p.parts) == 1]
        folders = Counter(str(p.parent) for p in new if len(p.parts) > 1)
        items = top + [f"{d}/ ({n} image{'s' * (n != 1)})" for d, n in sorted(folders.items())]
        return ", ".join(items) if items else "none"

    @staticmethod
    def _checkpoints(trainer: L.Trainer) -> tuple[ModelCheckpoint | None, str | None]:
        best = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
        last = next(
            (c.last_model_path for c in trainer.checkpoint_callbacks if c.last_model_path), None
        )
        if last is None:
            last = next(
                (c.best_model_path for c in trainer.checkpoint_callbacks if not c.monitor), None
            )
        return best, last or None

    def _print(self, trainer: L.Trainer, stage: str, interrupted: bool) -> None:
        self.printed = True
        rows: list[tuple[str, str]] = []
        folder = display_path(self.log_dir) if self.log_dir else "(none)"
        if interrupted:
            head = (
                f"{stage} interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}"
            )
        else:
            head = f"{stage} finished"
        rows.append(("run folder", folder))
        last = None
        if stage == "fit":
            best, last = self._checkpoints(trainer)
            if best is not None and best.best_model_path and Path(best.best_model_path).is_file():
                score = best.best_model_score
                value = f"{float(score):.4f}" if score is not None else "?"
                rows.append(
                    (f"best {best.monitor}", f"{value}: {display_path(best.best_model_path)}")
                )
            if last and Path(last).is_file():
                rows.append(("last checkpoint", display_path(last)))
        else:
            if trainer.ckpt_path:
                rows.append(("checkpoint", display_path(trainer.ckpt_path)))
                candidate = Path(trainer.ckpt_path).with_name("last.ckpt")
                if candidate.is_file():
                    last = str(candidate)
            prefix = {"validate": "val_", "test": "test_"}.get(stage)
            if prefix:
                metrics = {
                    k: float(v)
                    for k, v in trainer.callback_metrics.items()
                    if k.startswith(prefix) and v.numel() == 1
                }
                if metrics:
                    rows.append(
                        ("metrics", ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())))
                    )
        rows.append(("pictures", self._pictures()))
        if stage == "predict" and self.log_dir is not None:
            written = sorted(p.name for p in self.log_dir.glob("predictions*.csv"))
            if written:
                rows.append(("predictions", ", ".join(written)))
        if last and Path(last).is_file():
            label = "resume with" if stage == "fit" else "resume training"
            rows.append((label, resume_command(self.command, last)))
        width = max(len(k) for k, _ in rows)
        lines = [f"── {head} " + "─" * max(0, 60 - len(head))]
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        print("\n".join(lines), flush=True)
