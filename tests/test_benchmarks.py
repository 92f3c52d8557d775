"""The benchmark harness on CPU: ``--quick`` writes complete result files, a wrong kernel is never
timed, FLOP counts agree with torch's counter, reports and the profiler entry point work.

Nothing here asserts a speed: CPU timings of a smoke run mean nothing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import subprocess
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import torchconv_ext
import torchconv_ext.functional
from benchmarks import (
    bench_conv,
    bench_pool,
    bench_upsample,
    check,
    cli,
    measure,
    profile,
    report,
    results,
    runner,
    shapes,
    suites,
    timing,
    workload,
)
from benchmarks.cli import main as cli_main
from benchmarks.options import RunOptions

ALL_LAYERS = [layer for layers in shapes.SUITE_LAYERS.values() for layer in layers]
CONV_LAYERS = [layer for layer in ALL_LAYERS if isinstance(layer, shapes.ConvLayer)]
QUICK = RunOptions(device="cpu", quick=True)


def quick_case(suite: str, index: int = 0) -> dict:
    return suites.SUITES[suite].cases(QUICK)[index]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``python -m benchmarks --quick`` run on CPU (in-process), shared by the tests."""
    out = tmp_path_factory.mktemp("results")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert cli_main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    written = [
        results.paths(out, js.parent.parent.name, *js.stem.split("-", 1), quick=True)
        for js in sorted(out.glob("*/quick/*.json"))
    ]
    return out, written, stdout.getvalue().splitlines()


def _available(name: str) -> bool:
    return suites.SUITES[name].unavailable() is None


# --- the CLI smoke run -----------------------------------------------------------------------
def test_quick_run_writes_every_available_suite(quick_run):
    out, written, lines = quick_run
    expected = {name for name in suites.SUITES if _available(name)}
    assert {"conv", "depthwise", "conv3d"} <= expected
    assert {json.loads(p["json"].read_text())["suite"] for p in written} == expected
    for name in set(suites.SUITES) - expected:  # reported, not fatal
        assert any(line.startswith(f"[{name}] not available:") for line in lines)


def test_quick_results_have_required_fields(quick_run):
    _, written, _ = quick_run
    for p in written:
        assert p["json"].parent.name == "quick"  # never overwrites committed results
        doc = json.loads(p["json"].read_text())
        for key in results.REQUIRED_KEYS:
            assert key in doc, key
        assert doc["device"].startswith("cpu-") and doc["device_name"]
        assert doc["torch"] == torch.__version__ and doc["cuda"] is None
        assert doc["git_sha"] == "unknown" or len(doc["git_sha"]) == 40
        assert doc["peak"]["matmul_tflops"] > 0 and doc["peak"]["copy_gbps"] > 0
        assert doc["records"], p["json"]
        conv = doc["suite"] in (
            "conv", "depthwise", "grouped", "conv3d", "transposed", "fused", "local"
        )  # fmt: skip
        for rec in doc["records"]:
            assert rec["direction"] in ("fwd", "bwd", "both") or (
                rec["direction"] == "infer" and doc["suite"] == "fused"
            )
            assert rec["status"] == "ok", rec
            assert rec["check"]["status"] == "ok"
            assert set(rec["providers"]) == {"torch", "ours"}
            assert rec["bytes"] > 0
            assert (rec["flops"] or 0) > 0 if conv else rec["flops"] is None
            for prov in rec["providers"].values():
                assert prov["status"] == "ok"
                assert {"ms", "p20_ms", "p80_ms"} <= set(prov)
                assert prov["tflops" if conv else "gbps"] > 0
            assert rec["speedup"] is not None
        infer = {"infer"} if doc["suite"] == "fused" else set()
        assert set(doc["summary"]["geomean_speedup"]) == {"fwd", "bwd", "both", "all"} | infer


def test_quick_csv_has_one_row_per_timing(quick_run):
    _, written, _ = quick_run
    for p in written:
        doc = json.loads(p["json"].read_text())
        with p["csv"].open() as f:
            rows = list(csv.DictReader(f))
        assert tuple(rows[0]) == results.CSV_FIELDS
        assert len(rows) == sum(len(r["providers"]) for r in doc["records"])
        for row in rows:
            for key in ("device_name", "torch", "triton", "git_sha", "date"):
                assert row[key] == str(doc[key])


