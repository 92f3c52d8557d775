"""``python -m benchmarks --budget``: the plan's order, the time budget and partial writes, on a
CPU with a fake clock (the GPU path itself needs a GPU; nothing here asserts a speed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from benchmarks import budget as budget_mod
from benchmarks import cli, measure, runner, suites
from benchmarks.budget import (
    CONTINUE_OPTION,
    MAX_RESTARTS,
    Budget,
    BudgetExceeded,
    Continuation,
    hard_stop,
    plan,
    run_budget,
)
from benchmarks.options import RunOptions
from benchmarks.shapes import Layer
from benchmarks.timing import DevicePeak

CPU = RunOptions(device="cpu", directions=("fwd", "both"), providers=["torch", "compile", "ours"])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def no_peak(monkeypatch):
    peak = DevicePeak(1.0, "float32", 8, 10.0, 1024)
    monkeypatch.setattr(runner, "measure_peak", lambda device, quick=False: peak)


def fake_run_case(clock: FakeClock, seconds: float, calls: list, on_call=None):
    """A stand-in for measure.run_case: costs ``seconds`` on the fake clock, times nothing."""

    def run_case(case, dtype, options, *, providers=None, stop=lambda: False, sink=None):
        calls.append((case["suite"], case["name"], tuple(providers)))
        layer = Layer.from_dict(case)
        records = [measure.new_record(case, layer, d, 4) for d in options.directions]
        sink.extend(records)
        if on_call:
            on_call(len(calls), records)
        clock.now += seconds
        for rec in records:
            for p in providers:
                rec["providers"][p] = {"status": "ok", "ms": 1.0 + len(calls)}
        return records

    return run_case


def read(out, suite):
    [path] = out.glob(f"*/{suite}-fp32.json")
    return json.loads(path.read_text())


def test_plan_puts_every_suite_key_layers_first():
    tasks = plan(list(suites.SUITES), CPU)
    first = [t for t in tasks if t.step == 1]
    assert [t.suite.name for t in first] == [
        name for name, suite in suites.SUITES.items() for _ in suite.key_layers()
    ]
    assert len(first) > len(suites.SUITES)  # (some suites have two)
    assert tasks[: len(first)] == first
    for t in first:
        assert t.case["name"] in t.suite.key and t.providers == ["torch", "compile", "ours"]
    rest = [t for t in tasks if t.step == 2]
    assert all("compile" not in t.providers for t in rest)
    assert [t.suite.name for t in rest[: len(suites.SUITES)]] == list(suites.SUITES)  # in turn
    compiled = [t for t in tasks if t.step == 3]
    assert [t.case["name"] for t in compiled] == [t.case["name"] for t in rest]
    assert {t.case["name"] for t in tasks} == {
        layer.name for s in suites.SUITES.values() for layer in s.layers
    }


def test_budget_stops_cleanly_and_records_what_it_did(monkeypatch, tmp_path, no_peak):
    clock, calls = FakeClock(), []
    monkeypatch.setattr(suites, "run_case", fake_run_case(clock, 10.0, calls))
    budget = Budget(60, clock=clock, reserve=0)
    run_budget(["conv", "pool"], "fp32", CPU, tmp_path, budget, log=lambda s: None)
    assert len(calls) == 6  # 10 fake seconds each, 60 to spend
    assert calls[:3] == [
        ("conv", "resnet50.layer3.conv1", ("torch", "compile", "ours")),
        ("conv", "resnet50.layer3.conv2", ("torch", "compile", "ours")),
        ("pool", "resnet50.maxpool", ("torch", "compile", "ours")),
    ]
    assert calls[3][2] == ("torch", "ours")  # then the other layers, without compile
    conv = read(tmp_path, "conv")
    info = conv["budget"]
    assert info["seconds"] == 60 and info["elapsed_s"] == 60
    assert info["state"] == "stopped" and info["stopped_early"]
    assert info["tasks_done"] == 6 and info["tasks_left"] == len(info["not_run"]) > 0
    assert {r["name"] for r in conv["records"]} == {c[1] for c in calls if c[0] == "conv"}
    assert all(r["speedup"] for r in conv["records"])
    assert (tmp_path / conv["device"] / "conv-fp32.md").read_text().count("\n| `") == len(
        conv["records"]
    )


def test_results_are_written_after_every_task(monkeypatch, tmp_path, no_peak):
    clock, calls, seen = FakeClock(), [], []

    def look(n, records):
        if n == 3:  # what is on disk when the third task starts
            seen.append(read(tmp_path, "conv"))
        if n == 4:
            raise SystemExit("the machine went away")  # no chance to write anything more

    monkeypatch.setattr(suites, "run_case", fake_run_case(clock, 1.0, calls, look))
    with pytest.raises(SystemExit):
        run_budget(["conv", "pool"], "fp32", CPU, tmp_path, Budget(600, clock=clock), log=print)
    [before] = seen
    assert before["budget"]["state"] == "running" and before["budget"]["tasks_done"] == 2
    assert {r["name"] for r in before["records"]} == {
        "resnet50.layer3.conv2",
        "resnet50.layer3.conv1",
    }
    after = read(tmp_path, "pool")  # the third task's file survives the crash of the fourth
    assert [r["name"] for r in after["records"]] == ["resnet50.maxpool"] * 2
    assert after["budget"]["state"] == "running"


def test_hard_stop_keeps_the_timings_of_the_interrupted_case(monkeypatch, tmp_path, no_peak):
    clock, calls = FakeClock(), []

    def ring(n, records):
        if n == 2:
            records[0]["providers"]["torch"] = {"status": "ok", "ms": 2.0}
            raise BudgetExceeded("time budget of 600 s and 30 s grace spent")

    monkeypatch.setattr(suites, "run_case", fake_run_case(clock, 1.0, calls, ring))
    run_budget(["conv"], "fp32", CPU, tmp_path, Budget(600, clock=clock), log=lambda s: None)
    doc = read(tmp_path, "conv")
    assert len(calls) == 2 and doc["budget"]["state"] == "stopped"
    assert doc["budget"]["stop_reason"].startswith("time budget of 600 s")
    partial = [r for r in doc["records"] if r["name"] == "resnet50.layer3.conv2"]
    assert set(partial[0]["providers"]) == {"torch"}
    assert partial[0]["providers"]["torch"]["ms"] == 2.0 and partial[1]["providers"] == {}
    assert doc["budget"]["tasks_done"] == 1


def test_a_failing_case_is_recorded_and_the_run_goes_on(monkeypatch, tmp_path, no_peak):
    clock, calls = FakeClock(), []

    def boom(n, records):
        if n == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(suites, "run_case", fake_run_case(clock, 1.0, calls, boom))
    run_budget(["pool"], "fp32", CPU, tmp_path, Budget(600, clock=clock), log=lambda s: None)
    doc = read(tmp_path, "pool")
    layers = len(suites.SUITES["pool"].layers)
    # Step 2 times every layer, step 3 every one that did not fail.
    assert doc["budget"]["state"] == "finished" and len(calls) == layers + layers - 1
    broken = [r for r in doc["records"] if r["name"] == "resnet50.maxpool"]
    assert {r["status"] for r in broken} == {"error"} and "illegal memory" in broken[0]["error"]
    assert [c[1] for c in calls].count("resnet50.maxpool") == 1  # not timed again
    merged = [r for r in doc["records"] if r["name"] == "vgg16.pool2"]
    assert [set(r["providers"]) for r in merged] == [{"torch", "ours", "compile"}] * 2


def test_stop_skips_the_remaining_timings_of_a_case():
    case = suites.SUITES["pool"].cases(RunOptions(device="cpu", quick=True))[0]
    answers = iter([False, True, True, True])
    recs = measure.run_case(
        case,
        "fp32",
        RunOptions(device="cpu", quick=True, directions=("fwd", "both")),
        stop=lambda: next(answers),
    )
    assert recs[0]["providers"]["torch"]["status"] == "ok"
    skipped = [recs[0]["providers"]["ours"], *recs[1]["providers"].values()]
    assert {p["status"] for p in skipped} == {"skipped"}


def test_a_hard_stop_inside_a_timing_ends_the_case_instead_of_reading_as_an_error(monkeypatch):
    """The provider's error handler would record the interrupted timing as that provider's
    failure and go on timing the others; the stop passes through it."""

    def interrupted(*args, **kwargs):
        raise BudgetExceeded("time budget of 600 s and 30 s grace spent")

    monkeypatch.setattr(measure, "bench", interrupted)
    case = suites.SUITES["pool"].cases(RunOptions(device="cpu", quick=True))[0]
    with pytest.raises(BudgetExceeded):
        measure.run_case(case, "fp32", RunOptions(device="cpu", quick=True), stop=lambda: False)


def test_hard_stop_ends_a_timing_that_overruns():
    budget = Budget(0.2, reserve=0)
    t0 = time.monotonic()
    with pytest.raises(BudgetExceeded), hard_stop(budget, grace=0.1):
        while time.monotonic() - t0 < 5:
            sum(range(1000))
    assert time.monotonic() - t0 < 2


def test_budget_option_chooses_the_budget_defaults(monkeypatch):
    seen = {}

    def fake(names, dtype, options, out, clock, report=True, command=None, resume=None):
        seen.update(names=names, dtype=dtype, options=options, seconds=clock.seconds)
        seen.update(command=command, resume=resume)

    monkeypatch.setattr(budget_mod, "run_budget", fake)
    assert cli.main(["--budget", "300", "--device", "cpu", "pool"]) == 0
    assert seen["names"] == ["pool"] and seen["dtype"] == "fp32" and seen["seconds"] == 300
    assert seen["options"].directions == ("fwd", "both")
    assert seen["options"].compile_mode == "default" and not seen["options"].graph
    assert seen["command"] == ["--budget", "300", "--device", "cpu", "pool"]
    assert seen["resume"] is None
    with pytest.raises(SystemExit):
        cli.main(["--budget", "300", "--dtype", "all", "--device", "cpu"])


# --- device faults: simulated on the CPU -----------------------------------------------------
class Replaced(BaseException):
    """What the stand-in for ``os.execv`` raises: a real exec leaves nothing behind it to run."""


@pytest.fixture
def execs(monkeypatch):
    """``os.execv`` captured: the commands a run re-executed itself with."""
    seen = []

    def execv(path, argv):
        assert path == argv[0] == sys.executable
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # would outlive the exec
        seen.append(argv)
        raise Replaced

    monkeypatch.setattr(budget_mod.os, "execv", execv)
    return seen


@pytest.fixture
def measured(monkeypatch):
    """Counts of the environment and peak measurements (the peaks stand-ins, free)."""
    counts = {"environment": 0, "peak": 0}
    environment = runner.environment

    def count_environment(device):
        counts["environment"] += 1
        return environment(device)

    def count_peak(device, quick=False):
        counts["peak"] += 1
        return DevicePeak(1.0, "float32", 8, 10.0, 1024)

    monkeypatch.setattr(runner, "environment", count_environment)
    monkeypatch.setattr(runner, "measure_peak", count_peak)
    return counts


def fault_in(monkeypatch, calls: list, tasks) -> None:
    """The device stops working in the ``tasks``-th calls of run_case (from 1)."""
    monkeypatch.setattr(budget_mod, "device_works", lambda device: len(calls) not in tasks)


def run_with_restarts(argv: list[str], execs: list) -> None:
    """``python -m benchmarks argv``, then each continuation it re-executes, in this process."""
    while True:
        try:
            cli.main(argv)
            return
        except Replaced:
            command = execs[-1]
            assert command[:3] == [sys.executable, "-m", "benchmarks"]
            assert command.count(CONTINUE_OPTION) == 1
            argv = command[3:]


FAULT_ARGS = ["conv", "pool", "--budget", "600", "--device", "cpu", "--no-report",
              "--providers", "torch", "compile", "ours"]  # fmt: skip


def planned() -> list[tuple[str, str, tuple[str, ...]]]:
    """The tasks of a run of FAULT_ARGS, as fake_run_case records its calls."""
    options = RunOptions(
        device="cpu",
        directions=("fwd", "both"),
        compile_mode="default",
        providers=["torch", "compile", "ours"],
    )
    return [
        (t.suite.name, t.case["name"], tuple(t.providers)) for t in plan(["conv", "pool"], options)
    ]


def test_a_device_fault_goes_on_in_a_fresh_process(monkeypatch, tmp_path, execs, measured):
    clock, calls = FakeClock(), []
    monkeypatch.setattr(suites, "run_case", fake_run_case(clock, 1.0, calls))
    fault_in(monkeypatch, calls, {3})
    run_with_restarts([*FAULT_ARGS, "--out", str(tmp_path)], execs)
    [command] = execs
    assert command[3:-2] == [*FAULT_ARGS, "--out", str(tmp_path)]
    resume = Continuation.from_arg(command[-1])
    assert (resume.next, resume.label) == (3, "conv:alexnet.conv1 [torch ours]")
    assert [f["task"] for f in resume.faults] == ["pool:resnet50.maxpool [torch compile ours]"]
    assert calls == planned()  # each task once, the faulting one included, in the plan's order
    assert measured == {"environment": 1, "peak": 1}  # reloaded, not measured again
    conv, pool = read(tmp_path, "conv"), read(tmp_path, "pool")
    for doc in (conv, pool):
        info = doc["budget"]
        assert info["state"] == "finished" and info["tasks_done"] == len(calls)
        assert info["restarts"] == 1 and [f["index"] for f in info["faults"]] == [2]
    assert {r["name"] for r in conv["records"]} == {c[1] for c in calls if c[0] == "conv"}
    assert {r["name"] for r in pool["records"]} == {c[1] for c in calls if c[0] == "pool"}
    faulted = [r for r in pool["records"] if r["status"] != "ok"]
    assert {r["name"] for r in faulted} == {"resnet50.maxpool"} and len(faulted) == 2
    assert faulted[0]["error"] == (
        "device fault in this task (pool:resnet50.maxpool [torch compile ours]): the device "
        "stopped working"
    )
    assert all(r["status"] == "ok" for r in conv["records"])
    merged = [r for r in conv["records"] if r["name"] == "alexnet.conv1"]  # steps 2 and 3
    assert [set(r["providers"]) for r in merged] == [{"torch", "compile", "ours"}] * 2


def test_restarts_are_limited(monkeypatch, tmp_path, execs, measured):
    clock, calls = FakeClock(), []
    monkeypatch.setattr(suites, "run_case", fake_run_case(clock, 1.0, calls))
    fault_in(monkeypatch, calls, range(1, 100))  # a device that faults at every task
    run_with_restarts([*FAULT_ARGS, "--out", str(tmp_path)], execs)
    assert len(execs) == MAX_RESTARTS and calls == planned()[: MAX_RESTARTS + 1]
    for doc in (read(tmp_path, "conv"), read(tmp_path, "pool")):
        info = doc["budget"]
        assert info["state"] == "stopped" and info["restarts"] == MAX_RESTARTS
        assert [f["index"] for f in info["faults"]] == list(range(MAX_RESTARTS + 1))
        assert info["stop_reason"] == (
            f"device fault in {info['faults'][-1]['task']}; no restart left ({MAX_RESTARTS} used)"
        )
        assert info["tasks_done"] == MAX_RESTARTS + 1
        assert len(info["not_run"]) == len(planned()) - MAX_RESTARTS - 1
    assert measured == {"environment": 1, "peak": 1}


def test_a_healthy_run_never_restarts(monkeypatch, tmp_path, execs, measured):
    clock, calls, asked = FakeClock(), [], []
    monkeypatch.setattr(suites, "run_case", fake_run_case(clock, 1.0, calls))
    works = budget_mod.device_works
    monkeypatch.setattr(budget_mod, "device_works", lambda d: asked.append(d) or works(d))
    argv = ["pool", "--budget", "600", "--device", "cpu", "--no-report", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    assert execs == [] and asked == ["cpu"] * len(calls)  # asked after every task
    info = read(tmp_path, "pool")["budget"]
    assert info["state"] == "finished" and info["restarts"] == 0 and info["faults"] == []


def test_a_fault_without_a_command_to_restart_with_stops_the_run(monkeypatch, tmp_path, no_peak):
    clock, calls = FakeClock(), []
    error = "RuntimeError: CUDA error: an illegal memory access was encountered"

    def boom(n, records):
        if n == 2:
            raise RuntimeError(error.split(": ", 1)[1])

    monkeypatch.setattr(suites, "run_case", fake_run_case(clock, 1.0, calls, boom))
    fault_in(monkeypatch, calls, {2})
    run_budget(["conv"], "fp32", CPU, tmp_path, Budget(600, clock=clock), log=lambda s: None)
    doc = read(tmp_path, "conv")
    info = doc["budget"]
    assert len(calls) == 2 and info["state"] == "stopped" and info["tasks_done"] == 2
    [fault] = info["faults"]
    assert fault["task"] == "conv:resnet50.layer3.conv2 [torch compile ours]"
    assert fault["first_error"] == error
    assert info["stop_reason"] == f"device fault in {fault['task']}; this run cannot restart itself"
    faulted = [r for r in doc["records"] if r["name"] == "resnet50.layer3.conv2"]
    assert faulted[0]["error"].endswith(f"stopped working; first error: {error}")
    timed = {"status": "error", "error": "boom"}  # a provider's error, when the task ran on
    assert budget_mod.first_error([{"providers": {"torch": {"ms": 1.0}, "ours": timed}}]) == (
        "ours: boom"
    )


def test_a_hard_stop_while_saving_the_fault_keeps_everything(monkeypatch, tmp_path, execs, no_peak):
    """The budget's hard stop rings while the faulting task's files are written: the run does
    not restart but writes all it has."""
    clock, calls = FakeClock(), []
    monkeypatch.setattr(suites, "run_case", fake_run_case(clock, 1.0, calls))
    fault_in(monkeypatch, calls, {2})
    write_doc = runner.write_doc

    def interrupted(doc, *args, **kwargs):
        if doc["budget"]["state"] == "restarting":
            raise BudgetExceeded("time budget of 600 s and 30 s grace spent")
        return write_doc(doc, *args, **kwargs)

    monkeypatch.setattr(runner, "write_doc", interrupted)
    budget = Budget(600, clock=clock)
    run_budget(["conv"], "fp32", CPU, tmp_path, budget, log=lambda s: None, command=["conv"])
    doc = read(tmp_path, "conv")
    assert execs == [] and doc["budget"]["state"] == "stopped"
    assert {r["name"] for r in doc["records"]} == {c[1] for c in calls}
    assert [f["index"] for f in doc["budget"]["faults"]] == [1]


def test_a_continuation_of_another_plan_is_refused(tmp_path, no_peak):
    resume = Continuation(
        next=0,
        label="pool:nothing [torch]",
        started=time.time(),
        device="cpu-x",
        suites=[],
        faults=[],
    )
    argv = ["pool", "--budget", "60", "--device", "cpu", "--out", str(tmp_path)]
    with pytest.raises(ValueError, match="cannot continue the budget run: task 0 of this plan"):
        cli.main([*argv, CONTINUE_OPTION, resume.to_arg()])
    assert not list(tmp_path.rglob("*.json"))
    with pytest.raises(SystemExit):  # a budget run's option only
        cli.main([*argv[:1], *argv[3:], CONTINUE_OPTION, resume.to_arg()])
    assert CONTINUE_OPTION not in cli.parser().format_help()  # internal


def test_the_gpu_run_script_runs_its_three_commands_into_a_few_files(tmp_path):
    """``benchmarks/gpu_run.sh`` (python stubbed: it records its arguments and writes what each
    command writes: reports, results in a folder per device, the tuner's cache) hands each
    command its budget and its output paths under ``$OUT``, keeps each one's log and exit
    status, and leaves ``$OUT`` as a few plain files — its folders in one archive — since a
    remote machine may hand back only a few files (8, none deeper than two folders)."""
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir()
    stub.write_text(
        '#!/bin/sh\necho "python $*" >> "$CALLS"\n'
        "while [ $# -gt 0 ]; do\n"
        '  if [ "$1" = --out ]; then case "$2" in\n'
        '    */results) mkdir -p "$2/h200" && echo "$2" > "$2/h200/rows.json" ;;\n'
        '    *) echo {} > "$2" ;;\n'
        "  esac; fi; shift\n"
        "done\n"
        'mkdir -p "$TORCHCONV_EXT_CACHE_DIR/sm_90" && echo {} > "$TORCHCONV_EXT_CACHE_DIR/sm_90/k"\n'
        "echo ran\n"
    )
    stub.chmod(0o755)
    out, calls = tmp_path / "out", tmp_path / "calls.txt"
    env = {**os.environ, "OUT": str(out), "CALLS": str(calls),
           "PATH": f"{stub.parent}:{os.environ['PATH']}"}  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(["bash", "benchmarks/gpu_run.sh", "100", "200", "30"], cwd=root,
                         env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert calls.read_text().splitlines()[1:] == [
        f"python -m torchconv_ext check --budget 100 --out {out}/torchconv_ext_check.json",
        f"python -m benchmarks --budget 200 --out {out}/results",
        f"python -m benchmarks.box_tiles --time --budget 30 --out {out}/results",
    ]
    for log in ("check.log", "benchmarks.log", "box-tiles.log"):
        assert "exit status 0" in (out / log).read_text()
    assert (out / "environment.txt").read_text()
    assert sorted(p.name for p in out.iterdir()) == [
        "benchmarks.log", "box-tiles.log", "check.log", "environment.txt", "gpu-run.tar.gz",
        "torchconv_ext_check.json",
    ]  # fmt: skip
    with tarfile.open(out / "gpu-run.tar.gz") as archive:
        names = set(archive.getnames())
    assert {"results/h200/rows.json", "tuning-cache/sm_90/k"} <= names
