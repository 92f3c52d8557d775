"""``python -m recipes {fit,validate,test,predict} --config recipes/configs/<name>.yaml``."""

from __future__ import annotations

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO

from .checkpoint_io import AtomicCheckpointIO
from .data import ImageDataModule
from .module import ImageClassifier


class RecipeCLI(LightningCLI):
    """LightningCLI for :class:`ImageClassifier` on any :class:`ImageDataModule`.

    The data module's class count and image channels are passed to the model, and checkpoints
    are written atomically (:class:`AtomicCheckpointIO`) unless the config names another
    checkpoint IO plugin.
    """

    def __init__(self, args=None, run: bool = True, **kwargs) -> None:
        super().__init__(
            ImageClassifier,
            ImageDataModule,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": "python -m recipes"},
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.in_channels", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs):
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        plugins = config["trainer"].get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)


def main(args=None, run: bool = True) -> RecipeCLI:
    """Run the CLI (``args``: the command line, default ``sys.argv[1:]``)."""
    return RecipeCLI(args=args, run=run)
