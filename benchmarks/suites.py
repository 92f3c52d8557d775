"""The benchmark suites by name: each a list of real layers (:mod:`benchmarks.shapes`).

Every suite works alike: its cases are its layers sized for the run (training batch on GPUs;
smaller for CPU sanity runs and ``--quick`` smoke tests), and :func:`benchmarks.measure.run_case`
checks and times each one. Adding a suite is adding its layers to ``shapes.py`` and a line here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .measure import run_case
from .options import ALL_DIRECTIONS, RunOptions
from .shapes import SUITE_LAYERS, Layer, scaled
from .timing import method_name
from .workload import required_ops

#: CPU runs (sanity only): batch 1, spatial size halved until the forward fits these.
CPU_BATCH = 1
CPU_MAX_FWD_FLOPS = 0.5e9
CPU_MAX_FWD_BYTES = 64e6
#: ``--quick`` (smoke test): a few layers per suite, shrunk to about this forward cost.
QUICK_MAX_FWD_FLOPS = 2e5
QUICK_MAX_FWD_BYTES = 2e5


def _budget(layer: Layer, flops: float, nbytes: float) -> float:
    return flops if layer.COMPUTE_BOUND else nbytes


@dataclass(frozen=True)
class Suite:
    """A named family of layers, with the few that a ``--quick`` run and a budget run's first
    pass take (by name; the first two layers when not given)."""

    name: str
    description: str
    quick: tuple[str, ...] = ()
    key: tuple[str, ...] = ()
    #: Directions timed besides the run's (the fused suite: ``infer``, where fusing pays most).
    directions: tuple[str, ...] = ()

    @property
    def layers(self) -> list[Layer]:
        return SUITE_LAYERS[self.name]

    def unavailable(self) -> str | None:
        """Why this suite cannot run here (an op missing from torchconv_ext), or ``None``."""
        import torchconv_ext.functional as ours

        needed = set().union(*(required_ops(layer) for layer in self.layers))
        missing = sorted(needed - set(dir(ours)))
        if missing:
            return f"torchconv_ext.functional has no {', '.join(missing)} yet"
        return None

    def _pick(self, names: tuple[str, ...]) -> list[Layer]:
        if not names:
            return self.layers[:2]
        return [layer for layer in self.layers if layer.name in names]

    def key_layers(self) -> list[Layer]:
        """The layers a budget run times first (see ``benchmarks/budget.py``)."""
        return self._pick(self.key)

    def cases(self, options: RunOptions, *, every_layer: bool = False) -> list[dict[str, Any]]:
        """The cases: each a layer as a dict, sized for the device and run.

        ``options.quick`` shrinks them and keeps the suite's quick layers (all of them with
        ``every_layer``).
        """
        layers = self._pick(self.quick) if options.quick and not every_layer else self.layers
        return [self.case(layer, options) for layer in layers]

    def case(self, layer: Layer, options: RunOptions) -> dict[str, Any]:
        """One layer as a case of this run."""
        if options.quick:
            batch = options.batch or 1
            budget = _budget(layer, QUICK_MAX_FWD_FLOPS, QUICK_MAX_FWD_BYTES)
        elif options.batch:
            batch, budget = options.batch, None
        elif not options.gpu:
            batch, budget = CPU_BATCH, _budget(layer, CPU_MAX_FWD_FLOPS, CPU_MAX_FWD_BYTES)
        else:
            batch, budget = layer.batch, None
        case = scaled(layer, batch, budget).to_dict()
        case.update(suite=self.name, full_shape=layer.shape_str())
        return case

    def run_case(
        self, case: dict[str, Any], dtype: str, options: RunOptions, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """Check and time one case (:func:`benchmarks.measure.run_case`), in the run's
        directions and the suite's own."""
        if set(self.directions) - set(options.directions):
            wanted = {*self.directions, *options.directions}
            options = replace(options, directions=tuple(d for d in ALL_DIRECTIONS if d in wanted))
        return run_case(case, dtype, options, **kwargs)

    def batch_policy(self, options: RunOptions) -> str:
        """How batch and size were chosen in this run, recorded in the result files."""
        if options.quick:
            return (
                f"--quick smoke test: {len(self.cases(options))} layers, batch "
                f"{options.batch or 1}, spatial size halved until the forward is at most "
                f"{QUICK_MAX_FWD_FLOPS:.0e} FLOP (convolutions) or {QUICK_MAX_FWD_BYTES:.0e} "
                "bytes (pooling, upsampling); times are not measurements"
            )
        if options.batch:
            return f"batch {options.batch} for every layer (--batch)"
        if not options.gpu:
            return (
                f"CPU sanity run: batch {CPU_BATCH} instead of the training batch, spatial size "
                f"halved until the forward is at most {CPU_MAX_FWD_FLOPS / 1e9:g} GFLOP "
                f"(convolutions) or moves at most {CPU_MAX_FWD_BYTES / 1e6:g} MB (pooling, "
                "upsampling); 'shape' is what ran, 'full_shape' the layer at training size"
            )
        return "per-GPU training batch of each network (benchmarks/shapes.py)"

    def timer(self, options: RunOptions) -> str:
        """How this suite's times are taken, as recorded in the result files."""
        return method_name(options.device)


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite(
            "conv",
            "2-D convolutions: AlexNet, VGG-16, ResNet-50 (3x3, 1x1, 7x7 stem)",
            key=("resnet50.layer3.conv2", "resnet50.layer3.conv1"),
        ),
        Suite(
            "transposed",
            "transposed convolutions: U-Net and DCGAN decoders",
            key=("unet.up3",),
        ),
        Suite(
            "depthwise",
            "depthwise 3x3 convolutions: MobileNetV2",
            key=("mobilenetv2.features.3.dw",),
        ),
        Suite(
            "grouped",
            "grouped 3x3 convolutions: ResNeXt-50 32x4d (groups of 4 to 32 channels)",
            key=("resnext50.layer3.conv2",),
        ),
        Suite("conv3d", "3-D convolutions: a 3D U-Net", key=("unet3d.enc3.conv2",)),
        Suite(
            "fused",
            "convolution + bias + activation fused in the epilogue, against cuDNN's convolution "
            "then torch's activation: ReLU (AlexNet, VGG-16, ResNet-50 3x3 and 1x1), ReLU6 "
            "(MobileNetV2 depthwise), hard swish (MobileNetV3 1x1), Mish (YOLOv4 3x3); also "
            "timed without gradients (infer), where hard swish and Mish stay fused",
            key=("vgg16.conv3_2+relu",),
            directions=("infer",),
        ),
        Suite(
            "local",
            "locally connected and tiled convolutions (beyond torch): DeepFace's L4-L6 and 2x2 "
            "tiles at VGG-16's widths, against torch's windows and einsum",
            key=("deepface.l4", "tiledcnn.conv3"),
        ),
        Suite(
            "pool",
            "pooling: AlexNet, VGG-16, ResNet-50 max pools, global average and pyramid pooling",
            key=("resnet50.maxpool",),
        ),
        Suite(
            "upsample",
            "nearest upsampling: U-Net, 3D U-Net and FPN decoders",
            quick=("unet.up3", "unet3d.up2", "fpn.p4_p3", "resize.x1.5"),
            key=("unet.up3",),
        ),
    )
}


def get(name: str) -> Suite:
    """The suite called ``name`` (``KeyError`` naming the known suites otherwise)."""
    try:
        return SUITES[name]
    except KeyError:
        raise KeyError(f"unknown suite {name!r}: expected one of {', '.join(SUITES)}") from None
