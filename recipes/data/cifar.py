"""CIFAR-10 / CIFAR-100 from the standard python-pickle release, read where the user put it.

Nothing is downloaded: ``root`` is the ``.tar.gz`` archive, its extracted folder, or a directory
holding either. The pickles are read with an unpickler that admits only numpy arrays.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from kornia import augmentation as K
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from .._checks import DataNotFoundError, RecipeValueError, check_choice
from .base import ImageDataModule, check_crop_padding, check_split_seed, check_stratified_split
from .image_folder import load_image


@dataclass(frozen=True)
class _Release:
    archive: str
    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    names_key: str
    labels_key: str


RELEASES = {
    "cifar10": _Release(
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        "label_names",
        "labels",
    ),
    "cifar100": _Release(
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        ("train",),
        "test",
        "meta",
        "fine_label_names",
        "fine_labels",
    ),
}
URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


class _ArraysOnly(pickle.Unpickler):
    """The CIFAR pickles hold dicts of lists, bytes and numpy arrays; refuse anything else."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch file")
        return super().find_class(module, name)


def _load(raw: bytes, where: str) -> dict[str, object]:
    try:
        batch = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:
        raise RecipeValueError(f"{where} is not a CIFAR python-pickle batch: {e}") from e
    # The release was pickled by Python 2: keys (and label names) come back as bytes.
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def find_release(root: str | Path, variant: str) -> Path:
    """The archive or extracted folder of ``variant`` at ``root``; a clear error if absent."""
    rel = RELEASES[check_choice("CIFAR variant", variant, RELEASES)]
    root = Path(root).expanduser()
    for candidate in (root, root / rel.folder, root / rel.archive):
        if candidate.is_file() and candidate.name.endswith((".tar.gz", ".tgz")):
            return candidate
        if candidate.is_dir() and (candidate / rel.test).is_file():
            return candidate
    raise DataNotFoundError(
        f"{variant.upper()} not found at {str(root)!r}. Download {rel.archive} (the 'python "
        f"version') from {URL} and point data.root at the archive, at its extracted folder "
        f"{rel.folder}/, or at the directory holding either (e.g. data/{rel.archive})."
    )


def read_release(path: Path, variant: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train"|"test": (uint8 images (N,3,32,32), int64 labels)}`` and ``"names"``."""
    rel = RELEASES[variant]
    wanted = (*rel.train, rel.test, rel.meta)
    raw: dict[str, bytes] = {}
    if path.is_dir():
        for name in wanted:
            file = path / name
            if not file.is_file():
                raise DataNotFoundError(
                    f"{file} is missing: {path} is not a complete {rel.folder}/"
                )
            raw[name] = file.read_bytes()
    else:
        try:
            with tarfile.open(path, "r:gz") as tar:
                for member in tar.getmembers():
                    name = Path(member.name).name
                    if member.isfile() and name in wanted:
                        raw[name] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise RecipeValueError(f"{path} is not a readable .tar.gz archive: {e}") from e
        missing = [n for n in wanted if n not in raw]
        if missing:
            raise DataNotFoundError(f"{path} lacks {', '.join(missing)}: is it {rel.archive}?")

    def arrays(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        batches = [_load(raw[n], f"{path}:{n}") for n in names]
        images = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b[rel.labels_key], dtype=np.int64) for b in batches])
        return images.reshape(-1, 3, 32, 32), labels

    meta = _load(raw[rel.meta], f"{path}:{rel.meta}")
    names = [n.decode() if isinstance(n, bytes) else n for n in meta[rel.names_key]]
    return {"train": arrays(rel.train), "test": arrays([rel.test]), "names": names}


class CIFARDataModule(ImageDataModule):
    """CIFAR-10 or CIFAR-100 (fine labels): the official test set, and a fixed stratified
    validation split held out of the 50,000 training images.

    Args:
        root: the ``.tar.gz`` archive, the extracted folder, or a directory holding either.
        variant: ``"cifar10"`` or ``"cifar100"``.
        val_size: training images held out for validation (stratified, ``split_seed``: 0 …
            2**32 - 1), at least one per class, leaving at least one per class.
        crop_padding: random 32×32 crop after zero padding by this many pixels, below 32 (0: none).
        hflip: random horizontal flips.
        mean, std: normalisation (default: the CIFAR-10 training set's per-channel statistics).
        predict_dir: a folder of your own images for ``predict`` (any size: the shorter side is
            scaled to 32 and the centre square kept); default: the test set.
    """

    in_channels = 3
    image_size = 32

    def __init__(
        self,
        root: str,
        variant: Literal["cifar10", "cifar100"] = "cifar10",
        batch_size: int = 128,
        val_size: int = 5000,
        split_seed: int = 0,
        crop_padding: int = 4,
        hflip: bool = True,
        mean: Sequence[float] = (0.4914, 0.4822, 0.4465),
        std: Sequence[float] = (0.2470, 0.2435, 0.2616),
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, mean, std, eval_batch_size, predict_dir)
        self.variant = variant
        self.path = find_release(root, variant)  # fail at construction, before any training
        self.num_classes = 10 if variant == "cifar10" else 100
        self.class_names: Sequence[str] = ()
        if isinstance(val_size, bool) or not isinstance(val_size, int):
            raise RecipeValueError(f"val_size must be a number of images, got {val_size!r}")
        check_stratified_split(f"val_size {val_size}", val_size, 50_000, self.num_classes)
        self.val_size = val_size
        self.split_seed = check_split_seed(split_seed)
        check_crop_padding(crop_padding, 32)
        augment = []
        if crop_padding:
            augment.append(K.RandomCrop((32, 32), padding=crop_padding))
        if hflip:
            augment.append(K.RandomHorizontalFlip())
        if augment:
            self.train_augment = K.AugmentationSequential(*augment)

    def setup(self, stage: str) -> None:
        if self.test_set is not None:
            return
        data = read_release(self.path, self.variant)
        self.class_names = data["names"]
        images, labels = data["train"]
        check_stratified_split(
            f"val_size {self.val_size}", self.val_size, len(labels), self.num_classes
        )
        train_x, val_x, train_y, val_y = train_test_split(
            images, labels, test_size=self.val_size, stratify=labels, random_state=self.split_seed
        )
        self.train_set, self.val_set, self.test_set = (
            TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
            for x, y in ((train_x, train_y), (val_x, val_y), data["test"])
        )

    def load_user_image(self, path: Path) -> torch.Tensor:
        return load_image(path, 32)
