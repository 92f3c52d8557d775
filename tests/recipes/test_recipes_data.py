"""The data modules, on small files written in the real formats."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image
from recipes_testutils import CLASSES, truncated, write_image

from recipes.data import CIFARDataModule, DigitsDataModule, ImageFolderDataModule
from recipes.data.image_folder import load_image


def _attach(dm, training: bool):
    """The piece of a Trainer that ``on_after_batch_transfer`` reads."""
    dm.trainer = types.SimpleNamespace(training=training)
    return dm


def _first_batch(loader):
    return next(iter(loader))


# --- digits --------------------------------------------------------------------------------------


def test_digits_split_is_fixed_stratified_and_disjoint():
    dm = DigitsDataModule()
    dm.setup("fit")
    sizes = {
        name: len(s)
        for name, s in (("train", dm.train_set), ("val", dm.val_set), ("test", dm.test_set))
    }
    assert sum(sizes.values()) == 1797
    assert sizes["val"] == pytest.approx(0.15 * 1797, abs=1)
    assert sizes["test"] == pytest.approx(0.15 * 1797, abs=1)
    rows = {
        name: {tuple(x.flatten().tolist()) for x, _ in s}
        for name, s in (("train", dm.train_set), ("val", dm.val_set), ("test", dm.test_set))
    }
    assert not rows["val"] & rows["test"]  # load_digits has a few duplicate images,
    assert len(rows["train"] & rows["val"]) < 5  # so allow a handful across train/val
    for s in (dm.train_set, dm.val_set, dm.test_set):  # every class in proportion (±1)
        counts = torch.bincount(s.tensors[1], minlength=10).float()
        assert counts.max() - counts.min() <= 0.05 * len(s) + 1
    again = DigitsDataModule()
    again.setup("fit")
    assert torch.equal(again.val_set.tensors[0], dm.val_set.tensors[0])
    other = DigitsDataModule(split_seed=1)
    other.setup("fit")
    assert not torch.equal(other.val_set.tensors[0], dm.val_set.tensors[0])


def test_digits_batches_are_upsampled_and_normalised():
    dm = DigitsDataModule(batch_size=32, crop_padding=0)
    dm.setup("fit")
    raw_x, raw_y = _first_batch(dm.val_dataloader())
    x, y = _attach(dm, training=False).on_after_batch_transfer((raw_x, raw_y), 0)
    assert x.shape == (32, 1, 32, 32) and torch.equal(y, raw_y)
    # nearest ×4: each 8×8 pixel becomes a 4×4 block, then the affine normalisation
    mean, std = dm.normalize.flags["mean"], dm.normalize.flags["std"]
    expected = raw_x.repeat_interleave(4, 2).repeat_interleave(4, 3)
    torch.testing.assert_close(x * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1), expected)
    train = DigitsDataModule()
    train.setup("fit")
    stats = torch.cat([b for b, _ in train.train_dataloader()])
    assert float(stats.mean()) == pytest.approx(float(train.normalize.flags["mean"]), rel=1e-5)


def test_digits_training_batches_are_randomly_shifted():
    dm = DigitsDataModule(batch_size=16, crop_padding=4)
    dm.setup("fit")
    raw = _first_batch(dm.train_dataloader())
    eval_x, _ = _attach(dm, training=False).on_after_batch_transfer(raw, 0)
    torch.manual_seed(0)
    train_x, _ = _attach(dm, training=True).on_after_batch_transfer(raw, 0)
    mean, std = dm.normalize.flags["mean"], dm.normalize.flags["std"]
    eval_px, train_px = (
        t * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1) for t in (eval_x, train_x)
    )
    padded = torch.nn.functional.pad(eval_px, (4, 4, 4, 4))
    offsets = []
    for i in range(len(raw[0])):  # each image is a 32×32 window of the zero-padded original
        found = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if torch.allclose(train_px[i], padded[i, :, dy : dy + 32, dx : dx + 32], atol=1e-5)
        ]
        assert found, f"training image {i} is not a shifted copy"
        offsets.append(found[0])
    assert len(set(offsets)) > 4  # drawn per image


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 30}, "multiple of 8"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "sum below 1"),
        ({"batch_size": 0}, "batch_size must be positive"),
        ({"split_seed": -1}, r"split_seed must be an integer in \[0, 4294967295\]"),
        ({"split_seed": 2**32}, r"split_seed must be an integer in \[0, 4294967295\]"),
        # one image held out: a stratified split needs one per class
        (
            {"val_fraction": 0.0001},
            "val_fraction 0.0001 holds out 1 of 1527 images the test set leaves, too few",
        ),
        ({"test_fraction": 0.001}, "test_fraction 0.001 holds out 2 of 1797 images, too few"),
        ({"val_fraction": 0.845, "test_fraction": 0.15}, "leaving 8, too few"),
        ({"crop_padding": -1}, r"crop_padding must be 0 \(no random crop\) or a number of pixels"),
        ({"crop_padding": 32}, r"below the image size \(32\), got 32"),
    ],
)
def test_digits_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)


# --- CIFAR ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["archive", "folder", "archive_parent", "folder_parent"])
def test_cifar10_reads_every_layout(cifar10, where):
    key, parent = where.split("_")[0], where.endswith("parent")
    root = cifar10[key].parent if parent else cifar10[key]
    dm = CIFARDataModule(str(root), "cifar10", batch_size=16, val_size=50)
    dm.setup("fit")
    assert dm.num_classes == 10 and dm.class_names[0] == "airplane"
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (150, 50, 40)
    # The release stores each image as 1024 red, 1024 green, 1024 blue bytes, rows in order.
    test = cifar10["batches"]["test_batch"]
    images, labels = dm.test_set.tensors
    assert images.dtype == torch.uint8 and images.shape == (40, 3, 32, 32)
    assert labels.tolist() == test[b"labels"]
    row = test[b"data"][3]
    assert images[3, 0, 0, 1] == row[1] and images[3, 1, 0, 0] == row[1024]
    assert images[3, 2, 31, 31] == row[3071] and images[3, 0, 1, 0] == row[32]
    # Training and validation are the five training batches, split with every class present.
    train_rows = np.concatenate(
        [cifar10["batches"][f"data_batch_{i}"][b"data"] for i in range(1, 6)]
    )
    ours = torch.cat([dm.train_set.tensors[0], dm.val_set.tensors[0]]).reshape(-1, 3072)
    assert sorted(map(bytes, ours.numpy())) == sorted(map(bytes, train_rows))
    assert set(dm.val_set.tensors[1].tolist()) == set(range(10))


def test_cifar100_fine_labels(cifar100):
    dm = CIFARDataModule(str(cifar100["archive"]), "cifar100", val_size=100)
    dm.setup("fit")
    assert dm.num_classes == 100 and dm.class_names[99] == "class99"
    assert len(dm.train_set) == 200 and len(dm.val_set) == 100
    assert dm.test_set.tensors[1].tolist() == cifar100["batches"]["test"][b"fine_labels"]
    x, y = _attach(dm, training=True).on_after_batch_transfer(
        _first_batch(dm.train_dataloader()), 0
    )
    assert x.dtype == torch.float32 and x.shape == (128, 3, 32, 32) and y.max() < 100


def test_cifar_missing_path_says_where_to_get_the_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        CIFARDataModule(str(tmp_path / "nowhere"), "cifar10")
    message = str(info.value)
    assert "nowhere" in message and "cifar-10-python.tar.gz" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message
    assert "cifar-10-batches-py" in message
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python\.tar\.gz"):
        CIFARDataModule(str(tmp_path), "cifar100")
    with pytest.raises(ValueError, match="unknown CIFAR variant 'cifar20'"):
        CIFARDataModule(str(tmp_path), "cifar20")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_size": 5}, "val_size 5 holds out 5 of 50000 images, too few for a stratified"),
        ({"val_size": 0}, "val_size 0 holds out 0 of 50000 images"),
        ({"split_seed": -1}, r"split_seed must be an integer in \[0, 4294967295\]"),
        ({"crop_padding": 32}, r"crop_padding must be 0 .* below the image size \(32\)"),
    ],
)
def test_cifar_bad_arguments(cifar10, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CIFARDataModule(str(cifar10["archive"]), "cifar10", **kwargs)


def test_cifar_val_size_is_checked_against_the_release_read(cifar10):
    """The release's own size is known once it is read: 200 training images here."""
    with pytest.raises(ValueError, match="val_size 195 holds out 195 of 200 images, leaving 5"):
        CIFARDataModule(str(cifar10["archive"]), "cifar10", val_size=195).setup("fit")


