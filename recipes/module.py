"""The LightningModule: an AlexNet/VGG classifier on either layer set."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from .flops import count_flops
from .models import ArchName, BackendName, build_model


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
    metrics = {"acc": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes >= 10:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


class ImageClassifier(L.LightningModule):
    """Image classification with a network from :mod:`recipes.models`.

    Args:
        arch, batch_norm, width, pool_size, hidden, dropout: the network (see
            :func:`recipes.models.build_model`).
        num_classes, in_channels: set from the data module by the CLI.
        backend: ``"torchconv_ext"`` (our layers) or ``"torch"`` (``torch.nn``'s) — the same
            network, initialisation and ``state_dict`` either way, for side-by-side runs.
        label_smoothing: of the cross-entropy loss.
        optimizer: a callable taking the parameters (the CLI's ``class_path``/``init_args``).
        lr_scheduler: a callable taking the optimizer, stepped once per epoch; ``None``: constant.

    Logs ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc`` (and ``*_acc_top5`` with ≥ 10
    classes), ``test_*`` likewise; exposes ``flops_per_batch`` for ``ThroughputMonitor``.
    """

    def __init__(
        self,
        arch: ArchName = "vgg11",
        num_classes: int = 10,
        in_channels: int = 3,
        batch_norm: bool = False,
        width: float = 1.0,
        pool_size: int | None = None,
        hidden: int | None = None,
        dropout: float = 0.5,
        backend: BackendName = "torchconv_ext",
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.SGD,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        # The backend is how to run, not what was trained: leaving it out of the checkpoint's
        # hyper-parameters lets `--model.backend` choose the layers when loading one.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "backend"])
        self.net = build_model(
            arch,
            num_classes,
            in_channels=in_channels,
            batch_norm=batch_norm,
            width=width,
            pool_size=pool_size,
            hidden=hidden,
            dropout=dropout,
            backend=backend,
        )
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.train_metrics = _metrics(num_classes, "train_")
        self.val_metrics = _metrics(num_classes, "val_")
        self.test_metrics = _metrics(num_classes, "test_")
        self._flops: dict[tuple, int] = {}
        self._last_input: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, metrics: MetricCollection, stage: str) -> torch.Tensor:
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
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.train_metrics, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.test_metrics, "test")

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        images, labels = batch
        probs = self(images).float().softmax(dim=1)
        confidence, predicted = probs.max(dim=1)
        return {"pred": predicted, "confidence": confidence, "label": labels}

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

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
