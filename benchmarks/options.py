"""Settings of one benchmark run, handed to every suite."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .providers import COMPILE_MODES, default_providers

#: Benchmark dtypes by command-line name.
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp64": torch.float64,
}

#: Forward, backward (given the forward's graph) and both in one call: what runs by default.
DIRECTIONS: tuple[str, ...] = ("fwd", "bwd", "both")
#: Every direction: also ``infer``, the forward without gradients (inference), where an op may
#: compute otherwise (a fused activation needing its pre-activation runs fused only there).
ALL_DIRECTIONS: tuple[str, ...] = ("infer", *DIRECTIONS)


@dataclass
class RunOptions:
    """What to run: device, providers, directions; ``quick`` is a smoke test, not a measurement."""

    device: str = "cpu"
    quick: bool = False
    providers: list[str] = field(default_factory=list)
    directions: tuple[str, ...] = DIRECTIONS
    batch: int | None = None
    compile_mode: str = "max-autotune"
    #: GPU runs: also replay ours in a CUDA graph (host overhead per call)
    graph: bool = False

    def __post_init__(self) -> None:
        if not self.providers:
            self.providers = default_providers(self.device)
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}"
            )

    @property
    def gpu(self) -> bool:
        return self.device.startswith("cuda")
