"""``python -m benchmarks.compile_report``: what it reads out of PTX, and — compiled for sm_90
with the installed Triton, no GPU — the key kernel variants the benchmarks launch.

The compile runs in a subprocess (this test session imported the kernels under Triton's
interpreter) with a fresh Triton cache, so every variant is really compiled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

from benchmarks import compile_report as cr
from benchmarks.standin import SM90_SHARED_BYTES, Launch, PointerArg

ROOT = Path(__file__).resolve().parents[1]

#: (suite:layer) of the key variants: 3×3 and 1×1 convolution (forward, grad-input,
#: grad-weight), depthwise, max pooling and ×2 nearest upsampling, channels_last, bf16.
KEY_LAYERS = (
    "conv:resnet50.layer3.conv2",
    "conv:resnet50.layer3.conv1",
    "depthwise:mobilenetv2.features.3.dw",
    "pool:resnet50.maxpool",
    "upsample:unet.up3",
    "pool:resnet50.avgpool",
    "upsample:fpn.p4_p3",
    "pool:alexnet.pool1",
    "depthwise:mobilenetv2.features.15.dw",
    "transposed:unet.up1",
    "conv:resnet50.conv1",
)
#: The RGB stem: its forward and grad-weight run the tap loop over windows of a padded copy
#: (``triton_kernels.conv_window``), fed by vector loads whatever the input's layout.
STEM = KEY_LAYERS[-1]
_STEM_GEMMS = {"_conv_fwd_kernel", "_conv_bwd_weight_kernel"}
#: The kernels of each convolution's forward, grad-input and grad-weight: a 1×1 convolution's
#: forward and grad-input are one plain GEMM kernel (the weight read transposed).
CONVOLUTIONS = {
    KEY_LAYERS[0]: {"_conv_fwd_kernel", "_conv_bwd_input_kernel", "_conv_bwd_weight_kernel"},
    KEY_LAYERS[1]: {"_conv1x1_kernel", "_conv1x1_bwd_weight_kernel"},
}

#: Memory-bound kernels whose widest accesses must stay 16-byte vectors in every layout:
#: (layer, kernel) -> which accesses. ResNet's global average pooling reads its planes of 49
#: elements from the aligned boundary before each and writes its input gradient in memory
#: order; an FPN's ×2 upsampling of 50×68 maps reads and writes
#: rows of 68 and 136 elements, whose alignment Triton sees only as they are passed in units;
#: MobileNetV2's depthwise layers on 7×7 maps read their NCHW rows of 7 from the 16-byte
#: boundary before each (the weight's taps stay scalar loads, one a row).
_VECTOR_ACCESSES = {
    ("depthwise:mobilenetv2.features.15.dw", "_conv_depthwise_rows_kernel"): "ld_global_bytes",
    ("pool:resnet50.avgpool", "_global_pool_fwd_kernel"): "ld_global_bytes",
    ("pool:resnet50.avgpool", "_global_pool_bwd_kernel"): "st_global_bytes",
    ("upsample:fpn.p4_p3", "_upsample_int_fwd_kernel"): "st_global_bytes",
    ("upsample:fpn.p4_p3", "_upsample_int_bwd_kernel"): "ld_global_bytes",
}
#: ... and those all of whose stores must be vectors of at least so many bytes: ResNet's max
#: pooling on NCHW rows (the row-taps forward) stores a vector's outputs whole — at stride 2
#: the 4 bf16 values whose source columns are one 16-byte span, and their int64 indices.
_VECTOR_STORES_ONLY = {
    ("pool:resnet50.maxpool", "_pool_rows_taps_fwd_kernel"): 8,
    # U-Net's 2×2 up-convolution at stride 2 into NCHW: both column phases of a row stored
    # interleaved, whole rows (``conv_gemm.paired_width``) — at batch 8, whose rows Triton
    # sees divided by 16 only through the width.
    ("transposed:unet.up1", "_conv_bwd_input_kernel"): 16,
}
#: ... and those all of whose loads must be: the depthwise kernels over channels-last
#: activations (the NCHW rows take the row kernels), which read the weight repacked with its
#: channels innermost, so a tap's weights for a vector of channels are one vector too; and
#: AlexNet's max pooling on NCHW rows of 55, read from the 16-byte boundary before each row,
#: and its input gradient, which reads the grad_out and index rows of 27 so.
_VECTOR_LOADS_ONLY = {
    ("depthwise:mobilenetv2.features.3.dw", "_conv_depthwise_fwd_kernel"): 16,
    ("depthwise:mobilenetv2.features.3.dw", "_conv_depthwise_bwd_input_kernel"): 16,
    ("pool:alexnet.pool1", "_pool_rows_taps_fwd_kernel"): 16,
    ("pool:alexnet.pool1", "_pool_rows_taps_bwd_input_kernel"): 16,
}

#: The kernels that store activations (the forward, the input gradient).
_ACTIVATION_STORES = {"_conv_fwd_kernel", "_conv_bwd_input_kernel", "_conv1x1_kernel"}

PTX = """
    cp.async.cg.shared.global [ %r1 + 0 ], [ %rd4 + 0 ], 0x10, %r2;
    cp.async.cg.shared.global.L2::128B [ %r3 + 0 ], [ %rd5 + 0 ], 16, %r4;
    cp.async.ca.shared.global [ %r3 + 0 ], [ %rd5 + 0 ], 4, %r4;
    wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%f1}, %rd1, %rd2, 1, 1, 1, 0, 1;
    mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1}, {%r1}, {%r2}, {%f2};
    ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
    @%p1 ld.global.L1::evict_last.b16 { %rs1 }, [ %rd2 + 0 ];
    st.global.v2.b32 [ %rd3 + 0 ], { %r5, %r6 };
    st.global.b32 [ %rd3 + 0 ], { %r5 };
    cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r1], [%rd1, {%r2, %r3}], [%r4];
