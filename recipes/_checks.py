"""Early, readable failures for what the user asked for (a path, a name, a value).

Errors that derive from :class:`RecipeError` describe a mistake in the command line or the
config and say how to fix it; ``python -m recipes`` prints their message alone, without a
traceback. They also derive from the built-in type a Python caller expects
(``FileNotFoundError``, ``ValueError``), so code that catches those keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable

#: The largest seed numpy takes (and so Lightning's ``seed_everything`` and scikit-learn's
#: splits): seeds are 0 … 2**32 - 1.
SEED_MAX = 2**32 - 1


class RecipeError(Exception):
    """A mistake in the command line, the config or the data, explained in the message."""


class DataNotFoundError(RecipeError, FileNotFoundError):
    """A data set, image folder or checkpoint is not where the config says."""


class RecipeValueError(RecipeError, ValueError):
    """A value the recipe cannot use (an unknown name, a corrupt file, a bad size)."""


def find_recipe_error(error: BaseException) -> RecipeError | None:
    """The first :class:`RecipeError` in ``error``'s chain of causes, if any (argument parsers
    and Lightning wrap the exceptions raised while they build or run things)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, RecipeError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def check_choice(kind: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ``ValueError`` listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise RecipeValueError(
            f"unknown {kind} {value!r}: expected one of {', '.join(map(repr, choices))}"
        )
    return value
