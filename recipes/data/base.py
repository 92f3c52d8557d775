"""What every recipe data module shares: loaders, augmentation on the device, per batch, and
prediction on a folder of the user's own images.

Datasets yield ``(image, label)`` with the image as stored (``uint8`` or float in [0, 1]), so a
batch crosses to the accelerator small; conversion to float, resizing, augmentation (kornia,
per-sample random parameters) and normalisation then run on whole batches where the model runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from kornia import augmentation as K
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._checks import SEED_MAX, DataNotFoundError, RecipeValueError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def check_split_seed(seed: int) -> int:
    """``split_seed``, if numpy takes it as a seed."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise RecipeValueError(
            f"split_seed must be an integer in [0, {SEED_MAX}] (numpy's seeds), got {seed}"
        )
    return seed


def check_stratified_split(
    option: str, held_out: int, total: int, classes: int, of: str = "images"
) -> None:
    """A stratified split needs one image of every class on each side: ``held_out`` of
    ``total`` images (``of``: what they are), set by ``option``, must leave at least
    ``classes`` on each."""
    if held_out < classes:
        raise RecipeValueError(
            f"{option} holds out {held_out} of {total} {of}, too few for a stratified split of "
            f"{classes} classes: give one that holds out at least {classes} (one per class)"
        )
    if total - held_out < classes:
        raise RecipeValueError(
            f"{option} holds out {held_out} of {total} {of}, leaving {total - held_out}, too "
            f"few for a stratified split of {classes} classes: give one that leaves at least "
            f"{classes} (one per class)"
        )


def check_crop_padding(padding: int, image_size: int) -> int:
    """``crop_padding`` of a random ``image_size`` crop: 0 (none) to ``image_size - 1`` pixels."""
    if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= padding < image_size:
        raise RecipeValueError(
            f"crop_padding must be 0 (no random crop) or a number of pixels below the image size "
            f"({image_size}), got {padding}"
        )
    return padding


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), in sorted order."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )


class UserImages(Dataset):
    """The images of a folder, read with the data module's :meth:`~ImageDataModule.load_user_image`;
    label -1 (unknown). ``paths`` lists the files in dataset order."""

    def __init__(self, paths: Sequence[Path], load) -> None:
        self.paths = list(paths)
        self.load = load

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.paths[index]
        try:
            image = self.load(path)
        except Exception as e:
            raise RecipeValueError(f"cannot read image file {path}: {e}") from e
        return image, -1


class ImageDataModule(L.LightningDataModule):
    """Base class: subclasses fill ``train_set``/``val_set``/``test_set`` in :meth:`setup`, build
    ``train_augment`` / ``eval_augment`` (kornia modules, without normalisation), set
    ``image_size`` (the network's input side) and implement :meth:`load_user_image`.

    ``predict`` runs on ``predict_dir`` (every image file in it, recursively) when it is given,
    else on the test set.
    """

    num_classes: int
    in_channels: int
    class_names: Sequence[str]
    image_size: int

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        mean: Sequence[float],
        std: Sequence[float],
        eval_batch_size: int | None = None,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise RecipeValueError(f"batch_size must be positive, got {batch_size}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise RecipeValueError(
                f"eval_batch_size must be positive (or null: batch_size), got {eval_batch_size}"
            )
        if num_workers < 0:
            raise RecipeValueError(
                f"num_workers must be 0 (load in the main process) or more, got {num_workers}"
            )
        channels = getattr(self, "in_channels", None)
        for name, values in (("mean", mean), ("std", std)):
            if channels is not None and len(values) != channels:
                raise RecipeValueError(
                    f"{name} must have one value per image channel ({channels}), got {list(values)}"
                )
        if any(not float(s) > 0 for s in std):
            raise RecipeValueError(f"std must be positive (it divides), got {list(std)}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.normalize = K.Normalize(mean=torch.tensor(self.mean), std=torch.tensor(self.std))
        self.train_augment: nn.Module = nn.Identity()
        self.eval_augment: nn.Module = nn.Identity()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.predict_dir = Path(predict_dir).expanduser() if predict_dir else None
        if self.predict_dir is not None and not self.predict_dir.is_dir():
            raise DataNotFoundError(
                f"predict_dir {str(self.predict_dir)!r} is not a folder: give a folder of image "
                f"files ({', '.join(EXTENSIONS)})"
            )
        self.predict_set: Dataset | None = None

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
        if self.predict_dir is None:
            return self._loader(self.test_set, train=False)
        if self.predict_set is None:
            paths = image_files(self.predict_dir)
            if not paths:
                raise DataNotFoundError(
                    f"no image files ({', '.join(EXTENSIONS)}) in {self.predict_dir}"
                )
            self.predict_set = UserImages(paths, self.load_user_image)
        return self._loader(self.predict_set, train=False)

    def load_user_image(self, path: Path) -> torch.Tensor:
        """One of the user's image files in the form the data set stores images (what a
        dataset item holds before :meth:`on_after_batch_transfer`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot predict on image files")

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """Bring stored images to the network's input size (identity unless overridden)."""
        return images

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation of network inputs, for display: values in [0, 1]."""
        mean = images.new_tensor(self.mean).view(1, -1, 1, 1)
        std = images.new_tensor(self.std).view(1, -1, 1, 1)
        return (images * std + mean).clamp_(0, 1)

    def network_inputs(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        """Stored images as the network sees them: scaled, resized, augmented when ``train``,
        normalised."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        images = self.resize(images)
        images = (self.train_augment if train else self.eval_augment)(images)
        return self.normalize(images)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, torch.Tensor):  # a network input already (example_input_array)
            return batch
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        return self.network_inputs(images, training), labels