"""


def test_ptx_features_are_read():
    f = cr.ptx_features(PTX)
    assert f["wgmma"] == 1 and f["mma_sync"] == 1 and f["tma"] == 1
    assert f["cp_async_bytes"] == {16: 2, 4: 1}
    assert f["ld_global_bytes"] == {16: 1, 2: 1}
    assert f["st_global_bytes"] == {8: 1, 4: 1}


# nvdisasm's shape: an outer loop (.L_x_0) around an inner one (.L_x_1) holding the matrix
# instructions, and a loop without any (.L_x_2).
SASS = """
.L_x_0:
        /*0010*/                   IMAD R1, R2, R3, RZ ;
.L_x_1:
        /*0020*/                   LDG.E.U16 R4, desc[UR4][R2.64] ;
        /*0030*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], R24 ;
        /*0040*/               @P0 BRA `(.L_x_1) ;
        /*0050*/               @P1 BRA `(.L_x_0) ;
.L_x_2:
        /*0060*/                   IADD3 R5, R5, 0x1, RZ ;
        /*0070*/               @P2 BRA `(.L_x_2) ;
"""


def test_main_loop_is_the_innermost_loop_around_the_matrix_instructions():
    assert cr.loop_instructions(SASS) == 3
    assert cr.loop_instructions(SASS.replace("HGMMA", "FFMA")) is None


def test_every_instruction_counts_once():
    assert cr.sass_instructions(SASS) == 7


def test_a_load_loop_is_the_innermost_loop_around_global_loads():
    assert cr.loop_instructions(SASS, cr.LOAD_OPCODES) == 3
    assert cr.loop_instructions(SASS.replace("LDG", "LDS"), cr.LOAD_OPCODES) is None


def test_main_loop_is_the_inner_loop_with_the_most_matrix_instructions():
    """A merged groups' kernel has a second, narrower matrix loop after its main loop (the
    tile summed again one group at a time): shorter, but not the main loop."""
    second = """
.L_x_3:
        /*0080*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], R24 ;
        /*0090*/               @P3 BRA `(.L_x_3) ;
"""
    main = SASS.replace(
        "        /*0040*/",
        "        /*0038*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR9], R24 ;\n"
        "        /*0040*/",
    )
    assert cr.loop_instructions(main + second) == 4


def test_of_equally_wide_matrix_loops_the_main_loop_is_the_longest():
    """A weight gradient with a bias column tile has a loop as wide as the weight tiles' but
    shorter, and first: the weight tiles' loop is the main one."""
    bias_tile = """
.L_x_4:
        /*0008*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], R24 ;
        /*0009*/               @P4 BRA `(.L_x_4) ;
"""
    assert cr.loop_instructions(bias_tile + SASS) == 3


def test_a_branch_back_from_after_the_exit_makes_no_loop():
    """TMA-fed kernels retry a barrier wait out of line, after ``EXIT``, branching back into the
    main loop: that span is no loop, however long."""
    retry = """
        /*0100*/                   EXIT ;
        /*0110*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4], R0 ;
        /*0120*/               @!P0 BRA `(.L_x_1) ;
"""
    assert cr.loop_instructions(SASS + retry) == 3


