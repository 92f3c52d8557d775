"""The text table of a model summary."""

from __future__ import annotations

from collections.abc import Sequence

from .fields import Field


def count(n: int) -> str:
    return f"{n:,}"


def metric(n: float, unit: str = "") -> str:
    """``1234567`` → ``1.23M``."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{prefix}{unit}"
    return f"{n:g}{unit}"


def size_in_bytes(n: int) -> str:
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def number(v: float) -> str:
    return f"{v:g}"


def axes(values: Sequence[float] | None, sep: str = "×") -> str:
    if values is None:
        return "?"
    return sep.join(number(v) for v in values) if values else "–"


def field_columns(field: Field | None) -> list[str]:
    if field is None:
        return ["?", "?", "?"]
    return [axes(field.size), axes(field.jump), axes(field.start, ", ")]


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)
        ).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(r) for r in rows), rule])
