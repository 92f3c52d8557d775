"""The LightningModule: an image classifier — our AlexNet/VGG or any model — on either layer set."""

from __future__ import annotations

import functools
import inspect
import random
from typing import Any, Literal, Protocol

import lightning as L
import numpy as np
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

import torchconv_ext.init

from ._checks import RecipeValueError
from .conversion import ConversionSummary, convert_with_report
from .flops import count_flops
from .memory_check import check_network_fits
from .models import ARCHS, ArchName, BackendName, build_imported, build_model

#: How the network's convolutions start: ``default`` (the network's own initialisation), ``kaiming``
#: (He normal, fan-out), ``kmeans`` (the first convolution's kernels: k-means centroids of whitened
#: patches of training images, torchconv_ext.init.kmeans_; the rest as ``default``).
InitName = Literal["default", "kaiming", "kmeans"]
# Training images the k-means initialisation draws patches from.
KMEANS_IMAGES = 512

# Top-5 accuracy is reported where five guesses are a small share of the classes.
TOP5_MIN_CLASSES = 20

# Arguments of torch's LR schedulers that give the length of the schedule: the recipe sets them
# from the run (trainer.max_epochs or trainer.max_steps), so they are not options of their own.
RUN_LENGTH_ARGS = ("T_max", "total_steps")