def test_cifar_damaged_files_fail_clearly(cifar10, tmp_path):
    bad_archive = tmp_path / "cifar-10-python.tar.gz"
    bad_archive.write_bytes(b"not a gzip file")
    with pytest.raises(ValueError, match=r"not a readable \.tar\.gz archive"):
        CIFARDataModule(str(bad_archive)).setup("fit")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in cifar10["folder"].iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "data_batch_2").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="data_batch_2 is not a CIFAR python-pickle batch"):
        CIFARDataModule(str(folder)).setup("fit")
    (folder / "data_batch_2").write_bytes(b"cos\nsystem\n(S'true'\ntR.")  # code, not data
    with pytest.raises(ValueError, match=r"unexpected object os\.system"):
        CIFARDataModule(str(folder)).setup("fit")
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3 is missing"):
        CIFARDataModule(str(folder)).setup("fit")


# --- image folders -------------------------------------------------------------------------------


def test_image_folder_loads_every_class(image_tree):
    dm = ImageFolderDataModule(
        str(image_tree), batch_size=4, image_size=24, load_size=32, num_workers=0
    )
    assert dm.class_names == list(CLASSES) and dm.num_classes == 3
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == len(dm.val_set) == len(dm.test_set) == 12
    x, y = dm.train_set[5]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and y == 1
    torch.manual_seed(0)
    batch = _first_batch(dm.train_dataloader())
    tx, ty = _attach(dm, training=True).on_after_batch_transfer(batch, 0)
    ex, _ = _attach(dm, training=False).on_after_batch_transfer(batch, 0)
    assert tx.shape == ex.shape == (4, 3, 24, 24) and tx.dtype == torch.float32
    # Eval: the centre 24×24 of the 32×32, normalised with ImageNet's statistics.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(ex * std + mean, batch[0][:, :, 4:28, 4:28].float() / 255)
    assert not torch.allclose(tx, ex)


