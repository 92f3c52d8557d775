"""Launch-config tuning: keys, pruning, the per-user disk cache and the config tables' rules.

The tuner's benchmark and compile steps need a GPU; here they are replaced by fakes (a kernel
that records its launches, timings and register counts chosen by the test), so everything
around them — which configs are timed, what is stored, what a new process reads back — is
checked on the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from triton.runtime.errors import OutOfResources

from triton_kernels import _common, _gemm_common, _tuning, conv_1x1, conv_depthwise, conv_gemm
from triton_kernels._tuning import Config, Resources, Tuner, bucket, cache_dir, prune

CONFIGS = [
    Config.of(4, 3, BLOCK_M=128, BLOCK_N=128, BLOCK_K=64),
    Config.of(4, 4, BLOCK_M=128, BLOCK_N=64, BLOCK_K=32),
    Config.of(4, 4, BLOCK_M=64, BLOCK_N=64, BLOCK_K=32),
]


class FakeKernel:
    """Stands for a ``@triton.jit`` function: records every launch's grid and block sizes."""

    cache_key = "fake-kernel-source"
    last_kwargs: ClassVar[dict] = {}

    def __init__(self):
        self.launches = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            FakeKernel.last_kwargs = kwargs
            self.launches.append((grid, kwargs["BLOCK_M"], kwargs["num_warps"]))

        return launch


#: An unproven candidate (a tap loop's 8-warp tile).
EIGHT_WARPS = Config.of(8, 3, BLOCK_M=128, BLOCK_N=256, BLOCK_K=64)


def _config_of(kwargs: dict) -> Config:
    return next(
        c for c in (*CONFIGS, EIGHT_WARPS) if all(kwargs[k] == v for k, v in c.kwargs.items())
    )


