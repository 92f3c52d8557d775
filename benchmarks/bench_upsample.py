"""``python -m benchmarks.bench_upsample``: the nearest-upsampling suite.

The same as ``python -m benchmarks upsample``; any option of ``python -m benchmarks`` applies.
The layers are in :mod:`benchmarks.shapes`.
"""

from __future__ import annotations

from collections.abc import Sequence

from .cli import suite_main


def main(argv: Sequence[str] | None = None) -> int:
    return suite_main(("upsample",), argv)


if __name__ == "__main__":
    raise SystemExit(main())