def test_quick_run_writes_report(quick_run):
    _, written, _ = quick_run
    for p in written:
        text = p["md"].read_text()
        assert "| layer | dir | shape |" in text and "torch/ours" in text
        doc = json.loads(p["json"].read_text())
        assert text.count("\n| `") == len(doc["records"])
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            continue
        assert p["speedup_png"].stat().st_size > 0 and p["roofline_png"].stat().st_size > 0


def test_cpu_and_quick_runs_say_they_are_sanity_checks(quick_run):
    _, written, lines = quick_run
    assert any(line.startswith("SANITY CHECK, NOT A MEASUREMENT:") for line in lines)
    assert not [line for line in lines if "speedup" in line]  # torch against itself
    assert any(" torch/ours " in line for line in lines)
    for p in written:
        text = p["md"].read_text()
        assert "smoke test" in text and "| torch/ours |" in text
        assert not re.search(r"speedup(?!\.png)", text)  # only in the chart's file name


def test_cli_lists_and_rejects_unknown_suites(capsys):
    assert cli_main(["conv", "--list", "--quick", "--device", "cpu"]) == 0
    assert "alexnet.conv1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["no-such-suite", "--device", "cpu"])


@pytest.mark.parametrize(
    ("args", "says"),
    [(["--device", "gpu9"], "--device: expected cuda"), (["--batch", "0"], "argument --batch"),
     (["--batch", "-3"], "argument --batch"), (["--out", "{file}/results"], "cannot be written")],
)  # fmt: skip
def test_cli_refuses_bad_options_before_running(args, says, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    args = [a.format(file=tmp_path / "file") for a in args]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["pool", "--quick", "--device", "cpu", *args])
    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err


# --- correctness gate ------------------------------------------------------------------------
def test_compare_flags_wrong_and_nan_values():
    ref = torch.randn(64, dtype=torch.float64)
    theirs = ref.float()
    assert check.compare([theirs.clone()], [theirs], [ref], torch.float32).ok
    wrong = theirs.clone()
    wrong[7] += 0.01
    res = check.compare([wrong], [theirs], [ref], torch.float32, ["output"])
    assert not res.ok and "output" in res.message and "1 of 64" in res.message
    nan = theirs.clone()
    nan[3] = float("nan")
    assert not check.compare([nan], [theirs], [ref], torch.float32).ok
    assert not check.compare([theirs[:10]], [theirs], [ref], torch.float32).ok


def test_compare_allows_low_precision_rounding():
    ref = torch.randn(256, dtype=torch.float64) * 10
    for dtype in (torch.float16, torch.bfloat16):
        theirs = ref.to(dtype)
        ours = (ref * (1 + torch.finfo(dtype).eps)).to(dtype)  # one rounding step away
        assert check.compare([ours], [theirs], [ref], dtype).ok


@pytest.mark.parametrize("suite", ["conv", "pool", "upsample"])
def test_mismatch_marks_case_failed_and_untimed(monkeypatch, suite):
    real = workload.functions

    def off_by_a_bit(layer):
        ours, theirs = real(layer)
        return (lambda *args: ours(*args) * 1.01), theirs

    def no_timing(*args, **kwargs):
        raise AssertionError("a mismatching case must not be timed")

    monkeypatch.setattr(workload, "functions", off_by_a_bit)
    monkeypatch.setattr(measure, "bench", no_timing)
    recs = suites.SUITES[suite].run_case(quick_case(suite), "fp32", QUICK)
    assert [r["direction"] for r in recs] == ["fwd", "bwd", "both"]
    for rec in recs:
        assert rec["status"] == "mismatch" and rec["providers"] == {}
        assert rec["check"]["message"].startswith("ours: ")


def test_backward_only_mismatch_still_times_forward(monkeypatch):
    real = workload.functions

    class ScaleGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y):
            return y.clone()

        @staticmethod
        def backward(ctx, g):
            return g * 2

    def wrong_grad(layer):
        ours, theirs = real(layer)
        return (lambda x, w, b: ScaleGrad.apply(ours(x, w, b))), theirs

    monkeypatch.setattr(workload, "functions", wrong_grad)
    recs = {r["direction"]: r for r in measure.run_case(quick_case("depthwise"), "fp32", QUICK)}
    assert recs["fwd"]["status"] == "ok" and set(recs["fwd"]["providers"]) == {"torch", "ours"}
    assert recs["bwd"]["status"] == recs["both"]["status"] == "mismatch"
    assert "grad_" in recs["bwd"]["check"]["message"]


