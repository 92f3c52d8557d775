"""``python -m benchmarks cold-start`` and the stand-in's compiling tuner it runs on.

The tool runs in a subprocess (it needs compiled kernels; this test session interprets them). No
assertion is about speed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks import cold_start, standin
from tests.test_benchmarks_overhead import ROOT, compiled_env
from tests.test_tuning import CONFIGS, FakeGPU, _launch, _tuner
from triton_kernels._tuning import Resources


def test_compiling_stand_in_compiles_and_prunes_every_candidate_and_times_none(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCHCONV_EXT_CACHE_DIR", str(tmp_path))
    a, b, c = CONFIGS
    gpu = FakeGPU(monkeypatch, times=[3.0, 2.0, 1.0], resources={a: Resources(255, 64, 0)})
    tuner = _tuner()
    with standin.stand_in_gpu("sm_90", mode="launch", tuning="compile"):
        _launch(tuner)
    assert gpu.compiled == CONFIGS and gpu.timed == []
    assert tuner.kernel.launches[-1][1] == b["BLOCK_M"]  # the first survivor of pruning


def test_stand_in_names_its_tuning_modes():
    with pytest.raises(ValueError, match="tuning must be 'untuned' or 'compile'"):
        standin.stand_in_gpu(tuning="timed").__enter__()


def test_layers_are_suite_entries_or_conv_name_fragments():
    got = cold_start.selected_layers(["resnet50.layer4", "pool:resnet50.maxpool"])
    assert got == [
        "conv:resnet50.layer4.conv2",
        "conv:resnet50.layer4.conv3",
        "pool:resnet50.maxpool",
    ]
    with pytest.raises(SystemExit, match="no layer matches 'lenet'"):
        cold_start.selected_layers(["lenet"])


def test_markdown_gives_each_layer_per_thread_count_and_the_speed_up():
    def run(threads, seconds):
        rows = [{"layer": "conv:a", "seconds": seconds, "launches": 3}]
        return {"threads": threads, "rows": rows, "seconds": seconds}

    machine = {"cpu": "CPU", "cores": 2, "usable_cores": 2, "torch": "t", "triton": "3.9"}
    machine.update(git_sha="abc", git_dirty=False, date="today")
    doc = {"argv": ["conv:a"], "dtype": "bf16", "layout": "cl", "target": "sm_90"}
    doc.update(machine=machine, runs=[run(1, 12.0), run(4, 4.0)])
    text = cold_start.markdown(doc)
    assert "| conv:a | 3 | 12.0 | 4.0 |" in text and "4 threads 3.00×" in text


def test_cold_start_runs_each_layer_in_a_fresh_process_and_writes_results(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "cold-start", "pool:resnet50.maxpool",
         "--threads", "2", "--out", str(tmp_path), "--tag", "test"],
        capture_output=True, text=True, env=compiled_env(), cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (json_path,) = tmp_path.glob("*/cold-start-test.json")
    doc = json.loads(json_path.read_text())
    (run,) = doc["runs"]
    assert run["threads"] == 2 and run["rows"][0]["layer"] == "pool:resnet50.maxpool"
    assert run["rows"][0]["launches"] >= 1 and run["seconds"] > 0
    assert "| pool:resnet50.maxpool |" in json_path.with_suffix(".md").read_text()
