"""``python -m benchmarks overhead`` and the stand-in GPU it runs on.

The tool runs in a subprocess: this test session imported the kernels under Triton's
interpreter, and the stand-in needs them compiled. No assertion is about speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import overhead, standin

ROOT = Path(__file__).resolve().parents[1]


def compiled_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.pop("TORCHCONV_EXT_POISON", None)
    return env


def test_min_of_medians_ignores_a_disturbed_round(monkeypatch):
    now = [0.0]
    cost = {"a": [5e-6], "b": [2e-6]}  # seconds per call, per variant
    monkeypatch.setattr(overhead, "CLOCK", lambda: now[0])

    def call(name):
        def fn():
            now[0] += cost[name][0]

        return fn

    rounds = []

    def disturbed():  # the first round of "a" runs while the machine is busy
        rounds.append(1)
        cost["a"][0] = 50e-6 if len(rounds) == 1 else 5e-6
        return overhead._nothing()

    got = overhead.min_of_medians(
        {"a": (disturbed, call("a")), "b": (overhead._nothing, call("b"))},
        rounds=3,
        blocks=3,
        block_ms=1.0,
    )
    assert got["a"]["us"] == pytest.approx(5.0) and got["a"]["round_medians_us"][0] > 40
    assert got["b"]["us"] == pytest.approx(2.0) and len(got["b"]["round_medians_us"]) == 3


def test_targets_are_the_projects():
    assert overhead.TARGETS_US[("conv2d", "fwd")] == 25
    assert overhead.TARGETS_US[("conv2d", "fwd+bwd")] == 75
    for op in ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "interpolate"):
        assert overhead.TARGETS_US[(op, "fwd")] == 15
    assert overhead.TARGETS_US[("conv2d+relu", "fwd+bwd")] == 75
    assert overhead.TARGETS_US[("conv2d+silu", "fwd+bwd")] == 75
    assert {c.name for c in overhead.CALLS} == {
        "conv2d",
        "conv2d+relu",
        "conv2d+silu",
        "compiled-conv2d",
        "conv_transpose2d",
        "max_pool2d",
        "avg_pool2d",
        "adaptive_avg_pool2d",
        "interpolate",
    }


def test_stand_in_refuses_interpreted_kernels():
    import triton_kernels

    assert triton_kernels.INTERPRET  # as this test session imported them
    with pytest.raises(RuntimeError, match="fresh process"):
        standin.require_compiled_kernels()
    assert standin.parse_target("sm_90") == standin.parse_target("sm_90a") == 90
    with pytest.raises(ValueError):
        standin.parse_target("hopper")


def test_overhead_measures_every_layer_up_to_the_launch(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks", "overhead", "--only", "conv2d", "max_pool2d"]
    cmd += ["--rounds", "1", "--blocks", "1", "--block-ms", "1", "--out", str(tmp_path)]
    cmd += ["--tag", "test"]
    out = subprocess.run(cmd, cwd=ROOT, env=compiled_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    [js] = tmp_path.glob("*/overhead-test.json")
    doc = json.loads(js.read_text())
    assert js.with_suffix(".md").exists()
    m = doc["machine"]
    assert m["cpu"] and m["cores"] and m["torch"] and m["triton"] and m["git_sha"]
    rows = {(r["call"], r["direction"]): r for r in doc["rows"]}
    assert set(rows) == {(c, d) for c in ("conv2d", "max_pool2d") for d in ("fwd", "fwd+bwd")}
    # one launch per forward kernel, the backward's kernels on top
    assert rows["conv2d", "fwd"]["launches_per_call"] == 1
    assert rows["conv2d", "fwd+bwd"]["launches_per_call"] == 3
    assert rows["max_pool2d", "fwd+bwd"]["launches_per_call"] == 2
    for r in rows.values():
        assert r["host_us"] > 0 and r["aten_us"] > 0 and 0 < r["function_us"] < r["host_us"]
        assert r["ratio_to_aten"] == pytest.approx(r["host_us"] / r["aten_us"])
        assert sum(r["breakdown_us"].values()) == pytest.approx(r["host_us"])
        assert set(r["breakdown_us"]) == set(overhead.LAYERS)
        # the forward's tape, and the backward's as one more
        assert r["tapes_per_call"] == (1 if r["direction"] == "fwd" else 2)
        assert 0 < r["replays_us"] < r["host_us"]
        assert r["registered_ops"] and r["launchers_called"]  # every layer was separable
        assert not r["notes"]
    assert (
        rows["conv2d", "fwd"]["target_us"] == 25
        and rows["max_pool2d", "fwd+bwd"]["target_us"] is None
    )
    assert "| conv2d fwd |" in out.stdout and "≤ 25" in out.stdout


def test_a_compiled_call_reaches_the_kernels_through_replayed_tapes(tmp_path):
    """Inside ``torch.compile`` the graph calls the registered ops, whose kernels replay the
    implementations' tapes: total, replays and ATen's compiled call, no breakdown."""
    cmd = [sys.executable, "-m", "benchmarks", "overhead", "--only", "compiled-conv2d"]
    cmd += ["--rounds", "1", "--blocks", "1", "--block-ms", "1", "--out", str(tmp_path)]
    cmd += ["--tag", "test"]
    out = subprocess.run(cmd, cwd=ROOT, env=compiled_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    [js] = tmp_path.glob("*/overhead-test.json")
    rows = {r["direction"]: r for r in json.loads(js.read_text())["rows"]}
    assert set(rows) == {"fwd", "fwd+bwd"}
    # the forward's kernel; the backward graph's two gradient ops, each its own tape
    assert rows["fwd"]["launches_per_call"] == rows["fwd"]["tapes_per_call"] == 1
    assert rows["fwd+bwd"]["launches_per_call"] == rows["fwd+bwd"]["tapes_per_call"] == 3
    for r in rows.values():
        assert r["call"] == "compiled-conv2d" and r["host_us"] > 0 and r["aten_us"] > 0
        assert 0 < r["replays_us"] < r["host_us"]
        assert set(r["breakdown_us"].values()) == {None}
        assert [n.split(":")[0] for n in r["notes"]] == ["compiled"]  # no failure note
