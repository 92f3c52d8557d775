"""``python -m benchmarks.box_tiles``: an experiment — convolution tiles read as TMA boxes.

The implicit GEMMs (``triton_kernels.conv_gemm``) gather each row tile's operand row by row:
every output position of the tile gets its own input address and padding mask for every tap,
issued by every thread as ``cp.async`` copies. On sm_90 the compile report reads 240 to 344
SASS instructions per thread in one main-loop step of their best kept tiles, against 256 to 512
tensor-core cycles of matrix work: the loops sit near the point where instruction issue, not
the tensor cores, sets the pace (the weight gradient's at it).

Hopper's tensor memory accelerator copies a whole box of a tensor of up to five dimensions with
one instruction, filling coordinates outside the tensor with zeros. A stride-1 convolution's
row tile taken as a box of output positions (``BD × BH × BW``) reads, for each tap, the input box
shifted by the tap: one TMA copy per operand and step, with the zero padding for free. This
module holds two such kernels — forward, and weight gradient (each K step a box of output
positions, the boxes split over programs and their partial sums added after) — built on
device-side tensor descriptors (``tl.make_tensor_descriptor``: the box shape is the config's,
and a launch needs a global-scratch allocator, ``triton.set_allocator``), and compiles them for
sm_90 on the stand-in GPU beside the flat kernels' rows of the compile report.

Not used by the ops: it has not run on a GPU, and what it costs in wasted positions (boxes
overhanging maps whose sizes are not powers of two) against what it saves in issue is for a GPU
to measure: ``--time`` checks both kernels against torch on the layers below at their training
size (bf16) and times them beside our flat kernels and cuDNN, writing
``results/<device>/box-tiles.{json,md}`` after every case (``benchmarks/gpu_run.sh`` runs it
last, in 40 s). Limits of the kernels as they are: stride 1, zero padding, one group, channels-last
operands whose strides are multiples of 16 bytes; a channel block overhanging ``C`` multiplies
the next tap's weights by the input's zero fill (exact for finite weights).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import triton
import triton.language as tl

from triton_kernels._common import COMPILE_OPTIONS
from triton_kernels.conv_gemm import _next_tap

from .results import with_ending
from .standin import require_compiled_kernels

RESULTS_ROOT = Path(__file__).parent / "results"
REPORT = RESULTS_ROOT / "compile-report" / "box-tiles-experiment-sm_90"
FLAT_REPORT = RESULTS_ROOT / "compile-report" / "sm_90.json"


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
def _boxes(ptr, N, D, H, W, C, s_n, s_d, s_h, s_w, BD: tl.constexpr, BH: tl.constexpr,
           BW: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
    """A channels-last tensor (N, D, H, W, C) read as boxes of BD × BH × BW positions and
    BLOCK_C channels."""
    return tl.make_tensor_descriptor(
        ptr, shape=[N, D, H, W, C], strides=[s_n, s_d, s_h, s_w, 1],
        block_shape=[1, BD, BH, BW, BLOCK_C],
    )  # fmt: skip


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
    x_desc = _boxes(x_ptr, N, D, H, W, C, sx_n, sx_d, sx_h, sx_w, BD, BH, BW, BLOCK_K)
    w_desc = tl.make_tensor_descriptor(
        w_ptr, shape=[C_OUT, KD * KH * KW * C], strides=[sw_o, 1], block_shape=[BLOCK_N, BLOCK_K]
    )
    n, od0, oh0, ow0 = _box_origin(tl.program_id(0), OD, OH, OW, BD, BH, BW)
    co0 = tl.program_id(1) * BLOCK_N
    acc = tl.zeros((BM, BLOCK_N), tl.float32)
    c_blocks = tl.cdiv(C, BLOCK_K)
    kd, kh, kw, c_block = 0, 0, 0, 0
    for _ in range(0, KD * KH * KW * c_blocks):
        c0 = c_block * BLOCK_K
        a = x_desc.load(
            [n, od0 - PAD_D + kd * DIL_D, oh0 - PAD_H + kh * DIL_H, ow0 - PAD_W + kw * DIL_W, c0]
        )
        b = w_desc.load([co0, ((kd * KH + kh) * KW + kw) * C + c0])
        acc = tl.dot(a.reshape(BM, BLOCK_K), b.T, acc)
        c_block, kw, kh, kd = _next_tap(c_block, kw, kh, kd, c_blocks, KW, KH)
    rows = tl.arange(0, BM)
    od, oh, ow = od0 + rows // (BH * BW), oh0 + (rows // BW) % BH, ow0 + rows % BW
    co = co0 + tl.arange(0, BLOCK_N)
    y_row = n * sy_n + od * sy_d + oh * sy_h + ow * sy_w
    mask = ((od < OD) & (oh < OH) & (ow < OW))[:, None] & (co < C_OUT)[None, :]
    tl.store(y_ptr + y_row[:, None] + co[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def box_conv_weight_grad_kernel(
    x_ptr, g_ptr, gw_ptr, N, D, H, W, C, C_OUT, OD, OH, OW, PAD_D, PAD_H, PAD_W,
    DIL_D, DIL_H, DIL_W, sx_n, sx_d, sx_h, sx_w, sg_n, sg_d, sg_h, sg_w, sgw_s, sgw_o,
    BOXES_PER_SPLIT,
    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    BD: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """``gw[s, co, tap, ci] = Σ_{boxes of split s} g[n, o, co] · x[n, o - pad + tap·dil, ci]``:
    a program per (C_OUT tile, C tile, tap and split of the output's boxes); each K step one box
    of output positions of both operands (the output gradient's boxes overhanging the output
    read zeros). The splits' partial sums are added afterwards, in a fixed order."""
    BK: tl.constexpr = BD * BH * BW
    x_desc = _boxes(x_ptr, N, D, H, W, C, sx_n, sx_d, sx_h, sx_w, BD, BH, BW, BLOCK_N)
    g_desc = _boxes(g_ptr, N, OD, OH, OW, C_OUT, sg_n, sg_d, sg_h, sg_w, BD, BH, BW, BLOCK_M)
    co0, ci0 = tl.program_id(0) * BLOCK_M, tl.program_id(1) * BLOCK_N
    split, tap = tl.program_id(2) // (KD * KH * KW), tl.program_id(2) % (KD * KH * KW)
    kd, kh, kw = tap // (KH * KW), (tap // KW) % KH, tap % KW
    boxes = N * tl.cdiv(OD, BD) * tl.cdiv(OH, BH) * tl.cdiv(OW, BW)
    first = split * BOXES_PER_SPLIT
    n, od0, oh0, ow0 = _box_origin(first, OD, OH, OW, BD, BH, BW)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for _ in range(first, tl.minimum(first + BOXES_PER_SPLIT, boxes)):
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
    ptrs = gw_ptr + split * sgw_s + co[:, None] * sgw_o + tap * C + ci[None, :]
    tl.store(ptrs, acc, mask=(co < C_OUT)[:, None] & (ci < C)[None, :])


# --- launching (tests, and a GPU trial) --------------------------------------------------------
def output_sizes(
    sizes: Sequence[int],
    padding: Sequence[int],
    kernel: Sequence[int],
    dilation: Sequence[int] | None = None,
) -> list[int]:
    """A stride-1 convolution's output sizes."""
    dilation = dilation or [1] * len(sizes)
    return [s + 2 * p - q * (k - 1) for s, p, q, k in zip(sizes, padding, dilation, kernel)]


def channel_tiles(direction: str, c_out: int, c: int) -> tuple[int, int]:
    """The (C_out, C) channel tiles of ``CONFIGS[direction]``, no wider than the channels."""
    _, tile_out, tile_in, _ = CONFIGS[direction]
    return min(tile_out, triton.next_power_of_2(c_out)), min(tile_in, triton.next_power_of_2(c))


def box_shape(out_sizes: Sequence[int], positions: int) -> tuple[int, int, int]:
    """``(BD, BH, BW)`` of at most ``positions`` output positions: whole rows first (``BW`` the
    row's power of two), then rows, then planes."""
    od, oh, ow = out_sizes
    bw = min(triton.next_power_of_2(ow), positions)
    bh = min(triton.next_power_of_2(oh), positions // bw)
    bd = min(triton.next_power_of_2(od), positions // (bw * bh))
    return bd, bh, bw


def utilisation(out_sizes: Sequence[int], box: Sequence[int]) -> float:
    """The share of a box grid's positions that are output positions."""
    return math.prod(out_sizes) / (boxes_per_image(out_sizes, box) * math.prod(box))


def boxes_per_image(out_sizes: Sequence[int], box: Sequence[int]) -> int:
    """Boxes per image."""
    return math.prod(triton.cdiv(size, b) for size, b in zip(out_sizes, box))


def _five(t: Any) -> Any:
    """A channels-last 2-d (N, H, W, C) or 3-d (N, D, H, W, C) tensor as 3-d."""
    return t.unsqueeze(1) if t.dim() == 4 else t


def conv_forward(x: Any, w: Any, padding: Sequence[int], dilation: Sequence[int], *,
                 positions: int = 64, block_n: int = 16, block_k: int = 16,
                 num_stages: int = 3) -> Any:  # fmt: skip
    """``conv(x, w)`` of channels-last ``x`` ((N, [D,] H, W, C)) and ``w`` ((C_out, [KD,] KH, KW,
    C)), stride 1: the box forward kernel's result, channels-last."""
    import torch

    x5, w5 = _five(x), _five(w)
    pad, dil = [0] * (5 - x.dim()) + list(padding), [1] * (5 - x.dim()) + list(dilation)
    (n, d, h, wd, c), (c_out, kd, kh, kw, _) = x5.shape, w5.shape
    out = output_sizes((d, h, wd), pad, (kd, kh, kw), dil)
    y = torch.full((n, *out, c_out), float("nan"), dtype=x.dtype, device=x.device)
    box = box_shape(out, positions)
    tiles = n * boxes_per_image(out, box)
    wm = w5.reshape(c_out, -1)
    box_conv_forward_kernel[(tiles, triton.cdiv(c_out, block_n))](
        x5, wm, y, n, d, h, wd, c, c_out, *out, *pad, *dil, *x5.stride()[:4], wm.stride(0),
        *y.stride()[:4], KD=kd, KH=kh, KW=kw, BD=box[0], BH=box[1], BW=box[2],
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4, num_stages=num_stages, **COMPILE_OPTIONS,
    )  # fmt: skip
    return y if x.dim() == 5 else y.squeeze(1)


def conv_weight_grad(x: Any, g: Any, kernel_size: Sequence[int], padding: Sequence[int],
                     dilation: Sequence[int], *, positions: int = 32, block_m: int = 16,
                     block_n: int = 16, splits: int = 2, num_stages: int = 3) -> Any:  # fmt: skip
    """The weight gradient ((C_out, [KD,] KH, KW, C), float32) of a stride-1 convolution of
    channels-last ``x`` whose output gradient is channels-last ``g``: the box kernel's, the
    output's boxes in ``splits`` parts summed afterwards."""
    import torch

    x5, g5 = _five(x), _five(g)
    lift = 5 - x.dim()
    pad, dil = [0] * lift + list(padding), [1] * lift + list(dilation)
    ks = [1] * lift + list(kernel_size)
    (n, d, h, wd, c), out, c_out = x5.shape, g5.shape[1:4], g5.shape[4]
    box = box_shape(out, positions)
    per_split = -(-n * boxes_per_image(out, box) // splits)
    parts = torch.full((splits, c_out, *ks, c), float("nan"), dtype=torch.float32, device=x.device)
    taps = ks[0] * ks[1] * ks[2]
    grid = (triton.cdiv(c_out, block_m), triton.cdiv(c, block_n), taps * splits)
    box_conv_weight_grad_kernel[grid](
        x5, g5, parts, n, d, h, wd, c, c_out, *out, *pad, *dil, *x5.stride()[:4],
        *g5.stride()[:4], parts.stride(0), parts.stride(1), per_split, KD=ks[0], KH=ks[1],
        KW=ks[2], BD=box[0], BH=box[1], BW=box[2], BLOCK_M=block_m, BLOCK_N=block_n,
        num_warps=4, num_stages=num_stages, **COMPILE_OPTIONS,
    )  # fmt: skip
    gw = parts.sum(0)
    return gw if x.dim() == 5 else gw.squeeze(1)


# --- the static comparison -------------------------------------------------------------------
#: (suite, layer): layers of the benchmark suites the kernels apply to (stride 1), wide and
#: narrow channels, wide and small maps; the most telling first (a GPU trial runs in order
#: until its budget is spent).
LAYERS = (
    ("conv", "resnet50.layer1.conv2"),
    ("conv", "resnet50.layer3.conv2"),
    ("conv", "vgg16.conv3_1"),
    ("conv3d", "unet3d.enc1.conv2"),
    ("conv", "vgg16.conv1_2"),
    ("conv", "resnet50.layer4.conv2"),
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
    out = output_sizes(sizes, pad, ks)
    positions, _, _, stages = CONFIGS[direction]
    tile_out, tile_in = channel_tiles(direction, c_out, c)
    box = box_shape(out, positions)
    bf16 = torch.bfloat16
    x = torch.empty(n, *sizes, c, dtype=bf16)
    with stand_in_gpu("sm_90", mode="launch"):
        if direction == "forward":
            w = torch.empty(c_out, ks[0] * ks[1] * ks[2] * c, dtype=bf16)
            y = torch.empty(n, *out, c_out, dtype=bf16)
            block_n, block_k = tile_out, tile_in
            args = (x, w, y, n, *sizes, c, c_out, *out, *pad, 1, 1, 1, *x.stride()[:4],
                    w.stride(0), *y.stride()[:4])  # fmt: skip
            meta = dict(BLOCK_N=block_n, BLOCK_K=block_k)
            kernel, cycles = box_conv_forward_kernel, positions * block_n * block_k / 2048
            tile = f"{positions}×{block_n}×{block_k}"
        else:
            g = torch.empty(n, *out, c_out, dtype=bf16)
            gw = torch.empty(4, c_out, ks[0] * ks[1] * ks[2] * c, dtype=torch.float32)
            block_m, block_n = tile_out, tile_in
            args = (x, g, gw, n, *sizes, c, c_out, *out, *pad, 1, 1, 1, *x.stride()[:4],
                    *g.stride()[:4], gw.stride(0), gw.stride(1), 1024)  # fmt: skip
            meta = dict(BLOCK_M=block_m, BLOCK_N=block_n)
            kernel, cycles = box_conv_weight_grad_kernel, block_m * block_n * positions / 2048
            tile = f"{block_m}×{block_n}×{positions}"
        compiled = kernel.warmup(
            *args, KD=ks[0], KH=ks[1], KW=ks[2], BD=box[0], BH=box[1], BW=box[2], **meta,
            grid=(1,), num_warps=4, num_stages=stages, **COMPILE_OPTIONS,
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
        f"channels-last configs of `{doc['flat_report']}` (the same layers, bf16) with the "
        "fewest loop instructions per tensor-core cycle.",
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


# --- timing on a GPU ---------------------------------------------------------------------------
#: Programs a weight gradient's splits over positions aim at: two per SM of an H200.
WEIGHT_GRAD_PROGRAMS = 264


def use_scratch_allocator(device: str) -> None:
    """Give device-side tensor descriptors their global scratch (Triton has none by default)."""
    import torch

    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8,
                                                                 device=device))  # fmt: skip


def _operands(layer: Any, device: str, dtype: Any, tiny: bool) -> tuple[Any, Any, Any]:
    """``x``, ``w`` and the output gradient of ``layer`` (NCHW; random), at its training size or,
    ``tiny``, cut down to a few positions and channels (a smoke run)."""
    import torch

    n, c, *sizes = layer.input_shape
    c_out, _, *ks = layer.weight_shape
    if tiny:
        n, c, c_out, sizes = 1, min(c, 16), min(c_out, 16), [min(s, 6) for s in sizes]
    out = output_sizes(sizes, layer.arg("padding"), ks)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn((n, c, *sizes), generator=g, device=device).to(dtype)
    w = torch.randn((c_out, c, *ks), generator=g, device=device) / (c * math.prod(ks)) ** 0.5
    gy = torch.randn((n, c_out, *out), generator=g, device=device).to(dtype)
    return x, w.to(dtype), gy


def _exact_float32() -> Any:
    """cuDNN in true float32 (not TF32), for the reference."""
    import torch

    return torch.backends.cudnn.flags(enabled=True, allow_tf32=False)


def time_layer(layer: Any, direction: str, device: str, dtype: Any, tiny: bool) -> dict:
    """Check the box kernel against torch (a true float32 reference), then time torch (cuDNN,
    channels-last, its fastest algorithm), ours (the flat kernels, channels-last) and the box
    kernel."""
    import torch
    import torch.nn.functional as F

    import torchconv_ext
    import torchconv_ext.functional as ours

    from .check import compare
    from .timing import bench

    x, w, gy = _operands(layer, device, dtype, tiny)
    pad, dims = list(layer.arg("padding")), layer.dims
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    torch_conv, ours_conv = (F.conv2d, ours.conv2d) if dims == 2 else (F.conv3d, ours.conv3d)
    x_cl, w_cl, gy_cl = (t.contiguous(memory_format=fmt) for t in (x, w, gy))
    x_last, w_last, gy_last = (t.movedim(1, -1) for t in (x_cl, w_cl, gy_cl))
    positions, _, _, stages = CONFIGS[direction]
    c_out, c = w.shape[:2]
    tile_out, tile_in = channel_tiles(direction, c_out, c)
    with torchconv_ext.use_backend("triton"):
        if direction == "forward":
            kw = dict(positions=positions, block_n=tile_out, block_k=tile_in, num_stages=stages)
            dil = [1] * dims
            box = lambda: conv_forward(x_last, w_last, pad, dil, **kw)
            theirs = lambda: torch_conv(x_cl, w_cl, padding=pad)
            flat = lambda: ours_conv(x_cl, w_cl, padding=pad)
            with _exact_float32():
                reference = torch_conv(x.float(), w.float(), padding=pad)
            got = box().movedim(-1, 1)
        else:
            wr = w_cl.detach().requires_grad_()
            y_torch, y_ours = torch_conv(x_cl, wr, padding=pad), ours_conv(x_cl, wr, padding=pad)
            theirs = lambda: torch.autograd.grad(y_torch, wr, gy_cl, retain_graph=True)[0]
            flat = lambda: torch.autograd.grad(y_ours, wr, gy_cl, retain_graph=True)[0]
            ks = list(w.shape[2:])
            tiles = triton.cdiv(c_out, tile_out) * triton.cdiv(c, tile_in) * math.prod(ks)
            splits = 2 if tiny else max(1, triton.cdiv(WEIGHT_GRAD_PROGRAMS, tiles))
            kw = dict(positions=positions, block_m=tile_out, block_n=tile_in, splits=splits,
                      num_stages=stages)  # fmt: skip
            box = lambda: conv_weight_grad(x_last, gy_last, ks, pad, [1] * dims, **kw)
            wf = w.float().requires_grad_()
            with _exact_float32():
                (reference,) = torch.autograd.grad(torch_conv(x.float(), wf, padding=pad), wf,
                                                   gy.float())  # fmt: skip
            got = box().movedim(-1, 1)
        check = compare([got], [theirs()], [reference], dtype)
        row = {"layer": layer.name, "direction": direction, "check": check.to_dict(),
               "shape": list(x.shape), "weight": list(w.shape), "config": kw}  # fmt: skip
        if check.ok:
            for name, fn in (("torch", theirs), ("ours", flat), ("box", box)):
                row[f"{name}_ms"] = bench(fn, device, quick=tiny).ms
    return row


def time_layers(
    device: str, budget_s: float, tiny: bool = False, layers: Sequence[tuple[str, str]] = LAYERS
) -> Iterator[dict]:
    """:func:`time_layer` for each layer and direction, until ``budget_s`` seconds are spent."""
    import torch

    from .suites import SUITES

    use_scratch_allocator(device)
    torch.backends.cudnn.benchmark = True  # as the benchmark suites time cuDNN
    dtype = torch.float32 if tiny else torch.bfloat16
    start = time.monotonic()
    for suite, name in layers:
        layer = next(x for x in SUITES[suite].layers if x.name == name)
        for direction in CONFIGS:
            if time.monotonic() - start > budget_s:
                return
            try:
                row = time_layer(layer, direction, device, dtype, tiny)
            except Exception as e:  # one failing case is recorded, the others go on
                row = {"layer": name, "direction": direction, "error": f"{type(e).__name__}: {e}"}
            print(json.dumps(row), flush=True)
            yield row


def timing_markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# TMA box tiles against the flat kernels and cuDNN · {doc['device']}",
        "",
        f"`python -m benchmarks.box_tiles --time` (see `benchmarks/box_tiles.py`): "
        f"{doc['dtype']}, channels-last operands, no bias; torch {doc['torch']}, triton "
        f"{doc['triton']}, commit `{doc['git_sha']}`, {doc['date']}. Each case is checked "
        "against torch in float32 first (not timed if it fails); times in ms, medians of "
        "`benchmarks.timing.bench` (on a GPU `triton.testing.do_bench`, L2 flushed).",
        "",
        "| layer | direction | check | cuDNN ms | ours (flat) ms | box ms | box / flat |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        if "error" in r:
            lines.append(f"| {r['layer']} | {r['direction']} | error: {r['error'][:120]} | | | | |")
            continue
        status = r["check"]["status"]
        t = [r.get(f"{k}_ms") for k in ("torch", "ours", "box")]
        cells = " | ".join("–" if v is None else f"{v:.4f}" for v in t)
        ratio = f"{t[2] / t[1]:.2f}" if None not in t[1:] else "–"
        lines.append(f"| {r['layer']} | {r['direction']} | {status} | {cells} | {ratio} |")
    return "\n".join([*lines, ""])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.box_tiles", description=__doc__)
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--name", default=REPORT.name, help="the static report's file name stem")
    p.add_argument("--flat", type=Path, default=FLAT_REPORT, help="the flat kernels' report")
    p.add_argument("--time", action="store_true", help="GPU: check and time the kernels")
    p.add_argument("--budget", type=float, default=60.0, help="--time: seconds to spend")
    p.add_argument("--device", default="cuda", help="--time: cuda (or cpu: a smoke run)")
    p.add_argument("--tiny", action="store_true", help="--time: a few positions (smoke run)")
    p.add_argument("--out", type=Path, default=RESULTS_ROOT, help="--time: results root")
    args = p.parse_args(argv)
    if args.time:
        return time_main(args)
    require_compiled_kernels()
    import torch

    from .results import _cpu_name, git_dirty, git_sha
    from .suites import SUITES

    flat_rows = json.loads(args.flat.read_text())["rows"]
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
        "flat_report": args.flat.name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    text = markdown(doc)
    print(text)
    if not args.no_write:
        stem = REPORT.with_name(args.name)
        with_ending(stem, ".json").write_text(json.dumps(doc, indent=1) + "\n")
        with_ending(stem, ".md").write_text(text)
    return 0


def time_main(args: argparse.Namespace) -> int:
    """``--time``: :func:`time_layers`, written to ``OUT/<device>/box-tiles.{json,md}`` after
    every case (a run cut short keeps what it measured)."""
    from .results import environment, write_tool

    doc = {**environment(args.device), "dtype": "float32" if args.tiny else "bfloat16"}
    doc["rows"] = []
    for row in time_layers(args.device, args.budget, args.tiny):
        doc["rows"].append(row)
        if not args.no_write:
            stem = write_tool(args.out, "box-tiles", "tiny" if args.tiny else None, doc,
                              timing_markdown(doc), args.device)  # fmt: skip
    print(timing_markdown(doc))
    if doc["rows"] and not args.no_write:
        print(f"wrote {stem}.{{json,md}}")
    return 0 if doc["rows"] and all("error" not in r for r in doc["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
