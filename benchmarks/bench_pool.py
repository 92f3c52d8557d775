"""``python -m benchmarks.bench_pool``: the pooling suite.

The same as ``python -m benchmarks pool``; any option of ``python -m benchmarks`` applies. The
layers are in :mod:`benchmarks.shapes`.
"""

from __future__ import annotations

from collections.abc import Sequence

from .cli import suite_main


def main(argv: Sequence[str] | None = None) -> int:
    return suite_main(("pool",), argv)


if __name__ == "__main__":
    raise SystemExit(main())
