"""The learning-rate schedule follows the run: ``--trainer.max_epochs`` or ``--trainer.max_steps``
sets its length."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import lightning as L
import pytest
from recipes_testutils import DIGITS, run_cli

TINY = ("--model.width", "0.0625", "--trainer.limit_val_batches", "0")


def _lrs(cli) -> list[float]:
    with open(Path(cli.trainer.log_dir) / "metrics.csv") as f:
        return [float(r["lr-SGD"]) for r in csv.DictReader(f) if r.get("lr-SGD")]


def _scheduler(cli):
    return cli.trainer.lr_scheduler_configs[0]


def test_cosine_schedule_spans_max_epochs(tmp_path):
    """The digits config's cosine schedule lasts as many epochs as the run (4 here, where the
    config says 10), so the learning rate falls all the way and never climbs back up."""
    epochs = 4
    cli = run_cli(
        "fit",
        "--config",
        str(DIGITS),
        *TINY,
        "--trainer.limit_train_batches",
        "2",
        "--trainer.max_epochs",
        str(epochs),
        tmp_path=tmp_path,
    )
    config = _scheduler(cli)
    assert config.interval == "epoch" and config.scheduler.T_max == epochs
    assert cli.model.max_epochs == epochs  # linked from trainer.max_epochs
    lrs = _lrs(cli)
    expected = [0.05 * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    assert lrs == pytest.approx(expected)
    assert all(a > b for a, b in itertools.pairwise(lrs))


class StepLRs(L.Callback):
    """The learning rate each training step runs with."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_max_steps_makes_a_per_step_schedule(tmp_path):
    seen = StepLRs()
    cli = run_cli(
        "fit",
        "--config",
        str(DIGITS),
        *TINY,
        "--trainer.limit_train_batches",
        "2",
        "--trainer.max_steps",
        "5",
        tmp_path=tmp_path,
        callbacks=[seen],
    )
    config = _scheduler(cli)
    assert config.interval == "step" and config.scheduler.T_max == 5
    assert cli.model.max_steps == 5 and cli.trainer.global_step == 5
    expected = [0.05 * (1 + math.cos(math.pi * s / 5)) / 2 for s in range(5)]
    assert seen.lrs == pytest.approx(expected)


def test_one_cycle_gets_its_total_steps(tmp_path):
    cli = run_cli(
        "fit",
        "--config",
        str(DIGITS),
        *TINY,
        "--trainer.limit_train_batches",
        "2",
        "--trainer.max_epochs",
        "2",
        "--model.lr_scheduler",
        "torch.optim.lr_scheduler.OneCycleLR",
        "--model.lr_scheduler.max_lr",
        "0.1",
        tmp_path=tmp_path,
    )
    config = _scheduler(cli)
    assert config.interval == "step" and config.scheduler.total_steps == 4
    assert cli.trainer.global_step == 4  # (OneCycleLR raises if stepped past total_steps)


def test_schedules_without_a_length_are_left_alone(tmp_path):
    cli = run_cli(
        "fit",
        "--config",
        str(DIGITS),
        *TINY,
        "--trainer.limit_train_batches",
        "2",
        "--trainer.max_epochs",
        "3",
        "--trainer.max_steps",  # (counted in steps, a StepLR still steps per epoch)
        "6",
        "--model.lr_scheduler",
        "torch.optim.lr_scheduler.StepLR",
        "--model.lr_scheduler.step_size",
        "2",
        tmp_path=tmp_path,
    )
    config = _scheduler(cli)
    assert config.interval == "epoch" and config.scheduler.step_size == 2
    assert _lrs(cli) == pytest.approx([0.05, 0.05, 0.005])