class LRSchedulerFactory(Protocol):
    """An LR scheduler class and its options (``class_path`` + ``init_args``), called with the
    optimizer. A length argument (``T_max`` of ``CosineAnnealingLR``, ``total_steps`` of
    ``OneCycleLR``) is not an option: it is the run's length, ``trainer.max_epochs`` (the
    schedule steps per epoch) or, when ``trainer.max_steps`` is set, the number of optimizer
    steps (the schedule steps per step)."""

    def __call__(
        self, optimizer: Optimizer, /, *, T_max: int = ..., total_steps: int = ...
    ) -> LRScheduler: ...


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
    metrics = {"acc": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes >= TOP5_MIN_CLASSES:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


def _scheduler_class(factory: Any) -> type | None:
    """The scheduler class behind ``factory`` (a class, or a partial of one as the CLI makes)."""
    if isinstance(factory, type):
        return factory
    if isinstance(factory, functools.partial):
        for candidate in (factory.func, *factory.args):
            if isinstance(candidate, type) and issubclass(candidate, LRScheduler):
                return candidate
    return None


def _rng_states() -> dict[str, Any]:
    """The random-number generators' states, in types ``torch.load(weights_only=True)`` reads."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ImageClassifier(L.LightningModule):
    """Image classification with one of our AlexNet/VGG networks or any model.

    Args:
        arch: a shipped network (``alexnet``, ``alexnet32``, ``vgg11`` … ``vgg19``, see
            :func:`recipes.models.build_model`) or the import path of an ``nn.Module`` class or
            of a function that builds one, torch.hub style (``recipes.resnet.resnet8``,
            ``torchvision.models.resnet18``).
        arch_kwargs: keyword arguments for the class or builder; ``num_classes`` and
            ``in_channels`` (or ``in_chans``) are passed when it takes them.
        batch_norm, width, pool_size, hidden, dropout: options of the shipped networks
            (default: ``False``, 1, the network's, the network's, 0.5); ignored, with a
            warning, for an imported one.
        num_classes, in_channels, image_size: set from the data module by the CLI
            (``image_size`` gives ``example_input_array``, so the model summary counts FLOPs).
        backend: ``"torchconv_ext"`` converts the network to our layers with
            :func:`torchconv_ext.convert_model` (``conversion_report`` (a :class:`recipes.conversion.ConversionSummary`) says what was converted,
            what was left and why); ``"torch"`` keeps ``torch.nn``'s. The network, its
            initialisation and its ``state_dict`` are the same either way.
        init: how the convolutions start (``default``, ``kaiming`` or ``kmeans``; see
            ``InitName``). ``kmeans`` runs when training starts, on the training data, seeded;
            a resumed run keeps its checkpoint's weights.
        label_smoothing: of the cross-entropy loss.
        optimizer: a callable taking the parameters (the CLI's ``class_path``/``init_args``).
        lr_scheduler: see :class:`LRSchedulerFactory`; ``None``: constant learning rate.
        max_epochs, max_steps: the run's length, linked by the CLI from
            ``trainer.max_epochs`` / ``trainer.max_steps`` (default: read from the trainer).

    Logs ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc`` (and ``*_acc_top5`` with at
    least 20 classes), ``test_*`` likewise; exposes ``flops_per_batch`` for
    ``ThroughputMonitor``. Checkpoints carry the random-number generators' states, so a
    resumed run draws the same augmentations and batches as an uninterrupted one.
    """

    def __init__(
        self,
        arch: ArchName | str = "vgg11",
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int | None = None,
        arch_kwargs: dict[str, Any] | None = None,
        batch_norm: bool | None = None,
        width: float | None = None,
        pool_size: int | None = None,
        hidden: int | None = None,
        dropout: float | None = None,
        backend: BackendName = "torchconv_ext",
        init: InitName = "default",
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.SGD,
        lr_scheduler: LRSchedulerFactory | None = None,
        max_epochs: int | None = None,
        max_steps: int = -1,
    ) -> None:
        super().__init__()
        if not 0 <= label_smoothing <= 1:
            raise RecipeValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        # The backend is how to run, not what was trained: leaving it out of the checkpoint's
        # hyper-parameters lets `--model.backend` choose the layers when loading one.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "backend"])
        shipped = {
            "batch_norm": batch_norm,
            "width": width,
            "pool_size": pool_size,
            "hidden": hidden,
            "dropout": dropout,
        }
        shipped = {k: v for k, v in shipped.items() if v is not None}
        if arch in ARCHS:
            clash = shipped.keys() & (arch_kwargs or {}).keys()
            if clash:
                raise RecipeValueError(
                    f"{', '.join(sorted(clash))} given both as model options and in arch_kwargs"
                )
            build = functools.partial(
                build_model,
                arch,
                num_classes,
                in_channels=in_channels,
                backend="torch",
                **shipped,
                **(arch_kwargs or {}),
            )
            sizing = [f"--model.{k} {shipped[k]}" for k in ("width", "hidden") if shipped.get(k)]
            check_network_fits(build, ", ".join(sizing) or f"--model.arch {arch}")
            net = build()
        else:
            if shipped:
                rank_zero_warn(
                    f"model.{', model.'.join(shipped)} apply to the shipped AlexNet/VGG networks "
                    f"only and are ignored for {arch!r}; give its own arguments with "
                    "--model.arch_kwargs"
                )
            net = build_imported(arch, num_classes, in_channels, arch_kwargs)
        if backend == "torchconv_ext":
            self.conversion_report = convert_with_report(net)
        else:
            self.conversion_report = ConversionSummary(skipped=f"backend {backend!r}")
        if init == "kaiming":
            for m in net.modules():
                if isinstance(m, nn.modules.conv._ConvNd):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.init = init
        self.net = net
        if image_size:
            self.example_input_array = torch.zeros(1, in_channels, image_size, image_size)
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.train_metrics = _metrics(num_classes, "train_")
        self.val_metrics = _metrics(num_classes, "val_")
        self.test_metrics = _metrics(num_classes, "test_")
        self._flops: dict[tuple, int] = {}
        self._last_input: torch.Tensor | None = None
        self._schedule: tuple[str, int] | None = None  # (length argument, value) for this run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        # Before a checkpoint is restored: a resumed run gets its checkpoint's weights back.
        if stage == "fit" and self.init == "kmeans":
            data = self.trainer.datamodule
            first = next(m for m in self.net.modules() if isinstance(m, nn.modules.conv._ConvNd))
            loader = torch.utils.data.DataLoader(data.train_set, batch_size=KMEANS_IMAGES)
            images = next(iter(loader))[0]  # the first images, in order: no random draw
            torchconv_ext.init.kmeans_(first, data.network_inputs(images), seed=0)

    def _step(self, batch, metrics: MetricCollection, stage: str) -> tuple[torch.Tensor, ...]:
        images, labels = batch
        self._last_input = images
        logits = self(images)
        loss = self.loss(logits, labels)
        metrics.update(logits, labels)
        training = stage == "train"
        self.log(
            f"{stage}_loss", loss, on_step=training, on_epoch=True, prog_bar=True, sync_dist=True
        )
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=not training)
        return loss, logits

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.train_metrics, "train")[0]

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        loss, logits = self._step(batch, self.val_metrics, "val")
        return {"loss": loss, "logits": logits.detach()}

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        loss, logits = self._step(batch, self.test_metrics, "test")
        return {"loss": loss, "logits": logits.detach()}

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        images, labels = batch
        probs = self(images).float().softmax(dim=1)
        confidence, predicted = probs.max(dim=1)
        return {"pred": predicted, "confidence": confidence, "label": labels, "probs": probs}

    @property
    def flops_per_batch(self) -> int:
        """FLOPs of the last batch (forward + backward while training, forward otherwise)."""
        x = self._last_input
        if x is None:
            return 0
        training = self.trainer.training
        key = (training, tuple(x.shape[1:]))
        if key not in self._flops:
            self._flops[key] = count_flops(self.net, x[:1], backward=training)
        return self._flops[key] * x.shape[0]

    # --- optimizer and a schedule sized to the run -------------------------------------------

    def configure_optimizers(self):
        try:
            optimizer = self.optimizer(self.parameters())
        except ValueError as e:  # torch's optimizers check their options: "Invalid learning rate"
            raise RecipeValueError(f"--model.optimizer: {e}") from e
        if self.lr_scheduler is None:
            return optimizer
        cls = _scheduler_class(self.lr_scheduler)
        params = inspect.signature(cls).parameters if cls is not None else {}
        length_arg = next((a for a in RUN_LENGTH_ARGS if a in params), None)
        max_steps = self.max_steps if self.max_steps is not None else self.trainer.max_steps
        # A schedule sized to the run steps per optimizer step when the run is counted in steps
        # (OneCycleLR always is); any other schedule steps per epoch, as its options mean.
        by_step = length_arg == "total_steps" or (
            length_arg is not None and max_steps is not None and max_steps > 0
        )
        kwargs = {}
        if length_arg is not None:
            if by_step:
                length = int(self.trainer.estimated_stepping_batches)
            else:
                length = self.max_epochs if self.max_epochs is not None else self.trainer.max_epochs
                if length is None or length < 1:
                    raise RecipeValueError(
                        f"{cls.__name__} needs the run's length: set --trainer.max_epochs or "
                        "--trainer.max_steps"
                    )
            kwargs[length_arg] = length
            self._schedule = (length_arg, length)
        scheduler = self.lr_scheduler(optimizer, **kwargs)
        interval = "step" if by_step else "epoch"
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval},
        }

    def on_train_start(self) -> None:
        if self._schedule is not None and self.trainer.lr_scheduler_configs:
            arg, length = self._schedule
            scheduler = self.trainer.lr_scheduler_configs[0].scheduler
            saved = getattr(scheduler, arg, length)
            if saved != length:
                rank_zero_warn(
                    f"the checkpoint's LR schedule was sized for {arg}={saved}; this run's length "
                    f"is {length}, so the schedule is stretched to it from here on"
                )
                setattr(scheduler, arg, length)

    # --- the random-number generators travel with the checkpoint -----------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = _rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resumed: the random streams go on where the checkpoint left them. Nothing draws from
        # them between here and the first batch of the next epoch (Lightning runs the sanity
        # check with the states saved and restored), as in an uninterrupted run nothing draws
        # between the end of the checkpointed epoch and that batch.
        if "rng_states" in checkpoint:
            _set_rng_states(checkpoint["rng_states"])
