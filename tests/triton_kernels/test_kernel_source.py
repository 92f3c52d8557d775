"""What Triton's compiler refuses and its interpreter runs, checked on the kernels' source.

The interpreter runs a kernel as Python, so the suite cannot see these; the first GPU run
would (``python -m benchmarks.compile_report --check`` compiles what the GPU check launches).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KERNEL_DIRS = ("triton_kernels", "benchmarks")


def _jit_functions(path: Path) -> list[ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and any("jit" in ast.unparse(d) for d in node.decorator_list)
    ]


def _early_returns(fn: ast.FunctionDef) -> list[int]:
    """Lines of an ``if`` without ``else`` that returns, with statements after it."""
    found = []
    for node in ast.walk(fn):
        for block in (getattr(node, "body", None), getattr(node, "orelse", None)):
            if not isinstance(block, list):
                continue
            for stmt in block[:-1]:
                returns = any(isinstance(s, ast.Return) for s in getattr(stmt, "body", ()))
                if isinstance(stmt, ast.If) and not stmt.orelse and returns:
                    found.append(stmt.lineno)
    return found


def test_no_jit_function_returns_early_from_an_if():
    """Triton's compiler goes on past a ``return`` inside a compile-time ``if`` and compiles
    what follows too: ``_indexing.in_range`` once cast 64-bit coordinates to 32 bits that way,
    and no implicit GEMM compiled on its int64 offset path. Return once, or use ``else``."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line} ({fn.name})"
        for folder in KERNEL_DIRS
        for path in sorted((ROOT / folder).rglob("*.py"))
        for fn in _jit_functions(path)
        for line in _early_returns(fn)
    ]
    assert not offenders, offenders


def test_the_rule_finds_an_early_return():
    source = "@triton.jit\ndef f(i):\n    if i.dtype == tl.int64:\n        return 1\n    return 2\n"
    fn = ast.parse(source).body[0]
    assert _early_returns(fn) == [3]
