"""What a checkpoint was trained with, and what a command with ``--ckpt_path`` may change.

LightningCLI builds the model from a checkpoint's hyper-parameters laid over the command line,
and a resumed run takes its optimizer's and LR schedule's state from the checkpoint: an option
given otherwise would be ignored without a word, or fail deep inside. Checkpoints of the recipe
CLI keep every model and data option (:func:`run_record`, saved by the CLI's config callback
under :data:`RECORD_KEY`), so a command can be compared with them option by option.
"""

from __future__ import annotations

from typing import Any

import yaml
from lightning.pytorch.cli import LightningArgumentParser

# The model's values the CLI links from the data and the trainer: not options of their own.
LINKED = ("num_classes", "in_channels", "image_size", "max_epochs", "max_steps")
# A resumed run goes on with its checkpoint's model, data and optimizer: an option that differs
# from the checkpoint's is refused, except those that say where the data is and how it is read,
# and which layers run the network,
RESUME_FREE = frozenset(
    {
        "model.backend",
        *(
            f"data.init_args.{name}"
            for name in (
                "root",
                "num_workers",
                "eval_batch_size",
                "predict_dir",
                "verify_images",
                "test_dir",
            )
        ),
    }
)
# and those that have no effect on a resumed run (a notice says so).
RESUME_MOOT = {"model.init": "its weights are the checkpoint's"}
# Where checkpoints keep the run's options (the state of _KeepingSaveConfig).
RECORD_KEY = "recipes.RunConfig"


def run_record(parser: LightningArgumentParser, config) -> dict[str, Any]:
    """The model and data options of a subcommand's ``config`` by dotted name
    (``model.optimizer.init_args.lr``, ``data.class_path``), as plain values (as ``config.yaml``
    writes them), without the values linked from the data and the trainer."""
    dumped = yaml.safe_load(parser.dump(config, skip_none=False))
    linked = {f"model.{name}" for name in LINKED}
    record = {}
    for key, _ in config.items():
        if key.split(".", 1)[0] not in ("model", "data") or key in linked:
            continue
        value = dumped
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                break  # (a link target: the dump leaves it out)
            value = value[part]
        else:
            record[key] = value
    return record


def checkpoint_record(saved: dict) -> dict[str, Any]:
    """What a checkpoint says it was trained with, as :func:`run_record` names it: the model's
    hyper-parameters (every Lightning checkpoint of the recipes holds them; LightningCLI lays
    them over the command line) and, in checkpoints written by the recipe CLI, every model and
    data option."""
    hparams = saved.get("hyper_parameters") or {}
    record = {
        f"model.{k}": v for k, v in hparams.items() if not k.startswith("_") and k not in LINKED
    }
    state = (saved.get("callbacks") or {}).get(RECORD_KEY)
    if isinstance(state, dict) and isinstance(state.get("record"), dict):
        record.update(state["record"])
    return record


def record_differences(saved: dict, given: dict) -> list[tuple[str, Any, Any]]:
    """``(option, the checkpoint's value, the given value)`` for each option of ``saved`` that
    ``given`` gives otherwise; a class given otherwise (``model.optimizer``, ``data``) is one
    difference, its ``init_args`` going with it."""

    def has(record: dict, root: str) -> bool:
        return root in record or f"{root}.class_path" in record

    def cls(record: dict, root: str) -> Any:
        return record.get(f"{root}.class_path", record.get(root))

    roots = sorted(
        {k.rsplit(".", 1)[0] for r in (saved, given) for k in r if k.endswith(".class_path")}
    )
    found, replaced = [], []
    for root in roots:
        if has(saved, root) and has(given, root) and cls(saved, root) != cls(given, root):
            found.append((root, cls(saved, root), cls(given, root)))
            replaced.append(f"{root}.")
    for key, old in saved.items():
        skip = key not in given or key in roots or key.startswith(tuple(replaced))
        if not skip and given[key] != old:
            found.append((key, old, given[key]))
    return found


def option_value(value: Any) -> str:
    """A value as the command line writes it (``null``, ``true``; strings quoted)."""
    if value is None or isinstance(value, bool):
        return yaml.safe_dump(value).split("\n", 1)[0]
    return repr(value)


def options_text(differences: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(
        f"--{key} {option_value(new)} (the checkpoint's: {option_value(old)})"
        for key, old, new in differences
    )


def given_on_command_line(key: str, args: list[str] | None) -> bool:
    """Whether ``--<key>`` (or a shorter spelling without ``init_args``, or the option of the
    class it belongs to) is among ``args``."""

    def plain(name: str) -> str:
        return name.replace(".init_args.", ".")

    key = plain(key)
    for arg in args or ():
        if arg.startswith("--"):
            name = plain(arg[2:].split("=", 1)[0])
            if key == name or key.startswith(f"{name}.") or name.startswith(f"{key}."):
                return True
    return False
