"""What the check runs: every case as plain data (picklable, JSON-able), and the plan.

A case is one op at one layer shape in one dtype and one memory layout. Its ``spec`` says what
to build (see ``problems.py``); its ``kind`` says how to run it (see ``runner.py``):

* ``default``   forward and backward vs torch, the kernels' tuners pinned to one config each;
* ``autotuned`` the same with the tuners left alone, as users run them;
* ``sweep``     one direction of one layer, every autotune config of its tuner forced alone;
* ``large``     a tensor past 2**31 elements (the int64 offset path), a slice compared.

Shapes are real layers (ResNet-50, VGG-16, ResNeXt, MobileNetV2, a 3-D U-Net, a decoder, and
the locally connected and tiled convolutions torch lacks);
without CUDA every case runs at its ``tiny`` shape under Triton's interpreter instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

#: Labels of the numeric settings checked: torch dtype names, and "tf32" for float32 with
#: ``torch.backends.cudnn.allow_tf32`` on ("fp32" runs it off).
CONV_DTYPES = ("bf16", "fp16", "tf32", "fp32", "fp64")
DTYPES = ("bf16", "fp16", "fp32", "fp64")
LAYOUTS = ("nchw", "channels_last")

#: Settings the interpreter cannot check, and why (said in the report's header).
INTERPRETER_SKIPS = {
    "bf16": "Triton's interpreter cannot compute bfloat16 (numpy has no such type)",
    "tf32": "TF32 is a GPU tensor-core mode; on the CPU float32 is exact",
}


@dataclass(frozen=True)
class Case:
    """One check. ``cost`` is a rough guess of GPU seconds including compilation, used only to
    start the long cases first (within a :attr:`tier`)."""

    family: str
    name: str
    dtype: str
    layout: str
    kind: str
    spec: dict[str, Any] = field(default_factory=dict)
    cost: float = 2.0
    skip: str = ""  # non-empty: reported as skipped, with this reason, and not run

    @property
    def id(self) -> str:
        return f"{self.family} | {self.name} | {self.dtype} | {self.layout}"

    @property
    def tier(self) -> int:
        """Which cases start first: every kernel as users run it (tier 0: the default and
        autotuned cases), then each config forced alone (tier 1: the sweeps), so that a short
        budget leaves configs unchecked rather than whole ops."""
        return 1 if self.kind == "sweep" else 0

    @property
    def group(self) -> str:
        """Cases of one group launch the same kernels: one worker runs them in a row."""
        return f"{self.family} {self.dtype} {self.layout}"


# --------------------------------------------------------------------------------------------
# Layer tables. ``tiny`` replaces fields for the interpreter; ``quick`` marks the --quick set.
# --------------------------------------------------------------------------------------------


def _conv(name, dims, n, c_in, size, c_out, kernel, quick=False, tiny=None, directions=None,
          **geometry):  # fmt: skip
    spec = dict(op="conv", dims=dims, n=n, c_in=c_in, size=size, c_out=c_out, kernel=kernel)
    spec.update(stride=1, padding=0, dilation=1, groups=1, bias=False, transposed=False)
    spec.update(geometry)
    entry = dict(name=name, spec=spec, tiny=tiny or {}, quick=quick)
    return entry if directions is None else {**entry, "directions": directions}


# Convolutions through the implicit GEMM (>= 16 channels per group: "tap" loop; fewer, in one
# group: the tap loop over windows of a padded copy; else the flattened taps x channels loop).
GEMM_LAYERS = [
    _conv("resnet50.layer2.0.conv2 3x3 s2 128->128 56x56", 2, 8, 128, 56, 128, 3,
          stride=2, padding=1, quick=True, tiny=dict(c_in=16, c_out=16, size=6)),
    _conv("resnet50.layer1.0.conv1 1x1 256->64 56x56", 2, 8, 256, 56, 64, 1,
          tiny=dict(c_in=16, c_out=16, size=5)),
    _conv("vgg16.conv3_2 3x3 256->256 56x56 +bias", 2, 2, 256, 56, 256, 3, padding=1,
          bias=True, tiny=dict(c_in=16, c_out=16, size=5)),
    _conv("resnet50.conv1 stem 7x7 s2 3->64 224x224", 2, 4, 3, 224, 64, 7, stride=2,
          padding=3, quick=True, tiny=dict(c_out=16, size=6)),
    _conv("resnext50.layer2 3x3 g32 256->256 28x28", 2, 8, 256, 28, 256, 3, padding=1,
          groups=32, tiny=dict(c_in=16, c_out=16, size=5, groups=2)),
    # 4 channels per group: the weight gradient merges 16 groups (8 at the tiny size) into one
    _conv("resnext50.layer1 3x3 g32 128->128 56x56", 2, 8, 128, 56, 128, 3, padding=1,
          groups=32, tiny=dict(c_in=32, c_out=32, size=5, groups=8)),
    # ... and every GEMM computes several groups as one: an infinity and a NaN in the input and
    # an infinity in the output's gradient must stay in their groups (the forward and input
    # gradient sum the tiles they reach again, group by group)
    _conv("resnext50.layer1 3x3 g32 128->128 28x28 non-finite", 2, 2, 128, 28, 128, 3,
          padding=1, groups=32, bias=True, non_finite=True,
          tiny=dict(c_in=32, c_out=32, size=5, groups=8)),
    _conv("deeplabv3 3x3 dilation 2 256->256 28x28", 2, 4, 256, 28, 256, 3, padding=2,
          dilation=2, tiny=dict(c_in=16, c_out=16, size=6)),
    _conv("unet3d 3x3x3 32->64 16^3 +bias", 3, 2, 32, 16, 64, 3, padding=1, bias=True,
          quick=True, tiny=dict(c_in=16, c_out=16, size=4)),
    # padding in the kernel's index arithmetic: a padding mode, by a different amount per side
    _conv("cyclegan 3x3 reflect (1,2)|(2,1) 256->256 64x64", 2, 2, 256, 64, 256, 3,
          padding=((1, 2), (2, 1)), padding_mode="reflect",
          tiny=dict(c_in=16, c_out=16, size=5)),
    # activations in the epilogue (``activation=``): ReLU's backward reads it off the output;
    # Mish and hard swish run unfused while gradients are recorded, so their epilogue is
    # checked in the forward without gradients
    _conv("resnet50.layer1.0.conv2 3x3 64->64 56x56 +bias+relu", 2, 8, 64, 56, 64, 3,
          padding=1, bias=True, activation="relu", quick=True,
          tiny=dict(c_in=16, c_out=16, size=5)),
    _conv("yolov4 3x3 s2 128->256 28x28 +bias+mish", 2, 8, 128, 28, 256, 3, stride=2,
          padding=1, bias=True, activation="mish", tiny=dict(c_in=16, c_out=16, size=6)),
    _conv("mobilenetv3 expand 1x1 40->120 28x28 +bias+hardswish", 2, 8, 40, 28, 120, 1,
          bias=True, activation="hardswish", tiny=dict(c_in=16, c_out=24, size=5)),
]  # fmt: skip

DEPTHWISE_LAYERS = [
    _conv("mobilenetv2.features.3 dw 3x3 144 56x56", 2, 8, 144, 56, 144, 3, padding=1,
          groups=144, quick=True, tiny=dict(c_in=8, c_out=8, size=5, groups=8)),
    _conv("mobilenetv2.features.4 dw 3x3 s2 144 56x56", 2, 8, 144, 56, 144, 3, stride=2,
          padding=1, groups=144, tiny=dict(c_in=8, c_out=8, size=6, groups=8)),
    _conv("mobilenetv2.features.2 dw 3x3 96 56x56 +bias+relu6", 2, 8, 96, 56, 96, 3, padding=1,
          groups=96, bias=True, activation="relu6", tiny=dict(c_in=8, c_out=8, size=5, groups=8)),
    # NCHW rows of 7 and 14 elements, read from the vector boundary before each
    _conv("mobilenetv2.features.15 dw 3x3 960 7x7", 2, 8, 960, 7, 960, 3, padding=1,
          groups=960, tiny=dict(c_in=9, c_out=9, size=7, groups=9)),
    _conv("mobilenetv2.features.14 dw 3x3 s2 576 14x14", 2, 8, 576, 14, 576, 3, stride=2,
          padding=1, groups=576, tiny=dict(c_in=9, c_out=9, size=9, groups=9)),
    # Keras' "same" padding before a strided depthwise convolution: (1, 2) per side
    _conv("efficientnet dw 5x5 s2 (1,2) 240 28x28", 2, 8, 240, 28, 240, 5, stride=2,
          padding=((1, 2), (1, 2)), groups=240, tiny=dict(c_in=8, c_out=8, size=6, groups=8)),
]  # fmt: skip

TRANSPOSED_LAYERS = [
    _conv("unet decoder up-conv 2x2 s2 256->128 28x28 +bias", 2, 8, 256, 28, 128, 2, stride=2,
          bias=True, transposed=True, quick=True, tiny=dict(c_in=16, c_out=16, size=4)),
    _conv("dcgan up-conv 4x4 s2 p1 128->64 32x32", 2, 8, 128, 32, 64, 4, stride=2, padding=1,
          transposed=True, tiny=dict(c_in=16, c_out=16, size=4)),
    # the activation in the input-gradient kernels' epilogue (the generator's fused ReLU)
    _conv("dcgan up-conv 4x4 s2 p1 256->128 16x16 +bias+relu", 2, 8, 256, 16, 128, 4, stride=2,
          padding=1, bias=True, transposed=True, activation="relu",
          tiny=dict(c_in=16, c_out=16, size=4)),
]  # fmt: skip

# Locally connected (``tiles`` None: one kernel per output position) and tiled convolutions,
# against the same sum in torch's plain ops (``problems.tiled_conv_by_torch``).
LOCAL_LAYERS = [
    _conv("locally connected 3x3 32->32 24x24 +bias", 2, 8, 32, 24, 32, 3, op="local",
          tiles=None, bias=True, quick=True, tiny=dict(c_in=4, c_out=4, size=5)),
    _conv("tiled 3x3 s2 2x2 tiles g2 reflect 64->64 28x28", 2, 8, 64, 28, 64, 3, op="local",
          tiles=2, stride=2, padding=1, groups=2, padding_mode="reflect",
          tiny=dict(c_in=8, c_out=8, size=6)),
    _conv("tiled 3x3x3 dilation 2 2^3 tiles 16->32 12^3 +bias", 3, 2, 16, 12, 32, 3, op="local",
          tiles=2, padding=2, dilation=2, bias=True, tiny=dict(c_in=4, c_out=4, size=4)),
]  # fmt: skip

# The per-config sweep: every tuner's configs, each forced alone, on a layer and a
# direction that runs that tuner (a full run fails for a tuner no sweep case reached; the tiny
# shapes reach the same tuners: tests/test_check.py). Per layer, the directions it sweeps and the
# tuners they reach (narrow: a group's channels at most 32; flat: fewer than 16 to reduce over).
# A layer with a bias has its weight gradient checked with the bias's, which the weight-gradient
# kernels sum beside it (a variant of each kernel): some layers have one, some not.
SWEEP_DIRECTIONS = ("forward", "grad_input", "grad_weight")
_FWD_WEIGHT = ("forward", "grad_weight")
SWEEP_LAYERS = [
    # the 1x1 GEMM and its grad-weight, wide then narrow
    _conv("1x1 256->64 28x28 +bias", 2, 8, 256, 28, 64, 1, bias=True, directions=_FWD_WEIGHT,
          tiny=dict(c_in=40, c_out=40, size=5)),
    _conv("1x1 32->32 28x28", 2, 8, 32, 28, 32, 1, directions=_FWD_WEIGHT,
          tiny=dict(c_in=16, c_out=16, size=5)),
    # tap loops, wide, and narrow (32 channels per group)
    _conv("3x3 64->64 28x28 +bias", 2, 8, 64, 28, 64, 3, padding=1, bias=True,
          tiny=dict(c_in=40, c_out=40, size=5)),
    _conv("grouped 3x3 g4 128->128 28x28 +bias", 2, 8, 128, 28, 128, 3, padding=1, groups=4,
          bias=True, tiny=dict(c_in=40, c_out=40, size=5, groups=2)),
    # the RGB stem: forward and grad-weight as tap loops over windows (wide, narrow); its
    # grad-input (3 channels: narrow)
    _conv("stem 7x7 s2 3->64 112x112 +bias", 2, 4, 3, 112, 64, 7, stride=2, padding=3,
          bias=True, tiny=dict(c_out=40, size=6)),
    # flattened loops: the narrow forward and grad-input (8 channels per group) and grad-weight
    # (2 in, 16 out per group: 18 columns; with 8 outputs or fewer, groups would merge into the
    # tap loop), the wide forward and grad-weight (8 channels in, 64 out per group: 72 columns)
    # and the wide grad-input (8 out, 64 in)
    _conv("grouped 3x3 g8 64->64 28x28", 2, 8, 64, 28, 64, 3, padding=1, groups=8,
          directions=("forward", "grad_input"), tiny=dict(c_in=16, c_out=16, size=5, groups=2)),
    _conv("grouped 3x3 g16 32->256 28x28", 2, 8, 32, 28, 256, 3, padding=1, groups=16,
          directions=("grad_weight",), tiny=dict(c_in=16, c_out=72, size=5, groups=8)),
    # merged groups (4 channels per group, 16 merged): the tap loops of the forward and input
    # gradient, each tile summed again group by group where the non-finite values reach it,
    # and of the weight gradient, storing each group's own block
    _conv("grouped 3x3 g32 128->128 28x28 non-finite", 2, 8, 128, 28, 128, 3, padding=1,
          groups=32, non_finite=True, tiny=dict(c_in=64, c_out=64, size=5, groups=16)),
    _conv("grouped 3x3 g2 16->128 28x28 +bias", 2, 8, 16, 28, 128, 3, padding=1, groups=2,
          bias=True, directions=_FWD_WEIGHT, tiny=dict(c_out=80, size=5)),
    _conv("3x3 s2 64->8 28x28", 2, 8, 64, 28, 8, 3, stride=2, padding=1,
          directions=("grad_input",), tiny=dict(c_in=40, size=5)),
    # the fused maxout's forwards (2 pieces): tap loop, flattened loop, 1x1 GEMM
    _conv("maxout 3x3 64->32x2 28x28", 2, 8, 64, 28, 32, 3, padding=1, pieces=2,
          directions=("forward",), tiny=dict(c_in=40, c_out=8, size=5)),
    _conv("maxout 3x3 g2 16->32x2 28x28", 2, 8, 16, 28, 32, 3, padding=1, groups=2, pieces=2,
          directions=("forward",), tiny=dict(c_out=8, size=5)),
    _conv("maxout 1x1 64->32x2 28x28", 2, 8, 64, 28, 32, 1, pieces=2, directions=("forward",),
          tiny=dict(c_in=40, c_out=8, size=5)),
    # the depthwise tiles of positions x channels (stride 3: in both layouts; the NCHW row
    # segments of strides 1 and 2 have fixed tiles, and so has the weight gradient)
    _conv("depthwise 3x3 s3 96 28x28 +bias", 2, 8, 96, 28, 96, 3, stride=3, padding=1,
          groups=96, bias=True, directions=("forward", "grad_input"),
          tiny=dict(c_in=8, c_out=8, size=7, groups=8)),
    # the tiled convolution's three kernels
    _conv("tiled 3x3 2x2 tiles 64->64 28x28 +bias", 2, 8, 64, 28, 64, 3, op="local", tiles=2,
          padding=1, bias=True, tiny=dict(c_in=16, c_out=16, size=5)),
]  # fmt: skip
# (dtype, layout) of the sweep: every compute path (bf16/fp16 tensor cores, TF32, exact fp32)
# and both layouts. fp64 is left out: its biggest tiles do not fit in shared memory, and the
# autotuner discards them (it runs on the pinned and autotuned paths instead).
SWEEP_SETTINGS = [("bf16", "channels_last"), ("fp16", "nchw"), ("tf32", "channels_last"),
                  ("fp32", "nchw")]  # fmt: skip
SWEEP_SETTINGS_QUICK = [("bf16", "channels_last"), ("tf32", "nchw")]
SWEEP_SETTINGS_INTERPRETER = [("fp32", "channels_last"), ("fp16", "nchw")]

# Autotuned as users run it: the tuner benchmarks every config and keeps the fastest.
AUTOTUNED = [  # (GEMM_LAYERS index, dtype, layout)
    (0, "bf16", "channels_last"),
    (0, "tf32", "channels_last"),
    (0, "fp16", "nchw"),
    (3, "bf16", "channels_last"),
]
AUTOTUNED_QUICK = AUTOTUNED[:1]


def _pool(name, op, shape, tiny_shape, quick=False, **kwargs):
    spec = dict(op=op, shape=shape, kwargs=kwargs)
    return dict(name=name, spec=spec, tiny=dict(shape=tiny_shape), quick=quick)


POOL_OPS = [
    _pool("resnet50.maxpool max_pool2d 3x3 s2 p1", "max_pool2d", (8, 64, 112, 112),
          (1, 4, 7, 7), quick=True, kernel_size=3, stride=2, padding=1),
    _pool("vgg16.pool2 max_pool2d 2x2 s2", "max_pool2d", (16, 128, 112, 112), (1, 4, 8, 8),
          quick=True, kernel_size=2, stride=2),
    _pool("avg_pool2d 2x2 s2 on 28x28 rows", "avg_pool2d", (16, 256, 28, 28), (1, 4, 6, 12),
          kernel_size=2, stride=2),
    # rows of odd widths, read from the vector boundary before each (every lead in bf16)
    _pool("alexnet.pool1 max_pool2d 3x3 s2 on 55x55 rows", "max_pool2d", (16, 64, 55, 55),
          (1, 9, 5, 9), kernel_size=3, stride=2),
    _pool("inception avg_pool2d 3x3 s1 p1 on 35x35 rows", "avg_pool2d", (16, 192, 35, 35),
          (1, 9, 3, 7), kernel_size=3, stride=1, padding=1),
    _pool("avg_pool2d 3x3 s2 p1 ceil count_include_pad=False", "avg_pool2d", (8, 64, 56, 56),
          (1, 4, 6, 6), quick=True, kernel_size=3, stride=2, padding=1, ceil_mode=True,
          count_include_pad=False),
    _pool("alexnet.avgpool adaptive_avg_pool2d 13x13->6", "adaptive_avg_pool2d",
          (16, 256, 13, 13), (1, 4, 7, 7), quick=True, output_size=6),
    _pool("adaptive_max_pool2d 13x13->5", "adaptive_max_pool2d", (16, 256, 13, 13),
          (1, 4, 7, 7), output_size=5),
    _pool("resnet50 global_avg_pool 2048x7x7", "global_avg_pool", (16, 2048, 7, 7),
          (1, 4, 5, 5), quick=True),
    _pool("vgg global_max_pool 512x14x14", "global_max_pool", (16, 512, 14, 14),
          (1, 4, 5, 5)),
    _pool("sppnet spatial_pyramid_pool (1,2,4) 256x13x13", "spatial_pyramid_pool",
          (8, 256, 13, 13), (1, 4, 7, 7), quick=True, levels=(1, 2, 4), mode="max"),
    _pool("unet3d max_pool3d 2x2x2 s2", "max_pool3d", (2, 32, 32, 32, 32), (1, 4, 4, 4, 4),
          kernel_size=2, stride=2),
    _pool("avg_pool3d 3x3x3 s2 p1", "avg_pool3d", (2, 32, 32, 32, 32), (1, 4, 5, 5, 5),
          kernel_size=3, stride=2, padding=1),
]  # fmt: skip

UPSAMPLE_OPS = [
    _pool("unet decoder nearest x2 256x28x28", "interpolate", (8, 256, 28, 28), (1, 4, 4, 4),
          quick=True, scale_factor=2, mode="nearest"),
    _pool("nearest x1.5 64x28x28", "interpolate", (8, 64, 28, 28), (1, 4, 5, 5),
          scale_factor=1.5, mode="nearest"),
    _pool("nearest-exact x1.5 64x28x28", "interpolate", (8, 64, 28, 28), (1, 4, 5, 5),
          quick=True, scale_factor=1.5, mode="nearest-exact"),
    _pool("nearest-exact size 28x28->45x37", "interpolate", (8, 64, 28, 28), (1, 4, 5, 5),
          size=(45, 37), mode="nearest-exact"),
    _pool("unet3d nearest x2 32x16^3", "interpolate", (2, 32, 16, 16, 16), (1, 4, 3, 3, 3),
          scale_factor=2, mode="nearest"),
]  # fmt: skip

# Past 2**31 elements, bf16 NCHW; the last sample starts at offset 2**31. ``need_gib`` is the
# free GPU memory asked for before starting (about twice what the case allocates).
LARGE = [
    dict(family="conv", name="conv2d 3x3 16->16 on 2049x16x256x256 (>2^31 elements)",
         spec=dict(op="conv", dims=2, n=2049, c_in=16, size=256, c_out=16, kernel=3,
                   stride=1, padding=1, dilation=1, groups=1, bias=False, transposed=False,
                   need_gib=36)),
    dict(family="pool", name="max_pool2d 3x3 s2 p1 on 2049x16x256x256 (>2^31 elements)",
         spec=dict(op="max_pool2d", shape=(2049, 16, 256, 256), need_gib=32,
                   kwargs=dict(kernel_size=3, stride=2, padding=1))),
    dict(family="upsample", name="nearest x2 513x16x256x256 -> 2^31+ elements",
         spec=dict(op="interpolate", shape=(513, 16, 256, 256), need_gib=22,
                   kwargs=dict(scale_factor=2, mode="nearest"))),
]  # fmt: skip

# Rough GPU seconds per case, compilation included (only orders the work).
_COST = dict(default_conv=5.0, default=2.0, autotuned=40.0, sweep=15.0, large=30.0)


def _shape(entry: dict, tiny: bool) -> dict:
    if not tiny:
        return dict(entry["spec"])
    batch = {"n": 1} if "n" in entry["spec"] else {}  # pooling's tiny shapes hold their batch
    return {**entry["spec"], **batch, **entry["tiny"]}


def plan(*, cuda: bool, quick: bool) -> list[Case]:
    """Every case for this device: realistic shapes on CUDA, tiny ones under the interpreter."""
    tiny = not cuda

    def wanted(entries):
        return [e for e in entries if e["quick"] or not quick]

    def settings(dtypes):
        kept = [d for d in dtypes if not tiny or d not in INTERPRETER_SKIPS]
        return [(d, layout) for d in kept for layout in LAYOUTS]

    cases: list[Case] = []
    conv_families = [("conv", GEMM_LAYERS), ("conv-dw", DEPTHWISE_LAYERS),
                     ("conv-T", TRANSPOSED_LAYERS), ("conv-local", LOCAL_LAYERS)]  # fmt: skip
    for family, layers in conv_families:
        # Depthwise kernels are direct (no tensor cores): TF32 changes nothing there.
        dtypes = DTYPES if family == "conv-dw" else CONV_DTYPES
        for entry in wanted(layers):
            for dtype, layout in settings(dtypes):
                cases.append(Case(family, entry["name"], dtype, layout, "default",
                                  _shape(entry, tiny), _COST["default_conv"]))  # fmt: skip
    for family, ops in (("pool", POOL_OPS), ("upsample", UPSAMPLE_OPS)):
        for entry in wanted(ops):
            for dtype, layout in settings(DTYPES):
                cases.append(Case(family, entry["name"], dtype, layout, "default",
                                  _shape(entry, tiny), _COST["default"]))  # fmt: skip

    if cuda:
        for index, dtype, layout in AUTOTUNED_QUICK if quick else AUTOTUNED:
            entry = GEMM_LAYERS[index]
            cases.append(Case("conv-autotuned", entry["name"], dtype, layout, "autotuned",
                              _shape(entry, tiny), _COST["autotuned"]))  # fmt: skip

    sweep_settings = (SWEEP_SETTINGS_INTERPRETER if tiny
                      else SWEEP_SETTINGS_QUICK if quick else SWEEP_SETTINGS)  # fmt: skip
    for entry in SWEEP_LAYERS:
        for direction in entry.get("directions", SWEEP_DIRECTIONS):
            for dtype, layout in sweep_settings:
                spec = {**_shape(entry, tiny), "direction": direction}
                cases.append(Case("conv-config", f"{entry['name']} {direction}", dtype, layout,
                                  "sweep", spec, _COST["sweep"]))  # fmt: skip

    for entry in LARGE:
        skip = "" if cuda else "needs a CUDA GPU (the interpreter would take hours)"
        cases.append(Case(f"{entry['family']} >2^31", entry["name"], "bf16", "nchw", "large",
                          dict(entry["spec"]), _COST["large"], skip))  # fmt: skip
    return cases


def select(cases: list[Case], only: list[str] | None) -> list[Case]:
    """The cases whose id contains any of ``only`` (case-insensitive); all when none given."""
    if not only:
        return cases
    needles = [s.lower() for s in only]
    return [c for c in cases if any(n in c.id.lower() for n in needles)]


def resumed(case: Case, first_config: int) -> Case:
    """A sweep case that starts at config ``first_config`` (after a crash in an earlier one)."""
    return replace(case, spec={**case.spec, "first_config": first_config})
