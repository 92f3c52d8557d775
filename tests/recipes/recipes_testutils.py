"""Shared by the recipe tests: data sets written in the real formats, a CLI runner, a DDP probe."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import struct
import sys
import tarfile
from pathlib import Path
from unittest import mock

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "recipes" / "configs"
DIGITS = CONFIGS / "vgg11_digits.yaml"


# The callbacks that draw pictures: most tests leave them out (drawing costs more than the
# tiny runs); the tests of the pictures keep them.
PICTURE_CALLBACKS = {
    f"recipes.callbacks.{name}"
    for name in ("FilterGrid", "TrainingCurves", "FeatureMaps", "TopPatches", "ErrorAnalysis")
}


def without_pictures(args: tuple[str, ...]) -> list[str]:
    """``--trainer.callbacks`` with the config's callbacks less the picture ones."""
    path = Path(args[args.index("--config") + 1]) if "--config" in args else None
    if path is None or not path.is_file():
        return []
    config = yaml.safe_load(path.read_text())
    kept = [c for c in config["trainer"]["callbacks"] if c["class_path"] not in PICTURE_CALLBACKS]
    return [f"--trainer.callbacks={json.dumps(kept)}"]


def cli_args(*args: str, tmp_path: Path, pictures: bool = False) -> list[str]:
    """``args`` for a quiet run on the CPU with its logs in ``tmp_path``, without the picture
    callbacks unless ``pictures``."""
    if not pictures:  # (right after the config, so the test's own callback options still apply)
        at = args.index("--config") + 2 if "--config" in args else len(args)
        args = (*args[:at], *without_pictures(args), *args[at:])
    return [
        *args,
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.accelerator",
        "cpu",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
    ]


def run_cli(*args: str, tmp_path: Path, callbacks=(), pictures: bool = False):
    """Run ``python -m recipes <args>`` in this process, quiet, on the CPU, logs in ``tmp_path``;
    without the picture callbacks unless ``pictures``."""
    from recipes.cli import RecipeCLI

    argv = cli_args(*args, tmp_path=tmp_path, pictures=pictures)
    kwargs = {"trainer_defaults": {"callbacks": list(callbacks)}} if callbacks else {}
    with mock.patch.object(sys, "argv", ["python -m recipes"]):  # not pytest's arguments
        return RecipeCLI(args=argv, **kwargs)


def run_interrupted(*args: str, tmp_path: Path, callbacks=()) -> None:
    """:func:`run_cli` for a run that an interrupt ends (``SystemExit``), SIGINT's handler
    restored after it (Lightning ignores SIGINT after an interrupt)."""
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):
            run_cli(*args, tmp_path=tmp_path, callbacks=callbacks)
    finally:
        signal.signal(signal.SIGINT, sigint)


def main_error(capsys, argv: list[str]):
    """Run ``python -m recipes <argv>`` as the console does, expecting it to fail with a
    message; return what it printed (``.out``, ``.err``)."""
    from recipes.cli import main

    capsys.readouterr()
    with mock.patch.object(sys, "argv", ["python -m recipes"]), pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 1
    return capsys.readouterr()


# --- CIFAR, as the python-pickle release lays it out -------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the release: every string (``str`` was bytes)
    as a BINSTRING opcode, numpy arrays through ``numpy.core.multiarray._reconstruct``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        head = (
            pickle.SHORT_BINSTRING + bytes([n])
            if n < 256
            else pickle.BINSTRING + struct.pack("<i", n)
        )
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_str(self, obj: str) -> None:  # Python 2's ``str`` was bytes
        self.save_bytes(obj.encode("latin-1"))

    dispatch[str] = save_str

    def save_global(self, obj, name=None) -> None:
        module = getattr(obj, "__module__", "")
        if module.startswith("numpy._core"):
            name = name or obj.__name__
            self.write(
                pickle.GLOBAL + f"numpy.core.{module[len('numpy._core.') :]}\n{name}\n".encode()
            )
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    dispatch[type(len)] = save_global  # _reconstruct is a builtin function


