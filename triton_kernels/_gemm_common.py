"""What the tensor-core convolution GEMMs share: candidate configs, the 1-d grid, split-K.

Candidate configs are ``(BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps)`` rows for
H100-class GPUs; the tuners (``_tuning``) prune those that spill or overflow shared memory and
time the rest once per key. Two loop shapes are trusted at 4 warps only: the tap loop and the
flattened (taps × channels) loop of the implicit GEMMs. Triton has silently miscompiled
``tl.dot`` loops of that shape at 8 warps (triton-lang/triton#1254), and PyTorch Inductor caps
its convolution templates at 4 warps for the same reason (pytorch/pytorch#173068). Yet Hopper's
large tiles want two warp groups: a 128×128 fp32 accumulator alone is 128 registers a thread at
4 warps, 64 at 8. So the tap table holds a few 8-warp tiles as *unproven* candidates
(:func:`unproven`): a tuner times one only after its results matched a 4-warp config's on the
problem being tuned, on that device (``_tuning.Tuner.unproven``), and ``python -m
torchconv_ext check`` sweeps each against a float64 reference. The plain GEMM loop of 1×1
convolutions is the shape Triton's own matmuls run at 8 warps: trusted as it is.

A table's first row is the one launched untuned (while a CUDA graph is being captured; for
fp32 and fp64 operands the first row whose shared memory fits: ``Tuner.untuned``), so it is a
mid-sized tile that fits the register file on every kernel.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import INTERPRET, acc_torch_dtype, cdiv, workspace
from ._tuning import Config

#: Row tiles that sweep the column tiles together (``_indexing.grouped_tile``).
GROUP_M = 8

#: Most warps a config of a tap or flattened loop may use unproven (see the module docstring).
TAP_LOOP_PROVEN_WARPS = 4

TAP_TABLE = [
    (128, 64, 64, 3, 4),
    (128, 128, 64, 3, 4),
    (128, 128, 32, 4, 4),
    (64, 128, 64, 3, 4),
    (128, 64, 32, 4, 4),
    (64, 128, 32, 4, 4),
    (64, 64, 64, 4, 4),
    (64, 64, 32, 4, 4),
    # Unproven (8 warps): the large tiles; those with BLOCK_K = 32 serve the weight gradient too.
    (128, 256, 64, 3, 8),
    (256, 128, 64, 3, 8),
    (128, 128, 32, 4, 8),
    (128, 256, 32, 4, 8),
]
# Channel counts below 16 (RGB stems, small groups) usually come with small groups: one narrow-N
# config.
FLAT_TABLE = [
    (128, 64, 32, 3, 4),
    (64, 64, 32, 4, 4),
    (128, 128, 32, 3, 4),
    (64, 128, 32, 4, 4),
    (128, 64, 64, 3, 4),
    (128, 32, 32, 4, 4),
]
# Narrow groups: a tile whose columns are the channels of a group (the forward's outputs, the
# input gradient's inputs, the weight gradient's input channels per tap) wastes most of a 64-wide
# tile on 16 or 32 channels (3D U-Net's 32-channel levels, ResNeXt's and RegNet's groups, small
# networks). These tables hold 16- and 32-wide columns instead (``narrow``); their rows are a
# multiple of 64, so the forward and the input gradient keep wgmma.
NARROW_TAP_TABLE = [
    (128, 32, 32, 4, 4),
    (128, 16, 16, 4, 4),
    (256, 32, 32, 3, 4),
    (128, 32, 64, 3, 4),
    (64, 32, 32, 4, 4),
    (128, 16, 32, 4, 4),
    (256, 16, 16, 4, 4),
]
NARROW_FLAT_TABLE = [
    (128, 16, 32, 4, 4),
    (128, 32, 32, 4, 4),
    (256, 16, 32, 3, 4),
    (64, 16, 32, 4, 4),
    (64, 32, 32, 4, 4),
]
GEMM_TABLE = [
    (128, 256, 64, 3, 8),
    (256, 128, 64, 3, 8),
    (128, 128, 64, 4, 4),
    (128, 128, 32, 4, 4),
    (128, 64, 64, 4, 4),
    (64, 128, 64, 4, 4),
    (64, 64, 64, 4, 4),
]

# The plain GEMM's narrow candidates (the 1×1 forward's output channels or grad-input's input
# channels per group at most 32; its reduction, the other side's channels, may be as narrow).
NARROW_GEMM_TABLE = [
    (128, 32, 32, 4, 4),
    (128, 16, 32, 4, 4),
    (256, 32, 32, 3, 4),
    (128, 32, 64, 4, 4),
    (64, 32, 32, 4, 4),
    (256, 16, 32, 3, 4),
]

# The fused maxout's forward candidates (``PIECES`` > 1): its running max and winner hold two more
# accumulator-sized tiles in registers, so tiles are at most half the size (64×64 fp32 values
# per 4 warps); the first rows compile without spills on sm_90 (benchmarks.compile_report).
MAXOUT_TAP_TABLE = [
    (64, 64, 32, 4, 4),
    (64, 64, 64, 4, 4),
    (128, 32, 32, 4, 4),
    (128, 32, 64, 3, 4),
]
MAXOUT_FLAT_TABLE = [
    (128, 32, 32, 4, 4),
    (64, 32, 32, 4, 4),
]
MAXOUT_GEMM_TABLE = [
    (128, 64, 64, 3, 8),
    (64, 128, 64, 3, 8),
    (64, 64, 64, 4, 4),
    (128, 32, 64, 4, 4),
]

#: Grad-weight's reduction chunk: fixed, so every config sums in the same order and results are
#: bitwise repeatable whichever config a tuner picks (their tiles all run wgmma: at least 64 rows).
WEIGHT_BLOCK_K = 32
# The plain GEMM's grad-weight candidates (its table re-chunked to WEIGHT_BLOCK_K).
GEMM_WEIGHT_TABLE = [
    (128, 256, 32, 4, 8),
    (256, 128, 32, 4, 8),
    (128, 128, 32, 4, 4),
    (128, 64, 32, 4, 4),
    (64, 128, 32, 4, 4),
    (64, 64, 32, 4, 4),
]

# Narrow grad-weight tiles (BLOCK_K is its fixed reduction chunk): 16- and 32-wide columns (a
# group's input channels per tap, or its flattened taps × channels, at most 32), and 64 as the
# wide tables' narrowest. Rows stay at 64 or more, as in the wide tables: every candidate then
# runs wgmma (fewer rows would run mma.sync), so that each element sums its chunks the same way
# whichever config a tuner picks.
NARROW_WEIGHT_TABLE = [
    (64, 32, 32, 4, 4),
    (64, 16, 32, 4, 4),
    (128, 32, 32, 4, 4),
    (64, 64, 32, 4, 4),
]

#: Columns of the all-ones operand a grad-weight kernel sums the bias gradient with (wgmma's
#: narrowest tile).
SUM_COLUMNS = tl.constexpr(16)
#: Loads the bias's column tile keeps in flight.
SUM_STAGES = tl.constexpr(2)


@triton.jit
def channel_sums(a, sums, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """``sums`` plus the rows of ``a`` (output channels × one chunk of positions) summed, in each
    of its columns: a product with ones on the tensor cores, so each channel sums its chunks in
    the order the weight gradient sums them, whatever the tile (a bias gradient as repeatable as
    the weight's). For the operands ``bias_target`` sums in the kernel."""
    ones = tl.full((a.shape[1], sums.shape[1]), 1, a.dtype)
    return tl.dot(a, ones, sums, input_precision=PRECISION, out_dtype=ACC_DTYPE)


@triton.jit
def first_column(t):
    """``t[:, 0]`` (adding zeros to it: exact)."""
    column = tl.arange(0, t.shape[1])[None, :]
    return tl.sum(tl.where(column == 0, t, 0.0), axis=1)


#: Channels of a group up to which its tiles take the narrow tables.
NARROW_CHANNELS = 32


def narrow(channels: int) -> bool:
    """Whether a tile side spanning ``channels`` (of one group) takes the narrow tables."""
    return channels <= NARROW_CHANNELS


#: The CPU interpreter's one config: tests stay fast, and tiny shapes still span several tiles.
_INTERPRET_ROW = (16, 16, 16, 1, 4)


def configs(
    table: list[tuple[int, int, int, int, int]], block_k: int | None = None
) -> list[Config]:
    """A table's rows as tuner configs (rows with another BLOCK_K dropped when ``block_k``)."""
    if INTERPRET:
        table = [_INTERPRET_ROW]
    return [
        Config.of(w, s, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
        for bm, bn, bk, s, w in table
        if block_k is None or bk == block_k or INTERPRET
    ]


def unproven(configs: list[Config]) -> frozenset[Config]:
    """The configs of a tap or flattened loop that a tuner must prove before timing them."""
    return frozenset(c for c in configs if c.num_warps > TAP_LOOP_PROVEN_WARPS)


def shared_estimate(config: Config, element_size: int) -> int:
    """Shared memory of a pipelined tile loop: one A and one B tile per stage."""
    a_b = config["BLOCK_M"] * config["BLOCK_K"] + config["BLOCK_K"] * config["BLOCK_N"]
    return config.num_stages * a_b * element_size


#: Programs one grid axis holds (axis 0; axes 1 and 2 hold 65535).
MAX_PROGRAMS = 2**31 - 1


def flat_grid(tiles_m: int, tiles_n: int, batches: int) -> tuple[int]:
    """The 1-d grid of ``batches × tiles_m × tiles_n`` programs (``grouped_tile`` splits it)."""
    programs = tiles_m * tiles_n * batches
    if programs > MAX_PROGRAMS:
        raise ValueError(
            f"convolution too large for one launch: {programs} tiles (at most {MAX_PROGRAMS})"
        )
    return (programs,)


# Split-K for grad-weight: aim for about two waves of programs on an H100 (132 SMs), but keep at
# least SPLIT_MIN_POSITIONS reduction positions per split (shapes only -> deterministic).
SPLIT_TARGET_PROGRAMS = 264
SPLIT_MIN_POSITIONS = 512
SPLIT_MAX = 64
NOMINAL_TILE = 64


def choose_split(tiles: int, positions: int) -> int:
    """Number of grad-weight reduction splits, from shapes only (so runs are bitwise equal)."""
    if tiles >= SPLIT_TARGET_PROGRAMS:
        return 1
    split = min(cdiv(SPLIT_TARGET_PROGRAMS, tiles), positions // SPLIT_MIN_POSITIONS)
    return max(1, min(split, SPLIT_MAX))


def split_workspace(grad_w: torch.Tensor, n_split: int) -> torch.Tensor:
    """``n_split`` partial weight gradients in fp32 (fp64), channels innermost (the kernels'
    stores along channels stay contiguous whatever ``grad_w``'s layout; the sum of the
    partials is copied into it)."""
    dtype = acc_torch_dtype(grad_w.dtype)
    inner = (n_split, grad_w.shape[0], *grad_w.shape[2:], grad_w.shape[1])
    return workspace(torch.empty(inner, dtype=dtype, device=grad_w.device)).movedim(-1, 2)


def sums_bias(dtype: torch.dtype) -> bool:
    """Whether the weight-gradient GEMMs sum a bias gradient of ``dtype`` themselves.

    They sum 16-bit operands, whose products with ones the tensor cores make exactly, at the
    cost of a small accumulator. fp32 and fp64 products run on CUDA cores (or would round each
    gradient to 11 bits under TF32), where the second product takes registers the main loop
    cannot spare (compiled for sm_90 nearly every fp32 candidate spilled): one reduction of its
    own then. Triton's interpreter has no registers to spare and sums every dtype in the
    kernels, so that float64 tests check the kernels' sums."""
    return INTERPRET or dtype in (torch.float16, torch.bfloat16)


def bias_target(grad_bias: torch.Tensor | None, n_split: int) -> torch.Tensor | None:
    """Where a grad-weight kernel sums the bias gradient (``channel_sums``): ``grad_bias`` viewed
    as one split, or a workspace of ``n_split`` partial sums in fp32 (fp64); ``None`` without
    one (callers go through ``conv.conv_backward_weight``, which sums it itself where
    :func:`sums_bias` says the kernels do not)."""
    if grad_bias is None:
        return None
    if n_split == 1:
        return grad_bias.view(1, -1)
    dtype = acc_torch_dtype(grad_bias.dtype)
    return workspace(
        torch.empty((n_split, grad_bias.shape[0]), dtype=dtype, device=grad_bias.device)
    )


def position_strides(t5: torch.Tensor) -> tuple[int, int] | None:
    """``(s_n, s_p)``: the strides of the batch and of a flat spatial position of a 5-d view,
    or ``None`` when its spatial dims do not collapse into one stride."""
    s_p = span = None
    for size, st in zip(reversed(t5.shape[2:]), reversed(t5.stride()[2:])):
        if size == 1:
            continue
        if s_p is None:
            s_p, span = st, st * size
        elif st != span:
            return None
        else:
            span *= size
    s_n = t5.stride(0)
    if s_p is None:  # one position per image: the batch is the only row index
        s_p = s_n
    if t5.shape[0] == 1:  # one image: its stride is never used, so make the rows flat
        s_n = s_p * t5.shape[2] * t5.shape[3] * t5.shape[4]
    return s_n, s_p


def unit_positions(t5: torch.Tensor) -> bool:
    """Whether a 5-d view's spatial positions are one run of unit stride per image (an NCHW
    tensor): a row's position ``p`` of image ``n`` is at ``n·s_n + p``."""
    strides = position_strides(t5)
    return strides is not None and strides[1] == 1


def flat_alignment(t5: torch.Tensor) -> int:
    """The alignment of an operand whose rows are flat positions: 0 unless its positions have
    unit stride (``unit_positions``: NCHW), else the largest power of two up to 16 dividing its
    positions per image and its batch and channel strides, so that every run of that many rows
    is one aligned vector in one image. Kernels rebuild those values with :func:`aligned_rows`."""
    if not unit_positions(t5):
        return 0
    return math.gcd(math.prod(t5.shape[2:]), t5.stride(0), t5.stride(1), 16)


@triton.jit
def aligned_rows(M, P, s_n, s_c, ALIGN: tl.constexpr):
    """The rows ``M`` (= batch·``P``), positions per image ``P`` and an NCHW operand's batch and
    channel strides, rebuilt as multiples of ``ALIGN`` (its :func:`flat_alignment`; 0 or 1:
    unchanged) so that Triton sees they are — of an integer argument it knows only whether 16
    divides it — and loads or stores runs of ``ALIGN`` positions as vectors."""
    if ALIGN > 1:
        M, P = M // ALIGN * ALIGN, P // ALIGN * ALIGN
        s_n, s_c = s_n // ALIGN * ALIGN, s_c // ALIGN * ALIGN
    return M, P, s_n, s_c


def channel_alignment(channels: int, *operands: torch.Tensor) -> int:
    """The width of the channel runs a GEMM loads from channels-inner 5-d ``operands`` (unit
    stride along dim 1, the weight's input channels included): the largest power of two up to 16
    dividing ``channels`` (per group) and every stride of another dim of size > 1; 1 when an
    operand is not channels-inner. Triton knows of an integer argument only whether 16 divides
    it, so runs of 8 channels (24, 40, 56 channels; the stems' windows, ``conv_window``) would
    otherwise load element by element; kernels rebuild those values with :func:`aligned`."""
    if any(t.stride(1) != 1 for t in operands):
        return 1
    strides = [
        s for t in operands for d, (n, s) in enumerate(zip(t.shape, t.stride())) if d != 1 and n > 1
    ]
    return math.gcd(channels, *strides, 16)


@triton.jit
def aligned(value, ALIGN: tl.constexpr):
    """``value`` rebuilt as a multiple of ``ALIGN`` (which divides it; 0 or 1: unchanged), so
    that Triton sees it is (see :func:`channel_alignment`)."""
    if ALIGN > 1:
        value = value // ALIGN * ALIGN
    return value
