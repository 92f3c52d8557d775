"""``python -m recipes {fit,validate,test,predict} [--config recipes/configs/<name>.yaml]``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import DefaultHelpFormatter
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

import torchconv_ext

from ._checks import DataNotFoundError, RecipeValueError, find_recipe_error
from .callbacks.checkpoints import (
    RemoveStaleTemporaries,
    SaveAtEpochEnd,
    as_list,
    last_checkpoints_every_epoch,
)
from .callbacks.summary import RunSummary, display_path
from .checkpoint_io import AtomicCheckpointIO, is_temporary, read_checkpoint
from .data import ImageDataModule
from .fit_loop import resume_epoch_ends_as_ended
from .loggers import ResumableCSVLogger
from .module import ImageClassifier
from .resume_options import (
    RECORD_KEY,
    RESUME_FREE,
    RESUME_MOOT,
    checkpoint_record,
    given_on_command_line,
    option_value,
    options_text,
    record_differences,
    run_record,
)
from .run_lock import RunLock
from .trainer_checks import (
    check_epochs_left,
    check_seed,
    check_trainer_names,
    check_trainer_numbers,
)

CONFIGS = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIGS / "vgg11_digits.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def shipped_configs() -> dict[str, str]:
    """``{config name: its first comment line}`` for every YAML file in ``recipes/configs``."""
    configs = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        first = next((ln for ln in path.read_text().splitlines() if ln.startswith("#")), "# ")
        configs[path.stem] = first.lstrip("# ").strip()
    return configs


def _configs_help() -> str:
    configs = shipped_configs()
    width = max(map(len, configs)) + 2
    lines = [
        f"Shipped configs (--config recipes/configs/<name>.yaml; without --config: "
        f"{DEFAULT_CONFIG.stem}):"
    ]
    lines += [f"  {name:<{width}}{about}" for name, about in configs.items()]
    return "\n".join(lines)


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help, with the description's line breaks kept (the list of configs)."""


def with_default_config(args: list[str]) -> tuple[list[str], bool]:
    """``args`` with ``--config <the built-in default>`` after the subcommand when no config is
    given; and whether it was added."""
    index = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if index is None or args[index] not in SUBCOMMANDS:
        return args, False
    if any(a in ("-c", "--config") or a.startswith("--config=") for a in args):
        return args, False
    return [*args[: index + 1], "--config", display_path(DEFAULT_CONFIG), *args[index + 1 :]], True


def run_folder_of(ckpt_path: str | Path) -> Path | None:
    """The run folder (``<save_dir>/<name>/<version>``) a checkpoint was written in, if it lies
    in one's ``checkpoints/`` folder."""
    path = Path(ckpt_path)
    if path.parent.name == "checkpoints" and len(path.parents) >= 4:
        return path.parent.parent
    return None


def _logger_args(config) -> Any | None:
    """The ``init_args`` of the config's logger when it has a run folder
    (``<save_dir>/<name>/<version>``: CSVLogger, TensorBoardLogger), else ``None``."""
    init = getattr(config["trainer"].get("logger"), "init_args", None)
    if init is None or not all(k in init for k in ("save_dir", "name")):
        return None
    return init


