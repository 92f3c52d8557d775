"""Early, readable failures for configuration values."""

from __future__ import annotations

from collections.abc import Iterable


def check_choice(kind: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ``ValueError`` listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(
            f"unknown {kind} {value!r}: expected one of {', '.join(map(repr, choices))}"
        )
    return value
