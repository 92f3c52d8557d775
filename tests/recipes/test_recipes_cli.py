"""``python -m recipes``: every subcommand, every config, and the failures a user meets first."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image
from recipes_testutils import CONFIGS, DIGITS, run_cli, truncated

import torchconv_ext
from recipes.flops import count_flops

TINY = ("--model.width", "0.0625")


class Started(L.Callback):
    """Records whether training got as far as its first step."""

    def __init__(self) -> None:
        self.started = False

    def on_train_start(self, trainer, pl_module) -> None:
        self.started = True


def test_print_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli("fit", "--config", str(DIGITS), "--print_config", tmp_path=tmp_path)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "class_path: recipes.data.DigitsDataModule" in out
    assert "arch: vgg11" in out and "backend: torchconv_ext" in out


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_subcommands_fast_dev_run(subcommand, tmp_path):
    cli = run_cli(
        subcommand, "--config", str(DIGITS), *TINY, "--trainer.fast_dev_run", "1", tmp_path=tmp_path
    )
    assert cli.trainer.state.finished
    if subcommand in ("fit", "validate"):
        assert 0 <= float(cli.trainer.callback_metrics["val_acc"]) <= 1
    if subcommand == "test":
        assert {"test_acc", "test_acc_top5", "test_loss"} <= set(cli.trainer.callback_metrics)


CONFIG_DATA = {
    "alexnet32_cifar10": ("cifar10", ["--data.init_args.val_size", "50"]),
    "vgg16_bn_cifar10": ("cifar10", ["--data.init_args.val_size", "50"]),
    "vgg19_bn_cifar100": ("cifar100", ["--data.init_args.val_size", "100"]),
    "alexnet_imagefolder": ("image_tree", []),
    "vgg16_bn_imagefolder": ("image_tree", []),
    "vgg11_digits": (None, []),
}


def test_every_config_is_covered():
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == set(CONFIG_DATA)


@pytest.mark.parametrize("name", sorted(CONFIG_DATA))
def test_every_config_trains(name, request, tmp_path):
    """Each shipped config, at 1/16 width on generated data, runs a fast_dev_run as written."""
    fixture, extra = CONFIG_DATA[name]
    args = [
        "fit",
        "--config",
        str(CONFIGS / f"{name}.yaml"),
        *TINY,
        "--model.hidden",
        "16",
        "--trainer.fast_dev_run",
        "1",
        *extra,
    ]
    if fixture == "image_tree":
        root = request.getfixturevalue("image_tree")
        args += [
            "--data.init_args.root",
            str(root),
            "--data.init_args.image_size",
            "64",
            "--data.init_args.load_size",
            "72",
            "--data.init_args.num_workers",
            "0",
            "--data.init_args.batch_size",
            "4",
        ]
    elif fixture:
        args += ["--data.init_args.root", str(request.getfixturevalue(fixture)["archive"])]
    cli = run_cli(*args, tmp_path=tmp_path)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1


def _metrics(log_dir):
    with open(log_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_fit_writes_what_users_look_at(tmp_path):
    cli = run_cli(
        "fit",
        "--config",
        str(DIGITS),
        *TINY,
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "5",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.log_every_n_steps",
        "1",
        tmp_path=tmp_path,
    )
    log_dir = Path(cli.trainer.log_dir)
    # first-layer filters per epoch: 4 greyscale 3×3 filters → a 2×2 grid at zoom 16
    for epoch in (0, 1):
        grid = Image.open(log_dir / "filters" / f"epoch_{epoch:03d}.png")
        assert grid.mode == "L" and grid.size == (2 * (3 * 16 + 1) + 1,) * 2
    assert Image.open(log_dir / "training_curves.png").size[0] > 1000
    ckpts = sorted(p.name for p in (log_dir / "checkpoints").iterdir())
    assert ckpts[-1] == "last.ckpt" and ckpts[0].startswith("best-epoch=")
    rows = _metrics(log_dir)
    columns = set(rows[0])
    assert {
        "train_loss_step",
        "train_loss_epoch",
        "train_acc",
        "val_acc",
        "val_acc_top5",
        "lr-SGD",
    } <= columns
    flops = [
        float(r["train/device/flops_per_sec"]) for r in rows if r["train/device/flops_per_sec"]
    ]
    images = [
        float(r["train/device/samples_per_sec"]) for r in rows if r["train/device/samples_per_sec"]
    ]
    assert flops and images and min(flops) > 0 and min(images) > 0
    # FLOP/s ÷ images/s = FLOPs per training image: forward + backward of the network
    module = cli.model
    x = torch.zeros(1, 1, 32, 32)
    per_image = count_flops(module.net, x, backward=True)
    assert flops[-1] / images[-1] == pytest.approx(per_image, rel=1e-6)
    curves = cli.trainer.callbacks[
        [type(c).__name__ for c in cli.trainer.callbacks].index("TrainingCurves")
    ].history
    assert [r["epoch"] for r in curves] == [0, 1] and curves[0]["lr"] == 0.05
    assert [r["val_acc"] for r in curves] == [float(r["val_acc"]) for r in rows if r["val_acc"]]

    best = next((log_dir / "checkpoints").glob("best-*.ckpt"))
    pred = run_cli(
        "predict", "--config", str(DIGITS), *TINY, "--ckpt_path", str(best), tmp_path=tmp_path
    )
    pred_dir = Path(pred.trainer.log_dir)
    with open(pred_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 270 and sorted(int(r["index"]) for r in rows) == list(range(270))
    assert all(0 <= int(r["pred"]) < 10 and 0 < float(r["confidence"]) <= 1 for r in rows)
    # a checkpoint of our layers loads into torch's: same keys, and here the same numerics
    validated = run_cli(
        "validate",
        "--config",
        str(DIGITS),
        *TINY,
        "--ckpt_path",
        str(best),
        "--model.backend",
        "torch",
        tmp_path=tmp_path,
    )
    assert not any(isinstance(m, torchconv_ext.nn.Conv2d) for m in validated.model.modules())
    saved = torch.load(best, weights_only=False)["callbacks"]
    score = next(v["best_model_score"] for k, v in saved.items() if "'monitor': 'val_acc'" in k)
    assert float(validated.trainer.callback_metrics["val_acc"]) == pytest.approx(float(score))


def test_tensorboard_logger_gets_the_filter_grid(tmp_path):
    cli = run_cli(
        "fit",
        "--config",
        str(DIGITS),
        *TINY,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.logger",
        "lightning.pytorch.loggers.TensorBoardLogger",
        tmp_path=tmp_path,
    )
    log_dir = Path(cli.trainer.log_dir)
    assert list(log_dir.glob("events.out.tfevents.*"))
    assert (log_dir / "filters" / "epoch_000.png").is_file()


# --- failing early, with a message ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model.arch", "vgg12"],
            "Expected a typing.Literal['alexnet', 'alexnet32', 'vgg11', 'vgg13', 'vgg16', 'vgg19']. Got value: vgg12",
        ),
        (
            ["--model.backend", "cudnn"],
            "Expected a typing.Literal['torchconv_ext', 'torch']. Got value: cudnn",
        ),
        (
            ["--data", "recipes.data.MNISTDataModule"],
            "module 'recipes.data' has no attribute 'MNISTDataModule'",
        ),
        (["--model.widht", "0.5"], "unrecognized arguments: --model.widht 0.5"),
        (["--trainer.max_epochs", "ten"], 'Parser key "trainer.max_epochs"'),
    ],
)
def test_bad_command_lines_are_refused_while_parsing(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli("fit", "--config", str(DIGITS), *args, tmp_path=tmp_path)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_config_file_is_refused(tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text(DIGITS.read_text().replace("  batch_norm: true", "  batchnorm: true"))
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", str(config), tmp_path=tmp_path)
    assert "batchnorm" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", str(tmp_path / "missing.yaml"), tmp_path=tmp_path)
    assert "missing.yaml" in capsys.readouterr().err


def test_wrong_data_path_fails_before_training(tmp_path):
    started = Started()
    # (jsonargparse reports the data module's FileNotFoundError inside its own ValueError)
    with pytest.raises(ValueError, match=r"nowhere'\. Download cifar-10-python\.tar\.gz"):
        run_cli(
            "fit",
            "--config",
            str(CONFIGS / "alexnet32_cifar10.yaml"),
            "--data.init_args.root",
            str(tmp_path / "nowhere"),
            tmp_path=tmp_path,
            callbacks=[started],
        )
    assert not started.started


def test_corrupt_image_fails_before_training(image_tree, tmp_path):
    truncated(image_tree / "val" / "cat" / "2.png")
    started = Started()
    with pytest.raises(ValueError, match=r"(?s)1 corrupt or unreadable image file.*val/cat/2\.png"):
        run_cli(
            "fit",
            "--config",
            str(CONFIGS / "vgg16_bn_imagefolder.yaml"),
            *TINY,
            "--data.init_args.root",
            str(image_tree),
            "--data.init_args.num_workers",
            "0",
            tmp_path=tmp_path,
            callbacks=[started],
        )
    assert not started.started
