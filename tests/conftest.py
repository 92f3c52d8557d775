"""Test set-up: Triton's interpreter on machines without CUDA, markers, shared fixtures.

GPU policy: tests that need CUDA live in ``tests/gpu/`` only, one module per family, each marked
``pytestmark = pytest.mark.gpu``; without CUDA they are skipped here. Every other test runs on
the CPU: the fallback, and the Triton kernels under the interpreter (marker ``interpret``).

``TRITON_INTERPRET`` is read when a kernel is decorated, so it is set here, before anything
imports ``triton_kernels``.
"""

import atexit
import os
import shutil
import tempfile

import pytest

# One ATen thread per test process, and in the processes tests start: the tensors are tiny, and
# pytest-xdist runs a process per core, whose thread pools would otherwise take turns on the
# same cores (ATen's threads spin while they wait).
os.environ["OMP_NUM_THREADS"] = "1"

import torch

torch.set_num_threads(1)  # (in case a plugin imported torch first)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Every output a kernel writes is NaN-filled first, so an unwritten element fails the comparison.
os.environ.setdefault("TORCHCONV_EXT_POISON", "1")
# Every interpreted load and store must stay inside the launch's tensors (``_bounds``).
os.environ.setdefault("TORCHCONV_EXT_BOUNDS_CHECK", "1")

# Tuned launch configs persist in a per-user cache: tests write theirs to a fresh directory,
# never to the user's (``triton_kernels._tuning``), and remove it when the run ends.
os.environ["TORCHCONV_EXT_CACHE_DIR"] = tempfile.mkdtemp(prefix="torchconv_ext-test-cache-")

atexit.register(shutil.rmtree, os.environ["TORCHCONV_EXT_CACHE_DIR"], ignore_errors=True)

HAS_CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_interp = pytest.mark.skip(reason="needs CUDA or TRITON_INTERPRET=1")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if "interpret" in item.keywords and not (HAS_CUDA or INTERPRET):
            item.add_marker(skip_interp)


@pytest.fixture
def triton_device() -> str:
    """Where Triton kernels run in this test session: the GPU, else the CPU interpreter."""
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(autouse=True)
def fresh_launcher_tapes():
    """Each test starts without launcher tapes (``triton_kernels._tape``): a replayed problem
    skips the tuner and the plans, which some tests spy on or force; within a test, problems
    that repeat (gradcheck) are replayed as anywhere else."""
    import sys

    tapes = sys.modules.get("triton_kernels._tape")
    if tapes is not None:
        tapes.clear_tapes()


@pytest.fixture
def tapes_on():
    """For the tapes' own tests: skipped where ``TORCHCONV_EXT_LAUNCH_PLANS=0`` turns tapes off,
    and leaving none behind."""
    from triton_kernels import _tape

    if not _tape.ENABLED:
        pytest.skip("TORCHCONV_EXT_LAUNCH_PLANS=0 turns tapes off")
    yield
    _tape.clear_tapes()


@pytest.fixture
def fresh_weight_cache():
    """The repacked-weight cache (``torchconv_ext._ops._layout``) empty before and after the
    test, so that its counters count this test's repacks. Layout modules request it for all
    their tests."""
    from torchconv_ext._ops import _layout

    _layout.clear_weight_cache()
    yield
    _layout.clear_weight_cache()


@pytest.fixture
def spy_launchers(monkeypatch):
    """``spy(names, record)``: each launcher of ``triton_kernels`` named in ``names`` calls
    ``record(name, args)`` before it runs, for the rest of the test."""
    from torchconv_ext._backend import kernels

    def spied(name, original, record):
        def call(*args, **kwargs):
            record(name, args)
            return original(*args, **kwargs)

        return call

    def spy(names, record):
        k = kernels()
        for name in names:
            monkeypatch.setattr(k, name, spied(name, getattr(k, name), record))

    return spy
