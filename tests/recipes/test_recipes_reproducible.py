"""The default recipe gives the same numbers every time on a machine, and an interrupted run,
resumed, ends exactly where an uninterrupted one does."""

from __future__ import annotations

import csv
import shlex
from pathlib import Path

import lightning as L
import pytest
import torch
from recipes_testutils import DIGITS, run_cli, run_interrupted

# 3 epochs of 3 batches, every training step logged: a short run of the default recipe.
SHORT = (
    "--model.width",
    "0.0625",
    "--trainer.max_epochs",
    "3",
    "--trainer.limit_train_batches",
    "3",
    "--trainer.limit_val_batches",
    "0.5",
    "--trainer.log_every_n_steps",
    "1",
)
# What the recipe computes (the throughput columns are timings, and differ from run to run).
COLUMNS = (
    "epoch",
    "step",
    "train_loss_step",
    "train_loss_epoch",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr-SGD",
)


def _metrics(folder: Path) -> list[tuple[str, ...]]:
    with open(folder / "metrics.csv") as f:
        rows = [tuple(r.get(c, "") for c in COLUMNS) for r in csv.DictReader(f)]
    return sorted(r for r in rows if any(r[2:]))


def _weights(cli) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in cli.model.state_dict().items()}


class Interrupt(L.Callback):
    """Ctrl+C at a given batch of a given epoch."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.at = (epoch, batch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) == self.at:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    # (one thread, as every test runs: tests/conftest.py; the thread count changes the order of
    # oneDNN's sums, and so the last bits of every number)
    cli = run_cli("fit", "--config", str(DIGITS), *SHORT, tmp_path=tmp_path_factory.mktemp("a"))
    return Path(cli.trainer.log_dir), _weights(cli)


def test_two_runs_give_identical_metrics(uninterrupted, tmp_path):
    folder, weights = uninterrupted
    again = run_cli("fit", "--config", str(DIGITS), *SHORT, tmp_path=tmp_path)
    assert torch.are_deterministic_algorithms_enabled()  # (deterministic: warn in the config)
    rows = _metrics(folder)
    assert len(rows) > 9 and rows == _metrics(Path(again.trainer.log_dir))
    assert all(torch.equal(weights[k], v) for k, v in _weights(again).items())


def test_interrupted_and_resumed_run_matches_the_uninterrupted_one(uninterrupted, tmp_path, capsys):
    folder, weights = uninterrupted
    run_interrupted(
        "fit",
        "--config",
        str(DIGITS),
        *SHORT,
        tmp_path=tmp_path,
        callbacks=[Interrupt(epoch=2, batch=2)],  # after epoch 1's checkpoint
    )
    out = capsys.readouterr().out
    run = tmp_path / "vgg11_digits" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    assert "── fit interrupted at epoch 2, step 8" in out
    assert f"last checkpoint  {last}" in out
    # the summary's command resumes the run
    command = next(ln for ln in out.splitlines() if "resume with" in ln)
    args = shlex.split(command.split("resume with", 1)[1])
    assert args[:4] == ["python", "-m", "recipes", "fit"] and args[-2:] == [
        "--ckpt_path",
        str(last),
    ]
    resumed = run_cli(*args[3:], tmp_path=tmp_path)
    assert Path(resumed.trainer.log_dir) == run
    assert _metrics(run) == _metrics(folder)  # the same numbers, row for row
    assert all(torch.equal(weights[k], v) for k, v in _weights(resumed).items())
    # the interrupted epoch's rows were logged again; the file as it was is kept beside
    backup = run / "metrics_before_resume_1.csv"
    assert backup.is_file()
    with open(backup) as f:
        assert any(r["epoch"] == "2" for r in csv.DictReader(f))


# The same run, validated every second epoch (epoch 1 only): Lightning alone would write last.ckpt
# after that validation only, leaving epochs 0 and 2 (the run's end) unsaved.
EVERY_SECOND = (*SHORT, "--trainer.check_val_every_n_epoch", "2")


@pytest.fixture(scope="module")
def uninterrupted_every_second(tmp_path_factory):
    cli = run_cli(
        "fit", "--config", str(DIGITS), *EVERY_SECOND, tmp_path=tmp_path_factory.mktemp("b")
    )
    return Path(cli.trainer.log_dir), _weights(cli)


@pytest.mark.parametrize("epoch", [1, 2], ids=["after-epoch-0", "after-epoch-1-validated"])
def test_validated_every_second_epoch_resumes_from_every_epochs_end(
    epoch, uninterrupted_every_second, tmp_path
):
    """last.ckpt is written at the end of every epoch, the last one (without validation) too; a
    run interrupted in the next epoch and resumed from it (an epoch without validation, or one
    with, saved after it) ends with the uninterrupted run's weights and metrics."""
    folder, weights = uninterrupted_every_second
    end = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert (end["epoch"], end["global_step"]) == (2, 9)
    run_interrupted(
        "fit",
        "--config",
        str(DIGITS),
        *EVERY_SECOND,
        tmp_path=tmp_path,
        callbacks=[Interrupt(epoch=epoch, batch=1)],
    )
    last = tmp_path / "vgg11_digits" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == epoch - 1
    resumed = run_cli(
        "fit", "--config", str(DIGITS), *EVERY_SECOND, "--ckpt_path", str(last), tmp_path=tmp_path
    )
    assert _metrics(last.parent.parent) == _metrics(folder)
    assert all(torch.equal(weights[k], v) for k, v in _weights(resumed).items())


# The same run counted in steps (the schedule then steps per optimizer step). Lightning resumes
# a step-counted run inside the checkpoint's epoch; from a checkpoint written at an epoch's end,
# the recipes go on with the next epoch instead (recipes/fit_loop.py), as an uninterrupted run
# does. 8 steps end the run within epoch 2; with 100 steps, max_epochs ends it (9 steps).
BY_STEPS = {
    "max-steps-ends": ("--trainer.max_epochs", "10", "--trainer.max_steps", "8"),
    "max-epochs-ends": ("--trainer.max_steps", "100"),
}


@pytest.fixture(scope="module", params=list(BY_STEPS))
def uninterrupted_by_steps(request, tmp_path_factory):
    args = (*SHORT, *BY_STEPS[request.param])
    cli = run_cli("fit", "--config", str(DIGITS), *args, tmp_path=tmp_path_factory.mktemp("c"))
    return args, Path(cli.trainer.log_dir), _weights(cli), cli.trainer.global_step


def test_run_counted_in_steps_resumes_from_an_epochs_end(uninterrupted_by_steps, tmp_path):
    """Interrupted in epoch 2 and resumed from epoch 1's last.ckpt, a run counted in steps ends
    with the uninterrupted run's metrics and weights: the end of epoch 1 does not run again
    (which would rewrite last.ckpt, draw the data loader's seed twice and, where max_epochs ends
    the run, count epoch 1 twice and leave out epoch 2)."""
    args, folder, weights, steps = uninterrupted_by_steps
    run_interrupted(
        "fit",
        "--config",
        str(DIGITS),
        *args,
        tmp_path=tmp_path,
        callbacks=[Interrupt(epoch=2, batch=1)],
    )
    last = tmp_path / "vgg11_digits" / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (1, 6)
    resumed = run_cli(
        "fit", "--config", str(DIGITS), *args, "--ckpt_path", str(last), tmp_path=tmp_path
    )
    assert resumed.trainer.global_step == steps
    assert _metrics(last.parent.parent) == _metrics(folder)
    assert all(torch.equal(weights[k], v) for k, v in _weights(resumed).items())