SPILLING_KERNEL = """
import json
import triton
import triton.language as tl
from triton.runtime.jit import MockTensor

from benchmarks import compile_report as cr
from benchmarks.standin import require_compiled_kernels, stand_in_gpu

require_compiled_kernels()
import torch


@triton.jit
def square(x, y, B: tl.constexpr):
    i = tl.arange(0, B)
    a = tl.load(x + i[:, None] * B + i[None, :])
    tl.store(y + i[:, None] * B + i[None, :], tl.dot(a, a))


with stand_in_gpu("sm_90", mode="capture"):
    t = MockTensor(torch.float16)
    # a 128 x 128 fp32 accumulator in two warps: 256 values per thread, over the 255 registers
    k = square.warmup(t, t, B=128, num_warps=2, grid=(1,))
    print(json.dumps({**cr.resource_usage(k.asm["cubin"]), **cr.ptxas_spills(k)}))
"""


def test_spills_are_read_from_ptxas(tmp_path):
    script = tmp_path / "spill.py"
    script.write_text(SPILLING_KERNEL)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TRITON_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("TRITON_INTERPRET", None)
    out = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["regs"] > 0 and got["stack"] > 0
    assert got["spill_stores"] > 0 and got["spill_loads"] > 0
    row = {"spill_stores": got["spill_stores"], "spill_loads": got["spill_loads"]}
    assert cr.spill_bytes(row) == got["spill_stores"] + got["spill_loads"]
    assert cr.spill_bytes({**row, "spill_stores_unknown": True}) is None


def _launch(kernel, *args, **kwargs):
    return Launch(kernel, args, kwargs)


def test_plan_compiles_each_specialisation_and_config_once():
    import torch

    cfgs = [types.SimpleNamespace(kwargs={"B": 64}, num_warps=4, num_stages=3) for _ in range(3)]
    tuner = types.SimpleNamespace(fn=types.SimpleNamespace(__name__="k"), configs=cfgs)
    x = PointerArg(torch.empty(8, dtype=torch.bfloat16))
    a = _launch(tuner, x, 32, 7, FLAT=False)
    b = _launch(tuner, x, 64, 9, FLAT=False)  # specialised alike: 32/64 divisible by 16, 7/9 not
    c = _launch(tuner, x, 33, 7, FLAT=False)  # 33 is not divisible by 16: compiled apart
    d = _launch(tuner, x, 32, 7, FLAT=True)  # another variant
    jobs = cr.plan(
        [("s:l1", "cl", a), ("s:l2", "cl", b), ("s:l3", "cl", c), ("s:l4", "cl", d)], "all"
    )
    assert len(jobs) == 3 * 3
    assert jobs[0].cases == ["s:l1", "s:l2"] and jobs[0].dtype == "bfloat16"
    assert [j.config_index for j in jobs[:3]] == [0, 1, 2]
    assert len(cr.plan([("s:l1", "cl", a)], "first")) == 1
    assert cr.plan([("s:l1", "cl", a)], "all", known=jobs) == []
    assert cr.plan([("s:l1", "nchw", a)], "all", known=jobs) != []  # another layout


def test_plan_compiles_the_configs_the_check_runs():
    import torch

    from benchmarks import check_capture

    def config(block, stages):
        return types.SimpleNamespace(
            meta=(("B", block),), kwargs={"B": block}, num_warps=4, num_stages=stages
        )

    big, small = config(128, 3), config(32, 2)
    tuner = types.SimpleNamespace(fn=types.SimpleNamespace(__name__="k"), configs=[big, small])
    x = PointerArg(torch.empty(8, dtype=torch.float64))
    [pinned] = cr.plan([("s:l", "cl", _launch(tuner, x, 32))], "pinned")
    assert pinned.config is small and pinned.config_index == 1  # the smallest footprint
    # As the check runs them: an op case its pinned config, a sweep case every config, and
    # the int64 offset path of either the pinned one.
    sweep, op = "conv-config | 3x3 forward | fp32 | nchw", "conv | 3x3 | fp64 | nchw"
    captured = [(sweep, "nchw", _launch(tuner, x, 16)), (op, "nchw", _launch(tuner, x, 7))]
    captured.append((op + check_capture.INT64, "nchw", _launch(tuner, x, 9, USE_INT64=True)))
    jobs = cr.plan(captured, check_capture.configs_as_run)
    assert [(j.cases, j.config_index) for j in jobs] == [
        ([sweep], 0),
        ([sweep], 1),
        ([op], 1),
        ([op + check_capture.INT64], 1),
    ]


