"""Lightning data modules of the recipes: digits (built in), CIFAR-10/100, image folders."""

from .base import ImageDataModule
from .cifar import CIFARDataModule
from .digits import DigitsDataModule
from .image_folder import ImageFolderDataModule

__all__ = ["CIFARDataModule", "DigitsDataModule", "ImageDataModule", "ImageFolderDataModule"]
