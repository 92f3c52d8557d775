"""Fixtures of the recipe tests: small data sets written in the real formats.

Everything runs on the CPU with tiny networks (``--model.width``) and ``fast_dev_run`` or a
few batches, on the default backend (``auto``: the ATen fallback for CPU tensors).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from recipes_testutils import write_cifar, write_image_tree


@pytest.fixture(scope="session")
def cifar10(tmp_path_factory) -> dict:
    return write_cifar(tmp_path_factory.mktemp("cifar10"), "cifar10", per_batch=40)


@pytest.fixture(scope="session")
def cifar100(tmp_path_factory) -> dict:
    return write_cifar(tmp_path_factory.mktemp("cifar100"), "cifar100", per_batch=300)


@pytest.fixture
def image_tree(tmp_path) -> Path:
    return write_image_tree(tmp_path / "images")