def test_image_folder_resizes_shorter_side_and_crops_centre(tmp_path):
    path = tmp_path / "wide.png"
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    pixels[:, 20:40] = 255  # a white centre third
    Image.fromarray(pixels).save(path)
    x = load_image(path, 10)
    assert x.shape == (3, 10, 10)
    assert x[:, :, 2:8].min() == 255  # the centre third fills the crop's middle


def test_image_folder_corrupt_file_fails_before_training(image_tree):
    (image_tree / "train" / "cat" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    truncated_png = image_tree / "val" / "dog" / "0.png"
    truncated(truncated_png)
    dm = ImageFolderDataModule(str(image_tree), num_workers=0)
    with pytest.raises(ValueError, match="2 corrupt or unreadable image file") as info:
        dm.prepare_data()
    assert "garbage.jpg" in str(info.value) and str(truncated_png) in str(info.value)


def test_image_folder_undecodable_file_names_itself(image_tree):
    bad = image_tree / "train" / "bird" / "1.jpg"
    truncated(bad)  # the JPEG header still parses; decoding fails
    dm = ImageFolderDataModule(str(image_tree), verify_images=False, load_size=32, image_size=32)
    dm.setup("fit")
    index = [str(p) for p, _ in dm.train_set.samples].index(str(bad))
    with pytest.raises(OSError, match=f"cannot decode image file {bad}"):
        dm.train_set[index]


def test_image_folder_wrong_layouts(tmp_path, image_tree):
    with pytest.raises(
        FileNotFoundError, match=r"does not exist: data.root must hold train/<class>"
    ):
        ImageFolderDataModule(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="images/validation' does not exist"):
        ImageFolderDataModule(str(image_tree), val_dir="validation")
    write_image(image_tree / "val" / "zebra" / "0.png", (8, 8), 0)
    dm = ImageFolderDataModule(str(image_tree))
    with pytest.raises(
        ValueError, match=r"class folders that the training folder lacks: \['zebra'\]"
    ):
        dm.setup("fit")
    (image_tree / "empty" / "train" / "a").mkdir(parents=True)
    (image_tree / "empty" / "val" / "a").mkdir(parents=True)
    (image_tree / "empty" / "train" / "a" / "notes.txt").write_text("no images")
    with pytest.raises(FileNotFoundError, match="no image files"):
        ImageFolderDataModule(str(image_tree / "empty")).setup("fit")
    with pytest.raises(ValueError, match="must not exceed load_size"):
        ImageFolderDataModule(str(image_tree), image_size=300)
