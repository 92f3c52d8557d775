"""scikit-learn's handwritten digits: 1,797 real 8×8 greyscale images of 0–9, shipped with the
package (nothing is downloaded), upsampled on the device to the network's input size."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from kornia import augmentation as K
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

import torchconv_ext

from .._checks import RecipeValueError
from .base import ImageDataModule, check_crop_padding, check_split_seed, check_stratified_split


def digit_from_image(image: Image.Image) -> torch.Tensor:
    """A photo or scan of one handwritten digit as the data set stores its digits: float
    (1, 8, 8) in [0, 1], ink bright on a dark background, the digit filling the square.

    The image is converted to grey, inverted when its border is light (dark ink on paper), less the
    background level, cropped to the ink's bounding box, padded to a square (the data set's
    digits fill their box) and reduced to 8×8 by averaging (as the data set was made from 32×32
    bitmaps); the brightest cell becomes 1.
    """
    grey = np.asarray(image.convert("L"), dtype=np.float32) / 255
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 0.5:  # a light background: dark ink on paper
        grey, border = 1 - grey, 1 - border
    grey = (grey - np.median(border)).clip(0, None)
    ink = grey > 0.25 * grey.max() if grey.max() > 0 else np.ones_like(grey, dtype=bool)
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    grey = grey[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = max(grey.shape)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - grey.shape[0]) // 2, (side - grey.shape[1]) // 2
    square[top : top + grey.shape[0], left : left + grey.shape[1]] = grey
    small = Image.fromarray(square).resize((8, 8), Image.Resampling.BOX)
    cells = torch.from_numpy(np.asarray(small, dtype=np.float32).copy())
    return (cells / cells.max().clamp_min(1e-6)).unsqueeze(0)


def split_digits(
    val_fraction: float, test_fraction: float, seed: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The fixed stratified split: ``{"train"|"val"|"test": (images (N,1,8,8) in [0,1], labels)}``."""
    digits = load_digits()
    images = digits.images.astype("float32") / 16.0  # pixel values are 0..16
    labels = digits.target
    # The sizes scikit-learn's train_test_split gives (test: the fraction rounded up; the rest
    # train), refused by name where a set would hold less than one image per class.
    classes, total = len(np.unique(labels)), len(labels)
    held_out = math.ceil(test_fraction * total)
    check_stratified_split(f"test_fraction {test_fraction}", held_out, total, classes)
    check_stratified_split(
        f"val_fraction {val_fraction}",
        math.ceil(val_fraction / (1 - test_fraction) * (total - held_out)),
        total - held_out,
        classes,
        of="images the test set leaves",
    )
    rest_x, test_x, rest_y, test_y = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    train_x, val_x, train_y, val_y = train_test_split(
        rest_x,
        rest_y,
        test_size=val_fraction / (1 - test_fraction),
        stratify=rest_y,
        random_state=seed,
    )
    return {
        name: (torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y).long())
        for name, x, y in (
            ("train", train_x, train_y),
            ("val", val_x, val_y),
            ("test", test_x, test_y),
        )
    }


class DigitsDataModule(ImageDataModule):
    """The digits, split once (stratified, ``split_seed``) into train/val/test.

    Args:
        batch_size: training batch size (``eval_batch_size`` for val/test/predict, default same).
        image_size: network input side, a multiple of 8; the 8×8 images are upsampled with
            :func:`torchconv_ext.functional.interpolate` (nearest) on the device.
        val_fraction, test_fraction: shares of the 1,797 images held out; the split is
            stratified, so each set must get at least one image per class.
        split_seed: seed of the split (independent of the training seed), 0 … 2**32 - 1.
        crop_padding: training augmentation: random crop of ``image_size`` after zero padding by
            this many pixels, below ``image_size`` (0 disables). No flips: a mirrored digit is
            another glyph.
        mean, std: normalisation; default: the training split's pixel mean and std.
        predict_dir: a folder of your own digit images for ``predict`` (photos or scans of one
            digit each, any size; see :func:`digit_from_image`); default: the test split.
    """

    num_classes = 10
    in_channels = 1
    class_names = tuple(str(d) for d in range(10))

    def __init__(
        self,
        batch_size: int = 64,
        image_size: int = 32,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        crop_padding: int = 4,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        predict_dir: str | None = None,
    ) -> None:
        if image_size < 8 or image_size % 8:
            raise RecipeValueError(
                f"image_size must be a positive multiple of 8 (the digits are 8×8), got {image_size}"
            )
        if not (
            0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1
        ):
            raise RecipeValueError(
                f"val_fraction and test_fraction must be in (0, 1) with a sum below 1, got "
                f"{val_fraction} and {test_fraction}"
            )
        check_crop_padding(crop_padding, image_size)
        self.splits = split_digits(val_fraction, test_fraction, check_split_seed(split_seed))
        train_x = self.splits["train"][0]
        super().__init__(
            batch_size,
            num_workers,
            mean=[float(train_x.mean())] if mean is None else mean,
            std=[float(train_x.std())] if std is None else std,
            eval_batch_size=eval_batch_size,
            predict_dir=predict_dir,
        )
        self.image_size = image_size
        self.scale = image_size // 8
        if crop_padding:
            self.train_augment = K.RandomCrop((image_size, image_size), padding=crop_padding)

    def setup(self, stage: str) -> None:
        self.train_set, self.val_set, self.test_set = (
            TensorDataset(*self.splits[name]) for name in ("train", "val", "test")
        )

    def load_user_image(self, path: Path) -> torch.Tensor:
        with Image.open(path) as image:
            return digit_from_image(image)

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        if self.scale == 1:
            return images
        return torchconv_ext.functional.interpolate(images, scale_factor=self.scale, mode="nearest")
