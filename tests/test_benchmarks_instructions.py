"""``python -m benchmarks instructions``: host instructions per call, counted by callgrind.

Valgrind itself is too slow for the test suite (the kernels would compile under it): these
tests check the child's warm-up and bookkeeping in a subprocess with the counting switched off,
and the parent's arithmetic on made-up dumps. No assertion is about speed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks import instructions

from .test_benchmarks_overhead import ROOT, compiled_env


def test_one_call_is_the_difference_of_two_counts():
    """Switching counting on and off costs the same each time: it cancels."""
    labels = [
        ["conv2d", "fwd", "ours", 10], ["conv2d", "fwd", "ours", 20],
        ["conv2d", "fwd", "aten", 10], ["conv2d", "fwd", "aten", 20],
    ]  # fmt: skip
    counts = [5_000 + 10 * 300, 5_000 + 20 * 300, 5_000 + 10 * 100, 5_000 + 20 * 100]
    (row,) = instructions.per_call(labels, counts)
    assert row == {"call": "conv2d", "direction": "fwd", "ours": 300, "aten": 100, "ratio": 3}
    with pytest.raises(RuntimeError, match="3 callgrind dumps for 4"):
        instructions.per_call(labels, counts[:3])


def test_dumps_are_read_in_their_order(tmp_path):
    (tmp_path / "callgrind.out").write_text("desc: Trigger: Program termination\ntotals: 0\n")
    for part, total in ((1, 7), (2, 8), (10, 9)):  # (10 after 2, not after 1)
        (tmp_path / f"callgrind.out.{part}").write_text(f"events: Ir\ntotals: {total}\n")
    assert instructions.parse_parts(tmp_path) == [7, 8, 9]


def test_without_valgrind_the_tool_says_so(monkeypatch, capsys):
    monkeypatch.setattr(instructions.shutil, "which", lambda tool: None)
    assert instructions.main(["--no-write"]) == 2
    assert "needs Valgrind" in capsys.readouterr().err


def test_the_child_warms_up_and_labels_every_counted_segment(tmp_path):
    """The child's work outside callgrind (its switches made no-ops): every direction of the
    call, ours and ATen's, counted over n and 2n calls, labelled in order."""
    labels = tmp_path / "labels.json"
    code = (
        "import sys; from pathlib import Path; from benchmarks import instructions as i; "
        "i._control = lambda *args: None; "
        f"i.child(['interpolate'], 2, Path({str(labels)!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=compiled_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(labels.read_text()) == [
        ["interpolate", direction, which, calls]
        for direction in ("fwd", "fwd+bwd")
        for which in ("ours", "aten", "floor", "replays")
        for calls in (2, 4)
    ]


def test_our_python_is_ours_less_the_floor_and_the_replays():
    labels = [
        ["conv2d", "fwd", which, calls]
        for which in ("ours", "aten", "floor", "replays")
        for calls in (10, 20)
    ]
    per_call = {"ours": 300, "aten": 100, "floor": 40, "replays": 60}
    counts = [5_000 + calls * per_call[which] for _, _, which, calls in labels]
    (row,) = instructions.per_call(labels, counts)
    assert row["python"] == 200 and row["ratio"] == 3
    doc = {"tag": "t", "method": "m", "rows": [row, {**row, "call": "c"}]}
    doc["rows"][1].pop("floor")
    doc["machine"] = dict.fromkeys(("cpu", "cores", "torch", "triton", "python", "date"), "x")
    doc["machine"].update(git_sha="0" * 40, git_dirty=False)
    text = instructions.markdown(doc)
    assert "| conv2d fwd | 300 | 100 | 3.0× | 40 | 60 | 200 |" in text
    assert "| c fwd | 300 | 100 | 3.0× | – | 60 | 200 |" in text
