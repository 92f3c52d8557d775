"""Resuming with --ckpt_path, and checkpoints that an interruption cannot damage."""

from __future__ import annotations

import copy
import csv
import functools
import io
import shlex
import signal
import sys
import uuid
from pathlib import Path
from unittest import mock

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from recipes_testutils import CONFIGS, DIGITS, ONE, cli_args, main_error, run_cli, run_interrupted

from recipes.callbacks import TrainingCurves
from recipes.callbacks.summary import display_path
from recipes.checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from recipes.run_lock import LOCK_NAME

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
    run_interrupted(
        "fit", "--config", str(DIGITS), *SHORT, "--trainer.max_epochs", "3", tmp_path=tmp_path
    )
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


# --- resuming whichever way the checkpoint is named, and what a run must not write over -------


@pytest.mark.parametrize("saved_as", ["relative", "absolute"])
def test_resume_keeps_best_tracking_whether_the_path_is_absolute_or_relative(
    saved_as, tmp_path, monkeypatch
):
    """A run logged under a relative folder resumed with the checkpoint's absolute path, and
    the other way round, restore the best-checkpoint tracking: one best file stays."""
    monkeypatch.chdir(tmp_path)
    logs = Path("runs") if saved_as == "relative" else tmp_path / "runs"
    run_cli("fit", "--config", str(DIGITS), *ONE, "--trainer.max_epochs", "1", tmp_path=logs)
    folder = Path("runs/vgg11_digits/version_0")
    last = folder / "checkpoints" / "last.ckpt"
    ckpt = last.absolute() if saved_as == "relative" else last  # the other form
    resumed = run_cli(
        "fit",
        "--config",
        str(DIGITS),
        *ONE,
        "--trainer.max_epochs",
        "3",
        "--ckpt_path",
        str(ckpt),
        tmp_path=logs,
    )
    best = resumed.trainer.checkpoint_callback
    assert best.monitor == "val_acc" and best.dirpath == str(
        logs / folder.relative_to("runs") / "checkpoints"
    )
    assert len(list((folder / "checkpoints").glob("best-*.ckpt"))) == 1
    val_acc = [float(r["val_acc"]) for r in _metrics(folder) if r["val_acc"]]
    assert len(val_acc) == 3 and float(best.best_model_score) == max(val_acc)


def test_a_new_run_does_not_write_over_a_run_folder_with_checkpoints(tmp_path, capsys):
    version_0 = ("--trainer.logger.init_args.version", "0")
    args = ("fit", "--config", str(DIGITS), *ONE, "--trainer.max_epochs", "1")
    run_cli(*args, *version_0, tmp_path=tmp_path)  # a new run may name an unused version
    checkpoints = tmp_path / "vgg11_digits" / "version_0" / "checkpoints"
    before = {p.name: p.read_bytes() for p in checkpoints.iterdir()}
    err = main_error(capsys, [*cli_args(*args, tmp_path=tmp_path), *version_0]).err
    assert err.count("\n") == 1
    assert err.startswith(
        f"error: --trainer.logger.init_args.version 0: {checkpoints.parent} holds the checkpoints "
        "of an earlier run"
    )
    assert f"resume it with --ckpt_path {checkpoints / 'last.ckpt'}" in err
    assert {p.name: p.read_bytes() for p in checkpoints.iterdir()} == before


def test_a_resume_with_fewer_epochs_than_trained_is_refused(tmp_path, capsys):
    """Lightning raises it inside ``fit``: here it is one line before the run writes."""
    args = ("fit", "--config", str(DIGITS), *ONE, "--trainer.max_epochs")
    run_cli(*args, "2", tmp_path=tmp_path)
    folder = tmp_path / "vgg11_digits" / "version_0"
    last = folder / "checkpoints" / "last.ckpt"
    before = _files(folder)
    err = main_error(capsys, cli_args(*args, "1", "--ckpt_path", str(last), tmp_path=tmp_path)).err
    assert err == (
        f"error: --trainer.max_epochs 1: --ckpt_path {str(last)!r} has already trained 2 epochs; "
        "give 2 or more to resume it\n"
    )
    assert _files(folder) == before


