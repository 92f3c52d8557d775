"""Checks of the trainer's options and the seed that Lightning takes without one: each value
that would fail mid-run, train wrongly or end in a library's traceback is refused by name with a
:class:`RecipeValueError` before anything is built."""

from __future__ import annotations

from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.strategies import StrategyRegistry

from ._checks import SEED_MAX, RecipeValueError, check_choice


def check_trainer_numbers(config) -> None:
    """Trainer options Lightning takes without a check, each refused by name where it would
    fail mid-run (a division by zero) or train wrongly (a negative clipping norm turns the
    gradients around)."""
    trainer = config["trainer"]
    for option in ("accumulate_grad_batches", "check_val_every_n_epoch"):
        value = trainer.get(option)
        if value is not None and value < 1:
            raise RecipeValueError(f"--trainer.{option} must be 1 or more, got {value}")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not clip >= 0:
        raise RecipeValueError(
            f"--trainer.gradient_clip_val must be 0 or more (null or 0: no clipping), got {clip}"
        )


def check_trainer_names(config) -> None:
    """An accelerator or strategy name Lightning does not know, refused by name before the
    Trainer raises it as a bare ``ValueError`` (instances, given by ``class_path``, pass)."""
    trainer = config["trainer"]
    accelerator = trainer.get("accelerator")
    if isinstance(accelerator, str):
        names = ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators()))
        check_choice("--trainer.accelerator", accelerator, names)
    strategy = trainer.get("strategy")
    known = ("auto", *StrategyRegistry.available_strategies())
    if isinstance(strategy, str) and strategy.lower() not in known:
        raise RecipeValueError(
            f"unknown --trainer.strategy {strategy!r}: expected 'auto' or one of Lightning's "
            "registered strategies ('ddp', 'ddp_spawn', 'fsdp', 'deepspeed', …: "
            "lightning.pytorch.strategies.StrategyRegistry.available_strategies() lists them)"
        )


def check_seed(config) -> None:
    """``seed_everything``: an integer numpy takes as a seed, or true/false."""
    seed = config.get("seed_everything")
    if isinstance(seed, bool) or seed is None:
        return
    if not 0 <= seed <= SEED_MAX:
        raise RecipeValueError(
            f"--seed_everything must be an integer in [0, {SEED_MAX}] (numpy's seeds), true (a "
            f"random one) or false (no seeding), got {seed}"
        )


def check_epochs_left(config, saved: dict, ckpt_path) -> None:
    """A resume whose ``--trainer.max_epochs`` is below the epochs its checkpoint has already
    trained, refused by name (Lightning raises it mid-``fit``, after the run's config is
    written). The count is the one Lightning restores: epochs that reached their end."""
    max_epochs = config["trainer"].get("max_epochs")
    try:
        trained = saved["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
    except (KeyError, TypeError):  # (not a Lightning fit checkpoint: Lightning says what)
        return
    if max_epochs is None or max_epochs < 0 or trained <= max_epochs:
        return
    raise RecipeValueError(
        f"--trainer.max_epochs {max_epochs}: --ckpt_path {str(ckpt_path)!r} has already trained "
        f"{trained} epochs; give {trained} or more to resume it"
    )
