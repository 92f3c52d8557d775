"""``python -m recipes``: every subcommand, every config, and the failures a user meets first."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.utilities.model_summary import ModelSummary
from PIL import Image
from recipes_testutils import (
    CONFIGS,
    DIGITS,
    PICTURES,
    Started,
    cli_args,
    main_error,
    run_cli,
    truncated,
)

import torchconv_ext
from recipes._checks import find_recipe_error
from recipes.callbacks.summary import display_path
from recipes.cli import main, with_default_config
from recipes.flops import count_flops

TINY = ("--model.width", "0.0625")


def test_print_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli("fit", "--config", str(DIGITS), "--print_config", tmp_path=tmp_path)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "class_path: recipes.data.DigitsDataModule" in out
    assert "arch: vgg11" in out and "backend: torchconv_ext" in out
    assert "CosineAnnealingLR" in out and "T_max" not in out  # the run's length sets it


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_subcommands_fast_dev_run(subcommand, tmp_path):
    cli = run_cli(
        subcommand, "--config", str(DIGITS), *TINY, "--trainer.fast_dev_run", "1", tmp_path=tmp_path
    )
    assert cli.trainer.state.finished
    if subcommand == "fit":
        # ``example_input_array`` comes from the data (1×32×32 digits), so Lightning's model
        # summary counts the FLOPs of our layers instead of showing 0.
        assert tuple(cli.model.example_input_array.shape) == (1, 1, 32, 32)
        flops = count_flops(cli.model.net, cli.model.example_input_array, backward=False)
        assert ModelSummary(cli.model).total_flops == flops > 0
    if subcommand in ("fit", "validate"):
        assert 0 <= float(cli.trainer.callback_metrics["val_acc"]) <= 1
    if subcommand == "test":
        metrics = set(cli.trainer.callback_metrics)
        assert {"test_acc", "test_loss"} <= metrics
        assert not any("top5" in m for m in metrics)  # 10 classes: top-5 would say little


CONFIG_DATA = {
    "alexnet32_cifar10": ("cifar10", ["--data.init_args.val_size", "50"]),
    "vgg16_bn_cifar10": ("cifar10", ["--data.init_args.val_size", "50"]),
    "vgg19_bn_cifar100": ("cifar100", ["--data.init_args.val_size", "100"]),
    "alexnet_imagefolder": ("image_tree", []),
    "vgg16_bn_imagefolder": ("image_tree", []),
    "vgg11_digits": (None, []),
    "resnet8_digits": (None, []),
}


def test_every_config_is_covered():
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == set(CONFIG_DATA)


@pytest.mark.parametrize("name", sorted(CONFIG_DATA))
def test_every_config_trains(name, request, tmp_path):
    """Each shipped config, at 1/16 width on generated data, runs a fast_dev_run as written."""
    fixture, extra = CONFIG_DATA[name]
    size = (
        ["--model.arch_kwargs", "{width: 4}"]
        if name.startswith("resnet")
        else [*TINY, "--model.hidden", "16"]
    )
    args = [
        "fit",
        "--config",
        str(CONFIGS / f"{name}.yaml"),
        *size,
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
    # (the pictures of RGB images and of an image folder, here; of the digits, elsewhere)
    pictures = name in ("alexnet32_cifar10", "vgg16_bn_imagefolder")
    cli = run_cli(*args, tmp_path=tmp_path, pictures=pictures)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1


def _metrics(log_dir):
    with open(log_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_fit_writes_what_users_look_at(tmp_path, capsys):
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
        pictures=True,
    )
    log_dir = Path(cli.trainer.log_dir)
    for epoch in (0, 1):  # first-layer filters, one picture per epoch
        assert Image.open(log_dir / "filters" / f"epoch_{epoch:03d}.png").mode == "RGB"
    for name in PICTURES:
        assert Image.open(log_dir / name).size[0] >= 500, name
    ckpts = sorted(p.name for p in (log_dir / "checkpoints").iterdir())
    assert ckpts[-1] == "last.ckpt" and ckpts[0].startswith("best-epoch=")
    rows = _metrics(log_dir)
    columns = set(rows[0])
    assert {"train_loss_step", "train_loss_epoch", "train_acc", "val_acc", "lr-SGD"} <= columns
    assert not any("top5" in c for c in columns)
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
    # the summary says where everything went and how to go on
    out = capsys.readouterr().out
    assert "── fit finished" in out and f"run folder       {log_dir}" in out
    best = next((log_dir / "checkpoints").glob("best-*.ckpt"))
    assert (
        f"best val_acc     {float(cli.trainer.checkpoint_callback.best_model_score):.4f}: {best}"
        in out
    )
    assert f"last checkpoint  {log_dir}/checkpoints/last.ckpt" in out
    assert "confusion_matrix_val.png" in out and "filters/ (2 images)" in out
    assert f"--ckpt_path {log_dir}/checkpoints/last.ckpt" in out

    pred = run_cli(
        "predict", "--config", str(DIGITS), *TINY, "--ckpt_path", str(best), tmp_path=tmp_path
    )
    pred_dir = Path(pred.trainer.log_dir)
    with open(pred_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 270 and sorted(int(r["index"]) for r in rows) == list(range(270))
    assert all(0 <= int(r["pred"]) < 10 and 0 < float(r["confidence"]) <= 1 for r in rows)
    assert all(r["class"] == r["pred"] and r["path"] == "" and r["label"] != "" for r in rows)
    assert Image.open(pred_dir / "predictions.png").size[0] >= 500
    out = capsys.readouterr().out
    assert "── predict finished" in out and "predictions.csv" in out and "predictions.png" in out
    assert f"resume training  python -m recipes fit --config {DIGITS}" in out
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
    out = capsys.readouterr().out
    assert "── validate finished" in out and "val_acc" in out
    assert "torchconv_ext conversion: none (backend 'torch')" in out


def test_pictures_reach_tensorboard_style_loggers(tmp_path):
    """Every picture also goes to a logger whose experiment takes images (TensorBoard's API)."""
    cli = run_cli(
        "fit",
        "--config",
        str(DIGITS),
        *TINY,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",  # (an int: "1" would parse as the float 1.0, the whole epoch)
        "--trainer.limit_val_batches",
        "2",
        "--trainer.logger",
        "recipes_testutils.ImageLogger",
        tmp_path=tmp_path,
        pictures=True,
    )
    logger = cli.trainer.logger
    tags = {tag for tag, _, _ in logger.experiment.images}
    assert tags == {
        "first_layer_filters",
        "training_curves",
        "feature_maps",
        "top_patches",
        "confusion_matrix/val",
        "worst_mistakes/val",
    }
    for _, image, step in logger.experiment.images:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and step == 0


def test_tensorboard_logger_gets_the_pictures(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard is the opt-in extra [tensorboard]")
    cli = run_cli(
        "fit",
        "--config",
        str(DIGITS),
        *TINY,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",  # (an int: "1" would parse as the float 1.0, the whole epoch)
        "--trainer.limit_val_batches",
        "2",
        "--trainer.logger",
        "lightning.pytorch.loggers.TensorBoardLogger",
        tmp_path=tmp_path,
        pictures=True,
    )
    log_dir = Path(cli.trainer.log_dir)
    events = list(log_dir.glob("events.out.tfevents.*"))
    assert events and (log_dir / "filters" / "epoch_000.png").is_file()
    assert b"first_layer_filters" in events[0].read_bytes()


# --- failing early, with a message ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
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
        (["--model.lr_scheduler.T_max", "5"], "T_max"),
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


def _main_error(capsys, *args: str) -> str:
    """Run ``python -m recipes <args>`` as the console does; return what it printed on stderr."""
    with pytest.raises(SystemExit) as info:
        main(list(args))
    assert info.value.code == 1
    return capsys.readouterr().err


def test_missing_data_is_one_short_error(tmp_path, capsys):
    """A wrong data path stops before training with one short message that says where to get
    the files, not a chained traceback."""
    Started.started = False
    err = _main_error(
        capsys,
        "fit",
        "--config",
        str(CONFIGS / "alexnet32_cifar10.yaml"),
        "--data.init_args.root",
        str(tmp_path / "nowhere"),
        "--trainer.callbacks+=recipes_testutils.Started",
    )
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: CIFAR10 not found at '{tmp_path / 'nowhere'}'")
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in err
    assert not Started.started
    err = _main_error(
        capsys,
        "fit",
        "--config",
        str(CONFIGS / "vgg16_bn_imagefolder.yaml"),
        "--data.init_args.root",
        str(tmp_path / "nowhere"),
    )
    assert err.count("\n") == 1 and "https://github.com/fastai/imagenette" in err
    err = _main_error(capsys, "test", "--ckpt_path", str(tmp_path / "gone.ckpt"))
    assert err.count("\n") == 1 and "gone.ckpt' not found" in err
    err = _main_error(capsys, "fit", "--model.arch", "vgg12", "--trainer.fast_dev_run", "1")
    assert err.count("\n") == 1
    assert "unknown model 'vgg12': expected one of 'alexnet', 'alexnet32', 'vgg11'" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model.optimizer.init_args.lr", "-1"],
            "--model.optimizer: Invalid learning rate: -1.0",
        ),
        (["--model.label_smoothing", "5"], "label_smoothing must be in [0, 1], got 5.0"),
        (["--model.label_smoothing", "-1"], "label_smoothing must be in [0, 1], got -1.0"),
        (["--model.pool_size", "0"], "pool_size must be a positive integer, got 0"),
        (["--model.pool_size", "-1"], "pool_size must be a positive integer, got -1"),
        (["--model.hidden", "-1"], "hidden must be 0 (no hidden layers) or positive, got -1"),
        (
            ["--model.hidden", "16", "--model.dropout", "2"],
            "dropout must be a probability in [0, 1], got 2.0",
        ),
        (
            ["--data.init_args.image_size", "0"],
            "image_size must be a positive multiple of 8 (the digits are 8×8), got 0",
        ),
        (
            ["--trainer.max_epochs", "-5"],
            "--trainer: `max_epochs` must be a non-negative integer or -1. You passed in -5.",
        ),
        (
            ["--trainer.accumulate_grad_batches", "0"],
            "--trainer.accumulate_grad_batches must be 1 or more, got 0",
        ),
        (
            ["--trainer.check_val_every_n_epoch", "0"],
            "--trainer.check_val_every_n_epoch must be 1 or more, got 0",
        ),
        (["--trainer.gradient_clip_val", "-1"], "--trainer.gradient_clip_val must be 0 or more"),
        (["--data.init_args.eval_batch_size", "-4"], "eval_batch_size must be positive"),
        (["--data.init_args.eval_batch_size", "0"], "eval_batch_size must be positive"),
        (
            ["--data.init_args.num_workers", "-1"],
            "num_workers must be 0 (load in the main process) or more, got -1",
        ),
        (["--data.init_args.std", "[0.0]"], "std must be positive (it divides), got [0.0]"),
        (
            ["--data.init_args.mean", "[0.1,0.2]"],
            "mean must have one value per image channel (1), got [0.1, 0.2]",
        ),
        (["--trainer.logger.init_args.save_dir", "{file}"], "is a file, not a folder"),
        (["--trainer.logger.init_args.save_dir", "{file}/runs"], "is a file, not a folder"),
        (
            ["--data.split_seed", "-1"],
            "split_seed must be an integer in [0, 4294967295] (numpy's seeds), got -1",
        ),
        (
            ["--data.val_fraction", "0.0001"],
            "val_fraction 0.0001 holds out 1 of 1527 images the test set leaves, too few for a "
            "stratified split of 10 classes: give one that holds out at least 10 (one per class)",
        ),
        (
            ["--data.crop_padding", "-4"],
            "crop_padding must be 0 (no random crop) or a number of pixels below the image size "
            "(32), got -4",
        ),
        (
            ["--seed_everything", str(2**32)],
            "--seed_everything must be an integer in [0, 4294967295] (numpy's seeds), true (a "
            "random one) or false (no seeding), got 4294967296",
        ),
        (
            ["--trainer.accelerator", "gpus"],
            "unknown --trainer.accelerator 'gpus': expected one of 'auto', 'gpu', 'cpu', ",
        ),
        (["--trainer.strategy", "dpp"], "unknown --trainer.strategy 'dpp': expected 'auto' or"),
        (  # (built on the meta device first: this machine would end the process mid-build)
            ["--model.width", "1000"],
            "--model.width 1000.0: the network has 9,216,011,200,010 parameters (34,332.3 GiB), "
            "more than this machine's",
        ),
    ],
)
def test_bad_values_are_one_short_error_before_training(args, message, tmp_path, capsys):
    file = tmp_path / "a_file"
    file.write_text("")
    Started.started = False
    argv = cli_args(
        "fit",
        "--config",
        str(DIGITS),
        *TINY,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.callbacks+=recipes_testutils.Started",
        tmp_path=tmp_path / "runs",
    )
    err = main_error(capsys, [*argv, *(a.format(file=file) for a in args)]).err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: ") and message in err
    assert not Started.started