def test_the_fused_suite_also_times_and_checks_its_forward_without_gradients(monkeypatch):
    """``infer`` runs our forward under ``no_grad`` (where a fused activation needing its
    pre-activation stays fused), checked against torch on its own: a result wrong only there
    is caught, and only that direction is left untimed."""
    fused = suites.SUITES["fused"]
    case = next(fused.case(x, QUICK) for x in fused.layers if "mish" in x.name)
    options = RunOptions(device="cpu", quick=True, directions=("fwd",))
    recs = {r["direction"]: r for r in fused.run_case(case, "fp32", options)}
    assert list(recs) == ["infer", "fwd"] and recs["infer"]["status"] == "ok"
    called = workload.make_call(
        lambda x: x * 2, (torch.ones(2, requires_grad=True),), None, "infer"
    )
    assert not called().requires_grad  # (no graph recorded)

    real = workload.functions

    def wrong_without_gradients(layer):
        ours, theirs = real(layer)
        return (lambda *a: ours(*a) + (0 if torch.is_grad_enabled() else 1)), theirs

    monkeypatch.setattr(workload, "functions", wrong_without_gradients)
    recs = {r["direction"]: r for r in fused.run_case(case, "fp32", options)}
    assert recs["infer"]["status"] == "mismatch" and recs["fwd"]["status"] == "ok"


def test_weights_and_biases_are_passed_as_parameters_as_a_layer_passes_them():
    layer = shapes.scaled(next(x for x in CONV_LAYERS if x.bias and x.dims == 2), 1, 1e6)
    wl = workload.make_workload(layer, torch.float32, "cpu", random=False)
    for channels_last in (False, True):
        (x, w, b), _ = workload.prepared(wl, channels_last)
        assert not isinstance(x, torch.nn.Parameter)
        assert isinstance(w, torch.nn.Parameter) and w.requires_grad
        assert isinstance(b, torch.nn.Parameter) and b.requires_grad
        assert w.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.interpret
@pytest.mark.parametrize(
    ("direction", "packs", "hits"),
    # what the weight cache counts from the last optimizer step (or the first call) on: a
    # training step repacks each NCHW weight once, and its backward reads that copy
    [("infer", 1, 2), ("bwd", 1, 3), ("fwd", 1, 0), ("both", 1, 1)],
)
def test_our_timed_calls_repack_weights_as_training_and_inference_do(direction, packs, hits):
    """Our ``fwd`` and ``both`` calls begin where an optimizer step leaves torchconv_ext (its
    repacked weights forgotten), so each pays one repack as a training step does; ``infer``
    and ``bwd`` reuse the copy of a parameter, as inference and a step's backward do."""
    x = torch.randn(1, 32, 3, 3, requires_grad=True)
    w = torch.nn.Parameter(torch.randn(32, 32, 3, 3))  # NCHW: the tensor-core GEMMs repack it
    gy = torch.randn(1, 32, 3, 3)

    def conv(x, w):
        return torchconv_ext.functional.conv2d(x, w, padding=1)

    with torchconv_ext.use_backend("triton"):
        torchconv_ext.clear_weight_cache()
        call = workload.make_call(conv, (x, w), gy, direction, ours=True)
        for _ in range(3):
            call()
        info = torchconv_ext.weight_cache_info()
        assert (info["packs"], info["hits"]) == (packs, hits)
        torchconv_ext.clear_weight_cache()
        theirs = workload.make_call(conv, (x, w), gy, direction)  # (torch's: no step)
        for _ in range(3):
            theirs()
        assert torchconv_ext.weight_cache_info()["packs"] == 1


@pytest.mark.parametrize("suite", ["conv", "conv3d", "pool", "upsample"])
def test_channels_last_providers_are_checked_and_timed(suite):
    options = RunOptions(
        device="cpu",
        quick=True,
        providers=["torch", "torch_cl", "ours", "ours_cl"],
        directions=("both",),
    )
    [rec] = measure.run_case(quick_case(suite), "fp32", options)
    assert rec["status"] == "ok" and rec["check"]["status"] == "ok"
    assert {p: r["status"] for p, r in rec["providers"].items()} == dict.fromkeys(
        options.providers, "ok"
    )