def _py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _batch(rng: np.random.Generator, n: int, num_classes: int, labels_key: bytes) -> dict:
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    return {
        b"batch_label": b"generated batch",
        labels_key: labels.tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar(root: Path, variant: str, per_batch: int) -> dict[str, Path]:
    """A CIFAR-``variant`` release with ``per_batch`` images per batch file, both as the
    ``.tar.gz`` and as the extracted folder under ``root``; returns their paths and the
    batches (for content checks)."""
    rng = np.random.default_rng(0)
    if variant == "cifar10":
        folder, archive = "cifar-10-batches-py", "cifar-10-python.tar.gz"
        files = {f"data_batch_{i}": _batch(rng, per_batch, 10, b"labels") for i in range(1, 6)}
        files["test_batch"] = _batch(rng, per_batch, 10, b"labels")
        files["batches.meta"] = {
            b"label_names": [
                n.encode()
                for n in (
                    "airplane",
                    "automobile",
                    "bird",
                    "cat",
                    "deer",
                    "dog",
                    "frog",
                    "horse",
                    "ship",
                    "truck",
                )
            ],
            b"num_cases_per_batch": per_batch,
            b"num_vis": 3072,
        }
    else:
        folder, archive = "cifar-100-python", "cifar-100-python.tar.gz"
        files = {
            "train": _batch(rng, per_batch, 100, b"fine_labels"),
            "test": _batch(rng, per_batch, 100, b"fine_labels"),
        }
        for b in files.values():
            b[b"coarse_labels"] = [y // 5 for y in b[b"fine_labels"]]
        files["meta"] = {
            b"fine_label_names": [f"class{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"super{i}".encode() for i in range(20)],
        }
    extracted = root / "extracted" / folder
    extracted.mkdir(parents=True)
    (extracted / "readme.html").write_text("<html></html>")
    for name, obj in files.items():
        (extracted / name).write_bytes(_py2_pickle(obj))
    tar_path = root / "archive" / archive
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(extracted, arcname=folder)
    return {"folder": extracted, "archive": tar_path, "batches": files}


# --- a class-per-folder image tree ------------------------------------------------------------

CLASSES = ("bird", "cat", "dog")


def write_image(path: Path, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_image_tree(root: Path, per_class: int = 4) -> Path:
    """``root/{train,val}/<class>/`` with JPEG and PNG images of assorted sizes."""
    seed = 0
    for split in ("train", "val"):
        for c in CLASSES:
            for i in range(per_class):
                seed += 1
                ext = ".jpg" if i % 2 else ".png"
                write_image(root / split / c / f"{i}{ext}", (40 + 7 * i, 72 - 5 * i), seed)
    return root


def truncated(path: Path) -> None:
    """Cut an image file in half (its header stays readable)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


class DumpWeights(L.Callback):
    """Saves, per rank, the parameters at the start and end of training, a fingerprint of
    every batch the rank trained on, and the process that the run folder's lock names while
    training (importable by the worker processes DDP launches)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {k: v.detach().clone() for k, v in pl_module.named_parameters()}
        self.batches: list[float] = []
        from recipes.run_lock import LOCK_NAME

        lock = Path(trainer.log_dir) / LOCK_NAME  # (trainer.log_dir: read on every rank)
        self.lock_pid = json.loads(lock.read_text())["pid"] if lock.is_file() else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append(float(batch[0].double().sum()))

    def on_train_end(self, trainer, pl_module) -> None:
        end = {k: v.detach().clone() for k, v in pl_module.named_parameters()}
        torch.save(
            {
                "start": self.start,
                "end": end,
                "batches": self.batches,
                "world_size": trainer.world_size,
                "pid": os.getpid(),
                "lock_pid": self.lock_pid,
            },
            self.path / f"rank{trainer.global_rank}.pt",
        )


# --- what a run writes, and callbacks the tests use ---------------------------------------------

#: A tiny network and short epochs: two training batches, one validation batch.
ONE = (
    "--model.width", "0.0625",
    "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1",
)  # fmt: skip

# The pictures every fit writes into its run folder (besides filters/epoch_NNN.png).
PICTURES = (
    "training_curves.png",
    "feature_maps.png",
    "top_patches.png",
    "confusion_matrix_val.png",
    "worst_mistakes_val.png",
)


class Started(L.Callback):
    """Records whether training got as far as its first step."""

    started = False

    def on_train_start(self, trainer, pl_module) -> None:
        Started.started = self.started = True


class _ImageExperiment:
    def __init__(self) -> None:
        self.images: list[tuple[str, np.ndarray, int]] = []

    def add_image(self, tag, image, step, dataformats="CHW") -> None:
        assert dataformats == "HWC"
        self.images.append((tag, image, step))


class ImageLogger(CSVLogger):
    """A CSV logger whose experiment also takes images, as TensorBoard's does."""

    def __init__(self, save_dir: str = "runs", name: str = "images", version=None) -> None:
        super().__init__(save_dir, name, version)
        self.image_experiment = _ImageExperiment()

    @property
    def experiment(self):
        writer = super().experiment
        writer.images = self.image_experiment.images
        writer.add_image = self.image_experiment.add_image
        return writer


def kwargs_builder(**kwargs):
    """A builder in torchvision's style: its keyword arguments go on to the model class."""
    from recipes.resnet import ResNet

    return ResNet(8, width=4, **kwargs)
