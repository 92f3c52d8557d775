"""The README's Python examples run as written (on the default backend, CPU tensors)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _complete_examples() -> list[str]:
    """The ```python blocks that stand alone (those that ``import torch`` themselves)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return [b for b in blocks if "import torch\n" in b]


def test_there_is_a_runnable_example():
    assert _complete_examples()


@pytest.mark.parametrize("index", range(len(_complete_examples())))
def test_example_runs(index):
    code = _complete_examples()[index]
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, f"README.md example {index}", "exec"), {})
