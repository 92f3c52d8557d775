"""k-means versus Kaiming initialisation on the handwritten digits: steps to a validation accuracy.

A small CNN of torchconv_ext layers (conv 3×3 → ReLU → max pool 2, twice, then a linear layer)
is trained with plain SGD from four initialisations of its two convolutions:

* ``kaiming`` — ``torch.nn.init.kaiming_normal_`` (fan-in, ReLU gain), zero bias;
* ``kmeans`` — :func:`torchconv_ext.init.kmeans_` layer by layer (the first convolution on the
  training images, the second on the first block's outputs), ZCA-whitened patches;
* ``kmeans-raw`` — the same without whitening;
* ``kaiming-scaled`` — Kaiming weights, then each output channel scaled and shifted to mean 0,
  variance 1 on the same data, as ``kmeans_`` scales its filters: it separates what the
  centroids bring from what the data-dependent scale brings.

The linear layer keeps torch's default initialisation, drawn from the same seed for every
initialisation; the data order is fixed per seed and shared by the four. After every step the
whole validation split is evaluated; the result is the first step reaching each target accuracy.
Run from the repository root::

    python -m benchmarks.kmeans_init            # writes benchmarks/results/<cpu>/kmeans-init-digits.{json,md}
    python -m benchmarks.kmeans_init --seeds 2 --steps 100 --out /tmp/x   # a quick look
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

import torchconv_ext
from torchconv_ext import nn as tnn

from .results import RESULTS_DIR, environment

INITS: tuple[str, ...] = ("kaiming", "kaiming-scaled", "kmeans", "kmeans-raw")
TARGETS: tuple[float, ...] = (0.90, 0.95, 0.97)
LOSS_STEPS: tuple[int, ...] = (10, 25, 50, 100)


def digits(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's digits in [0, 1], (N, 1, 8, 8), split 80/20 stratified (fixed seed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(data.target)
    train, val = train_test_split(
        torch.arange(len(y)).numpy(), test_size=0.2, stratify=y.numpy(), random_state=seed
    )
    return {"train": (x[train], y[train]), "val": (x[val], y[val])}


def network() -> nn.Sequential:
    return nn.Sequential(
        tnn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        tnn.MaxPool2d(2),
        tnn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        tnn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 10),
    )


def initialise(net: nn.Sequential, init: str, images: torch.Tensor, seed: int) -> None:
    """Set the convolutions' weights by ``init`` (the linear layer keeps its default)."""
    convs = [i for i, m in enumerate(net) if isinstance(m, nn.Conv2d)]
    for i in convs:
        conv = net[i]
        with torch.no_grad():
            features = net[:i](images)  # the layers below, already initialised
        if init.startswith("kaiming"):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            if init == "kaiming-scaled":
                standardise(conv, features)
        else:
            torchconv_ext.init.kmeans_(conv, features, whiten=init == "kmeans", seed=seed)


@torch.no_grad()
def standardise(conv: nn.Conv2d, features: torch.Tensor) -> None:
    """Scale and shift each output channel to mean 0, variance 1 on ``features``."""
    out = conv(features).double()
    mean, std = out.mean((0, 2, 3)), out.std((0, 2, 3), correction=0)
    conv.weight.div_(std.view(-1, 1, 1, 1).to(conv.weight.dtype))
    conv.bias.copy_(((conv.bias.double() - mean) / std).to(conv.bias.dtype))