def _compile_report(tmp_path: Path, *args: str) -> tuple[Any, dict]:
    """Run the compile report for sm_90 in a fresh Triton cache: its process and its JSON."""
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "benchmarks.compile_report", "--target", "sm_90", *args]
    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp_path / "triton-cache"))
    env.pop("TRITON_INTERPRET", None)
    env.pop("TORCHCONV_EXT_POISON", None)
    out = subprocess.run(
        [*cmd, "--json", str(report)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert report.exists() and report.with_suffix(".md").exists(), out.stdout + out.stderr
    return out, json.loads(report.read_text())


def test_key_variants_compile_for_sm90_without_spills_and_use_wgmma(tmp_path):
    """Strict: every key variant compiles, spills nothing, fits in 227 KiB of shared memory,
    and the bf16 convolutions use wgmma fed by 16-byte cp.async (8-byte ones too for NCHW rows
    of 14×14 maps read in place), whatever the caller's layout: channels-last, NCHW, or a
    channels-last input with an NCHW weight; the RGB stem's forward and grad-weight by 8-byte
    ones (its windows), with no element-wise loads; the global pooling's forward and input
    gradient and an FPN's upsampling of rows no multiple of 16 elements by 16-byte vectors; the
    max pooling's NCHW forward by vector stores only (8-byte values, 16-byte indices), and so
    U-Net's stride-2 transposed convolution (16-byte rows); the depthwise kernels over channels-last,
    and AlexNet's max pooling over NCHW rows of 55 (forward and input gradient), by 16-byte
    loads only; MobileNetV2's
    depthwise layers over NCHW rows of 7 by 16-byte row loads."""
    out, doc = _compile_report(
        tmp_path,
        *("--suite", "conv", "depthwise", "pool", "upsample", "transposed"),
        *("--layers", *KEY_LAYERS),
        *("--dtype", "bf16", "--layout", "cl", "nchw", "cl-input", "--configs", "first"),
    )
    rows = doc["rows"]
    for case in KEY_LAYERS:
        assert any(case in r["cases"] for r in rows), f"{case}: no kernel captured"
    for case, kernels in CONVOLUTIONS.items():  # forward, grad-input and grad-weight
        assert {r["kernel"] for r in rows if case in r["cases"]} == kernels, case
    failures = []
    for r in rows:
        what = (
            f"{r['variant']} [{r['config']}] {r['dtype']} {r['layout']} ({', '.join(r['cases'])})"
        )
        if r["status"] != "ok":
            failures.append(f"{what}: does not compile: {r['errors']}")
            continue
        spills = cr.spill_bytes(r)
        if spills is None:
            failures.append(f"{what}: ptxas did not report its spills")
        elif spills:
            failures.append(f"{what}: spills {spills} bytes")
        if r["shared"] > SM90_SHARED_BYTES:
            failures.append(f"{what}: needs {r['shared']} B of shared memory > 227 KiB")
        if any(c in CONVOLUTIONS for c in r["cases"]):
            if not r["wgmma"]:
                failures.append(f"{what}: no wgmma (mma.sync: {r['mma_sync']})")
            # 16-byte cp.async, but for the 1×1 GEMM's NCHW rows read in place, which are
            # 8-byte vectors where 4 positions per image are the longest aligned run (14×14).
            sizes = {int(k) for k in r["cp_async_bytes"]}
            allowed = {8, 16} if r["kernel"].startswith("_conv1x1") else {16}
            if not sizes or not sizes <= allowed:
                failures.append(f"{what}: cp.async sizes {sorted(sizes) or 'none'}, not 16 B")
            # Activations are stored as vectors in every layout (NCHW ones straight from the
            # tiles where the positions per image allow, as at 14×14: 8-byte vectors).
            stores = {int(k) for k in r["st_global_bytes"]}
            if r["kernel"] in _ACTIVATION_STORES and min(stores, default=0) < 8:
                failures.append(f"{what}: stores of {sorted(stores)} B, not vectors")
        if STEM in r["cases"] and r["kernel"] in _STEM_GEMMS:
            # Windows of 7 taps × 4 channels: 8-byte runs, never element-wise gathers.
            sizes = {int(k) for k in r["cp_async_bytes"]}
            if not r["wgmma"] or not sizes or not sizes <= {8, 16} or r["ld_global_bytes"]:
                failures.append(
                    f"{what}: wgmma {r['wgmma']}, cp.async {sorted(sizes)} B, "
                    f"plain loads {r['ld_global_bytes']}: not the windows' vector loads"
                )
        for (case, kernel), accesses in _VECTOR_ACCESSES.items():
            if case in r["cases"] and r["kernel"] == kernel and max(map(int, r[accesses])) < 16:
                failures.append(f"{what}: {accesses} {r[accesses]}: no 16-byte vectors")
        for only, accesses in ((_VECTOR_STORES_ONLY, "st_global_bytes"),
                               (_VECTOR_LOADS_ONLY, "ld_global_bytes")):  # fmt: skip
            for (case, kernel), least in only.items():
                sizes = r[accesses]
                if case in r["cases"] and r["kernel"] == kernel and min(map(int, sizes)) < least:
                    failures.append(f"{what}: {accesses} {sizes}: not all {least}-byte vectors")
    for case, kernel in [*_VECTOR_ACCESSES, *_VECTOR_STORES_ONLY, *_VECTOR_LOADS_ONLY]:
        assert any(case in r["cases"] and r["kernel"] == kernel for r in rows), (case, kernel)
    stem_kernels = {r["kernel"] for r in rows if STEM in r["cases"]}
    assert {"_window_pack_kernel", *_STEM_GEMMS} <= stem_kernels, stem_kernels
    assert not failures, "\n".join(failures)
    assert out.returncode == 0, out.stdout + out.stderr


def test_configs_our_tuner_prunes_are_marked():
    """Per variant, dtype and layout, the rows the tuner's pruning drops (spills, the register
    cap, too much shared memory) read ``(pruned)``; fixed-config kernels are never marked."""

    def row(config, regs, spills, shared, tuned=True, variant="k[A=1]"):
        return dict(variant=variant, dtype="bf16", layout="NCHW", config=config, tuned=tuned,
                    pruned=False, status="ok", regs=regs, spill_stores=spills, spill_loads=0,
                    shared=shared)  # fmt: skip

    table = [
        row("a", 200, 0, 1000),
        row("b", 255, 0, 1000),  # at the register cap
        row("c", 180, 64, 1000),  # spills
        row("d", 100, 0, SM90_SHARED_BYTES + 1),  # does not fit
        row("e", 255, 512, 1000, variant="k[A=2]"),  # nothing clean: the least bad stays
        row("f", 255, 128, 1000, variant="k[A=2]"),
        row("fixed", 255, 512, 1000, tuned=False),
    ]
    cr.mark_tuner_pruned(table, SM90_SHARED_BYTES)
    assert [r["config"] for r in table if r["pruned"]] == ["b", "c", "d", "e"]


#: GPU check cases whose kernels the interpreter runs but no benchmark launches: fp64 and TF32
#: matrix products (the forward, grad-input and grad-weight of a biased 3×3 with a fused ReLU).
CHECK_CASES = (
    "resnet50.layer1.0.conv2 3x3 64->64 56x56 +bias+relu | fp64 | channels_last",
    "resnet50.layer1.0.conv2 3x3 64->64 56x56 +bias+relu | tf32 | nchw",
)


def test_the_gpu_checks_kernels_compile_for_sm90(tmp_path):
    """``--check``: what ``python -m torchconv_ext check`` launches on a GPU — here its fp64 and
    TF32 convolutions — compiles for sm_90, each kernel on its int64 offset path too (which
    once did not compile, while the interpreter ran it)."""
    out, doc = _compile_report(tmp_path, "--check", "--layers", *CHECK_CASES)
    assert doc["suites"] == ["check"] and doc["configs"] == "as-run"
    assert not doc["capture_failures"]
    rows = doc["rows"]
    cases = {case for r in rows for case in r["cases"]}
    assert len(cases) == 4, cases  # each case, and each on its int64 offset path
    kernels = {"_conv_fwd_kernel", "_conv_bwd_input_kernel", "_conv_bwd_weight_kernel"}
    for dtype, precision in (("float64", "ieee"), ("float32", "tf32")):
        for offsets in ("USE_INT64=0", "USE_INT64=1"):
            mine = [r for r in rows if r["dtype"] == dtype and offsets in r["variant"]]
            assert kernels <= {r["kernel"] for r in mine}, (dtype, offsets)
            gemms = [r for r in mine if r["kernel"] in kernels]
            assert all(f"PRECISION={precision}" in r["variant"] for r in gemms), dtype
    broken = [f"{r['variant']} {r['dtype']}: {r['errors']}" for r in rows if r["status"] != "ok"]
    assert not broken, "\n".join(broken)
    assert out.returncode == 0, out.stdout + out.stderr