class FakeGPU:
    """The device side of a tuning: timings and compiled resources per config, as the test says;
    counts what was compiled and timed."""

    def __init__(self, monkeypatch, times, resources=None, shared_limit=232448):
        self.times, self.resources = times, resources or {}
        self.compiled, self.timed = [], []
        monkeypatch.setattr(
            _tuning, "_device_properties", lambda device: {"max_shared_mem": shared_limit}
        )
        monkeypatch.setattr(Tuner, "_compile_all", self._compile_all)
        monkeypatch.setattr(_tuning.triton.testing, "do_bench", self._bench)

    def _compile_all(self, configs, grid, args, constexprs):
        self.compiled += configs
        return {c: self.resources.get(c, Resources(128, 0, 0)) for c in configs}

    def _bench(self, fn, **kwargs):
        fn()  # launches the fake kernel once with the config being timed
        config = _config_of(FakeKernel.last_kwargs)
        self.timed.append(config)
        if isinstance(self.times, dict):
            return self.times[config]
        return self.times[CONFIGS.index(config)]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache directory (tests never write to the user's)."""
    monkeypatch.setenv(_tuning.CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _tuner(kernel=None, configs=CONFIGS):
    return Tuner("fake_gemm", kernel or FakeKernel(), list(configs), _gemm_common.shared_estimate)


def _launch(tuner, key=("bf16", 4096)):
    x = torch.empty(4, dtype=torch.bfloat16)
    tuner.launch(key, lambda c: (7,), (x,), {"FLAG": True})


# --- the disk cache ---------------------------------------------------------------------------


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(_tuning.CACHE_DIR_ENV, str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv(_tuning.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "torchconv_ext"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "torchconv_ext"


def test_the_test_session_never_uses_the_home_cache():
    assert (
        Path(os.environ[_tuning.CACHE_DIR_ENV]).resolve()
        != (Path.home() / ".cache" / "torchconv_ext").resolve()
    )


def test_winner_is_benchmarked_once_then_stored_and_reused(cache, monkeypatch):
    gpu = FakeGPU(monkeypatch, times=[3.0, 1.0, 2.0])
    kernel = FakeKernel()
    tuner = _tuner(kernel)
    _launch(tuner)
    assert gpu.timed == CONFIGS  # every survivor timed once
    assert (
        kernel.launches[-1] == ((7,), 128, 4) and _config_of(FakeKernel.last_kwargs) == CONFIGS[1]
    )
    (path,) = (cache / "autotune").iterdir()
    record = json.loads(path.read_text())
    assert record["config"] == CONFIGS[1].to_json()
    assert record["device"] == "cpu-interpreter" and record["key"] == ["bf16", 4096]

    # The same process: from memory, no file read, nothing timed.
    gpu.timed.clear()
    path.unlink()
    _launch(tuner)
    assert gpu.timed == [] and not path.exists()


def test_new_tuner_reads_the_disk_without_benchmarking(cache, monkeypatch):
    gpu = FakeGPU(monkeypatch, times=[3.0, 1.0, 2.0])
    _launch(_tuner())
    gpu.timed.clear()
    gpu.compiled.clear()
    kernel = FakeKernel()
    _launch(_tuner(kernel))  # a fresh tuner: what a new process has
    assert gpu.timed == [] and gpu.compiled == []
    assert kernel.launches == [((7,), CONFIGS[1]["BLOCK_M"], 4)]


def test_new_process_reuses_the_stored_config(cache):
    """A real second process: it finds the file, so its tuner never benchmarks (its benchmark
    function raises)."""
    tuner = _tuner()
    key = ("bf16", 4096)
    tuner.store("cpu-interpreter", key, CONFIGS[2])
    script = f"""
import torch
from triton_kernels import _gemm_common, _tuning
from tests.test_tuning import CONFIGS, FakeKernel

def refuse(*args, **kwargs):
    raise AssertionError("benchmarked although the cache holds the key")

_tuning.Tuner._benchmark = refuse
kernel = FakeKernel()
tuner = _tuning.Tuner("fake_gemm", kernel, list(CONFIGS), _gemm_common.shared_estimate)
tuner.launch({key!r}, lambda c: (7,), (torch.empty(4, dtype=torch.bfloat16),), {{}})
assert kernel.launches == [((7,), {CONFIGS[2]["BLOCK_M"]}, 4)], kernel.launches
print("reused")
"""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reused" in result.stdout


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        json.dumps({"format": 1}),
        "[1, 2]",
        b"\xff\xfe\x00\x89garbage",
        "[" * 100_000 + "]" * 100_000,
        lambda record: {**record, "config": {**record["config"], "num_warps": float("inf")}},
    ],
    ids=["corrupt", "empty", "incomplete", "not-a-record", "not-utf-8", "too-deep", "infinite"],
)
def test_bad_file_is_ignored_with_a_warning_and_replaced(cache, monkeypatch, content):
    gpu = FakeGPU(monkeypatch, times=[3.0, 1.0, 2.0])
    tuner = _tuner()
    key = ("bf16", 4096)
    path = tuner.path("cpu-interpreter", key)
    path.parent.mkdir(parents=True)
    if callable(content):  # (a record of this key, spoilt)
        record = {**tuner._identity("cpu-interpreter", key), "config": CONFIGS[0].to_json()}
        content = json.dumps(content(record))
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.warns(UserWarning, match="ignoring invalid autotune cache file"):
        _launch(tuner)
    assert gpu.timed == CONFIGS  # tuned afresh
    assert json.loads(path.read_text())["config"] == CONFIGS[1].to_json()


def test_file_for_another_key_or_a_dropped_config_is_ignored(cache, monkeypatch):
    FakeGPU(monkeypatch, times=[3.0, 1.0, 2.0])
    tuner = _tuner()
    key = ("bf16", 4096)
    path = tuner.path("cpu-interpreter", key)
    path.parent.mkdir(parents=True)
    record = {**tuner._identity("cpu-interpreter", ("fp16", 4096)), "config": CONFIGS[0].to_json()}
    path.write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="another kernel, device or key"):
        assert tuner.load("cpu-interpreter", key) is None
    # A config no longer among the candidates (an 8-warp tap config of an older version, say).
    old = Config.of(8, 3, BLOCK_M=128, BLOCK_N=128, BLOCK_K=32)
    path.write_text(
        json.dumps({**tuner._identity("cpu-interpreter", key), "config": old.to_json()})
    )
    with pytest.warns(UserWarning, match="not a candidate"):
        assert tuner.load("cpu-interpreter", key) is None


def test_unwritable_cache_warns_and_still_launches(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv(_tuning.CACHE_DIR_ENV, str(blocker))
    FakeGPU(monkeypatch, times=[3.0, 1.0, 2.0])
    kernel = FakeKernel()
    with pytest.warns(UserWarning, match="could not write the autotune cache"):
        _launch(_tuner(kernel))
    assert kernel.launches[-1][1] == CONFIGS[1]["BLOCK_M"]


def test_concurrent_writers_leave_whole_files(cache):
    """Many threads storing the same and different keys at once: every file reads back whole
    (the writes replace files atomically) and no temporary file is left behind."""
    tuner = _tuner()
    errors = []

    def write(i):
        try:
            for j in range(20):
                tuner.store("gpu", ("key", j % 3), CONFIGS[(i + j) % 3])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    files = sorted((cache / "autotune").iterdir())
    assert len(files) == 3 and all(f.suffix == ".json" for f in files)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for j in range(3):
            assert tuner.load("gpu", ("key", j)) in CONFIGS


def test_key_names_device_triton_version_and_kernel_source(cache):
    tuner = _tuner()
    paths = {
        tuner.path("NVIDIA H200", ("k",)),
        tuner.path("NVIDIA H100 80GB HBM3", ("k",)),
        tuner.path("NVIDIA H200", ("k2",)),
    }
    other_source = _tuner()
    other_source._source = "0" * 16
    paths.add(other_source.path("NVIDIA H200", ("k",)))
    assert len(paths) == 4
    ident = tuner._identity("NVIDIA H200", ("k",))
    assert ident["triton"] == _tuning.triton.__version__ and ident["source"]


# --- pruning ----------------------------------------------------------------------------------


def test_compile_threads_default_to_the_cpus_and_follow_the_environment(monkeypatch):
    monkeypatch.delenv(_tuning.COMPILE_THREADS_ENV, raising=False)
    assert _tuning.compile_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(_tuning.COMPILE_THREADS_ENV, "3")
    assert _tuning.compile_threads() == 3
    monkeypatch.setenv(_tuning.COMPILE_THREADS_ENV, "many")
    with pytest.raises(ValueError, match="TORCHCONV_EXT_COMPILE_THREADS must be a whole number"):
        _tuning.compile_threads()


def test_resources_of_a_kernel_that_cannot_load_are_none():
    class TooBig:
        def _init_handles(self):
            raise OutOfResources(300_000, 232_448, "shared memory")

    assert _tuning._resources(TooBig()) is None


_COMPILE_PROBE = """
import dataclasses, json, threading
import torch, triton, triton.language as tl
from benchmarks.standin import require_compiled_kernels, stand_in_gpu
require_compiled_kernels()
from triton_kernels import _tuning
from triton_kernels._tuning import Config, Tuner

@triton.jit
def column_sums(x_ptr, out_ptr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    tl.store(out_ptr, tl.sum(tl.load(x_ptr + i), axis=0))

compile_threads = set()
compile = triton.compiler.compile  # what the kernel takes on its first use
def recording_compile(*args, **kwargs):
    compile_threads.add(threading.current_thread().name.split("_")[0])
    return compile(*args, **kwargs)
triton.compiler.compile = recording_compile

configs = [Config.of(w, 1, BLOCK=b) for w, b in ((1, 64), (2, 256), (4, 1024), (8, 2048))]
tuner = Tuner("column_sums", column_sums, configs)

x, out = torch.zeros(2048), torch.zeros(1)
with stand_in_gpu("sm_90"):
    resources = tuner._compile_all(configs, lambda c: (1,), (x, out), {})
print(json.dumps({"threads": sorted(compile_threads),
                  "resources": [dataclasses.astuple(resources[c]) for c in configs]}))
"""


def _compile_probe(tmp_path, threads: int) -> dict:
    script = tmp_path / f"compile_probe_{threads}.py"  # Triton reads a kernel's source file
    script.write_text(_COMPILE_PROBE)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    env["TRITON_CACHE_DIR"] = str(tmp_path / f"triton-cache-{threads}")  # compile, not load
    env[_tuning.COMPILE_THREADS_ENV] = str(threads)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_candidates_compile_at_once_in_threads_with_the_same_result(tmp_path):
    """The real compiler on a stand-in sm_90 GPU: with several threads every candidate compiles
    on a pool thread (none on the caller's), with one on the caller's; both read the same
    resources (the stand-in loads no binary: registers and spills read 0, shared memory is
    Triton's, larger with more warps to combine)."""
    threaded, alone = _compile_probe(tmp_path, 4), _compile_probe(tmp_path, 1)
    assert threaded["threads"] == ["torchconv"] and alone["threads"] == ["MainThread"]
    assert threaded["resources"] == alone["resources"]
    shared = [r[2] for r in alone["resources"]]
    assert shared == sorted(shared) and shared[-1] > shared[0]


def test_prune_drops_spilling_capped_and_oversized_configs():
    a, b, c = CONFIGS
    limit = 200_000
    resources = {
        a: Resources(255, 0, 100_000),  # at the register cap
        b: Resources(200, 64, 100_000),  # spills
        c: Resources(168, 0, 100_000),
    }
    assert prune(CONFIGS, resources, limit) == [c]
    resources[c] = Resources(168, 0, 300_000)  # too much shared memory
    # Nothing runs well: keep the one that spills least among those that fit at all.
    assert prune(CONFIGS, resources, limit) == [a]
    assert prune(CONFIGS, {a: None, b: None, c: None}, limit) == [a]  # none compiled


def test_pruned_configs_are_never_timed(cache, monkeypatch):
    a, b, c = CONFIGS
    gpu = FakeGPU(
        monkeypatch,
        times=[1.0, 2.0, 3.0],  # the fastest one spills
        resources={a: Resources(255, 128, 98304), b: Resources(154, 0, 49152)},
    )
    kernel = FakeKernel()
    _launch(_tuner(kernel))
    assert a not in gpu.timed and gpu.timed == [b, c]
    assert kernel.launches[-1][1] == b["BLOCK_M"]


def test_shared_memory_estimate_skips_compiling_configs_that_cannot_fit(cache, monkeypatch):
    a, b, c = CONFIGS  # a: 3 stages × (128·64 + 64·128) × 2 bytes = 96 KiB
    assert _gemm_common.shared_estimate(a, 2) == 98304
    gpu = FakeGPU(monkeypatch, times=[1.0, 2.0, 3.0], shared_limit=64 * 1024)
    _launch(_tuner())
    assert a not in gpu.compiled and a not in gpu.timed


def test_while_capturing_the_first_config_that_fits_runs_untuned(cache, monkeypatch):
    """Benchmarking would break a CUDA graph being captured: the first config runs untuned,
    unless its shared memory cannot fit (a 1×1 GEMM's first row in fp32), and nothing is
    compiled, timed or stored."""
    a, b, _ = CONFIGS  # a: 96 KiB in bf16, 192 KiB in fp32; b: 96 KiB in fp32
    gpu = FakeGPU(monkeypatch, times=[1.0, 2.0, 3.0], shared_limit=128 * 1024)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    monkeypatch.setattr(_tuning, "device_name", lambda device: "fake-gpu")
    tuner = _tuner()
    for dtype, expected in ((torch.bfloat16, a), (torch.float32, b)):
        args = (torch.empty(4, dtype=dtype),)
        assert tuner._choose(torch.device("cuda"), ("key",), lambda c: (1,), args, {}) == expected
    assert gpu.compiled == gpu.timed == [] and not cache.exists()


def test_while_capturing_a_config_tuned_by_an_earlier_process_is_used(cache, monkeypatch):
    """Reading the disk cache breaks no graph: a winner stored before is launched (and kept)."""
    c = CONFIGS[2]
    gpu = FakeGPU(monkeypatch, times=[1.0, 2.0, 3.0])
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    cuda = torch.device("cuda")
    monkeypatch.setattr(_tuning, "device_name", lambda device: "fake-gpu")
    _tuner().store("fake-gpu", ("key",), c)
    tuner = _tuner()  # a new process's
    args = (torch.empty(4, dtype=torch.bfloat16),)
    assert tuner._choose(cuda, ("key",), lambda c: (1,), args, {}) == c
    assert tuner._chosen[(cuda, ("key",))] == c
    assert gpu.compiled == gpu.timed == []


def test_one_candidate_is_launched_without_tuning(cache, monkeypatch):
    gpu = FakeGPU(monkeypatch, times=[1.0])
    kernel = FakeKernel()
    _launch(_tuner(kernel, CONFIGS[:1]))
    assert gpu.compiled == gpu.timed == [] and not cache.exists()
    assert kernel.launches == [((7,), CONFIGS[0]["BLOCK_M"], 4)]


# --- the tables -------------------------------------------------------------------------------


def test_tap_and_flattened_loops_run_8_warps_only_once_proven(monkeypatch):
    """Triton has silently miscompiled ``tl.dot`` loops shaped like the implicit GEMM's tap
    loop and its flattened (taps × channels) loop at 8 warps (triton-lang/triton#1254); PyTorch
    Inductor caps its convolution templates at 4 warps for this reason (pytorch#173068). A
    wrong config would be picked silently, and persisted: so every config of those loops above
    4 warps is unproven — timed only once its results matched a 4-warp config's on the device
    (the tests below) — and the other tap loops (depthwise, locally connected) have none."""
    assert _gemm_common.TAP_LOOP_PROVEN_WARPS == 4
    monkeypatch.setattr(_gemm_common, "INTERPRET", False)  # the GPU's candidates
    gemms = {
        "conv_fwd": (conv_gemm._conv_fwd_kernel, conv_gemm._TABLES, None),
        "conv_bwd_input": (conv_gemm._conv_bwd_input_kernel, conv_gemm._TABLES, None),
        "conv_bwd_weight": (
            conv_gemm._conv_bwd_weight_kernel,
            {variant: conv_gemm._TABLES[variant[0], False] for variant in conv_gemm._TABLES},
            _gemm_common.WEIGHT_BLOCK_K,
        ),
    }
    eight = 0
    for name, (kernel, tables, block_k) in gemms.items():
        for tuner in conv_gemm._tuners(name, kernel, tables, ("y_ptr",), block_k).values():
            above = {c for c in tuner.configs if c.num_warps > 4}
            assert tuner.unproven == above, tuner.name
            assert all(c.num_warps == 4 for c in tuner.configs[:1])  # the untuned guess
            eight += len(above)
    assert eight > 0  # (the tap table's large tiles, forward, input and weight gradient)
    for table in (_gemm_common.MAXOUT_TAP_TABLE, _gemm_common.MAXOUT_FLAT_TABLE):
        assert max(row[4] for row in table) <= 4
    for tuner in (conv_depthwise._FWD, conv_depthwise._BWD_INPUT):
        assert all(c.num_warps <= 4 for c in tuner.configs), tuner.name


def test_gemm_tuners_name_the_outputs_their_kernels_write():
    """What proving compares: each conv GEMM tuner's outputs are parameters of its kernel."""
    tuners = [*conv_gemm._FWD.values(), *conv_gemm._FWD_MAXOUT.values()]
    tuners += [*conv_gemm._BWD_INPUT.values(), *conv_gemm._BWD_WEIGHT.values()]
    for tuner in tuners:
        assert tuner.outputs and set(tuner.outputs) <= set(tuner.kernel.arg_names), tuner.name
    # (and the pre-activation the epilogue stores beside its output in training)
    assert conv_gemm._FWD[False, False].outputs == ("y_ptr", "z_ptr")
    assert conv_gemm._BWD_INPUT[False, False].outputs == ("gi_ptr", "z_ptr")
    assert conv_gemm._BWD_WEIGHT[False, False].outputs == ("gw_ptr", "gb_ptr")


class WritingKernel(FakeKernel):
    """A fake kernel that writes its output (``y``, the first argument): each config the value
    ``values`` gives it (1.0 by default); or raises ``OutOfResources`` for ``failing``."""

    arg_names: ClassVar[list[str]] = ["y_ptr", "n"]

    def __init__(self, values=None, failing=()):
        super().__init__()
        self.values, self.failing = values or {}, failing
        self.options = []  # each launch's keywords other than the config's

    def __getitem__(self, grid):
        record = super().__getitem__(grid)

        def launch(y, n, **kwargs):
            record(y, n, **kwargs)
            self.options.append({k: v for k, v in kwargs.items() if not k.startswith("BLOCK")})
            config = _config_of(kwargs)
            if config in self.failing:
                raise OutOfResources(300000, 232448, "shared memory")
            y.fill_(self.values.get(config, 1.0))

        return launch


def _proving(kernel, configs=(*CONFIGS, EIGHT_WARPS)):
    return Tuner(
        "fake_tap_gemm", kernel, list(configs), _gemm_common.shared_estimate,
        unproven=frozenset({EIGHT_WARPS}), outputs=("y_ptr",),
    )  # fmt: skip


def _launch_writing(tuner, key=("bf16", 4096)):
    y = torch.zeros(8, dtype=torch.bfloat16)
    tuner.launch(key, lambda c: (7,), (y, 8), {})
    return y


def test_unproven_config_is_timed_once_it_matches_a_proven_one(cache, monkeypatch):
    """Its results (up to summation order: one bf16 ulp here) match the first proven survivor's
    on the problem being tuned: it is timed with the rest, and may win and be stored."""
    times = {CONFIGS[0]: 3.0, CONFIGS[1]: 2.0, CONFIGS[2]: 4.0, EIGHT_WARPS: 1.0}
    gpu = FakeGPU(monkeypatch, times=times)
    kernel = WritingKernel({EIGHT_WARPS: 1.0078125})
    tuner = _proving(kernel)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = _launch_writing(tuner)
    # proving: the reference, then the unproven config, each launched once before any timing
    assert [blocks for _, blocks, _ in kernel.launches[:2]] == [128, 128]
    assert [warps for _, _, warps in kernel.launches[:2]] == [4, 8]
    assert gpu.timed == [*CONFIGS, EIGHT_WARPS]
    assert kernel.launches[-1][2] == 8 and y[0] == 1.0078125
    # proving and timing launch the binary every launch of ours runs (its compile options)
    options = set(_common.COMPILE_OPTIONS.items())
    assert all(options <= set(o.items()) for o in kernel.options)
    stored = json.loads(tuner.path("cpu-interpreter", ("bf16", 4096)).read_text())
    assert stored["config"] == EIGHT_WARPS.to_json()  # a new process reuses it unproven again


def test_unproven_config_computing_other_results_is_dropped_with_a_warning(cache, monkeypatch):
    times = {CONFIGS[0]: 3.0, CONFIGS[1]: 2.0, CONFIGS[2]: 4.0, EIGHT_WARPS: 1.0}
    gpu = FakeGPU(monkeypatch, times=times)
    kernel = WritingKernel({EIGHT_WARPS: 1.25})  # a miscompile: far beyond rounding
    tuner = _proving(kernel)
    with pytest.warns(UserWarning, match="computed other results .* on this device"):
        y = _launch_writing(tuner)
    assert gpu.timed == CONFIGS  # never timed
    assert kernel.launches[-1][1:] == (CONFIGS[1]["BLOCK_M"], 4) and y[0] == 1.0
    stored = json.loads(tuner.path("cpu-interpreter", ("bf16", 4096)).read_text())
    assert stored["config"] == CONFIGS[1].to_json()


def test_unproven_config_is_compared_with_a_proven_survivor(cache, monkeypatch):
    """The reference is the first proven config that survives pruning (the first spills here);
    an unproven config that cannot run on the device is dropped without a word."""
    a, b, c = CONFIGS
    gpu = FakeGPU(
        monkeypatch,
        times={b: 2.0, c: 4.0, EIGHT_WARPS: 1.0},
        resources={a: Resources(255, 128, 98304)},
    )
    kernel = WritingKernel({a: 9.0, EIGHT_WARPS: 2.0}, failing=())
    with pytest.warns(
        UserWarning, match="other results than BLOCK_K=32 BLOCK_M=128 BLOCK_N=64, 4 warps"
    ):
        _launch_writing(_proving(kernel))
    assert gpu.timed == [b, c]
    kernel = WritingKernel(failing={EIGHT_WARPS})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _launch_writing(_proving(kernel), key=("bf16", 8192))
    assert EIGHT_WARPS not in gpu.timed[2:] and gpu.timed[2:] == [b, c]


def test_unproven_config_alone_with_no_proven_one_to_compare_is_dropped(cache, monkeypatch):
    """No proven config can run on the device: there is nothing to prove the unproven one
    against, so the first proven one stays (as pruning keeps one), and its launch fails
    as it would have without the unproven candidate."""
    a, b, c = CONFIGS
    gpu = FakeGPU(monkeypatch, times={EIGHT_WARPS: 1.0}, resources={a: None, b: None, c: None})
    kernel = WritingKernel(failing={a, b, c})
    with pytest.raises(OutOfResources):
        _launch_writing(_proving(kernel))
    assert gpu.timed == [] and {warps for _, _, warps in kernel.launches} == {4}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_same_results_allows_summation_order_and_nothing_more(dtype):
    tolerance = {torch.float32: 1e-3, torch.float64: 1e-9}.get(dtype, 2**-5)
    expected = torch.tensor([4.0, -2.0, 0.5, 0.0], dtype=dtype)
    near = expected + torch.tensor([0.5 * tolerance * 4, 0, 0, 0], dtype=dtype)
    far = expected + torch.tensor([0, 0, 0, 2 * tolerance * 4], dtype=dtype)
    assert _tuning.same_results(expected, expected.clone())
    assert _tuning.same_results(expected, near)
    assert not _tuning.same_results(expected, far)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0], dtype=dtype)
    assert _tuning.same_results(special, special.clone())
    for other in (
        torch.tensor([0.0, float("inf"), -float("inf"), 1.0]),  # a NaN lost
        torch.tensor([float("nan"), -float("inf"), -float("inf"), 1.0]),  # an inf's sign
        torch.tensor([float("nan"), float("inf"), -float("inf"), 3.0]),  # a finite value
    ):
        assert not _tuning.same_results(special, other.to(dtype))
    zeros = torch.zeros(3, dtype=dtype)
    assert _tuning.same_results(zeros, zeros.clone())
    assert not _tuning.same_results(zeros, torch.tensor([0.0, 2**-20, 0.0], dtype=dtype))
    assert _tuning.same_results(zeros[:0], zeros[:0])


