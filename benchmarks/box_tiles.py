"""``python -m benchmarks.box_tiles``: an experiment — convolution tiles read as TMA boxes.

The implicit GEMMs (``triton_kernels.conv_gemm``) gather each row tile's operand row by row:
every output position of the tile gets its own input address and padding mask for every tap,
issued by every thread as ``cp.async`` copies. On sm_90 the compile report reads 284 to 432
SASS instructions per thread in one main-loop step of their kept tiles, against 256 to 512
tensor-core cycles of matrix work: the loops sit at or past the point where instruction issue,
not the tensor cores, sets the pace (the weight gradient's, ``ratio`` > 1, past it).

Hopper's tensor memory accelerator copies a whole box of a tensor of up to five dimensions with
one instruction, filling coordinates outside the tensor with zeros. A stride-1 convolution's
row tile taken as a box of output positions (``BD × BH × BW``) reads, for each tap, the input box
shifted by the tap: one TMA copy per operand and step, with the zero padding for free. This
module holds two such kernels — forward, and weight gradient (each K step a box of output
positions; one program per (C_out tile, C_in tile, tap), no split over positions yet) — built on
device-side tensor descriptors (``tl.make_tensor_descriptor``: the box shape is the config's,
and a launch needs a global-scratch allocator, ``triton.set_allocator``), and compiles them for
sm_90 on the stand-in GPU beside the flat kernels' rows of the compile report.

Not used by the ops: it has not run on a GPU, and what it costs in wasted positions (boxes
overhanging maps whose sizes are not powers of two) against what it saves in issue is for a GPU
to measure. Limits of the kernels as they are: stride 1, zero padding, one group, channels-last
operands whose strides are multiples of 16 bytes; a channel block overhanging ``C`` multiplies
the next tap's weights by the input's zero fill (exact for finite weights).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import triton
import triton.language as tl

from .standin import require_compiled_kernels

REPORT = Path(__file__).parent / "results" / "compile-report" / "box-tiles-experiment-sm_90"
FLAT_REPORT = Path(__file__).parent / "results" / "compile-report" / "sm_90.json"


@triton.jit
def _box_origin(t, OD, OH, OW, BD: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    """Box ``t``'s image and first output position (boxes tile each image's positions)."""
    tiles_w = tl.cdiv(OW, BW)
    tiles_hw = tl.cdiv(OH, BH) * tiles_w
    tiles = tl.cdiv(OD, BD) * tiles_hw
    n = t // tiles
    t = t % tiles
    return n, (t // tiles_hw) * BD, ((t % tiles_hw) // tiles_w) * BH, (t % tiles_w) * BW


@triton.jit
def box_conv_forward_kernel(
    x_ptr, w_ptr, y_ptr, N, D, H, W, C, C_OUT, OD, OH, OW, PAD_D, PAD_H, PAD_W,
    DIL_D, DIL_H, DIL_W, sx_n, sx_d, sx_h, sx_w, sw_o, sy_n, sy_d, sy_h, sy_w,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    BD: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """``y[n, o, co] = Σ_{tap, ci} x[n, o - pad + tap·dil, ci] · w[co, tap, ci]`` (channels-last
    ``x``, ``y``; ``w`` as ``[C_OUT, taps·C]``): a program per (box of output positions,
    C_OUT tile); each step one tap and channel block, counted without divisions."""
    BM: tl.constexpr = BD * BH * BW
    x_desc = tl.make_tensor_descriptor(
        x_ptr, shape=[N, D, H, W, C], strides=[sx_n, sx_d, sx_h, sx_w, 1],
        block_shape=[1, BD, BH, BW, BLOCK_K],
    )  # fmt: skip
    w_desc = tl.make_tensor_descriptor(
        w_ptr, shape=[C_OUT, KD * KH * KW * C], strides=[sw_o, 1], block_shape=[BLOCK_N, BLOCK_K]
    )
    n, od0, oh0, ow0 = _box_origin(tl.program_id(0), OD, OH, OW, BD, BH, BW)
    co0 = tl.program_id(1) * BLOCK_N
    acc = tl.zeros((BM, BLOCK_N), tl.float32)
    kd, kh, kw, c0 = 0, 0, 0, 0
    for _ in range(0, KD * KH * KW * tl.cdiv(C, BLOCK_K)):
        a = x_desc.load(
            [n, od0 - PAD_D + kd * DIL_D, oh0 - PAD_H + kh * DIL_H, ow0 - PAD_W + kw * DIL_W, c0]
        )
        b = w_desc.load([co0, ((kd * KH + kh) * KW + kw) * C + c0])
        acc = tl.dot(a.reshape(BM, BLOCK_K), b.T, acc)
        c0 += BLOCK_K
        wrap = c0 >= C
        c0 = tl.where(wrap, 0, c0)
        kw += wrap.to(tl.int32)
        wrap = kw == KW
        kw = tl.where(wrap, 0, kw)
        kh += wrap.to(tl.int32)
        wrap = kh == KH
        kh = tl.where(wrap, 0, kh)
        kd += wrap.to(tl.int32)
    rows = tl.arange(0, BM)
    od, oh, ow = od0 + rows // (BH * BW), oh0 + (rows // BW) % BH, ow0 + rows % BW
    co = co0 + tl.arange(0, BLOCK_N)
    y_row = n * sy_n + od * sy_d + oh * sy_h + ow * sy_w
    mask = ((od < OD) & (oh < OH) & (ow < OW))[:, None] & (co < C_OUT)[None, :]
    tl.store(y_ptr + y_row[:, None] + co[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def box_conv_weight_grad_kernel(
    x_ptr, g_ptr, gw_ptr, N, D, H, W, C, C_OUT, OD, OH, OW, PAD_D, PAD_H, PAD_W,
    DIL_D, DIL_H, DIL_W, sx_n, sx_d, sx_h, sx_w, sg_n, sg_d, sg_h, sg_w, sgw_o,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    BD: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """``gw[co, tap, ci] = Σ_{n, o} g[n, o, co] · x[n, o - pad + tap·dil, ci]``: a program per
    (C_OUT tile, C tile, tap); each K step one box of output positions of both operands (the
    output gradient's boxes overhanging the output read zeros)."""
    BK: tl.constexpr = BD * BH * BW
    x_desc = tl.make_tensor_descriptor(
        x_ptr, shape=[N, D, H, W, C], strides=[sx_n, sx_d, sx_h, sx_w, 1],
        block_shape=[1, BD, BH, BW, BLOCK_N],
    )  # fmt: skip
    g_desc = tl.make_tensor_descriptor(
        g_ptr, shape=[N, OD, OH, OW, C_OUT], strides=[sg_n, sg_d, sg_h, sg_w, 1],
        block_shape=[1, BD, BH, BW, BLOCK_M],
    )  # fmt: skip
    co0, ci0, tap = tl.program_id(0) * BLOCK_M, tl.program_id(1) * BLOCK_N, tl.program_id(2)
    kd, kh, kw = tap // (KH * KW), (tap // KW) % KH, tap % KW
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    n, od0, oh0, ow0 = 0, 0, 0, 0
    for _ in range(0, N * tl.cdiv(OD, BD) * tl.cdiv(OH, BH) * tl.cdiv(OW, BW)):
        g = g_desc.load([n, od0, oh0, ow0, co0]).reshape(BK, BLOCK_M)
        a = x_desc.load(
            [n, od0 - PAD_D + kd * DIL_D, oh0 - PAD_H + kh * DIL_H, ow0 - PAD_W + kw * DIL_W, ci0]
        )
        acc = tl.dot(g.T, a.reshape(BK, BLOCK_N), acc)
        ow0 += BW
        wrap = ow0 >= OW
        ow0 = tl.where(wrap, 0, ow0)
        oh0 += wrap.to(tl.int32) * BH
        wrap = oh0 >= OH
        oh0 = tl.where(wrap, 0, oh0)
        od0 += wrap.to(tl.int32) * BD
        wrap = od0 >= OD
        od0 = tl.where(wrap, 0, od0)
        n += wrap.to(tl.int32)
    co, ci = co0 + tl.arange(0, BLOCK_M), ci0 + tl.arange(0, BLOCK_N)
    ptrs = gw_ptr + co[:, None] * sgw_o + tap * C + ci[None, :]
    tl.store(ptrs, acc.to(gw_ptr.dtype.element_ty), mask=(co < C_OUT)[:, None] & (ci < C)[None, :])


# --- launching (tests, and a GPU trial) --------------------------------------------------------
def _pow2(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def box_shape(out_sizes: Sequence[int], positions: int) -> tuple[int, int, int]:
    """``(BD, BH, BW)`` of at most ``positions`` output positions: whole rows first (``BW`` the
    row's power of two), then rows, then planes."""
    od, oh, ow = out_sizes
    bw = min(_pow2(ow), positions)
    bh = min(_pow2(oh), positions // bw)
    bd = min(_pow2(od), positions // (bw * bh))
    return bd, bh, bw


def utilisation(out_sizes: Sequence[int], box: Sequence[int]) -> float:
    """The share of a box grid's positions that are output positions."""
    used = covered = 1
    for size, b in zip(out_sizes, box):
        used *= size
        covered *= -(-size // b) * b
    return used / covered


def boxes_per_image(out_sizes: Sequence[int], box: Sequence[int]) -> int:
    """Boxes per image."""
    tiles = 1
    for size, b in zip(out_sizes, box):
        tiles *= -(-size // b)
    return tiles


def _five(t: Any) -> Any:
    """A channels-last 2-d (N, H, W, C) or 3-d (N, D, H, W, C) tensor as 3-d."""
    return t.unsqueeze(1) if t.dim() == 4 else t


def conv_forward(x: Any, w: Any, padding: Sequence[int], dilation: Sequence[int], *,
                 positions: int = 64, block_n: int = 16, block_k: int = 16) -> Any:  # fmt: skip
    """``conv(x, w)`` of channels-last ``x`` ((N, [D,] H, W, C)) and ``w`` ((C_out, [KD,] KH, KW,
    C)), stride 1: the box forward kernel's result, channels-last."""
    import torch

    x5, w5 = _five(x), _five(w)
    pad, dil = [0] * (5 - x.dim()) + list(padding), [1] * (5 - x.dim()) + list(dilation)
    (n, d, h, wd, c), (c_out, kd, kh, kw, _) = x5.shape, w5.shape
    out = [s + 2 * p - q * (k - 1) for s, p, q, k in zip((d, h, wd), pad, dil, (kd, kh, kw))]
    y = torch.full((n, *out, c_out), float("nan"), dtype=x.dtype, device=x.device)
    box = box_shape(out, positions)
    tiles = n * boxes_per_image(out, box)
    wm = w5.reshape(c_out, -1)
    box_conv_forward_kernel[(tiles, triton.cdiv(c_out, block_n))](
        x5, wm, y, n, d, h, wd, c, c_out, *out, *pad, *dil, *x5.stride()[:4], wm.stride(0),
        *y.stride()[:4], KD=kd, KH=kh, KW=kw, BD=box[0], BH=box[1], BW=box[2],
        BLOCK_N=block_n, BLOCK_K=block_k,
    )  # fmt: skip
    return y if x.dim() == 5 else y.squeeze(1)


def conv_weight_grad(x: Any, g: Any, kernel_size: Sequence[int], padding: Sequence[int],
                     dilation: Sequence[int], *, positions: int = 32, block_m: int = 16,
                     block_n: int = 16) -> Any:  # fmt: skip
    """The weight gradient ((C_out, [KD,] KH, KW, C), float32) of a stride-1 convolution of
    channels-last ``x`` whose output gradient is channels-last ``g``: the box kernel's."""
    import torch

    x5, g5 = _five(x), _five(g)
    lift = 5 - x.dim()
    pad, dil = [0] * lift + list(padding), [1] * lift + list(dilation)
    ks = [1] * lift + list(kernel_size)
    (n, d, h, wd, c), out, c_out = x5.shape, g5.shape[1:4], g5.shape[4]
    gw = torch.full((c_out, *ks, c), float("nan"), dtype=torch.float32, device=x.device)
    box = box_shape(out, positions)
    grid = (triton.cdiv(c_out, block_m), triton.cdiv(c, block_n), ks[0] * ks[1] * ks[2])
    box_conv_weight_grad_kernel[grid](
        x5, g5, gw, n, d, h, wd, c, c_out, *out, *pad, *dil, *x5.stride()[:4],
        *g5.stride()[:4], gw.stride(0), KD=ks[0], KH=ks[1], KW=ks[2],
        BD=box[0], BH=box[1], BW=box[2], BLOCK_M=block_m, BLOCK_N=block_n,
    )  # fmt: skip
    return gw if x.dim() == 5 else gw.squeeze(1)


# --- the static comparison -------------------------------------------------------------------
#: (suite, layer): layers of the benchmark suites the kernels apply to (stride 1), wide and
#: narrow channels, wide and small maps.
LAYERS = (
    ("conv", "vgg16.conv1_2"),
    ("conv", "vgg16.conv3_1"),
    ("conv", "resnet50.layer1.conv2"),
    ("conv", "resnet50.layer3.conv2"),
    ("conv", "resnet50.layer4.conv2"),
    ("conv3d", "unet3d.enc1.conv2"),
    ("conv3d", "unet3d.enc3.conv2"),
)
#: Tile shapes compiled per direction: (output positions or positions per K step, channel tile
#: of C_out, channel tile of C, stages).
CONFIGS = {"forward": (128, 128, 64, 3), "weight gradient": (64, 128, 128, 3)}
FLAT_KERNELS = {"forward": "_conv_fwd_kernel", "weight gradient": "_conv_bwd_weight_kernel"}


def _flat_best(rows: list[dict], case: str, kernel: str) -> dict | None:
    """The flat kernel's kept config with the fewest loop instructions per tensor cycle."""
    best = None
    for r in rows:
        if r["kernel"] != kernel or case not in r["cases"] or r["layout"] != "channels_last":
            continue
        if r["status"] != "ok" or not r.get("loop_instructions") or r.get("pruned"):
            continue
        if r["regs"] >= 255 or (r.get("spill_stores") or 0) + (r.get("spill_loads") or 0):
            continue
        blocks = dict(re.findall(r"(BLOCK_\w)=(\d+)", r["config"]))
        cycles = int(blocks["BLOCK_M"]) * int(blocks["BLOCK_N"]) * int(blocks["BLOCK_K"]) / 2048
        ratio = r["loop_instructions"] * r["num_warps"] / 4 / cycles
        if best is None or ratio < best["ratio"]:
            best = {"config": r["config"], "loop": r["loop_instructions"], "regs": r["regs"],
                    "ratio": round(ratio, 2)}  # fmt: skip
    return best


def compile_box(layer: Any, direction: str) -> dict[str, Any]:
    """Compile one direction's box kernel for ``layer`` (bf16) on the stand-in sm_90 GPU."""
    import torch

    from . import compile_report as cr
    from .standin import stand_in_gpu

    dims = layer.dims
    n, c, *sizes = layer.input_shape
    c_out, _, *ks = layer.weight_shape
    sizes, ks = [1] * (3 - dims) + sizes, [1] * (3 - dims) + ks
    pad = [0] * (3 - dims) + list(layer.arg("padding"))
    out = [s + 2 * p - k + 1 for s, p, k in zip(sizes, pad, ks)]
    positions, tile_m, tile_n, stages = CONFIGS[direction]  # tile_m: of C_out, tile_n: of C
    box = box_shape(out, positions)
    bf16 = torch.bfloat16
    x = torch.empty(n, *sizes, c, dtype=bf16)
    with stand_in_gpu("sm_90", mode="launch"):
        if direction == "forward":
            w = torch.empty(c_out, ks[0] * ks[1] * ks[2] * c, dtype=bf16)
            y = torch.empty(n, *out, c_out, dtype=bf16)
            block_n, block_k = min(tile_m, _pow2(c_out)), min(tile_n, _pow2(c))
            args = (x, w, y, n, *sizes, c, c_out, *out, *pad, 1, 1, 1, *x.stride()[:4],
                    w.stride(0), *y.stride()[:4])  # fmt: skip
            meta = dict(BLOCK_N=block_n, BLOCK_K=block_k)
            kernel, cycles = box_conv_forward_kernel, positions * block_n * block_k / 2048
            tile = f"{positions}×{block_n}×{block_k}"
        else:
            g = torch.empty(n, *out, c_out, dtype=bf16)
            gw = torch.empty(c_out, ks[0] * ks[1] * ks[2] * c, dtype=torch.float32)
            block_m, block_n = min(tile_m, _pow2(c_out)), min(tile_n, _pow2(c))
            args = (x, g, gw, n, *sizes, c, c_out, *out, *pad, 1, 1, 1, *x.stride()[:4],
                    *g.stride()[:4], gw.stride(0))  # fmt: skip
            meta = dict(BLOCK_M=block_m, BLOCK_N=block_n)
            kernel, cycles = box_conv_weight_grad_kernel, block_m * block_n * positions / 2048
            tile = f"{block_m}×{block_n}×{positions}"
        compiled = kernel.warmup(
            *args, KD=ks[0], KH=ks[1], KW=ks[2], BD=box[0], BH=box[1], BW=box[2], **meta,
            grid=(1,), num_warps=4, num_stages=stages,
        )  # fmt: skip
        usage = cr.resource_usage(compiled.asm["cubin"])
        loop = cr.main_loop_instructions(compiled.asm["cubin"])
        features = cr.ptx_features(compiled.asm["ptx"])
    spills = usage.get("local", 0) or 0
    return {
        "tile": f"{tile} w4 s{stages}", "box": "×".join(map(str, box[3 - dims:])),
        "utilisation": round(utilisation(out, box), 3), "loop": loop, "regs": usage["regs"],
        "spills": spills, "shared": compiled.metadata.shared, "tma": features["tma"],
        "wgmma": features["wgmma"], "ratio": round(loop / cycles, 2) if loop else None,
    }  # fmt: skip


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Experiment: convolution tiles read as TMA boxes · sm_90 · triton " + doc["triton"],
        "",
        "See `benchmarks/box_tiles.py` for the kernels and why. Compiled without a GPU "
        f"(`python -m benchmarks.box_tiles`) on {doc['host']}, torch {doc['torch']}, commit "
        f"`{doc['git_sha']}`, {doc['date']}; the flat kernels' rows are the kept "
        "channels-last configs of `sm_90.json` (the same layers, bf16) with the fewest loop "
        "instructions per tensor-core cycle.",
        "",
        "`loop`: SASS instructions per thread in one main-loop step (see `sm_90.md`); "
        "`ratio`: loop instructions per tensor-core cycle of the step's matrix work (a "
        "4-warp block issues about one instruction per thread and cycle: above 1 the step "
        "waits on issue); `use`: the share of the boxes' positions that are output positions "
        "(work spent on the rest is lost). Not timed: nothing here ran on a GPU.",
        "",
        "| layer | direction | flat: config | flat: loop | flat: ratio | box: tile | box | use "
        "| box: loop | box: ratio | box: regs | TMA |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        f, b = r["flat"] or {}, r["box"]
        lines.append(
            f"| {r['layer']} | {r['direction']} | {f.get('config', '–')} "
            f"| {f.get('loop', '–')} | {f.get('ratio', '–')} | {b['tile']} | {b['box']} "
            f"| {b['utilisation']:.0%} "
            f"| {b['loop']} | {b['ratio']} | {b['regs']}"
            + (f" (spills {b['spills']} B)" if b["spills"] else "")
            + f" | {b['tma']} |"
        )
    return "\n".join([*lines, ""])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.box_tiles", description=__doc__)
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    require_compiled_kernels()
    import torch

    from .results import _cpu_name, git_dirty, git_sha
    from .suites import SUITES

    flat_rows = json.loads(FLAT_REPORT.read_text())["rows"]
    rows = []
    for suite, name in LAYERS:
        layer = next(x for x in SUITES[suite].layers if x.name == name)
        for direction, kernel in FLAT_KERNELS.items():
            case = f"{suite}:{name}"
            flat = _flat_best(flat_rows, case, kernel)
            row = {"layer": case, "direction": direction, "flat": flat}
            row["box"] = compile_box(layer, direction)
            print(json.dumps(row), flush=True)
            rows.append(row)
    doc = {
        "triton": triton.__version__, "torch": torch.__version__, "host": f"{_cpu_name()}",
        "git_sha": git_sha(), "git_dirty": git_dirty(), "configs": CONFIGS, "rows": rows,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    text = markdown(doc)
    print(text)
    if not args.no_write:
        REPORT.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
        REPORT.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
