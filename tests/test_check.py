"""``python -m torchconv_ext check``: its logic end to end on a few tiny cases (on the CPU under
Triton's interpreter, or on a GPU), and that it fails when it must — a wrong kernel result, a
silent fallback to torch, a crashing or hanging worker, an exhausted time budget."""

from __future__ import annotations

import json
import os
import re
import time

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
from torchconv_ext.check import cli, large, report, workers
from torchconv_ext.check.cases import Case
from torchconv_ext.check.results import FAIL, NOT_RUN, PASS, row

pytestmark = pytest.mark.interpret

POOL = "resnet50.maxpool max_pool2d 3x3 s2 p1 | fp32 | nchw"
UPSAMPLE = "unet decoder nearest x2 256x28x28 | fp16 | channels_last"
SWEEP = "conv-config | grouped 3x3 g8 64->64 28x28 forward | fp32"


def run_check(tmp_path, *only: str, extra: tuple[str, ...] = ()) -> tuple[int, dict]:
    out = tmp_path / "check.json"
    argv = ["--workers", "0", "--out", str(out), *extra]
    for name in only:
        argv += ["--only", name]
    code = cli.main(argv)
    return code, json.loads(out.read_text())


@pytest.mark.parametrize("argv", [["--help"], ["check", "--help"], ["demo", "--help"]])
def test_help(argv, capsys):
    from torchconv_ext.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: python -m torchconv_ext" in out
    if argv[0] == "check":
        assert all(flag in out for flag in ("--out", "--quick", "--only", "--workers", "--budget"))