def train(init: str, seed: int, data: dict, steps: int, batch: int, lr: float) -> dict[str, object]:
    """One run: validation accuracy and training loss after every step."""
    torch.manual_seed(seed)
    net = network()  # default init drawn from the seed: the same linear layer for every init
    train_x, train_y = data["train"]
    val_x, val_y = data["val"]
    generator = torch.Generator().manual_seed(seed)
    kaiming_state = torch.get_rng_state()
    torch.manual_seed(seed + 1000)  # kaiming's draws, after the shared default init
    initialise(net, init, train_x, seed)
    torch.set_rng_state(kaiming_state)
    optimiser = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    order = torch.cat(
        [
            torch.randperm(len(train_y), generator=generator)
            for _ in range(steps * batch // len(train_y) + 1)
        ]
    )
    accuracy, losses = [], []
    for step in range(steps):
        index = order[step * batch : (step + 1) * batch]
        loss = nn.functional.cross_entropy(net(train_x[index]), train_y[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        with torch.no_grad():
            accuracy.append((net(val_x).argmax(1) == val_y).float().mean().item())
    reached = {
        f"{t:.2f}": next((s + 1 for s, a in enumerate(accuracy) if a >= t), None) for t in TARGETS
    }
    return {
        "init": init,
        "seed": seed,
        "steps_to": reached,
        "loss_after": {str(n): losses[n - 1] for n in LOSS_STEPS if n <= steps},
        "final_val_accuracy": accuracy[-1],
        "best_val_accuracy": max(accuracy),
    }


def summarise(runs: Sequence[dict]) -> dict[str, dict]:
    """Per init: the median steps to each target (None when a run never got there) and how
    many runs reached it; the median loss after the listed steps."""
    out = {}
    for init in INITS:
        mine = [r for r in runs if r["init"] == init]
        if not mine:
            continue
        steps = {}
        for t in TARGETS:
            key = f"{t:.2f}"
            got = [r["steps_to"][key] for r in mine]
            reached = [s for s in got if s is not None]
            steps[key] = {
                "median": statistics.median(reached) if len(reached) == len(got) else None,
                "reached": f"{len(reached)}/{len(got)}",
            }
        losses = {
            n: statistics.median(r["loss_after"][n] for r in mine) for n in mine[0]["loss_after"]
        }
        out[init] = {"steps_to": steps, "median_loss_after": losses}
    return out


def markdown(doc: dict) -> str:
    env = doc["environment"]
    cfg = doc["config"]
    lines = [
        "# k-means vs Kaiming initialisation · digits · " + env["device_name"],
        "",
        f"- machine: {env['device_name']}, {env['device_info']['cores']} cores "
        f"({cfg['threads']} torch thread); torch {env['torch']}, python {env['python']}",
        f"- commit `{env['git_sha']}`"
        + (" + local changes" if env.get("git_dirty") else "")
        + f", {env['date']}",
        f"- command: `{doc['command']}` ({doc['seconds']:.0f} s)",
        f"- network: {cfg['network']}",
        f"- training: SGD lr {cfg['lr']}, momentum 0.9, batch {cfg['batch']}, {cfg['steps']} "
        f"steps, seeds {cfg['seeds']}; {cfg['train']} training / {cfg['val']} validation images; "
        "validation accuracy after every step",
        "",
        "Median steps to reach a validation accuracy (runs that reached it / runs); "
        "– where a run never reached it within the steps:",
        "",
        "| init | "
        + " | ".join(f"≥ {float(t):.0%}" for t in doc["summary"]["kaiming"]["steps_to"])
        + " | "
        + " | ".join(f"loss @ {n}" for n in doc["summary"]["kaiming"]["median_loss_after"])
        + " |",
        "|---|" + "---|" * (len(TARGETS) + len(doc["summary"]["kaiming"]["median_loss_after"])),
    ]
    for init, s in doc["summary"].items():
        cells = [
            f"{v['median'] if v['median'] is not None else '–'} ({v['reached']})"
            for v in s["steps_to"].values()
        ]
        cells += [f"{v:.3f}" for v in s["median_loss_after"].values()]
        lines.append(f"| `{init}` | " + " | ".join(cells) + " |")
    lines += ["", "Per run (steps to each target; final validation accuracy):", ""]
    lines += [
        "| init | seed | " + " | ".join(f"≥ {float(t):.0%}" for t in TARGETS) + " | final acc |"
    ]
    lines += ["|---|---|" + "---|" * (len(TARGETS) + 1)]
    for r in doc["runs"]:
        cells = [str(v) if v is not None else "–" for v in r["steps_to"].values()]
        lines.append(
            f"| `{r['init']}` | {r['seed']} | "
            + " | ".join(cells)
            + f" | {r['final_val_accuracy']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.kmeans_init", description=__doc__.split("\n")[0]
    )
    p.add_argument("--seeds", type=int, default=5, help="runs per initialisation (seeds 0..n-1)")
    p.add_argument("--steps", type=int, default=300, help="training steps per run")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results root")
    args = p.parse_args(argv)

    torch.set_num_threads(1)  # tiny tensors: one thread is fastest and repeatable
    data = digits()
    start = time.perf_counter()
    runs = []
    for seed in range(args.seeds):
        for init in INITS:
            runs.append(train(init, seed, data, args.steps, args.batch, args.lr))
            print(json.dumps(runs[-1]), flush=True)
    env = environment("cpu")
    doc = {
        "suite": "kmeans-init-digits",
        "command": shlex.join(
            ["python", "-m", "benchmarks.kmeans_init", *sys.argv[1:]]
            if argv is None
            else ["python", "-m", "benchmarks.kmeans_init", *argv]
        ),
        "seconds": time.perf_counter() - start,
        "environment": env,
        "config": {
            "network": "Conv2d(1,16,3,p=1)-ReLU-MaxPool2d(2)-Conv2d(16,32,3,p=1)-ReLU-MaxPool2d(2)-Flatten-Linear(128,10), torchconv_ext layers",
            "lr": args.lr,
            "batch": args.batch,
            "steps": args.steps,
            "seeds": list(range(args.seeds)),
            "threads": torch.get_num_threads(),
            "train": len(data["train"][1]),
            "val": len(data["val"][1]),
            "targets": list(TARGETS),
        },
        "summary": summarise(runs),
        "runs": runs,
    }
    folder = args.out / env["device"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kmeans-init-digits.json").write_text(json.dumps(doc, indent=1) + "\n")
    (folder / "kmeans-init-digits.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
