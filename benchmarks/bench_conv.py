"""``python -m benchmarks.bench_conv``: the convolution suites.

The same as ``python -m benchmarks conv depthwise grouped conv3d fused`` (``fused``: convolution + bias +
ReLU in one kernel against cuDNN's convolution then ``torch.relu``; run it with ``--dtype bf16``
on a GPU); any option of ``python -m
benchmarks`` applies. The layers are in :mod:`benchmarks.shapes`.
"""

from __future__ import annotations

from collections.abc import Sequence

from .cli import suite_main


def main(argv: Sequence[str] | None = None) -> int:
    return suite_main(("conv", "depthwise", "grouped", "conv3d", "fused"), argv)


if __name__ == "__main__":
    raise SystemExit(main())