def test_a_folder_that_cannot_be_written_is_one_short_error_before_training(
    tmp_path, monkeypatch, capsys
):
    """Where the runs would go cannot be written (no permission; stood in for here, as root
    may write anywhere): refused by name before training, not a traceback from deep inside."""
    import recipes.cli

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        recipes.cli.os, "access",
        lambda path, mode: Path(path) != locked and real_access(path, mode),
    )  # fmt: skip
    Started.started = False
    argv = cli_args("fit", "--config", str(DIGITS), *TINY, "--trainer.max_epochs", "1",
                    "--trainer.callbacks+=recipes_testutils.Started", tmp_path=locked / "runs")  # fmt: skip
    err = main_error(capsys, argv).err
    assert (
        err.startswith("error: --trainer.")
        and "cannot write in" in err
        and "(no permission)" in err
    )
    assert err.count("\n") == 1 and not Started.started


def test_wrong_data_path_fails_before_training(tmp_path):
    """Called from Python, the error keeps its type (FileNotFoundError) and cause chain."""
    started = Started()
    with pytest.raises(ValueError) as info:
        run_cli(
            "fit",
            "--config",
            str(CONFIGS / "alexnet32_cifar10.yaml"),
            "--data.init_args.root",
            str(tmp_path / "nowhere"),
            tmp_path=tmp_path,
            callbacks=[started],
        )
    assert isinstance(find_recipe_error(info.value), FileNotFoundError)
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


# --- defaults and help --------------------------------------------------------------------------


def test_fit_without_config_runs_the_builtin_default(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--print_config"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "class_path: recipes.data.DigitsDataModule" in out and "arch: vgg11" in out
    assert with_default_config(["fit", "--trainer.max_epochs", "3"]) == (
        ["fit", "--config", display_path(DIGITS), "--trainer.max_epochs", "3"],
        True,
    )
    assert with_default_config(["fit", "--config=x.yaml"]) == (["fit", "--config=x.yaml"], False)
    assert with_default_config(["--help"]) == (["--help"], False)


def test_help_lists_the_shipped_configs(capsys):
    for args in (["--help"], ["fit", "--help"]):
        with pytest.raises(SystemExit):
            main(args)
        out = capsys.readouterr().out
        assert (
            "Shipped configs (--config recipes/configs/<name>.yaml; without --config: vgg11_digits)"
            in out
        )
        for path in CONFIGS.glob("*.yaml"):
            assert f"  {path.stem} " in out
        assert "  vgg11_digits          The built-in default: VGG-11-BN at 1/8 width" in out