def test_same_results_compares_slab_by_slab_with_one_scale(monkeypatch):
    """Slabs of the first dim at a time (a small budget here): the tolerance is still relative
    to the largest magnitude of all, and a difference or a NaN in any slab is found."""
    monkeypatch.setattr(_tuning, "COMPARED_AT_ONCE", 6)
    expected = torch.zeros(5, 2, 3, dtype=torch.float32)
    expected[0, 0, 0] = 1000.0  # the scale, in the first slab
    near = expected.clone()
    near[4, 1, 2] = 0.5  # 5e-4 of the largest magnitude: within 1e-3
    assert _tuning.same_results(expected, near)
    far = expected.clone()
    far[4, 1, 2] = 2.0
    assert not _tuning.same_results(expected, far)
    nan = expected.clone()
    nan[3, 0, 1] = float("nan")
    assert not _tuning.same_results(expected, nan) and _tuning.same_results(nan, nan.clone())
    layout = expected.permute(0, 2, 1)  # strided slabs (a channels-last view)
    assert _tuning.same_results(layout, near.permute(0, 2, 1))
    assert not _tuning.same_results(layout, far.permute(0, 2, 1))


def test_same_results_of_integers_is_equality():
    winners = torch.tensor([0, 2, 1])
    assert _tuning.same_results(winners, winners.clone())
    assert not _tuning.same_results(winners, torch.tensor([0, 2, 2]))