def test_compile_failure_is_reported_not_fatal(monkeypatch):
    modes = []

    def broken_compile(fn, mode):
        modes.append(mode)

        def run(*args):
            raise RuntimeError("inductor could not compile")

        return run

    monkeypatch.setattr(measure, "compiled", broken_compile)
    options = RunOptions(
        device="cpu",
        quick=True,
        providers=["torch", "compile", "ours"],
        directions=("fwd",),
        compile_mode="default",
    )
    [rec] = measure.run_case(quick_case("depthwise"), "fp32", options)
    assert modes == ["default"]
    assert rec["status"] == "ok"
    assert rec["providers"]["compile"]["status"] == "error"
    assert "inductor could not compile" in rec["providers"]["compile"]["error"]
    assert rec["providers"]["torch"]["status"] == rec["providers"]["ours"]["status"] == "ok"


# --- shapes: sizes and FLOPs agree with torch -------------------------------------------------
def _meta_conv(layer, x, w, b):
    kw = dict(
        stride=layer.arg("stride"),
        padding=layer.arg("padding"),
        dilation=layer.arg("dilation"),
        groups=layer.groups,
    )
    if layer.transposed:
        kw["output_padding"] = layer.arg("output_padding")
    if isinstance(layer, shapes.LocalLayer):  # beyond torch: ours, with its FLOP formulas
        return getattr(torchconv_ext.functional, layer.op)(x, w, b, **kw)
    return getattr(F, layer.op)(x, w, b, **kw)


@pytest.mark.parametrize("layer", CONV_LAYERS, ids=lambda layer: layer.name)
def test_layer_shapes_and_flops_match_torch(layer):
    small = shapes.scaled(layer, 2, None)
    x = torch.empty(small.input_shape, device="meta", requires_grad=small.input_grad)
    w = torch.empty(small.weight_shape, device="meta", requires_grad=True)
    b = torch.empty(small.bias_shape, device="meta", requires_grad=True) if small.bias else None
    with FlopCounterMode(display=False) as fwd:
        y = _meta_conv(small, x, w, b)
    assert tuple(y.shape) == small.output_shape
    assert fwd.get_total_flops() == small.flops("fwd")
    inputs = [t for t in (x, w, b) if t is not None and t.requires_grad]
    if small.groups > 1:
        # torch's counter ignores groups in the weight gradient (it counts a dense one), so only
        # the input gradient — as many FLOPs as the forward — is compared for grouped layers
        inputs = [x]
        expected = small.flops("fwd")
    else:
        expected = small.flops("bwd")
    with FlopCounterMode(display=False) as bwd:
        torch.autograd.grad(y, inputs, torch.empty_like(y))
    assert bwd.get_total_flops() == expected
    assert small.flops("both") == small.flops("fwd") + small.flops("bwd")


@pytest.mark.parametrize("layer", shapes.LOCAL, ids=lambda layer: layer.name)
def test_the_local_suite_times_torchs_windows_and_einsum_which_compute_ours(layer):
    """The locally connected and tiled layers' torch side (torch has no op: the windows and
    einsum its users write) computes what ours does, forward and gradients, in float64, with
    its result in the input's layout."""
    small = shapes.scaled(layer, 2, 2e6)
    wl = workload.make_workload(small, torch.float64, "cpu")
    for channels_last in (False, True):
        operands, gy = workload.prepared(wl, channels_last)
        with torchconv_ext.use_backend("torch"):
            ours = workload.run_once(wl.ours, operands, gy, grads=True)
        theirs = workload.run_once(wl.torch, operands, gy, grads=True)
        for o, t in zip(ours, theirs):
            torch.testing.assert_close(o, t, rtol=1e-12, atol=1e-12)
        assert theirs[0].is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("budget", [None, 2e6, 5e8])
def test_scaled_layers_stay_valid(budget):
    for layer in ALL_LAYERS:
        s = shapes.scaled(layer, 1, budget)
        assert s.batch == 1 and all(o >= 1 for o in s.output_shape)
        assert shapes.replace(s, batch=layer.batch, size=layer.size) == layer  # only smaller
        if budget is not None and s.work() > budget:
            assert shapes.scaled(s, 1, budget) == s  # already at the smallest valid size


def test_case_names_are_unique_and_round_trip():
    for name, layers in shapes.SUITE_LAYERS.items():
        names = [layer.name for layer in layers]
        assert len(set(names)) == len(names), name
        for layer in layers:
            assert shapes.Layer.from_dict(json.loads(json.dumps(layer.to_dict()))) == layer


