"""``python -m benchmarks.bench_conv``: the convolution suites (conv, depthwise, conv3d).

The same as ``python -m benchmarks conv depthwise conv3d``; any option of ``python -m
benchmarks`` applies. The layers are in :mod:`benchmarks.shapes`.
"""

from __future__ import annotations

from collections.abc import Sequence

from .cli import suite_main


def main(argv: Sequence[str] | None = None) -> int:
    return suite_main(("conv", "depthwise", "conv3d"), argv)


if __name__ == "__main__":
    raise SystemExit(main())
