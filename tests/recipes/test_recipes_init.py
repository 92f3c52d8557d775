"""``--model.init``: how the convolutions start, and the network summary printed at the start."""

from __future__ import annotations

import torch
from recipes_testutils import DIGITS, run_cli

import torchconv_ext

FAST = ("--trainer.fast_dev_run", "1")


def _first_conv(cli):
    return next(m for m in cli.model.net.modules() if isinstance(m, torch.nn.Conv2d))


def test_kmeans_init_sets_the_first_convolution_from_the_training_images(tmp_path):
    cli = run_cli(
        "fit", "--config", str(DIGITS), "--model.init", "kmeans", *FAST, tmp_path=tmp_path
    )
    # What the recipe computed is kmeans_ on the first training images as the network sees them
    # (fast_dev_run trains one step after it, so compare a fresh module set up the same way).
    data = cli.datamodule
    images = torch.utils.data.DataLoader(data.train_set, batch_size=512).__iter__().__next__()[0]
    fresh = torch.nn.Conv2d(1, 8, 3, padding=1)
    torchconv_ext.init.kmeans_(fresh, data.network_inputs(images), seed=0)
    again = run_cli("fit", "--config", str(DIGITS), "--model.init", "kmeans",
                    "--trainer.max_steps", "0", tmp_path=tmp_path / "again")  # fmt: skip
    torch.testing.assert_close(_first_conv(again).weight, fresh.weight, atol=0, rtol=0)
    assert cli.trainer.state.finished


def test_kaiming_init_is_he_normal_on_any_model(tmp_path):
    resnet = str(DIGITS.parent / "resnet8_digits.yaml")
    args = ("fit", "--config", resnet, "--trainer.max_steps", "0")
    default = run_cli(*args, tmp_path=tmp_path / "a")
    kaiming = run_cli(*args, "--model.init", "kaiming", tmp_path=tmp_path / "b")
    convs = [m for m in kaiming.model.net.modules() if isinstance(m, torch.nn.Conv2d)]
    widest = max(convs, key=lambda m: m.weight.numel())
    fan_out = widest.weight.shape[0] * widest.weight[0, 0].numel()
    torch.testing.assert_close(widest.weight.std().item(), (2 / fan_out) ** 0.5, rtol=0.1, atol=0)
    assert not torch.equal(_first_conv(default).weight, _first_conv(kaiming).weight)


def test_the_network_summary_is_printed_at_the_start(tmp_path, capsys):
    run_cli("fit", "--config", str(DIGITS), *FAST, tmp_path=tmp_path)
    out = capsys.readouterr().out
    assert "Layer (type)" in out and "Receptive field of the output: 150×150" in out
