"""The benchmark harness on CPU: ``--quick`` writes complete result files, a wrong kernel is never
timed, FLOP counts agree with torch's counter, reports and the profiler entry point work.

Nothing here asserts a speed: CPU timings of a smoke run mean nothing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import (
    bench_conv,
    check,
    profile,
    report,
    results,
    runner,
    shapes,
    suites,
    timing,
)
from benchmarks.__main__ import main as cli_main
from benchmarks.options import RunOptions

ALL_LAYERS = [layer for layers in shapes.SUITE_LAYERS.values() for layer in layers]


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
        for rec in doc["records"]:
            assert rec["direction"] in ("fwd", "bwd", "both")
            assert rec["status"] == "ok", rec
            if doc["suite"] in shapes.SUITE_LAYERS:
                assert rec["check"]["status"] == "ok"
                assert set(rec["providers"]) == {"torch", "ours"}
                assert rec["flops"] > 0 and rec["bytes"] > 0
            for prov in rec["providers"].values():
                assert prov["status"] == "ok"
                assert {"ms", "p20_ms", "p80_ms"} <= set(prov)
            assert rec["speedup"] is not None
        conv = doc["suite"] in shapes.SUITE_LAYERS
        assert set(doc["summary"]["geomean_speedup"]) >= (
            {"fwd", "bwd", "both"} if conv else set()
        ) | {"all"}


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
        assert "| layer | dir | shape |" in text and "speedup" in text
        doc = json.loads(p["json"].read_text())
        assert text.count("\n| `") == len(doc["records"])
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            continue
        assert p["speedup_png"].stat().st_size > 0 and p["roofline_png"].stat().st_size > 0


def test_cli_lists_and_rejects_unknown_suites(capsys):
    assert cli_main(["conv", "--list", "--quick", "--device", "cpu"]) == 0
    assert "alexnet.conv1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["no-such-suite", "--device", "cpu"])


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


def test_mismatch_marks_case_failed_and_untimed(monkeypatch):
    real = bench_conv.functions

    def off_by_a_bit(layer):
        ours, theirs = real(layer)
        return (lambda x, w, b: ours(x, w, b) * 1.01), theirs

    def no_timing(*args, **kwargs):
        raise AssertionError("a mismatching case must not be timed")

    monkeypatch.setattr(bench_conv, "functions", off_by_a_bit)
    monkeypatch.setattr(bench_conv, "bench", no_timing)
    case = bench_conv.cases("conv", quick=True)[0]
    recs = bench_conv.run_case(case, "fp32", "cpu", RunOptions(device="cpu", quick=True))
    assert [r["direction"] for r in recs] == ["fwd", "bwd", "both"]
    for rec in recs:
        assert rec["status"] == "mismatch" and rec["providers"] == {}
        assert rec["check"]["message"].startswith("ours: ")


def test_backward_only_mismatch_still_times_forward(monkeypatch):
    real = bench_conv.functions

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

    monkeypatch.setattr(bench_conv, "functions", wrong_grad)
    case = bench_conv.cases("depthwise", quick=True)[0]
    recs = {
        r["direction"]: r
        for r in bench_conv.run_case(case, "fp32", "cpu", RunOptions(device="cpu", quick=True))
    }
    assert recs["fwd"]["status"] == "ok" and set(recs["fwd"]["providers"]) == {"torch", "ours"}
    assert recs["bwd"]["status"] == recs["both"]["status"] == "mismatch"
    assert "grad_" in recs["bwd"]["check"]["message"]


@pytest.mark.parametrize("suite", ["conv", "conv3d"])
def test_channels_last_providers_are_checked_and_timed(suite):
    options = RunOptions(
        device="cpu",
        quick=True,
        providers=["torch", "torch_cl", "ours", "ours_cl"],
        directions=("both",),
    )
    [rec] = bench_conv.run_case(bench_conv.cases(suite, True)[0], "fp32", "cpu", options)
    assert rec["status"] == "ok" and rec["check"]["status"] == "ok"
    assert {p: r["status"] for p, r in rec["providers"].items()} == dict.fromkeys(
        options.providers, "ok"
    )


def test_compile_failure_is_reported_not_fatal(monkeypatch):
    def broken_compile(fn):
        def run(*args):
            raise RuntimeError("inductor could not compile")

        return run

    monkeypatch.setattr(bench_conv, "compile_max_autotune", broken_compile)
    options = RunOptions(
        device="cpu", quick=True, providers=["torch", "compile", "ours"], directions=("fwd",)
    )
    [rec] = bench_conv.run_case(bench_conv.cases("depthwise", True)[0], "fp32", "cpu", options)
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
    return getattr(F, bench_conv.op_name(layer))(x, w, b, **kw)


@pytest.mark.parametrize("layer", ALL_LAYERS, ids=lambda layer: layer.name)
def test_layer_shapes_and_flops_match_torch(layer):
    small = shapes.scaled(layer, 2, None)
    x = torch.empty(small.input_shape, device="meta", requires_grad=small.input_grad)
    w = torch.empty(small.weight_shape, device="meta", requires_grad=True)
    b = torch.empty(small.c_out, device="meta", requires_grad=True) if small.bias else None
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


@pytest.mark.parametrize("budget", [None, 2e6, 5e8])
def test_scaled_layers_stay_valid(budget):
    for layer in ALL_LAYERS:
        s = shapes.scaled(layer, 1, budget)
        assert s.batch == 1 and all(o >= 1 for o in s.out_size)
        assert (s.c_in, s.c_out, s.kernel, s.stride) == (
            layer.c_in,
            layer.c_out,
            layer.kernel,
            layer.stride,
        )
        if budget is not None and s.flops("fwd") > budget:
            assert shapes.scaled(s, 1, budget) == s  # already at the smallest valid size


def test_case_names_are_unique_and_round_trip():
    for name, layers in shapes.SUITE_LAYERS.items():
        names = [layer.name for layer in layers]
        assert len(set(names)) == len(names), name
        for layer in layers:
            assert shapes.ConvLayer.from_dict(json.loads(json.dumps(layer.to_dict()))) == layer


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


# --- suites from other modules (pool, upsample) ----------------------------------------------
def test_module_suite_adapts_external_records(monkeypatch, tmp_path):
    fake = types.ModuleType("benchmarks._fake_suite")
    fake.cases = lambda quick: [
        {"name": "maxpool.a", "shape": "1x2x4x4 k2"},  # one record
        {"k": 3},  # a list of records
        {"name": "gap", "shape": (2, 8, 7, 7), "layout": "contiguous"},  # per-direction dicts
        {"name": "gap", "shape": (2, 8, 7, 7), "layout": "channels_last"},
    ]
    seen_dtypes = []

    def run_case(case, dtype, device):
        seen_dtypes.append(dtype)
        if "k" in case:
            return [
                {
                    "direction": d,
                    "bytes": 1000,
                    "results": {"torch": 2.0, "ours": {"median_ms": 1.0}},
                }
                for d in ("fwd", "bwd")
            ]
        if "layout" in case:  # (named gap.contiguous / gap.channels_last by now)
            if case["layout"] == "channels_last":
                return dict(case, check="forward differs from torch")  # not timed
            t = lambda ms: {"ms": ms, "p20_ms": ms, "p80_ms": ms, "gbps": 1.0}
            return dict(
                case,
                check="ok",
                bytes={"fwd": 800, "bwd": 1600},
                fwd={"ours": t(1.0), "torch": t(3.0), "ratio": 3.0},
                bwd={"ours": t(2.0), "torch": t(2.0), "ratio": 1.0},
            )
        return {
            "direction": "fwd",
            "bytes": 4000,
            "providers": {
                "torch": {"ms": 1.0, "p20_ms": 0.9, "p80_ms": 1.1},
                "ours": {"ms": 2.0, "p20_ms": 1.9, "p80_ms": 2.1},
            },
        }

    fake.run_case = run_case
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    suite = suites.ModuleSuite("pool", "pooling", module=fake.__name__)
    monkeypatch.setitem(suites.SUITES, "pool", suite)
    assert suite.unavailable() is None
    [p] = runner.run(
        ["pool"], ["bf16"], RunOptions(device="cpu", quick=True), tmp_path, log=lambda s: None
    )
    assert set(seen_dtypes) == {torch.bfloat16}
    doc = json.loads(p["json"].read_text())
    recs = {(r["name"], r["direction"]): r for r in doc["records"]}
    assert list(recs) == [
        ("maxpool.a", "fwd"),
        ("pool.1", "fwd"),
        ("pool.1", "bwd"),
        ("gap.contiguous", "fwd"),
        ("gap.contiguous", "bwd"),
        ("gap.channels_last", "all"),
    ]
    assert recs["maxpool.a", "fwd"]["speedup"] == pytest.approx(0.5)
    assert recs["maxpool.a", "fwd"]["providers"]["ours"]["gbps"] > 0
    assert recs["pool.1", "bwd"]["speedup"] == pytest.approx(2.0)
    assert recs["pool.1", "bwd"]["shape"] == "k=3"
    gap = recs["gap.contiguous", "fwd"]
    assert gap["speedup"] == pytest.approx(3.0) and gap["bytes"] == 800
    assert set(gap["providers"]) == {"ours", "torch"}  # the ratio scalar is not a provider
    assert gap["shape"] == "2x8x7x7" and gap["check"]["status"] == "ok"
    assert recs["gap.contiguous", "bwd"]["bytes"] == 1600
    failed = recs["gap.channels_last", "all"]
    assert failed["status"] == "mismatch" and failed["providers"] == {}
    assert failed["check"]["message"] == "forward differs from torch"
    assert "ours GB/s" in p["md"].read_text()


def test_module_suite_missing_or_broken_is_reported(monkeypatch):
    assert (
        "does not exist yet"
        in suites.ModuleSuite("x", "", module="benchmarks.no_such").unavailable()
    )
    broken = types.ModuleType("benchmarks._broken_suite")
    monkeypatch.setitem(sys.modules, broken.__name__, broken)
    assert (
        "has no cases or run_case"
        in suites.ModuleSuite("x", "", module=broken.__name__).unavailable()
    )


def test_transposed_suite_defined_and_clean_when_missing(tmp_path):
    suite = suites.SUITES["transposed"]
    import torchconv_ext.functional as f

    reason = suite.unavailable()
    assert (reason is None) == hasattr(f, "conv_transpose2d")
    if reason is not None:
        assert "conv_transpose2d" in reason
        assert (
            runner.run(
                ["transposed"],
                ["fp32"],
                RunOptions(device="cpu", quick=True),
                tmp_path,
                log=lambda s: None,
            )
            == []
        )


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

    x = torch.randn(1, 4, 5, 5)
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