# --- timing helpers ---------------------------------------------------------------------------
def test_cpu_timer_reports_ordered_quantiles():
    t = timing.bench(lambda: torch.ones(8).sum(), "cpu", quick=True)
    assert 0 < t.p20_ms <= t.ms <= t.p80_ms
    assert "Timer" in t.method
    assert timing.rotation_count(1 << 10, "cpu") == 1
    assert timing.peak_memory_mb(lambda: None, "cpu") is None


def test_rotating_cycles_through_calls():
    seen: list[int] = []
    call = timing.rotating([lambda i=i: seen.append(i) for i in range(3)])
    for _ in range(7):
        call()
    assert seen == [0, 1, 2, 0, 1, 2, 0]


def test_finalize_derives_ratios_and_speedup():
    rec = {
        "flops": 2e9,
        "bytes": 1e9,
        "providers": {
            "torch": {"status": "ok", "ms": 4.0},
            "torch_cl": {"status": "ok", "ms": 2.0},
            "compile": {"status": "error", "error": "x"},
            "ours": {"status": "ok", "ms": 3.0},
            "ours_cl": {"status": "ok", "ms": 1.0},
        },
    }
    results.finalize(rec, {"matmul_tflops": 4.0, "copy_gbps": 2000.0})
    assert rec["speedup"] == pytest.approx(2.0)  # best torch 2 ms / best ours 1 ms
    assert rec["ratio"] == pytest.approx({"torch": 4.0, "torch_cl": 2.0})
    assert rec["providers"]["ours_cl"]["tflops"] == pytest.approx(2.0)
    assert rec["providers"]["ours_cl"]["pct_peak_flops"] == pytest.approx(50.0)
    assert rec["providers"]["ours_cl"]["pct_peak_bw"] == pytest.approx(50.0)
    assert results.geomean([2.0, 8.0]) == pytest.approx(4.0)


# --- one suite protocol ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "layer", [x for x in ALL_LAYERS if not isinstance(x, shapes.ConvLayer)], ids=lambda x: x.name
)
def test_memory_bound_layer_shapes_match_torch(layer):
    small = shapes.replace(layer, batch=2)
    x = torch.empty(small.input_shape, device="meta")
    _, theirs = workload.functions(small)
    assert tuple(theirs(x).shape) == small.output_shape
    assert small.flops("fwd") is None and small.bytes("fwd", 4) > 0
    assert small.bytes("both", 2) == small.bytes("fwd", 2) + small.bytes("bwd", 2)
    index = 8 if small.op.startswith("max") or small.op == "spatial_pyramid_pool" else 0
    moved = (x.numel() + math.prod(small.output_shape)) * 4 + index * math.prod(small.output_shape)
    assert small.bytes("fwd", 4) == moved


def test_every_suite_is_a_list_of_layers_run_alike():
    for name, suite in suites.SUITES.items():
        assert suite.layers == shapes.SUITE_LAYERS[name]
        assert suite.key_layers(), name  # a budget run's first pass has something to time
        assert all(layer in suite.layers for layer in suite.key_layers())
        for case in suite.cases(QUICK):
            assert case["suite"] == name and shapes.Layer.from_dict(case).name == case["name"]


def test_suite_entry_points_use_the_cli_without_import_cycle(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "main", lambda argv: seen.append(argv) or 0)
    assert bench_conv.main(["--quick"]) == 0
    assert bench_pool.main([]) == bench_upsample.main(["upsample", "--list"]) == 0
    assert seen == [
        ["conv", "depthwise", "grouped", "conv3d", "fused", "--quick"],
        ["pool"],
        ["upsample", "--list"],
    ]
    # importing a suite entry point must not import the package's __main__ (no cycle)
    code = "import sys, benchmarks.bench_conv; sys.exit('benchmarks.__main__' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=results.REPO_ROOT).returncode == 0


def test_suite_with_missing_op_is_reported_and_skipped(monkeypatch, tmp_path):
    assert suites.SUITES["transposed"].unavailable() is None
    monkeypatch.setattr(suites, "required_ops", lambda layer: {"conv_transpose9d"})
    reason = suites.SUITES["transposed"].unavailable()
    assert reason == "torchconv_ext.functional has no conv_transpose9d yet"
    lines: list[str] = []
    assert runner.run(["transposed"], ["fp32"], QUICK, tmp_path, log=lines.append) == []
    assert f"[transposed] not available: {reason}" in lines