def test_grad_weight_candidates_share_one_reduction_chunk():
    """Every grad-weight config sums positions in the same chunks: whichever config is picked
    (per process or per device), results are bitwise the same."""
    for tuner in (*conv_gemm._BWD_WEIGHT.values(), *conv_1x1._BWD_WEIGHT.values()):
        assert {c["BLOCK_K"] for c in tuner.configs} == {
            16 if _tuning_interpreted() else _gemm_common.WEIGHT_BLOCK_K
        }
    for table in (_gemm_common.GEMM_WEIGHT_TABLE, _gemm_common.NARROW_WEIGHT_TABLE):
        assert {row[2] for row in table} == {_gemm_common.WEIGHT_BLOCK_K}
    # ... and sums each chunk with the same instruction: 64 rows or more per warpgroup (wgmma;
    # fewer rows would run mma.sync, whose sums need not round alike).
    tables = (_gemm_common.GEMM_WEIGHT_TABLE, _gemm_common.NARROW_WEIGHT_TABLE,
              _gemm_common.TAP_TABLE, _gemm_common.FLAT_TABLE)  # fmt: skip
    for bm, _, _, _, warps in (row for table in tables for row in table):
        assert bm >= 64 * max(1, warps // 4)


def _tuning_interpreted() -> bool:
    from triton_kernels import INTERPRET

    return INTERPRET


@pytest.mark.interpret
def test_interpreter_holds_one_small_config_per_tuner():
    if not _tuning_interpreted():
        pytest.skip("only under TRITON_INTERPRET=1")
    tuners = [*conv_gemm._FWD.values(), *conv_gemm._FWD_MAXOUT.values()]
    tuners += conv_gemm._BWD_INPUT.values()
    tuners += [*conv_gemm._BWD_WEIGHT.values(), *conv_1x1._GEMM.values()]
    tuners += conv_1x1._BWD_WEIGHT.values()
    for tuner in tuners:
        assert len(tuner.configs) == 1 and tuner.configs[0]["BLOCK_M"] == 16
    for tuner in (conv_depthwise._FWD, conv_depthwise._BWD_INPUT):
        assert len(tuner.configs) == 1


def test_bucket_is_the_next_power_of_two():
    assert [bucket(n) for n in (1, 2, 3, 100, 128, 129, 12544)] == [1, 2, 4, 128, 128, 256, 16384]


# --- keys as the launchers build them ----------------------------------------------------------


def _captured_keys(monkeypatch, launch):
    keys = []
    monkeypatch.setattr(Tuner, "launch", lambda self, key, grid, args, c: keys.append(key))
    launch()
    return keys


@pytest.mark.parametrize("direction", ["fwd", "bwd_input", "bwd_weight"])
def test_keys_carry_layout_and_geometry_and_bucket_the_rows(monkeypatch, direction):
    def keys_for(batch, channels_last, stride=1, kernel=3):
        x = torch.empty(batch, 32, 10, 10)
        w = torch.empty(32, 32, kernel, kernel)
        out_size = (10 + 2 - kernel) // stride + 1
        y = torch.empty(batch, 32, out_size, out_size)
        if channels_last:
            x, w, y = (t.contiguous(memory_format=torch.channels_last) for t in (x, w, y))
        geo = dict(stride=(stride, stride), padding=(1, 1), dilation=(1, 1), groups=1)
        if direction == "fwd":
            run = lambda: conv_gemm.gemm_conv_forward(
                x, w, None, y, pad_mode="zeros", allow_tf32=False, **geo
            )
        elif direction == "bwd_input":
            run = lambda: conv_gemm.gemm_conv_backward_input(y, w, x, allow_tf32=False, **geo)
        else:
            run = lambda: conv_gemm.gemm_conv_backward_weight(
                x, y, w, pad_mode="zeros", allow_tf32=False, **geo
            )
        return _captured_keys(monkeypatch, run)[0]

    base = keys_for(9, False)
    assert keys_for(10, False) == base  # 900 and 1000 rows share the bucket of 1024
    assert keys_for(9, True) != base  # layout
    assert keys_for(9, False, stride=2) != base  # geometry
    assert keys_for(9, False, kernel=1) != base
    assert keys_for(40, False) != base  # another bucket


def test_a_failed_compile_leaves_no_async_compile_mode_behind(monkeypatch):
    """Triton 3.6's ``AsyncCompileMode`` stays set when its exit raised (a compile's error), its
    pool shut down, so every later compile of the thread would fail; the tuner ends the mode
    itself."""
    import triton

    class Triton36Mode:  # what that version's mode does when its exit raises
        def __init__(self, executor, **options):
            pass

        def __enter__(self):
            _tuning._async_compile_mode().set(self)
            return self

        def __exit__(self, *exc):
            raise RuntimeError("ptxas failed")  # (finalizing a compile; the mode stays set)

    monkeypatch.setattr(triton, "AsyncCompileMode", Triton36Mode)
    monkeypatch.setenv(_tuning.COMPILE_THREADS_ENV, "2")
    monkeypatch.setattr(Tuner, "_warmup", lambda self, *args: None)
    tuner = Tuner("probe", None, [Config.of(1, 1, BLOCK=16), Config.of(2, 1, BLOCK=32)])
    with pytest.raises(RuntimeError, match="ptxas failed"):
        tuner._compile_all(tuner.configs, lambda c: (1,), (), {})
    assert not _tuning._compiling_async()


class _Compiled:
    """A compiled kernel's face as the tuner reads it."""

    n_regs, n_spills = 64, 0
    metadata = type("Metadata", (), {"shared": 1024})()

    def _init_handles(self):
        pass


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_config_that_cannot_compile_for_the_device_is_skipped(threads, monkeypatch):
    """As Triton's own autotuner does (and the GPU check's sweep reports it): ptxas errors and
    failed compile-time assertions drop the config; other compile errors propagate."""
    from triton.compiler.errors import CompilationError, CompileTimeAssertionFailure
    from triton.runtime.errors import PTXASError

    failures = {32: PTXASError("ptxas: too many resources"), 64: None}

    def warmup(self, config, *args):
        error = failures.get(config.kwargs["BLOCK"])
        if error is not None:
            raise error
        return _Compiled()

    monkeypatch.setenv(_tuning.COMPILE_THREADS_ENV, threads)
    monkeypatch.setattr(Tuner, "_warmup", warmup)
    configs = [Config.of(1, 1, BLOCK=b) for b in (16, 32, 64)]
    tuner = Tuner("probe", None, configs)
    resources = tuner._compile_all(configs, lambda c: (1,), (), {})
    assert [resources[c] is None for c in configs] == [False, True, False]
    assert not _tuning._compiling_async()
    failures[64] = CompileTimeAssertionFailure(None, None, "BLOCK too small")
    assert tuner._compile_all(configs, lambda c: (1,), (), {})[configs[2]] is None
    failures[16] = CompilationError(None, None, "a bug of ours")
    with pytest.raises(CompilationError):
        tuner._compile_all(configs, lambda c: (1,), (), {})
    assert not _tuning._compiling_async()