def _check_folders(config) -> None:
    """Refuse a folder option that names a file (or lies under one), or one that cannot be
    written."""
    init = _logger_args(config)
    folders = {"--trainer.default_root_dir": config["trainer"].get("default_root_dir")}
    if init is not None:
        folders["--trainer.logger.init_args.save_dir"] = init["save_dir"]
    for option, folder in folders.items():
        if not folder or "://" in str(folder):
            continue
        path = Path(folder).expanduser().absolute()
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise RecipeValueError(
                f"{option} {str(folder)!r}: {display_path(existing)} is a file, not a folder; "
                "give the folder the runs are written to"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise RecipeValueError(
                f"{option} {str(folder)!r}: cannot write in {display_path(existing)} (no "
                "permission); give a folder the runs can be written to"
            )


def newest_last_checkpoint(config) -> Path:
    """``--ckpt_path last``: the most recently written ``<run>/checkpoints/last.ckpt`` among the
    runs in the config's log folder (``<save_dir>/<name>``)."""
    init = _logger_args(config)
    if init is None:
        raise RecipeValueError(
            "--ckpt_path last looks in the logger's <save_dir>/<name>/, and this config's logger "
            "has none: give the checkpoint's path"
        )
    runs = Path(init["save_dir"]) / str(init["name"] or "")
    found = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise DataNotFoundError(
            f"--ckpt_path last: no run in {display_path(runs)} has a checkpoints/last.ckpt; give "
            "the checkpoint's path"
        )
    return found[-1]


def _saved_run_dir(saved: dict, folder: Path) -> str | None:
    """The run folder as the checkpoint's ModelCheckpoint states spell it, if one of them is
    ``folder``'s ``checkpoints/``."""
    states = saved.get("callbacks")
    for state in states.values() if isinstance(states, dict) else ():
        dirpath = state.get("dirpath") if isinstance(state, dict) else None
        if (
            isinstance(dirpath, str)
            and Path(dirpath).resolve() == (folder / "checkpoints").resolve()
        ):
            return os.path.dirname(dirpath)
    return None


def _refuse_used_run_folder(config) -> None:
    """A new run in a run folder that holds checkpoints would write over them: refuse it."""
    init = _logger_args(config)
    if init is None or init.get("version") is None:
        return  # a new version folder
    version = init["version"]
    version = version if isinstance(version, str) else f"version_{version}"
    checkpoints = Path(init["save_dir"]) / str(init["name"] or "") / version / "checkpoints"
    if checkpoints.is_dir() and any(not is_temporary(p) for p in checkpoints.iterdir()):
        raise RecipeValueError(
            f"--trainer.logger.init_args.version {init['version']}: "
            f"{display_path(checkpoints.parent)} holds the checkpoints of an earlier run, which "
            f"this new run would write over; resume it with --ckpt_path "
            f"{display_path(checkpoints / 'last.ckpt')}, or give another version (or none: the "
            "next free one)"
        )


class _KeepingSaveConfig(SaveConfigCallback):
    """Saves the run's configuration as ``config.yaml`` in the run folder; a resumed run that
    finds one there writes ``config_1.yaml``, ``config_2.yaml`` … instead of replacing it.
    Checkpoints keep the model and data options (:func:`run_record`), so that a resumed run can
    be compared with them."""

    record: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return RECORD_KEY

    def state_dict(self) -> dict[str, Any]:
        if self.record is None:
            self.record = run_record(self.parser, self.config)
        return {"record": self.record}

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not self.already_saved and self.save_to_log_dir:
            folder = Path(trainer.log_dir)  # (collective: every process reads it)
            name = self.config_filename
            if trainer.is_global_zero:
                stem, k = Path(name).stem, 0
                while (folder / name).exists():
                    k += 1
                    name = f"{stem}_{k}.yaml"
            self.config_filename = trainer.strategy.broadcast(name)
        super().setup(trainer, pl_module, stage)


class RecipeCLI(LightningCLI):
    """LightningCLI for :class:`ImageClassifier` on any :class:`ImageDataModule`.

    - Without ``--config``, a subcommand runs the built-in default
      (``recipes/configs/vgg11_digits.yaml``); ``--help`` lists the shipped configs.
    - The data module's class count, image channels and image size are passed to the model;
      ``trainer.max_epochs`` and ``trainer.max_steps`` size the model's LR schedule.
    - ``fit --ckpt_path <run>/checkpoints/last.ckpt`` (relative or absolute) continues in the
      run's own folder: ``metrics.csv`` goes on (rows the interrupted run logged after the
      checkpoint are set aside in ``metrics_before_resume_<k>.csv``), the checkpoint callbacks
      keep tracking the best. ``--ckpt_path last`` is the newest run's ``last.ckpt``; a file
      that is not a readable Lightning checkpoint is refused before anything is written, and so
      is a new run in a run folder that holds checkpoints.
    - Checkpoints are written atomically (:class:`AtomicCheckpointIO`) unless the config names
      another checkpoint IO plugin; every command ends with a :class:`RunSummary`.
    - A run locks its run folder (:class:`RunLock`) from the start to its end: a second run in
      the same folder is refused. A checkpoint written at an epoch's end resumes with the next
      epoch also when the run is counted in steps (:class:`recipes.fit_loop.EpochEndResumingFitLoop`).
    """

    def __init__(self, args: list[str] | dict | None = None, run: bool = True, **kwargs) -> None:
        from_argv = args is None
        if from_argv:
            args = sys.argv[1:]
        self.default_config_used = False
        if isinstance(args, list):
            args, self.default_config_used = with_default_config(list(args))
            if from_argv:  # (DDP's launcher starts the other processes with sys.argv)
                sys.argv[1:] = args
        self.command = list(args) if isinstance(args, list) else None
        help_text = _configs_help()
        parser_kwargs = {
            "prog": "python -m recipes",
            "description": help_text,
            "formatter_class": _HelpFormatter,
            **{c: {"epilog": help_text, "formatter_class": _HelpFormatter} for c in SUBCOMMANDS},
        }
        self.run_lock: RunLock | None = None
        self._takes_run_lock = run  # (a CLI that only builds runs nothing: no lock)
        try:
            super().__init__(
                ImageClassifier,
                ImageDataModule,
                subclass_mode_data=True,
                auto_configure_optimizers=False,
                save_config_callback=_KeepingSaveConfig,
                parser_kwargs=parser_kwargs,
                args=None if from_argv else args,
                run=run,
                **kwargs,
            )
        finally:  # the run ended, failed or was interrupted (Ctrl+C, SIGTERM)
            if self.run_lock is not None:
                self.run_lock.release()

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.in_channels", apply_on="instantiate")
        parser.link_arguments("data.image_size", "model.image_size", apply_on="instantiate")
        parser.link_arguments("trainer.max_epochs", "model.max_epochs", apply_on="parse")
        parser.link_arguments("trainer.max_steps", "model.max_steps", apply_on="parse")

    # --- before anything is built: the checkpoint, and which folder the run writes to ----------

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        """Parse, then check ``--ckpt_path`` (``last``: the newest run's ``last.ckpt``) before
        LightningCLI reads the hyper-parameters in it."""
        super().parse_arguments(parser, args)
        self.checkpoint: dict | None = None  # the checkpoint's contents, memory-mapped
        self.checkpoint_hparams: dict[str, Any] = {}  # its model's hyper-parameters
        self.notices: list[str] = []  # printed when the run starts
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        check_seed(config)
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            ckpt_path = config["ckpt_path"] = str(newest_last_checkpoint(config))
        elif ckpt_path == "best":
            raise RecipeValueError(
                "--ckpt_path best: a new process has no best checkpoint to go back to; give the "
                "path of the run's checkpoints/best-….ckpt"
            )
        if ckpt_path and ckpt_path not in ("hpc", "registry"):
            if not Path(ckpt_path).is_file():
                raise DataNotFoundError(
                    f"checkpoint {ckpt_path!r} not found: a run keeps its checkpoints in "
                    "<run folder>/checkpoints/ (last.ckpt after every epoch, best-….ckpt)"
                )
            self.checkpoint = read_checkpoint(ckpt_path, for_fit=subcommand == "fit")
            self.checkpoint_hparams = dict(self.checkpoint.get("hyper_parameters") or {})
            self._compare_with_checkpoint(subcommand, config, ckpt_path)

    def _compare_with_checkpoint(self, subcommand: str, config, ckpt_path: str) -> None:
        """LightningCLI builds the model from the checkpoint's hyper-parameters, laid over the
        command line and the config (``_parse_ckpt_path``), and a resumed run takes the
        optimizer's and the LR schedule's state from the checkpoint: an option given otherwise
        would be ignored without a word, or fail deep inside (another optimizer, data set).
        Resuming (``fit``), a model or data option that differs from the checkpoint's is refused
        by name, except those that cannot matter (:data:`RESUME_FREE`, :data:`RESUME_MOOT`);
        evaluating, a model option the checkpoint replaces gets a notice."""
        saved = checkpoint_record(self.checkpoint or {})
        given = run_record(self._parser(subcommand), config)
        differences = record_differences(saved, given)
        if subcommand != "fit":
            overlaid = {f"model.{name}" for name in self.checkpoint_hparams}
            replaced = [d for d in differences if d[0] in overlaid]
            if replaced:
                self.notices.append(
                    f"Note: {subcommand} builds the checkpoint's model, so these options do not "
                    f"apply: {options_text(replaced)}"
                )
            return
        for key, old, new in differences:
            if key in RESUME_MOOT:
                self.notices.append(
                    f"Note: --{key} {option_value(new)} does not apply to a resumed run (the "
                    f"checkpoint's: {option_value(old)}): {RESUME_MOOT[key]}"
                )
        refused = [d for d in differences if d[0] not in RESUME_FREE and d[0] not in RESUME_MOOT]
        if not refused:
            return
        hint = ""
        if self.default_config_used and not all(
            given_on_command_line(key, self.command) for key, _, _ in refused
        ):
            folder = run_folder_of(ckpt_path)
            run_config = folder / "config.yaml" if folder is not None else None
            hint = (
                f"; without --config this command has the built-in default's "
                f"({display_path(DEFAULT_CONFIG)}): give the run's own"
                + (
                    f", e.g. --config {display_path(run_config)}"
                    if run_config is not None and run_config.is_file()
                    else ""
                )
            )
        raise RecipeValueError(
            f"--ckpt_path {str(ckpt_path)!r} was trained with other options than this command "
            f"gives: {options_text(refused)}; a resumed run goes on with the checkpoint's model, data "
            "and optimizer, so resume without these options (or with the checkpoint's values), "
            f"or start a new run (without --ckpt_path) to train with them{hint}"
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        self.resume_folder: Path | None = None
        self.resume_at: tuple[float, float] | None = None  # the checkpoint's (epoch, step)
        _check_folders(config)
        check_trainer_numbers(config)
        check_trainer_names(config)
        self.save_at_epoch_end = last_checkpoints_every_epoch(config)
        if self.subcommand == "fit" and self.checkpoint is not None:
            self._continue_run_folder(config, Path(config["ckpt_path"]), self.checkpoint)
        self.checkpoint = None
        if self.subcommand == "fit" and self.resume_folder is None:
            _refuse_used_run_folder(config)

    def _continue_run_folder(self, config, ckpt_path: Path, saved: dict) -> None:
        """Point the logger at the checkpoint's run folder, so the resumed run goes on there."""
        folder = run_folder_of(ckpt_path)
        init = _logger_args(config)
        if folder is None or init is None or "version" not in init:
            return
        # The folder as the checkpoint spells it (relative or absolute): ModelCheckpoint restores
        # its best-checkpoint tracking only when its folder is spelt as when it was saved.
        _refuse_older_than_last(ckpt_path, saved, folder)
        check_epochs_left(config, saved, ckpt_path)
        run_dir = _saved_run_dir(saved, folder) or str(folder)
        init["save_dir"] = os.path.dirname(os.path.dirname(run_dir))
        init["name"] = os.path.basename(os.path.dirname(run_dir))
        init["version"] = os.path.basename(run_dir)
        self.resume_folder = folder
        self.resume_at = (float(saved["epoch"]), float(saved["global_step"]))
        # ModelCheckpoint warns about its own, non-empty folder; here that folder is expected.
        warnings.filterwarnings(
            "ignore", message=r"Checkpoint directory .* exists and is not empty"
        )

    def _check_checkpoint_fits_the_data(self) -> None:
        """A checkpoint's network has the class count and input channels of the data it was
        trained on (and a resumed run its image size): other data fails to load it, deep inside;
        refused by name instead."""
        names = ("num_classes", "in_channels") + (
            ("image_size",) if self.subcommand == "fit" else ()
        )
        differ = [
            (name, self.checkpoint_hparams[name], getattr(self.datamodule, name, None))
            for name in names
            if self.checkpoint_hparams.get(name) is not None
            and getattr(self.datamodule, name, None) is not None
            and self.checkpoint_hparams[name] != getattr(self.datamodule, name)
        ]
        if not differ:
            return
        config = self.config[self.subcommand]
        then = ", ".join(f"{name} {old}" for name, old, _ in differ)
        now = ", ".join(f"{name} {new}" for name, _, new in differ)
        what = (
            "resume on the data it was trained on, or start a new run (without --ckpt_path)"
            if self.subcommand == "fit"
            else "give data of the kind it was trained on"
        )
        raise RecipeValueError(
            f"--ckpt_path {str(config['ckpt_path'])!r} holds a network for data with {then}; "
            f"this command's data ({type(self.datamodule).__name__}) has {now}: {what}"
        )

    def instantiate_trainer(self, **kwargs):
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        if self.checkpoint_hparams and self.datamodule is not None:
            self._check_checkpoint_fits_the_data()
        plugins = config["trainer"].get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        logger = config["trainer"].get("logger")
        for one in logger if isinstance(logger, (list, tuple)) else [logger]:
            if type(one) is CSVLogger:  # Lightning's would delete an existing metrics.csv
                one.__class__ = ResumableCSVLogger
            if isinstance(one, ResumableCSVLogger) and self.subcommand == "fit":
                one.keep_until = self.resume_at if self.resume_folder else None
        callbacks = as_list(config["trainer"].get("callbacks"))
        kwargs["callbacks"] = [*callbacks, RunSummary(self.command), RemoveStaleTemporaries()]
        if self.save_at_epoch_end:
            kwargs["callbacks"].append(
                SaveAtEpochEnd([callbacks[i] for i in self.save_at_epoch_end])
            )
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except MisconfigurationException as e:  # a bad trainer option: Lightning's message names it
            raise RecipeValueError(f"--trainer: {e}") from e
        resume_epoch_ends_as_ended(trainer)
        if self._takes_run_lock:
            self.run_lock = lock_run_folder(trainer)
        self._print_start()
        return trainer

    @rank_zero_only
    def _print_start(self) -> None:
        if self.default_config_used:
            print(f"No --config given: running the built-in default {display_path(DEFAULT_CONFIG)}")
        if self.resume_folder is not None:
            print(f"Resuming in {display_path(self.resume_folder)}")
        for notice in self.notices:
            print(notice)
        report = getattr(self.model, "conversion_report", None)
        if report is not None:
            print(report.format())
        example = getattr(self.model, "example_input_array", None)
        if isinstance(example, torch.Tensor):
            # Shapes, parameters, FLOPs and receptive fields of the network, on the meta device.
            torchconv_ext.summary(self.model.net, tuple(example.shape))


def lock_run_folder(trainer: Trainer) -> RunLock | None:
    """Lock the run folder of ``trainer``'s logger for this run (:class:`RunLock`); in the
    global rank 0 process only (under DDP every process writes in rank 0's folder), and only
    where the logger has a folder on this machine's file systems."""
    if not trainer.is_global_zero:
        return None
    folder = getattr(trainer.logger, "log_dir", None)  # (a new run: chooses its version)
    if not folder or "://" in str(folder):
        return None
    return RunLock.acquire(folder)


def _refuse_older_than_last(ckpt_path: Path, saved: dict, folder: Path) -> None:
    """Resuming goes on in the checkpoint's run folder, writing its ``last.ckpt``, best
    checkpoints and curves: from a checkpoint older than that folder's ``last.ckpt`` it would
    write over the run's later ones."""
    last = folder / "checkpoints" / "last.ckpt"
    if not last.is_file() or last.resolve() == ckpt_path.resolve():
        return
    try:
        newer = read_checkpoint(last)
    except RecipeValueError:  # (an unreadable last.ckpt holds nothing to keep)
        return
    if newer.get("global_step", 0) > saved["global_step"]:
        raise RecipeValueError(
            f"--ckpt_path {str(ckpt_path)!r} (epoch {saved['epoch']}, step "
            f"{saved['global_step']}) is older than its run's {last} (epoch {newer.get('epoch')}, "
            f"step {newer['global_step']}): resuming goes on in the run's folder and would write "
            "over its later checkpoints; resume from last.ckpt, or copy the checkpoint out of the "
            "run folder to train on from it in a new one"
        )


def main(args: list[str] | None = None, run: bool = True) -> RecipeCLI:
    """Run the CLI (``args``: the command line, default ``sys.argv[1:]``). A mistake in the
    command line, the config or the data ends the process with a short message instead of a
    traceback."""
    try:
        return RecipeCLI(args=args, run=run)
    except SIGTERMException:  # (a SystemExit without a code: the shell would read success)
        raise SystemExit(128 + signal.SIGTERM) from None
    except Exception as e:
        error = find_recipe_error(e)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
