"""The pictures: what they show is computed right (filters, receptive fields, top patches,
mistakes), and ``predict`` reads a folder of the user's own images."""

from __future__ import annotations

import csv
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from recipes_testutils import DIGITS, run_cli
from sklearn.datasets import load_digits
from torch import nn

from recipes._checks import find_recipe_error
from recipes.callbacks import ErrorAnalysis, PredictionWriter, TopPatches
from recipes.callbacks._layers import Field, default_layer, layer_output, receptive_field
from recipes.callbacks.filters import filter_figure, filter_tiles
from recipes.data.digits import digit_from_image
from recipes.models import build_model


def test_rgb_filters_are_colour_images_on_their_own_scale():
    w = torch.zeros(2, 3, 2, 2)
    w[0, 0] = 1.0  # pure red, all taps
    w[1, 2, 0, 0] = -0.5  # one tap away from blue; the rest zero
    tiles, scales, rgb = filter_tiles(w)
    assert rgb and scales == [1.0, 0.5]
    np.testing.assert_allclose(tiles[0][0, 0], [1.0, 0.5, 0.5])  # +max red, 0 elsewhere: grey
    np.testing.assert_allclose(tiles[1][0, 0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(tiles[1][1, 1], [0.5, 0.5, 0.5])


def test_grey_filters_are_signed_maps():
    w = torch.tensor([[[[2.0, 0.0, -1.0]]]])
    (tile,), (scale,), rgb = filter_tiles(w)
    assert not rgb and scale == 2.0
    red, white, blue = tile[0]  # (+2 at full scale, 0, −1 at half scale)
    assert red[0] > red[2] + 0.2 and blue[2] > blue[0] + 0.2 and white.min() > 0.9
    fig = filter_figure(torch.randn(96, 3, 11, 11), "features.0", 3)  # AlexNet's first layer
    assert fig.texts[0].get_text().startswith("First-layer filters features.0 (96 × 3 × 11 × 11)")


def test_receptive_fields_of_vgg_and_alexnet():
    vgg = build_model(
        "vgg11", 10, in_channels=1, batch_norm=True, width=1 / 16, pool_size=1, hidden=0
    )
    # conv 3×3 → 3; pool → jump 2; conv → 8; pool → jump 4; conv → 18; conv → 26; pool, conv → 46
    fields = {
        n: receptive_field(vgg, n, 1, 32)
        for n in ("features.2", "features.6", "features.10", "features.13", "features.17")
    }
    assert [(f.size, f.jump) for f in fields.values()] == [
        (3, 1),
        (8, 2),
        (18, 4),
        (26, 4),
        (46, 8),
    ]
    assert fields["features.10"].box(0) == (-7, 11)  # unit 0 sees 7 pixels of zero padding
    assert default_layer(vgg, 1, 32) == "features.10"  # the deepest with a field ≤ 60 % of 32
    alexnet = build_model("alexnet", 10, width=1 / 16, hidden=16)
    convs = ["features.1", "features.5", "features.9", "features.11", "features.13"]
    sizes = [receptive_field(alexnet, n, 3, 224).size for n in convs]
    assert sizes == [11, 51, 99, 131, 163]  # the published AlexNet receptive fields


def _fake_trainer():
    """What the callbacks read of a trainer; the data module shows network inputs as they are."""
    datamodule = types.SimpleNamespace(denormalize=lambda x: x)
    return types.SimpleNamespace(
        sanity_checking=False, datamodule=datamodule, world_size=1, current_epoch=0
    )


def test_top_patches_are_the_strongest_units_receptive_fields():
    """A 3×3 detector of bright centres: each channel's patches are the k images whose
    strongest response is highest, cropped around that unit, over several batches."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0  # channel 0: the pixel itself
        conv.weight[1, 0] = 1.0 / 9  # channel 1: the 3×3 mean
    net = nn.Sequential(conv)
    callback = TopPatches(layer="0", k=3, channels=2)
    images = torch.rand(10, 1, 8, 8)
    trainer = _fake_trainer()
    for batch in images.split(4):  # three batches: 4, 4, 2 images
        callback.on_validation_batch_end(
            trainer, types.SimpleNamespace(net=net), None, (batch, None), 0
        )
    assert callback._field == Field(3, 1, -1)
    maps = layer_output(net, "0", images).detach()
    for ch in range(2):
        best = maps[:, ch].flatten(1).max(dim=1)
        order = best.values.argsort(descending=True)[:3]
        assert torch.allclose(callback._values[ch], best.values[order])
        for j, i in enumerate(order.tolist()):
            row, col = divmod(int(best.indices[i]), 8)
            padded = torch.nn.functional.pad(images[i, 0], (1, 1, 1, 1), value=float("nan"))
            expected = padded[row : row + 3, col : col + 3]
            got = callback._patches[ch, j, :, :, 0]  # (display pixels: grey repeated to RGB)
            assert torch.equal(got.isnan(), expected.isnan())
            assert torch.allclose(got.nan_to_num(), expected.nan_to_num())


def test_worst_mistakes_are_the_most_confident_wrong_predictions():
    callback = ErrorAnalysis(mistakes=2)
    trainer = _fake_trainer()
    callback.on_validation_epoch_start(trainer, None)
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2) / 4
    labels = torch.tensor([0, 1, 2, 0])
    logits = torch.tensor(
        [[5.0, 0, 0], [0, 0, 1], [3, 0, 0], [0, 0, 9]]  # right, wrong, wrong, very wrong
    )
    for part in (slice(0, 2), slice(2, 4)):
        callback.on_validation_batch_end(
            trainer, None, {"logits": logits[part]}, (images[part], labels[part]), 0
        )
    assert callback._counts.tolist() == [[1, 0, 1], [0, 0, 1], [1, 0, 0]]
    order = callback._scores.argsort(descending=True)
    assert callback._pairs[order].tolist() == [[0, 2], [2, 0]]  # 9 beats 3; 1 is dropped
    assert callback._images[order][:, 0, 0, 0].tolist() == [0.75, 0.5]


def _digit_png(path: Path, pixels: np.ndarray) -> None:
    """An 8×8 digit as a person's photo might be: dark ink on white paper, 10× larger, margins."""
    big = np.kron(pixels / 16, np.ones((10, 10)))
    ink = np.pad(big, 15)
    Image.fromarray((255 * (1 - ink)).astype(np.uint8)).save(path)


def test_a_photo_of_a_digit_becomes_a_dataset_digit(tmp_path):
    digits = load_digits()
    similar = []
    for i in range(40):
        _digit_png(tmp_path / "d.png", digits.images[i])
        with Image.open(tmp_path / "d.png") as image:
            x = digit_from_image(image)
        assert x.shape == (1, 8, 8) and float(x.max()) == 1.0
        ref = torch.from_numpy(digits.images[i]).float().flatten()
        similar.append(float(torch.nn.functional.cosine_similarity(x.flatten(), ref, dim=0)))
    # (a few of the data set's digits do not fill their box, so they come back larger)
    assert np.median(similar) > 0.95 and np.mean(similar) > 0.9


def test_predict_on_a_folder_of_your_own_images(tmp_path, capsys):
    digits = load_digits()
    folder = tmp_path / "my digits"
    (folder / "more").mkdir(parents=True)
    for i in range(5):
        _digit_png(folder / ("more" if i > 2 else "") / f"digit_{i}.png", digits.images[i])
    (folder / "notes.txt").write_text("not an image")
    cli = run_cli(
        "predict",
        "--config",
        str(DIGITS),
        "--model.width",
        "0.0625",
        "--data.init_args.predict_dir",
        str(folder),
        tmp_path=tmp_path,
    )
    out_dir = Path(cli.trainer.log_dir)
    with open(out_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    names = [Path(r["path"]).relative_to(folder).as_posix() for r in rows]
    assert names == [
        "digit_0.png",
        "digit_1.png",
        "digit_2.png",
        "more/digit_3.png",
        "more/digit_4.png",
    ]
    assert all(r["label"] == "" and r["class"] == r["pred"] for r in rows)
    writer = next(c for c in cli.trainer.callbacks if isinstance(c, PredictionWriter))
    assert [shown[4] for shown in writer._shown] == [Path(n).name for n in names]  # captions
    assert Image.open(out_dir / "predictions.png").size[0] >= 500
    assert "predictions.csv, " not in capsys.readouterr().out  # one CSV: no per-rank files
    with pytest.raises(ValueError) as info:
        run_cli(
            "predict",
            "--config",
            str(DIGITS),
            "--data.init_args.predict_dir",
            str(tmp_path / "none"),
            tmp_path=tmp_path,
        )
    error = find_recipe_error(info.value)
    assert isinstance(error, FileNotFoundError) and "is not a folder" in str(error)