# --- report and profile -----------------------------------------------------------------------
def test_report_regenerates_tables_and_index(quick_run, tmp_path, capsys):
    _, written, _ = quick_run
    doc = json.loads(written[0]["json"].read_text())
    doc["quick"] = False  # as if a full run: listed in the index
    out = results.write(doc, tmp_path)
    foreign = tmp_path / doc["device"] / "pool-float32.json"  # another tool's file, same folder
    foreign.write_text(json.dumps({"suite": "pool", "records": []}))
    assert report.main([str(tmp_path)]) == 0
    index = (tmp_path / "README.md").read_text()
    assert f"[{doc['suite']}]({doc['device']}/{doc['suite']}-fp32.md)" in index
    assert out["md"].exists()
    printed = capsys.readouterr().out
    assert "wrote" in printed and f"skipped {foreign}" in printed
    assert "pool-float32" not in index
    listed_apart = (f"{doc['device']}/overhead-before", f"{doc['device']}/real-models",
                    "compile-report/sm_90")  # fmt: skip
    for name in listed_apart:
        (tmp_path / f"{name}.json").parent.mkdir(exist_ok=True)
        (tmp_path / f"{name}.json").write_text("{}")
        (tmp_path / f"{name}.md").write_text("#")
    (tmp_path / "compile-report/loops.md").write_text("# Loops, before and after\n\ntext")
    index = report.write_index(tmp_path).read_text()
    assert f"({doc['device']}/overhead-before.md)" in index
    assert f"against themselves (real-models)]({doc['device']}/real-models.md)" in index
    assert "[compile report for sm_90](compile-report/sm_90.md)" in index
    assert "[Loops, before and after](compile-report/loops.md)" in index  # a table by hand


def _gpu_doc(speedups: list[float], flops: bool = True) -> dict:
    records = []
    for i, sp in enumerate(speedups):
        rec = {
            "name": f"net.layer{i}",
            "direction": ("fwd", "bwd", "both")[i % 3],
            "status": "ok",
            "flops": 2e12 * (i + 1) if flops else None,
            "bytes": 1e10,
            "providers": {
                "torch": {"status": "ok", "ms": 10.0 * sp},
                "ours_cl": {"status": "ok", "ms": 10.0},
            },
        }
        records.append(results.finalize(rec, {"matmul_tflops": 800.0, "copy_gbps": 4000.0}))
    peak = {"matmul_tflops": 800.0, "copy_gbps": 4000.0, "matmul_dtype": "bfloat16"}
    return {
        "suite": "conv",
        "dtype": "bf16",
        "device": "nvidia-h200",
        "device_name": "NVIDIA H200",
        "quick": False,
        "ours_backend": "triton",
        "peak": peak,
        "records": records,
        "summary": results.summarize(records),
    }


def test_speedup_bars_start_at_one_with_plain_ticks():
    pytest.importorskip("matplotlib")
    fig = report.speedup_figure(_gpu_doc([0.5, 1.0, 2.5, 1.3]))
    ax = fig.axes[0]
    bars = [(b.get_x(), b.get_x() + b.get_width()) for b in ax.patches if b.get_height() < 1]
    # (flat: newer pytest's approx compares no nested sequences)
    assert [x for bar in bars for x in bar] == pytest.approx([1, 0.5, 1, 1.0, 1, 2.5, 1, 1.3])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert "1×" in labels and "2×" in labels and "0.5×" in labels
    assert all(re.fullmatch(r"[0-9.]+×", t) for t in labels)  # no 10^x, no 9.8e-01
    assert ax.get_xscale() == "log" and ax.get_xlim()[0] < 0.5 and ax.get_xlim()[1] > 2.5
    title = ax.get_title()
    assert "speedup of ours" in title and "SANITY" not in title
    sanity = report.speedup_figure({**_gpu_doc([1.2]), "device": "cpu-x", "ours_backend": "torch"})
    assert "SANITY CHECK" in sanity.axes[0].get_title()
    assert "speedup" not in sanity.axes[0].get_title()