def _files(folder: Path) -> dict[Path, bytes | None]:
    """Every path under ``folder`` and the contents of the files."""
    return {p: p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def _zip_of(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _damaged_tensor() -> bytes:
    """A whole checkpoint archive with 64 bytes inside a tensor's data overwritten: its index
    intact, so only the checksums tell (``torch.load`` reads none)."""
    values = torch.arange(1000, dtype=torch.float32)
    content = bytearray(
        _zip_of({"state_dict": {"w": values}, "pytorch-lightning_version": "2.6.0"})
    )
    start = content.find(values.numpy().tobytes()[:64]) + 1000
    content[start : start + 64] = bytes(64)
    return bytes(content)


@pytest.mark.parametrize(
    ("content", "subcommand", "why"),
    [
        (_zip_of({"state_dict": {"w": torch.zeros(1000)}})[:2000], "fit", "one cut short"),
        (b"", "test", "not a file torch.save wrote"),
        (b"garbage, not a checkpoint\n", "validate", "not a file torch.save wrote"),
        (_zip_of({"a": 1}), "predict", "holds no 'state_dict' or 'pytorch-lightning_version'"),
        (_zip_of({"f": functools.partial(print)}), "fit", "beyond tensors and plain data"),
        (_damaged_tensor(), "test", "fails its checksum"),
    ],
    ids=["truncated", "empty", "text", "not-lightning", "code", "damaged-tensor"],
)
def test_unreadable_checkpoint_is_one_short_error(content, subcommand, why, tmp_path, capsys):
    """A damaged or foreign file given to --ckpt_path stops the command with one line naming
    it, before anything is written: its run folder stays as it was."""
    folder = tmp_path / "vgg11_digits" / "version_0"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "metrics.csv").write_text("epoch,step,val_acc\n0,1,0.5\n")
    ckpt = folder / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(content)
    before = _files(tmp_path)
    err = main_error(
        capsys,
        cli_args(subcommand, "--config", str(DIGITS), "--ckpt_path", str(ckpt), tmp_path=tmp_path),
    ).err
    assert err.count("\n") == 1
    assert err.startswith(f"error: --ckpt_path '{ckpt}' is not a readable Lightning checkpoint: ")
    assert why in err
    assert _files(tmp_path) == before


def test_weights_only_checkpoint_cannot_resume_training(tmp_path, capsys):
    ckpt = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.0"}, ckpt)
    err = main_error(
        capsys,
        cli_args("fit", "--config", str(DIGITS), "--ckpt_path", str(ckpt), tmp_path=tmp_path),
    ).err
    assert err == (
        f"error: --ckpt_path '{ckpt}' holds no epoch, global_step, optimizer_states: training "
        "cannot resume from it (a weights-only checkpoint?); it can be evaluated with validate, "
        "test or predict\n"
    )


def test_ckpt_path_last_resumes_the_newest_run(tmp_path, capsys):
    args = ("fit", "--config", str(DIGITS), *ONE)
    err = main_error(capsys, cli_args(*args, "--ckpt_path", "last", tmp_path=tmp_path)).err
    assert err == (
        f"error: --ckpt_path last: no run in {tmp_path / 'vgg11_digits'} has a "
        "checkpoints/last.ckpt; give the checkpoint's path\n"
    )
    for _ in range(2):
        run_cli(*args, "--trainer.max_epochs", "1", tmp_path=tmp_path)
    newest = tmp_path / "vgg11_digits" / "version_1" / "checkpoints" / "last.ckpt"
    resumed = run_cli(*args, "--trainer.max_epochs", "2", "--ckpt_path", "last", tmp_path=tmp_path)
    assert resumed.trainer.ckpt_path == str(newest)
    assert Path(resumed.trainer.log_dir) == newest.parent.parent
    assert resumed.trainer.current_epoch == 2
    assert sorted(p.name for p in newest.parent.parent.parent.iterdir()) == [
        "version_0",
        "version_1",
    ]
    err = main_error(
        capsys, cli_args("test", "--config", str(DIGITS), "--ckpt_path", "best", tmp_path=tmp_path)
    ).err
    assert err.startswith("error: --ckpt_path best: a new process has no best checkpoint")


def test_a_checkpoint_that_cannot_be_written_stops_with_the_resume_command(
    tmp_path, monkeypatch, capsys
):
    """A checkpoint write that fails (a full disk, a folder made read-only) ends the run with
    one line and the command that resumes from the last whole checkpoint."""
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 0 wrote best + last; the third write is one of epoch 1's
            raise PermissionError(13, "Permission denied")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    argv = cli_args(
        "fit", "--config", str(DIGITS), *ONE, "--trainer.max_epochs", "3", tmp_path=tmp_path
    )
    printed = main_error(capsys, argv)
    monkeypatch.undo()
    err = printed.err
    checkpoints = tmp_path / "vgg11_digits" / "version_0" / "checkpoints"
    error = err.splitlines()[-1]  # (after the warnings training may print)
    assert "Traceback" not in err and error.startswith(
        f"error: cannot write checkpoint {checkpoints}/"
    )
    assert error.endswith("Permission denied; the earlier checkpoints, if any, are whole")
    names = sorted(p.name for p in checkpoints.iterdir())
    assert len(names) == 2 and names[-1] == "last.ckpt"  # epoch 0's, whole; no temporary file
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not (checkpoints.parent / LOCK_NAME).exists()
    assert "── fit interrupted at epoch 1" in printed.out
    assert (
        f"resume with      python -m recipes {shlex.join(argv)} --ckpt_path {checkpoints}/last.ckpt"
        in printed.out
    )


def test_resuming_from_a_checkpoint_older_than_its_runs_last_is_refused(tmp_path, capsys):
    """Resuming goes on in the checkpoint's run folder: from a checkpoint older than the run's
    last.ckpt it would write over the later checkpoints, so it is refused by name, nothing
    written."""
    args = ("fit", "--config", str(DIGITS), *ONE, "--trainer.max_epochs", "2")
    last = _last(run_cli(*args, tmp_path=tmp_path))
    saved = torch.load(last, weights_only=True)
    older = last.with_name("older.ckpt")
    torch.save({**saved, "epoch": 0, "global_step": 1}, older)
    before = _files(tmp_path)
    err = main_error(capsys, cli_args(*args, "--ckpt_path", str(older), tmp_path=tmp_path)).err
    assert err.startswith(
        f"error: --ckpt_path '{older}' (epoch 0, step 1) is older than its run's {last} "
        f"(epoch 1, step {saved['global_step']}): resuming goes on in the run's folder"
    )
    assert _files(tmp_path) == before


class _Terminated(L.Callback):
    """What Lightning's SIGTERM handler does (a killed or preempted job), in epoch 1."""

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.current_epoch == 1:
            trainer._signal_connector.received_sigterm = True


def test_sigterm_ends_the_run_with_a_failure_status_and_the_resume_command(tmp_path, capsys):
    """Lightning ends a terminated run with a ``SystemExit`` without a code (success to a
    shell, so ``fit ... && next`` would go on): the summary and the resume command are printed
    as for Ctrl+C, and the status is 128 + SIGTERM."""
    from recipes.cli import RecipeCLI, main

    argv = cli_args("fit", "--config", str(DIGITS), *ONE, "--trainer.max_epochs", "3",
                    tmp_path=tmp_path)  # fmt: skip

    class WithTermination(RecipeCLI):
        def instantiate_trainer(self, **kwargs):
            trainer = super().instantiate_trainer(**kwargs)
            trainer.callbacks.append(_Terminated())
            return trainer

    capsys.readouterr()
    with (
        mock.patch.object(sys, "argv", ["python -m recipes"]),  # (not pytest's arguments)
        mock.patch("recipes.cli.RecipeCLI", WithTermination),
        pytest.raises(SystemExit) as info,
    ):
        main(argv)
    assert info.value.code == 128 + signal.SIGTERM
    out = capsys.readouterr().out
    assert "── fit interrupted at epoch 1" in out
    checkpoints = tmp_path / "vgg11_digits" / "version_0" / "checkpoints"
    assert f"--ckpt_path {checkpoints}/last.ckpt" in out
    assert not (checkpoints.parent / LOCK_NAME).exists()  # the run folder's lock released


# --- last.ckpt at the end of every epoch, whatever the validation schedule --------------------

FOUR = (
    "--model.width",
    "0.0625",
    "--trainer.limit_train_batches",
    "4",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.max_epochs",
    "3",
)


@pytest.mark.parametrize(
    ("schedule", "steps"),
    [
        ((), [4, 8, 12]),  # validation ends every epoch: saved at the epochs' ends, as before
        (("--trainer.check_val_every_n_epoch", "2"), [4, 8, 12]),
        # validation within every second epoch: saved after it, and at every epoch's end
        (
            ("--trainer.check_val_every_n_epoch", "2", "--trainer.val_check_interval", "0.5"),
            [4, 6, 8, 12],
        ),
        (("--trainer.val_check_interval", "0.5"), [2, 4, 6, 8, 10, 12]),  # as before
    ],
    ids=["every-epoch", "every-2nd-epoch", "twice-every-2nd-epoch", "twice-every-epoch"],
)
def test_last_checkpoint_is_written_at_every_epoch_end(schedule, steps, tmp_path, monkeypatch):
    """Lightning saves a checkpoint without a monitored metric after validation only, unless
    validation ends every epoch: with check_val_every_n_epoch 2 a 3-epoch run would end with
    its last epoch unsaved. Mid-epoch saves after validation stay."""
    import recipes.checkpoint_io

    real_save, written = recipes.checkpoint_io.atomic_torch_save, []

    def save(obj, path):
        if Path(path).name == "last.ckpt":
            written.append(obj["global_step"])
        real_save(obj, path)

    monkeypatch.setattr(recipes.checkpoint_io, "atomic_torch_save", save)
    cli = run_cli("fit", "--config", str(DIGITS), *FOUR, *schedule, tmp_path=tmp_path)
    assert written == steps
    assert torch.load(_last(cli), weights_only=True)["epoch"] == 2


# --- options a resumed run cannot change --------------------------------------------------------


@pytest.fixture
def one_epoch(tmp_path) -> tuple[tuple[str, ...], Path]:
    """A 1-epoch run's arguments to resume it for a 2nd epoch, and its last.ckpt."""
    args = ("fit", "--config", str(DIGITS), *ONE, "--trainer.max_epochs")
    last = _last(run_cli(*args, "1", tmp_path=tmp_path))
    return (*args, "2", "--ckpt_path", str(last)), last


def test_resuming_with_other_model_or_data_options_is_refused(one_epoch, tmp_path, capsys):
    """LightningCLI lays the checkpoint's model hyper-parameters over the command line, and a
    resumed run takes the optimizer's state from the checkpoint: an option given otherwise is
    refused by name, with both values, before anything is written."""
    resume, last = one_epoch
    before = _files(tmp_path)
    cases = [
        (
            ["--model.arch", "vgg13", "--model.width", "0.125", "--model.label_smoothing", "0.1"],
            "--model.arch 'vgg13' (the checkpoint's: 'vgg11'), --model.width 0.125 (the "
            "checkpoint's: 0.0625), --model.label_smoothing 0.1 (the checkpoint's: 0.0)",
        ),
        (
            ["--model.optimizer", "torch.optim.Adam", "--model.lr_scheduler", "null"],
            "--model.lr_scheduler null (the checkpoint's: "
            "'torch.optim.lr_scheduler.CosineAnnealingLR'), --model.optimizer 'torch.optim.Adam' "
            "(the checkpoint's: 'torch.optim.SGD')",
        ),
        (
            ["--model.optimizer.init_args.lr", "0.01", "--data.split_seed", "1"],
            "--model.optimizer.init_args.lr 0.01 (the checkpoint's: 0.05), "
            "--data.init_args.split_seed 1 (the checkpoint's: 0)",
        ),
        (
            ["--data", "recipes.data.CIFARDataModule", "--data.root", "nowhere"],
            "--data 'recipes.data.CIFARDataModule' (the checkpoint's: "
            "'recipes.data.DigitsDataModule')",
        ),
    ]
    for extra, message in cases:
        err = main_error(capsys, [*cli_args(*resume, tmp_path=tmp_path), *extra]).err
        assert err.count("\n") == 1, err
        assert err == (
            f"error: --ckpt_path '{last}' was trained with other options than this command gives: "
            f"{message}; a resumed run goes on with the checkpoint's model, data and optimizer, "
            "so resume without these options (or with the checkpoint's values), or start a new "
            "run (without --ckpt_path) to train with them\n"
        )
    # Another config (before --ckpt_path: a config sets ckpt_path too): every option it sets
    # otherwise is named.
    resnet8 = ("fit", "--config", str(CONFIGS / "resnet8_digits.yaml"), *resume[3:])
    err = main_error(capsys, cli_args(*resnet8, tmp_path=tmp_path)).err
    assert err.count("\n") == 1
    assert "--model.arch 'recipes.resnet.resnet8' (the checkpoint's: 'vgg11')" in err
    # Without --config, the built-in default's options are not the user's: say so.
    err = main_error(capsys, cli_args("fit", "--ckpt_path", str(last), tmp_path=tmp_path)).err
    run_config = last.parent.parent / "config.yaml"
    assert "--model.width 0.125 (the checkpoint's: 0.0625)" in err
    assert err.endswith(
        f"; without --config this command has the built-in default's ({display_path(DIGITS)}): "
        f"give the run's own, e.g. --config {display_path(run_config)}\n"
    )
    assert _files(tmp_path) == before


def test_resuming_with_the_same_options_or_harmless_ones_goes_on(one_epoch, tmp_path, capsys):
    """The trainer's options (a longer run), the layers, how the data is read, may change; an
    option without effect on a resumed run (the initialisation) gets a notice."""
    resume, _ = one_epoch
    cli = run_cli(
        *resume,
        "--model.backend",
        "torch",
        "--data.init_args.eval_batch_size",
        "100",
        "--model.init",
        "kmeans",
        tmp_path=tmp_path,
    )
    assert cli.trainer.current_epoch == 2
    assert (
        "Note: --model.init 'kmeans' does not apply to a resumed run (the checkpoint's: "
        "'default'): its weights are the checkpoint's" in capsys.readouterr().out
    )


def test_a_checkpoint_is_refused_for_data_its_network_does_not_fit(
    one_epoch, cifar10, tmp_path, capsys
):
    """A checkpoint written before the run's options were kept in it (its model's
    hyper-parameters only): the model's options are still compared, and data of another kind
    (RGB, not grey) is refused by name instead of failing to load, for every subcommand;
    evaluating, an option the checkpoint's model replaces gets a notice."""
    resume, last = one_epoch
    saved = torch.load(last, weights_only=True)
    del saved["callbacks"]["recipes.RunConfig"]
    legacy = tmp_path / "legacy.ckpt"
    torch.save(saved, legacy)
    resume = [*resume[:-1], str(legacy)]
    err = main_error(capsys, [*cli_args(*resume, tmp_path=tmp_path), "--model.arch", "vgg13"]).err
    assert (
        "other options than this command gives: --model.arch 'vgg13' (the checkpoint's: 'vgg11');"
        in err
    )
    cifar = ["--data", "recipes.data.CIFARDataModule", "--data.root", str(cifar10["archive"])]
    cifar += ["--data.init_args.val_size", "50"]
    for subcommand, what in [
        ("fit", "resume on the data it was trained on, or start a new run (without --ckpt_path)"),
        ("test", "give data of the kind it was trained on"),
    ]:
        argv = [*cli_args(subcommand, *resume[1:], tmp_path=tmp_path), *cifar]
        assert main_error(capsys, argv).err == (
            f"error: --ckpt_path '{legacy}' holds a network for data with in_channels 1; this "
            f"command's data (CIFARDataModule) has in_channels 3: {what}\n"
        )
    run_cli(
        "validate",
        "--config",
        str(DIGITS),
        *ONE,
        "--model.width",
        "0.125",
        "--ckpt_path",
        str(last),
        tmp_path=tmp_path,
    )
    assert (
        "Note: validate builds the checkpoint's model, so these options do not apply: "
        "--model.width 0.125 (the checkpoint's: 0.0625)" in capsys.readouterr().out
    )


# --- what an interrupted write leaves ----------------------------------------------------------


def test_temporary_files_of_interrupted_writes_are_removed_when_a_run_starts(tmp_path, capsys):
    """A process killed while writing a checkpoint (kill -9) leaves its temporary file: the
    next run in the folder removes such files (named exactly so, in the checkpoints folder
    only) when it starts, and a folder holding nothing else is not a used run folder."""
    checkpoints = tmp_path / "vgg11_digits" / "version_0" / "checkpoints"
    checkpoints.mkdir(parents=True)
    stale = [checkpoints / f".last.ckpt.{uuid.uuid4().hex}.tmp"]
    stale[0].write_bytes(b"PK\x03\x04 cut off")
    args = ("fit", "--config", str(DIGITS), *ONE, "--trainer.max_epochs", "1")
    cli = run_cli(*args, "--trainer.logger.init_args.version", "0", tmp_path=tmp_path)
    assert Path(cli.trainer.log_dir) == checkpoints.parent
    assert sorted(p.name for p in checkpoints.iterdir())[-1] == "last.ckpt"
    assert not any(p.suffix == ".tmp" for p in checkpoints.iterdir())
    assert f"Removed {stale[0]}: left by a checkpoint write that was cut off" in (
        capsys.readouterr().out
    )
    # Resuming: the same, and only files named as the atomic writes name them.
    hex_ = uuid.uuid4().hex
    stale = [checkpoints / f".last.ckpt.{hex_}.tmp", checkpoints / f".best-x.ckpt.{hex_}.tmp"]
    kept = [
        checkpoints / ".last.ckpt.tmp",
        checkpoints / f"last.ckpt.{hex_}.tmp",
        checkpoints / f".last.ckpt.{hex_.upper()}.tmp",
        checkpoints / f".last.ckpt.{hex_}.tmp.bak",
        checkpoints.parent / f".last.ckpt.{hex_}.tmp",
    ]
    for path in stale + kept:
        path.write_bytes(b"partial")
    run_cli(*args, "--ckpt_path", str(checkpoints / "last.ckpt"), tmp_path=tmp_path)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
