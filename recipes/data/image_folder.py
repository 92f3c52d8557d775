"""Any class-per-folder image tree (ImageNet, Imagenette, your own), decoded with Pillow.

Layout: ``root/<train_dir>/<class>/<image>`` and ``root/<val_dir>/<class>/<image>`` (and
optionally ``root/<test_dir>/...``); the class list is the sorted folder names under the
training folder. Workers decode each image, resize its shorter side to ``load_size`` and crop
the centre square, so batches have one shape; the random-resized crop / centre crop to
``image_size`` and the flips run on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from kornia import augmentation as K
from PIL import Image
from torch.utils.data import Dataset

from .._checks import DataNotFoundError, RecipeValueError
from .base import EXTENSIONS, ImageDataModule

IMAGENETTE_URL = "https://github.com/fastai/imagenette"
IMAGENET_URL = "https://image-net.org/download.php"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _classes(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_images(folder: Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """``(path, label)`` of every image file under ``folder/<class>/`` (recursively)."""
    index = {name: i for i, name in enumerate(classes)}
    extra = sorted(set(_classes(folder)) - set(index))
    if extra:
        raise RecipeValueError(
            f"{folder} has class folders that the training folder lacks: {extra}"
        )
    samples = [
        (path, label)
        for name, label in index.items()
        if (folder / name).is_dir()
        for path in sorted((folder / name).rglob("*"))
        if path.suffix.lower() in EXTENSIONS and path.is_file()
    ]
    if not samples:
        raise DataNotFoundError(f"no image files ({', '.join(EXTENSIONS)}) under {folder}/<class>/")
    return samples


def _check_image(path: Path) -> str | None:
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as e:
        return f"{path}: {e}"
    return None


def check_images(samples: Sequence[tuple[Path, int]], threads: int = 16) -> None:
    """Open every file's header (PNG: every chunk) and raise naming those Pillow can't read."""
    with ThreadPoolExecutor(threads) as pool:
        bad = [msg for msg in pool.map(_check_image, (p for p, _ in samples)) if msg]
    if bad:
        shown = "\n  ".join(bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise RecipeValueError(f"{len(bad)} corrupt or unreadable image file(s):\n  {shown}{more}")


class RecipeDecodeError(RecipeValueError, OSError):
    """An image file that cannot be decoded."""


def load_image(path: Path, size: int) -> torch.Tensor:
    """Decode ``path`` to RGB, shorter side to ``size``, centre square crop: uint8 (3, size, size)."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            scale = size / min(img.size)
            w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
            img = img.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=3.0)
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            array = np.asarray(img, dtype=np.uint8)
    except Exception as e:
        raise RecipeDecodeError(f"cannot decode image file {path}: {e}") from e
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


class ImageFiles(Dataset):
    """``(uint8 image (3, size, size), label)`` for each ``(path, label)``."""

    def __init__(self, samples: Sequence[tuple[Path, int]], size: int) -> None:
        self.samples = list(samples)
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return load_image(path, self.size), label


class ImageFolderDataModule(ImageDataModule):
    """A class-per-folder image tree.

    Args:
        root: directory holding ``train_dir`` and ``val_dir`` (and ``test_dir``, if given).
        train_dir, val_dir, test_dir: subfolder names; ``test_dir=None`` tests on ``val_dir``.
        image_size: network input side (random-resized crop when training, centre crop else).
        load_size: side of the square the workers decode to (shorter side, centre crop).
        scale: area range of the random-resized crop.
        hflip: random horizontal flips when training.
        verify_images: open every image once before training (on one process per node) so a
            corrupt file fails the run at start, not hours in.
        mean, std: normalisation (default: ImageNet's).
        predict_dir: a folder of your own images for ``predict`` (decoded like ``val_dir``'s);
            default: the test (or validation) folder.
    """

    in_channels = 3

    def __init__(
        self,
        root: str,
        train_dir: str = "train",
        val_dir: str = "val",
        test_dir: str | None = None,
        batch_size: int = 64,
        image_size: int = 224,
        load_size: int = 256,
        scale: tuple[float, float] = (0.08, 1.0),
        hflip: bool = True,
        verify_images: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        num_workers: int = 4,
        eval_batch_size: int | None = None,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, mean, std, eval_batch_size, predict_dir)
        if image_size < 1:
            raise RecipeValueError(f"image_size must be positive, got {image_size}")
        if image_size > load_size:
            raise RecipeValueError(
                f"image_size ({image_size}) must not exceed load_size ({load_size})"
            )
        self.root = Path(root).expanduser()
        self.dirs = {"train": train_dir, "val": val_dir, "test": test_dir or val_dir}
        for name in self.dirs.values():
            if not (self.root / name).is_dir():
                raise DataNotFoundError(
                    f"image folder {str(self.root / name)!r} does not exist: data.root must hold "
                    f"{train_dir}/<class>/<image> and {val_dir}/<class>/<image> (ImageNet/Imagenette "
                    f"layout). Imagenette: extract imagenette2-320.tgz from {IMAGENETTE_URL}; "
                    f"ImageNet: {IMAGENET_URL}"
                )
        self.class_names = _classes(self.root / train_dir)
        if not self.class_names:
            raise DataNotFoundError(f"no class folders in {self.root / train_dir}")
        self.num_classes = len(self.class_names)
        self.load_size = load_size
        self.image_size = image_size
        self.verify_images = verify_images
        self.samples: dict[str, list[tuple[Path, int]]] = {}
        augment = [K.RandomResizedCrop((image_size, image_size), scale=scale)]
        if hflip:
            augment.append(K.RandomHorizontalFlip())
        self.train_augment = K.AugmentationSequential(*augment)
        self.eval_augment = K.CenterCrop(image_size)

    def _scan(self) -> dict[str, list[tuple[Path, int]]]:
        if not self.samples:
            self.samples = {
                split: list_images(self.root / d, self.class_names)
                for split, d in self.dirs.items()
            }
        return self.samples

    def prepare_data(self) -> None:
        if self.verify_images:
            samples = self._scan()
            unique = {path: label for split in samples.values() for path, label in split}
            check_images(list(unique.items()))

    def setup(self, stage: str) -> None:
        samples = self._scan()
        self.train_set, self.val_set, self.test_set = (
            ImageFiles(samples[split], self.load_size) for split in ("train", "val", "test")
        )

    def load_user_image(self, path: Path) -> torch.Tensor:
        return load_image(path, self.load_size)