@pytest.mark.parametrize(
    ("option", "value"),
    [("--workers", "-2"), ("--workers", "two"), ("--budget", "-1"), ("--budget", "0"),
     ("--budget", "nan"), ("--case-timeout", "0"), ("--case-timeout", "inf")],
)  # fmt: skip
def test_bad_numbers_are_refused_naming_the_option(option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([option, value, "--list"])
    assert exit_info.value.code == 2
    assert f"argument {option}: expected" in capsys.readouterr().err


def test_a_report_path_that_is_a_folder_is_refused_before_any_case(tmp_path, capsys):
    assert cli.main(["--workers", "0", "--out", str(tmp_path), "--only", POOL]) == 2
    assert "cannot write the report to" in capsys.readouterr().err


def test_the_verdict_blames_the_budget_only_for_checks_it_cut():
    case = Case("fake", "late", "fp32", "nchw", "default")
    late = row(case, NOT_RUN, "the time budget was used up before this case started")
    lost = row(case, NOT_RUN, "no worker process could run it: no ready signal in 60 s")
    assert "raise --budget" in report.verdict(report.summary([late, lost]))
    assert "see why each check did not run" in report.verdict(report.summary([lost]))


def test_check_passes_end_to_end_and_reports(tmp_path, capsys):
    code, doc = run_check(tmp_path, POOL, UPSAMPLE, SWEEP)
    out = capsys.readouterr().out
    assert code == 0, out
    for key in ("device", "torch", "triton", "cuda", "git_sha", "date", "summary", "cases"):
        assert key in doc
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", doc["git_sha"])
    assert doc["torch"] == torch.__version__
    assert doc["summary"]["passed"] and doc["summary"]["fail"] == 0
    rows = doc["cases"]
    assert {r["case"].split(" | ")[1] for r in rows} == {
        "resnet50.maxpool max_pool2d 3x3 s2 p1",
        "unet decoder nearest x2 256x28x28",
        "grouped 3x3 g8 64->64 28x28 forward",
    }
    for r in rows:
        assert r["status"] == PASS
        assert r["parts"] and all(p["ok"] for p in r["parts"])
        compared = [p for p in r["parts"] if "ours_err" in p]
        assert compared and all(p["ours_err"] <= p["allowed"] for p in compared)
    default = [r for r in rows if r["kind"] == "default"]
    for r in default:  # forward and backward both ran our kernels
        assert r["launches"]["forward"]["launches"] > 0
        assert r["launches"]["backward"]["launches"] > 0
        assert {p["part"] for p in r["parts"]} >= {"output", "grad_input"}
    (swept,) = [r for r in rows if r["kind"] == "sweep"]
    assert swept["tuner"] in swept["tuners_found"] and "warps=" in swept["config"]
    assert "family" in out and "PASSED" in out
    if not torch.cuda.is_available():
        assert "INTERPRETER" in out and "NOT A GPU CHECK" in out


def test_a_fused_activation_is_checked_without_gradients_too(tmp_path):
    """Mish runs unfused while gradients are recorded: its epilogue is checked in a forward
    without gradients, which must run our kernels."""
    code, doc = run_check(tmp_path, "yolov4 3x3 s2 128->256 28x28 +bias+mish | fp32 | nchw")
    (r,) = doc["cases"]
    assert code == 0 and r["status"] == PASS
    assert "output without gradients" in {p["part"] for p in r["parts"]}
    assert r["launches"]["inference"]["launches"] > 0


def _corrupt_what_launchers_write(monkeypatch) -> list[int]:
    """Every public launcher of triton_kernels adds 1 to the floating tensors it wrote (found by
    comparing its arguments before and after). Returns the count of corrupted tensors per call
    of a launcher (the public names that return something are not launchers: layout rules,
    tape helpers)."""
    import triton_kernels

    corrupted: list[int] = []

    def corrupting(launcher):
        def call(*args, **kwargs):
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            before = [t.clone() for t in tensors]
            result = launcher(*args, **kwargs)
            if result is not None:  # not a launcher (launchers return nothing)
                return result
            written = [
                t
                for t, b in zip(tensors, before)
                if t.is_floating_point() and not torch.equal(t.nan_to_num(), b.nan_to_num())
            ]
            for t in written:
                t.add_(1)
            corrupted.append(len(written))
            return result

        return call

    for name in triton_kernels.__all__:
        launcher = getattr(triton_kernels, name)
        if callable(launcher):
            monkeypatch.setattr(triton_kernels, name, corrupting(launcher))
    return corrupted


def test_wrong_kernel_result_fails_naming_the_case(tmp_path, capsys, monkeypatch):
    corrupted = _corrupt_what_launchers_write(monkeypatch)
    code, doc = run_check(tmp_path, POOL)
    out = capsys.readouterr().out
    assert corrupted and all(corrupted), "the planted corruption never ran"
    assert code == 1
    (r,) = doc["cases"]
    assert r["status"] == FAIL and "output: error" in r["reason"]
    assert not doc["summary"]["passed"]
    assert f"FAIL: {r['id']}" in out and "FAILED" in out


def test_silent_fallback_to_torch_is_not_a_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(torchconv_ext.functional, "max_pool2d", F.max_pool2d)
    code, doc = run_check(tmp_path, POOL)
    assert code == 1
    (r,) = doc["cases"]
    assert r["status"] == FAIL and "ran our kernels" in r["reason"]
    # The values themselves match (they are torch's): only the launch count catches it.
    assert all(p["ok"] for p in r["parts"] if "ours_err" in p)


@pytest.mark.parametrize(
    "spec",
    [
        dict(op="max_pool2d", shape=(3, 4, 7, 7), kwargs=dict(kernel_size=3, stride=2, padding=1)),
        dict(op="conv", dims=2, n=3, c_in=16, size=5, c_out=16, kernel=3, stride=1, padding=1,
             dilation=1, groups=1, bias=False, transposed=False),
    ],
    ids=["pool", "conv"],
)  # fmt: skip
def test_large_case_logic_on_a_small_tensor(spec, triton_device):
    # The >2^31 cases' checks (the last sample against torch, the rest written and zero where
    # the output gradient is) on a tensor small enough for the interpreter.
    case = Case("conv", "small", "fp32", "nchw", "large", spec)
    r = large.check(case, 1, triton_device)
    assert r["status"] == PASS, r["reason"]
    names = {p["part"] for p in r["parts"]}
    assert {"output", "grad_input", "grad_input is zero before the last sample"} <= names


def test_exhausted_budget_is_not_run_and_fails(tmp_path):
    code, doc = run_check(tmp_path, POOL, extra=("--budget", "1e-9"))
    assert code == 1
    (r,) = doc["cases"]
    assert r["status"] == NOT_RUN and "budget" in r["reason"]
    # A pool of workers whose deadline has passed reports every case the same way.
    case = Case("fake", "late", "fp32", "nchw", "default")
    rows = workers.run_cases([case], workers=2, deadline=time.time(), case_timeout=10)
    assert [r["status"] for r in rows] == [NOT_RUN]


# A stand-in runner for the worker processes below (they import this module by name): a case
# named "hang" never returns; a sweep case kills its process on its second config.


def prepare() -> dict:
    return {}


def run_case(case: Case, sink) -> None:
    if case.name == "hang":
        time.sleep(600)
    if case.kind == "sweep":
        for k in range(case.spec.get("first_config", 0), 3):
            sink.progress(k, f"config {k}")
            if k == 1:
                os._exit(4)
            sink.row(row(case, PASS, id=f"{case.id} #{k}", config_index=k))
        return
    sink.row(row(case, PASS))


def test_worker_pool_survives_a_crash_and_a_hang():
    # The ops first, longest first (the hang last), then the sweep, whose crash needs a fresh
    # worker.
    cases = [
        Case("fake", "sweep", "fp32", "nchw", "sweep", cost=20.0),
        Case("fake", "a", "fp32", "nchw", "default"),
        Case("fake", "b", "fp32", "nchw", "default"),
        Case("fake", "hang", "fp32", "nchw", "default", cost=0.5),
    ]
    rows = workers.run_cases(
        cases, workers=2, deadline=time.time() + 240, case_timeout=4, runner=__name__
    )
    status = {r["id"]: (r["status"], r["reason"]) for r in rows}
    assert status["fake | a | fp32 | nchw"][0] == PASS
    assert status["fake | b | fp32 | nchw"][0] == PASS
    hang = status["fake | hang | fp32 | nchw"]
    assert hang[0] == FAIL and "timeout" in hang[1]
    sweep = "fake | sweep | fp32 | nchw"
    assert status[f"{sweep} #0"][0] == PASS
    died = status[f"{sweep} | config 2: config 1"]
    assert died[0] == FAIL and "exit code 4" in died[1]
    assert status[f"{sweep} #2"][0] == PASS  # resumed after the config that crashed
    assert len(rows) == 6


def test_every_op_starts_before_the_config_sweep():
    # A short budget leaves configs unchecked, never an op: the costly sweeps wait for the
    # cheapest op, and a worker staying on its kernels never jumps ahead to a sweep.
    cases = [
        Case("conv-config", "s", "fp32", "nchw", "sweep", cost=15.0),
        Case("pool", "p", "fp32", "nchw", "default", cost=2.0),
        Case("conv-autotuned", "t", "bf16", "nchw", "autotuned", cost=40.0),
        Case("conv", "c", "bf16", "nchw", "default", cost=5.0),
    ]
    pending = workers._order(cases)
    assert [c.name for c in pending] == ["t", "c", "p", "s"]
    taken = [workers._take(pending, "conv-config fp32 nchw") for _ in range(4)]
    assert [c.name for c in taken] == ["t", "c", "p", "s"]


def test_autotuned_case_checks_replayed_calls_bit_for_bit():
    """The autotuned cases run the call again as users do — the second call records the
    launcher tapes, the third replays them — and each must equal the first bit for bit."""
    from torchconv_ext.check import cases, runner

    entry = cases.GEMM_LAYERS[0]
    spec = cases._shape(entry, tiny=True)
    case = Case("conv-autotuned", entry["name"], "fp32", "nchw", "autotuned", spec, 1.0)
    result = runner.run_default(case)
    assert result["status"] == PASS, result
    replays = [p for p in result["parts"] if p["part"].startswith("call ")]
    assert [p["part"] for p in replays] == ["call 2 equals call 1", "call 3 equals call 1"]
    assert all(p["ok"] for p in replays)
    from triton_kernels import _tape

    assert _tape.tape_info()["replayed"] > 0  # the third call did replay


@pytest.mark.parametrize("tiny", [True, False], ids=["interpreter-shapes", "gpu-shapes"])
def test_sweep_reaches_every_tuner(monkeypatch, tiny):
    """A full check fails for a tuner that no sweep case reached (its configs would go
    unchecked): each sweep layer and direction runs exactly one tuner, and together they run
    every one — the GEMMs', the depthwise and the tiled convolutions' —, at the GPU's shapes and
    at the interpreter's. Which tuner runs is recorded at its
    launch, which launches nothing (so the GPU's shapes cost only their layout copies)."""
    from torchconv_ext.check import cases, sweep, tuners
    from torchconv_ext.check.problems import build
    from triton_kernels._tuning import Tuner

    ran: list[str] = []
    monkeypatch.setattr(Tuner, "launch", lambda self, *args: ran.append(self.name))
    reached = set()
    with torchconv_ext.use_backend("triton"):
        for entry in cases.SWEEP_LAYERS:
            for direction in entry.get("directions", cases.SWEEP_DIRECTIONS):
                problem = build(cases._shape(entry, tiny), "cpu", 0)
                grads = sweep.DIRECTIONS[direction][0]
                inputs = {k: v.requires_grad_(k in grads) for k, v in problem.inputs.items()}
                ran.clear()
                out = problem.ours(*inputs.values())
                if grads:
                    ran.clear()
                    torch.autograd.grad(out, [inputs[g] for g in grads], torch.ones_like(out))
                assert len(ran) == 1, (entry["name"], direction, ran)
                reached.add(ran[0])
    found = tuners.discover()
    assert reached == set(found)
    assert {"conv_depthwise_fwd", "local_conv_bwd_weight", "conv1x1"} <= set(found)


def test_a_locally_connected_layer_is_checked_against_torchs_sum(tmp_path):
    """The locally connected and tiled convolutions are checked like the others: forward and
    every gradient of our kernels against the same sum in torch's ops."""
    code, doc = run_check(
        tmp_path, "locally connected 3x3 32->32 24x24 +bias | fp32 | channels_last"
    )
    (r,) = doc["cases"]
    assert code == 0 and r["status"] == PASS, r
    assert {p["part"] for p in r["parts"]} >= {"output", "grad_input", "grad_weight", "grad_bias"}
    assert all(p["strides_ok"] for p in r["parts"] if "strides_ok" in p)
    for window in ("forward", "backward"):
        assert any("local_conv" in k for k in r["launches"][window]["kernels"]), r["launches"]


@pytest.mark.parametrize(
    "geometry",
    [
        dict(dims=2, tiles=None, stride=1, padding=0, dilation=1, groups=1),
        dict(dims=2, tiles=2, stride=2, padding=1, dilation=1, groups=2, padding_mode="reflect"),
        dict(dims=2, tiles=3, stride=3, padding=((1, 2), (0, 1)), dilation=1, groups=1,
             padding_mode="circular"),
        dict(dims=3, tiles=2, stride=1, padding=1, dilation=2, groups=1),
    ],
    ids=["locally-connected", "tiled-strided-grouped-reflect", "tiled-pairs-circular", "3d"],
)  # fmt: skip
def test_the_check_sums_each_position_with_its_own_kernel(geometry):
    """What the check compares a tiled convolution with — each output position's kernel
    gathered from its tile and summed over its window in torch's ops — is the tiled convolution
    (of the fallback's independent computation), forward and gradients, in float64."""
    from torchconv_ext.check.problems import build

    spec = dict(op="local", n=2, c_in=4, size=7, c_out=6, kernel=3, bias=True, **geometry)
    problem = build(spec, "cpu", 0)
    with torchconv_ext.use_backend("torch"):
        results = []
        for fn in (problem.ours, problem.theirs):
            leaves = [t.detach().requires_grad_() for t in problem.inputs.values()]
            out = fn(*leaves)
            grads = torch.autograd.grad(out, leaves, torch.ones_like(out).cumsum(-1))
            results.append((out, *grads))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_sweep_checks_a_bias_gradient_beside_the_weights():
    """The weight-gradient kernels sum a bias gradient beside the weight's: on a sweep layer with
    a bias, the grad_weight direction asks for and compares both; without one, the weight's."""
    from torchconv_ext.check import cases, sweep
    from torchconv_ext.check.problems import build

    plan = cases.plan(cuda=False, quick=False)
    for name, bias in (("3x3 64->64 28x28 +bias", True), ("1x1 32->32 28x28", False)):
        (case,) = [c for c in plan if c.name == f"{name} grad_weight" and c.dtype == "fp32"]
        grads, parts, window = sweep._direction(case, build(case.spec, "cpu", 0))
        assert (grads, window) == ((("weight", "bias") if bias else ("weight",)), "backward")
        assert parts == (("grad_weight", "grad_bias") if bias else ("grad_weight",))


def test_torchs_non_finite_results_must_be_ours_too():
    """Where torch's results hold NaN or infinities (cases with non-finite inputs), ours must
    hold the same ones there; the error is measured on the finite rest."""
    from torchconv_ext.check.compare import compare

    inf, nan = float("inf"), float("nan")
    ref = torch.tensor([1.0, inf, nan, -inf, 2.0], dtype=torch.float64)
    theirs = ref.float()
    assert compare("output", ref.float() + 1e-7, theirs, ref, "fp32")["ok"]
    for wrong in (
        [1.0, inf, 0.0, -inf, 2.0],
        [1.0, -inf, nan, -inf, 2.0],
        [1.0, inf, nan, -inf, nan],
    ):
        record = compare("output", torch.tensor(wrong), theirs, ref, "fp32")
        assert not record["ok"] and "output" in record["reason"], wrong
    record = compare("output", torch.tensor([1.5, inf, nan, -inf, 2.0]), theirs, ref, "fp32")
    assert not record["ok"] and "error" in record["reason"]


def test_cases_tune_into_a_temporary_cache_that_goes_with_the_run(tmp_path, monkeypatch):
    """The autotuned cases are timed while workers share the device: their configs go to a
    fresh cache directory (the workers inherit the variable) and never become the user's."""
    users = os.environ["TORCHCONV_EXT_CACHE_DIR"]
    seen = []

    def spy(cases, **kwargs):
        directory = os.environ["TORCHCONV_EXT_CACHE_DIR"]
        seen.append((directory, os.path.isdir(directory)))
        return [row(c, PASS, "") for c in cases]

    monkeypatch.setattr(cli, "run_cases", spy)
    assert cli.main(["--workers", "0", "--out", str(tmp_path / "c.json"), "--only", POOL]) == 0
    ((directory, existed),) = seen
    assert existed and directory != users
    assert not os.path.exists(directory)
    assert os.environ["TORCHCONV_EXT_CACHE_DIR"] == users
