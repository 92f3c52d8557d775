"""Data-parallel training: ``--trainer.strategy ddp --trainer.devices 2`` on the CPU (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from recipes_testutils import DIGITS, REPO, without_pictures

from recipes.run_lock import LOCK_NAME


def test_two_process_ddp_keeps_replicas_identical(tmp_path):
    """``python -m recipes fit`` as a user types it; Lightning starts the second process by
    running the same command line again. The first process alone locks the run folder (and
    chooses it): the second writes in the same one."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "recipes",
        "fit",
        "--config",
        str(DIGITS),
        "--model.width",
        "0.0625",
        "--trainer.accelerator",
        "cpu",
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "0",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
        *without_pictures(("--config", str(DIGITS))),
        "--trainer.callbacks+=recipes_testutils.DumpWeights",
        f"--trainer.callbacks.path={tmp_path}",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["lock_pid"] == ranks[1]["lock_pid"] == ranks[0]["pid"] != ranks[1]["pid"]
    runs = tmp_path / "runs" / "vgg11_digits"
    assert [p.name for p in runs.iterdir()] == ["version_0"]
    assert not (runs / "version_0" / LOCK_NAME).exists()
    # each process trained on its own share of the data ...
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == 2
    assert not set(ranks[0]["batches"]) & set(ranks[1]["batches"])
    # ... from the same start, and the averaged gradients keep the replicas bit-identical
    start0, start1 = ranks[0]["start"], ranks[1]["start"]
    end0, end1 = ranks[0]["end"], ranks[1]["end"]
    assert start0.keys() == end0.keys() == end1.keys()
    assert all(torch.equal(start0[k], start1[k]) for k in start0)
    assert all(torch.equal(end0[k], end1[k]) for k in end0)
    assert not all(torch.equal(start0[k], end0[k]) for k in start0)  # and they did train
