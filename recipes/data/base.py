"""What every recipe data module shares: loaders, and augmentation on the device, per batch.

Datasets yield ``(image, label)`` with the image as stored (``uint8`` or float in [0, 1]), so a
batch crosses to the accelerator small; conversion to float, resizing, augmentation (kornia,
per-sample random parameters) and normalisation then run on whole batches where the model runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from kornia import augmentation as K
from torch import nn
from torch.utils.data import DataLoader, Dataset


class ImageDataModule(L.LightningDataModule):
    """Base class: subclasses fill ``train_set``/``val_set``/``test_set`` in :meth:`setup` and
    build ``train_augment`` / ``eval_augment`` (kornia modules, without normalisation)."""

    num_classes: int
    in_channels: int
    class_names: Sequence[str]

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        mean: Sequence[float],
        std: Sequence[float],
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.normalize = K.Normalize(mean=torch.tensor(mean), std=torch.tensor(std))
        self.train_augment: nn.Module = nn.Identity()
        self.eval_augment: nn.Module = nn.Identity()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not run")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """Bring stored images to the network's input size (identity unless overridden)."""
        return images

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        images = self.resize(images)
        training = self.trainer is not None and self.trainer.training
        images = (self.train_augment if training else self.eval_augment)(images)
        return self.normalize(images), labels