def test_roofline_labels_every_point():
    pytest.importorskip("matplotlib")
    doc = _gpu_doc([0.5, 1.0, 2.5, 1.3])
    ax, key = report.roofline_figure(doc).axes
    numbers = [t.get_text() for t in ax.texts if t.get_text().isdigit()]
    assert numbers == ["1", "2", "3", "4"]
    assert key.texts[0].get_text().splitlines()[2].split() == ["3", "net.layer2", "both"]
    assert any("800 TFLOP/s" in t.get_text() for t in ax.texts)
    assert any("4000 GB/s" in t.get_text() for t in ax.texts)
    memory = report.roofline_figure(_gpu_doc([1.5, 0.8], flops=False)).axes[0]
    names = [t.get_text() for t in memory.get_yticklabels()]
    assert names == ["net.layer0 fwd", "net.layer1 bwd"]


def test_profile_entry_point_on_cpu(tmp_path, capsys):
    rc = profile.main(
        [
            "conv",
            "resnet50.layer4.conv3",
            "--quick",
            "--iters",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "CPU run" in out and "need a CUDA GPU" in out  # says what it cannot show
    assert "ours: CPU ops" in out and "aten::" in out  # the op tables
    assert "ncu --target-processes all --nvtx --nvtx-include ncu:ours/" in out
    [trace] = tmp_path.glob("*.trace.json")
    events = json.loads(trace.read_text())["traceEvents"]
    ranges = {e["name"] for e in events if e.get("cat") == "user_annotation"}
    assert {"ours.fwd", "ours.bwd", "torch.fwd", "torch.bwd"} <= ranges


def test_profile_rejects_unknown_case():
    with pytest.raises(SystemExit, match="matches no case"):
        profile.main(["conv", "no-such-layer", "--quick", "--device", "cpu"])


@pytest.mark.interpret
def test_autotune_choice_visible_after_a_triton_launch():
    import torchconv_ext

    # (channels-last: the tuned positions tiles; NCHW rows take the fixed row tiles)
    x = torch.randn(1, 4, 5, 5).to(memory_format=torch.channels_last)
    w = torch.randn(4, 1, 3, 3)
    with torchconv_ext.use_backend("triton"):
        torchconv_ext.functional.conv2d(x, w, padding=1, groups=4)
    objects, _ = profile.triton_objects()
    choices = profile.autotune_choices(objects)
    assert any("conv_depthwise" in c["kernel"] and "BLOCK" in c["config"] for c in choices)


def test_compiled_kernel_resources_are_read():
    meta = types.SimpleNamespace(name="k", shared=4096, num_warps=4, num_stages=3)
    kernel = types.SimpleNamespace(name="k", metadata=meta, n_regs=96, n_spills=0)
    jit = types.SimpleNamespace(device_caches={0: ({"key": kernel}, None, None, None)})
    tuner = types.SimpleNamespace(fn=jit)
    [row] = profile.compiled_kernels([("triton_kernels.x.k", tuner)])
    assert (row["n_regs"], row["n_spills"], row["shared"], row["num_warps"]) == (96, 0, 4096, 4)


def test_layout_check_flags_an_output_in_the_wrong_memory_format():
    theirs = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    assert check.layout_mismatch(theirs.clone(), theirs) == ""
    assert "channels_last" in check.layout_mismatch(theirs.contiguous(), theirs)
    assert "contiguous" in check.layout_mismatch(theirs, theirs.contiguous())
    assert check.layout_mismatch(torch.randn(2, 3), torch.randn(2, 3)) == ""


def test_git_dirty_ignores_the_runs_own_output(monkeypatch, tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "code")
    monkeypatch.setattr(results, "REPO_ROOT", tmp_path)
    (tmp_path / "benchmarks" / "results" / "gpu").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "gpu" / "conv-bf16.json").write_text("{}")
    assert results.git_dirty() is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert results.git_dirty() is True


def test_a_tool_tag_with_dots_names_its_own_files(tmp_path):
    """``overhead-torch-2.11`` and ``overhead-torch-2.13`` are two files, not one ``-torch-2``."""
    for tag in ("torch-2.11", "torch-2.13"):
        stem = results.write_tool(tmp_path, "overhead", tag, {"tag": tag}, f"# {tag}\n")
        assert stem.name == f"overhead-{tag}"
    written = sorted(p.name for p in tmp_path.rglob("overhead-*"))
    assert written == [f"overhead-torch-2.{v}.{e}" for v in (11, 13) for e in ("json", "md")]
