"""Fixtures of the recipe tests: small data sets written in the real formats.

Everything runs on the CPU with tiny networks (``--model.width``) and ``fast_dev_run`` or a
few batches, on the default backend (``auto``: the ATen fallback for CPU tensors).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from recipes_testutils import write_cifar, write_image_tree


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests' tensors are tiny: one intra-op thread is faster than several, and keeps
    OpenMP from thrashing when the cores are shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cifar10(tmp_path_factory) -> dict:
    return write_cifar(tmp_path_factory.mktemp("cifar10"), "cifar10", per_batch=40)


@pytest.fixture(scope="session")
def cifar100(tmp_path_factory) -> dict:
    return write_cifar(tmp_path_factory.mktemp("cifar100"), "cifar100", per_batch=300)


@pytest.fixture
def image_tree(tmp_path) -> Path:
    return write_image_tree(tmp_path / "images")
