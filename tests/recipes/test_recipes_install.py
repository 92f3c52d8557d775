"""What ``pip install -e ".[recipes]"`` brings is what the recipes import, and no more goes into
the library's own dependencies."""

from __future__ import annotations

import ast
import functools
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

import pytest
from recipes_testutils import REPO

tomllib = pytest.importorskip("tomllib")
requirements = pytest.importorskip("packaging.requirements")


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _imports(folder: Path) -> set[str]:
    """Top-level names of the modules imported anywhere under ``folder``."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _closure(declared: list[str]) -> set[str]:
    """The distributions ``declared`` installs: those named, with their requirements (their
    extras too), recursively — as installed here."""
    todo = [requirements.Requirement(r) for r in declared]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist_requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in dist_requires:
            sub = requirements.Requirement(text)
            env = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(e) for e in env):
                todo.append(sub)
    return {k.split("[")[0] for k in seen}


@functools.cache
def _packages() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def _distributions(module: str) -> set[str]:
    return {d.lower().replace("_", "-") for d in _packages().get(module, [])}


def test_the_library_needs_no_numpy():
    project = _project()
    assert "numpy" not in {_name(r) for r in project["dependencies"]}
    for package in ("torchconv_ext", "triton_kernels"):
        assert "numpy" not in _imports(REPO / package), package


def test_the_recipes_extra_brings_every_module_the_recipes_import():
    project = _project()
    installed = _closure(project["dependencies"] + project["optional-dependencies"]["recipes"])
    ours = {"recipes", "torchconv_ext", "triton_kernels"}
    third_party = _imports(REPO / "recipes") - ours - set(sys.stdlib_module_names)
    missing = {m for m in third_party if not _distributions(m) & installed}
    assert not missing, f"imported by recipes/ but not installed by the [recipes] extra: {missing}"


def test_tensorboard_is_opt_in():
    extras = _project()["optional-dependencies"]
    assert "tensorboard" not in {_name(r) for r in extras["recipes"]}
    assert {_name(r) for r in extras["tensorboard"]} == {"tensorboard"}
    assert not {"tensorboard", "tensorboardX"} & _imports(REPO / "recipes")
