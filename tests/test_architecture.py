"""The import rules of ARCHITECTURE.md, checked on the source (no imports run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path, root: Path = ROOT) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def _files(folder: str, root: Path = ROOT) -> list[Path]:
    return sorted((root / folder).rglob("*.py"))


def _violations(folder: str, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    return [
        f"{path.relative_to(root)} imports {name}"
        for path in _files(folder, root)
        for name in _imports(path, root)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("triton_kernels", ("torch.nn", "torch.autograd", "torchconv_ext")),
        ("torchconv_ext/functional", ("triton_kernels", "torchconv_ext._backend.kernels")),
        ("torchconv_ext/nn", ("torchconv_ext._ops",)),
    ],
)
def test_import_rules(folder, forbidden):
    assert _files(folder)
    assert _violations(folder, forbidden) == []


def test_only_the_backend_imports_the_kernel_package():
    importers = {
        str(path.relative_to(ROOT))
        for path in _files("torchconv_ext")
        if any(n == "triton_kernels" or n.startswith("triton_kernels.") for n in _imports(path))
    }
    # The device check observes launches from outside the op layer, on purpose.
    assert importers <= {"torchconv_ext/_backend.py"} | {
        str(p.relative_to(ROOT)) for p in _files("torchconv_ext/check")
    }


def test_the_rules_catch_a_violation(tmp_path):
    probe = tmp_path / "torchconv_ext" / "nn" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from .._ops import conv\n")
    assert _violations("torchconv_ext/nn", ("torchconv_ext._ops",), tmp_path) == [
        "torchconv_ext/nn/probe.py imports torchconv_ext._ops",
        "torchconv_ext/nn/probe.py imports torchconv_ext._ops.conv",
    ]
