"""Resuming with --ckpt_path, and checkpoints that an interruption cannot damage."""

from __future__ import annotations

import copy
import csv
import io
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from recipes_testutils import DIGITS, run_cli

from recipes.callbacks import TrainingCurves
from recipes.checkpoint_io import AtomicCheckpointIO, atomic_torch_save

SHORT = (
    "--model.width",
    "0.0625",
    "--trainer.limit_train_batches",
    "3",
    "--trainer.limit_val_batches",
    "0.5",
)


class Probe(L.Callback):
    """What the trainer holds when training (re)starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.epoch, self.step = trainer.current_epoch, trainer.global_step
        self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())
        self.scheduler = copy.deepcopy(trainer.lr_scheduler_configs[0].scheduler.state_dict())


def _last(cli) -> Path:
    return Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


def _metrics(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_resume_continues_epochs_and_optimizer_state(tmp_path, capsys):
    first = run_cli(
        "fit",
        "--config",
        str(DIGITS),
        *SHORT,
        "--trainer.max_epochs",
        "2",
        tmp_path=tmp_path,
        callbacks=[TrainingCurves()],
    )
    last = _last(first)
    saved = torch.load(last, weights_only=True)  # (plain data only: the RNG states too)
    assert (saved["epoch"], saved["global_step"]) == (1, 6)
    assert set(saved["rng_states"]) >= {"torch", "numpy", "python"}

    probe = Probe()
    with pytest.warns(UserWarning, match=r"sized for T_max=2; this run's length is 3"):
        resumed = run_cli(
            "fit",
            "--config",
            str(DIGITS),
            *SHORT,
            "--trainer.max_epochs",
            "3",
            "--ckpt_path",
            str(last),
            tmp_path=tmp_path,
            callbacks=[probe, TrainingCurves()],
        )
    assert (probe.epoch, probe.step) == (2, 6)  # continues after the saved epoch
    saved_opt = saved["optimizer_states"][0]
    assert probe.optimizer["param_groups"] == saved_opt["param_groups"]
    assert probe.optimizer["state"].keys() == saved_opt["state"].keys() != set()
    for key, state in saved_opt["state"].items():  # SGD momentum buffers, exactly
        assert torch.equal(
            probe.optimizer["state"][key]["momentum_buffer"], state["momentum_buffer"]
        )
    assert probe.scheduler == saved["lr_schedulers"][0] and probe.scheduler["last_epoch"] == 2
    assert (resumed.trainer.current_epoch, resumed.trainer.global_step) == (3, 9)
    curves = next(c for c in resumed.trainer.callbacks if type(c).__name__ == "TrainingCurves")
    assert [r["epoch"] for r in curves.history] == [0, 1, 2]  # the plot keeps the first run
    # the same run folder: metrics go on, the best checkpoint is still tracked, nothing replaced
    folder = Path(first.trainer.log_dir)
    assert Path(resumed.trainer.log_dir) == folder
    assert sorted(p.name for p in folder.parent.iterdir()) == ["version_0"]
    epochs = {int(float(r["epoch"])) for r in _metrics(folder) if r["val_acc"]}
    assert epochs == {0, 1, 2}
    assert (folder / "config.yaml").is_file() and (folder / "config_1.yaml").is_file()
    assert "ckpt_path: null" in (folder / "config.yaml").read_text()
    best = [p.name for p in (folder / "checkpoints").glob("best-*.ckpt")]
    val_acc = {
        int(float(r["epoch"])): float(r["val_acc"]) for r in _metrics(folder) if r["val_acc"]
    }
    top = max(val_acc.values())
    assert best == [
        f"best-epoch={min(e for e, v in val_acc.items() if v == top):03d}-val_acc={top:.4f}.ckpt"
    ]
    assert f"Resuming in {folder}" in capsys.readouterr().out


def test_checkpoints_are_written_by_the_atomic_io(tmp_path):
    cli = run_cli(
        "fit",
        "--config",
        str(DIGITS),
        "--model.width",
        "0.0625",
        "--trainer.fast_dev_run",
        "1",
        tmp_path=tmp_path,
    )
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    # A checkpoint IO the config names is kept.
    cli = run_cli(
        "fit",
        "--config",
        str(DIGITS),
        "--model.width",
        "0.0625",
        "--trainer.fast_dev_run",
        "1",
        "--trainer.plugins",
        "lightning.pytorch.plugins.io.TorchCheckpointIO",
        tmp_path=tmp_path,
    )
    assert type(cli.trainer.strategy.checkpoint_io) is TorchCheckpointIO


def _interrupting_save(real_save, after_bytes: int):
    """A torch.save that writes ``after_bytes`` of the file, then is interrupted."""

    def save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[:after_bytes])
        raise KeyboardInterrupt

    return save


def test_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt" / "last.ckpt"
    atomic_torch_save({"epoch": 1}, target)
    monkeypatch.setattr(torch, "save", _interrupting_save(torch.save, 10))
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"epoch": 2, "big": torch.zeros(1000)}, target)
    assert torch.load(target) == {"epoch": 1}
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no temporary left
    monkeypatch.undo()
    AtomicCheckpointIO().save_checkpoint({"epoch": 3}, str(target))
    assert torch.load(target) == {"epoch": 3}


def test_run_interrupted_while_checkpointing_loses_nothing(tmp_path, monkeypatch):
    """Ctrl+C in the middle of writing epoch 1's checkpoints: epoch 0's stay whole, and the
    run resumes from them."""
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 0 wrote best + last; the third write is one of epoch 1's
            return _interrupting_save(real_save, 100)(obj, f, *args, **kwargs)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    sigint = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT after an interrupt
    try:
        with pytest.raises(SystemExit):
            run_cli(
                "fit",
                "--config",
                str(DIGITS),
                *SHORT,
                "--trainer.max_epochs",
                "3",
                tmp_path=tmp_path,
            )
    finally:
        signal.signal(signal.SIGINT, sigint)
    monkeypatch.undo()
    folder = next(tmp_path.glob("vgg11_digits/version_0/checkpoints"))
    names = sorted(p.name for p in folder.iterdir())
    assert names[-1] == "last.ckpt" and len(names) == 2, names  # no partial or temporary file
    for path in folder.iterdir():
        assert torch.load(path, weights_only=False)["epoch"] == 0
    resumed = run_cli(
        "fit",
        "--config",
        str(DIGITS),
        *SHORT,
        "--trainer.max_epochs",
        "2",
        "--ckpt_path",
        str(folder / "last.ckpt"),
        tmp_path=tmp_path,
    )
    assert resumed.trainer.current_epoch == 2 and resumed.trainer.global_step == 6
    assert Path(resumed.trainer.log_dir) == folder.parent
