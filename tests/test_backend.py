"""Backend selection: names, env var, context manager, and refusing impossible launches."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import torchconv_ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TRITON_INTERPRET", "TORCHCONV_EXT_BACKEND")
    }
    full_env.update(env, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=120
    )


def test_set_and_use_backend():
    assert torchconv_ext.get_backend() == "auto"
    with torchconv_ext.use_backend("torch"):
        assert torchconv_ext.get_backend() == "torch"
        with torchconv_ext.use_backend("triton"):
            assert torchconv_ext.get_backend() == "triton"
        assert torchconv_ext.get_backend() == "torch"
    assert torchconv_ext.get_backend() == "auto"
    torchconv_ext.set_backend("torch")
    try:
        assert torchconv_ext.get_backend() == "torch"
    finally:
        torchconv_ext.set_backend("auto")


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ValueError, match="'auto', 'triton', 'torch'"):
        torchconv_ext.set_backend("cudnn")
    with pytest.raises(ValueError, match="expected one of"), torchconv_ext.use_backend("nope"):
        pass


def test_env_var_selects_backend():
    r = _run(
        "import torchconv_ext; print(torchconv_ext.get_backend())", TORCHCONV_EXT_BACKEND="torch"
    )
    assert r.stdout.strip() == "torch", r.stderr
    r = _run(
        "import torchconv_ext; print(torchconv_ext.get_backend())", TORCHCONV_EXT_BACKEND="Triton"
    )
    assert r.stdout.strip() == "triton", r.stderr


def test_a_graph_traced_before_any_eager_call_does_not_recompile_at_the_first():
    """The backend is chosen at import: a graph traced first reads it, not a backend still to be
    chosen, which the first eager call would choose — failing the graph's guard."""
    code = (
        "import torch, torchconv_ext.functional as TF\n"
        "from torch._dynamo.testing import CompileCounter\n"
        "counter, w = CompileCounter(), torch.randn(2, 2, 3, 3)\n"
        "f = torch.compile(lambda x: TF.conv2d(x, w, padding=1), backend=counter, fullgraph=True)\n"
        "x = torch.randn(1, 2, 4, 4)\n"
        "f(x); TF.conv2d(x, w, padding=1); f(x)\n"
        "print(counter.frame_count)\n"
    )
    r = _run(code)
    assert r.stdout.strip() == "1", r.stderr


def test_bad_env_var_is_reported_at_first_use_not_at_import():
    code = (
        "import torch, torchconv_ext\n"
        "print('imported')\n"
        "torchconv_ext.functional.conv1d(torch.randn(1, 1, 4), torch.randn(1, 1, 2))\n"
    )
    r = _run(code, TORCHCONV_EXT_BACKEND="fast")
    assert r.stdout.strip() == "imported", r.stderr
    assert r.returncode != 0
    assert "TORCHCONV_EXT_BACKEND='fast'" in r.stderr and "'auto', 'triton', 'torch'" in r.stderr


@pytest.mark.parametrize(
    ("value", "flag"),
    [("1", True), (" TRUE ", True), ("yes", True), ("On", True), ("0", False), ("false", False),
     ("NO", False), ("off", False), ("", None), ("  ", None)],
)  # fmt: skip
def test_switches_in_the_environment(monkeypatch, value, flag):
    # (both packages read their switches alike; None: the default)
    from torchconv_ext._backend import env_flag
    from triton_kernels._common import env_flag as kernels_env_flag

    monkeypatch.setenv("TORCHCONV_EXT_SOME_SWITCH", value)
    for read in (env_flag, kernels_env_flag):
        for default in (True, False):
            assert read("TORCHCONV_EXT_SOME_SWITCH", default) is (default if flag is None else flag)


def test_a_misspelt_switch_is_refused_at_import():
    r = _run("import torchconv_ext", TORCHCONV_EXT_WEIGHT_CACHE="flase")
    assert r.returncode != 0
    assert "TORCHCONV_EXT_WEIGHT_CACHE='flase' is not a switch" in r.stderr
    code = "import torchconv_ext._ops._layout as layout; print(layout.ENABLED)"
    assert _run(code, TORCHCONV_EXT_WEIGHT_CACHE="off").stdout.strip() == "False"


def test_backend_names_are_case_insensitive():
    with torchconv_ext.use_backend("Torch"):
        assert torchconv_ext.get_backend() == "torch"
    torchconv_ext.set_backend(" AUTO ")
    assert torchconv_ext.get_backend() == "auto"


@pytest.mark.interpret
def test_switching_backend_inside_compiled_code(monkeypatch):
    """Honoured between graphs (the Triton launcher runs); under fullgraph=True an error that
    names the switch."""
    import torch.nn.functional as F

    import triton_kernels
    from torchconv_ext import functional as TF

    launches = []
    launcher = triton_kernels.conv_forward
    monkeypatch.setattr(
        triton_kernels, "conv_forward", lambda *a, **k: launches.append(1) or launcher(*a, **k)
    )
    x, w = torch.randn(1, 2, 5), torch.randn(3, 2, 2)

    def step(x):
        with torchconv_ext.use_backend("triton"):
            return TF.conv1d(x, w, padding="same", padding_mode="reflect")

    torch._dynamo.reset()
    with torchconv_ext.use_backend("torch"):
        got = torch.compile(step, backend="eager")(x)
        assert torchconv_ext.get_backend() == "torch"
    torch.testing.assert_close(got, F.conv1d(F.pad(x, (0, 1), mode="reflect"), w))
    assert launches == [1]
    torch._dynamo.reset()
    with pytest.raises(Exception, match="set_backend / use_backend"):
        torch.compile(step, backend="eager", fullgraph=True)(x)
    torch._dynamo.reset()


def test_triton_on_cpu_without_interpreter_is_a_clear_error():
    code = (
        "import torch, torchconv_ext\n"
        "with torchconv_ext.use_backend('triton'):\n"
        "    torchconv_ext.functional.conv1d(torch.randn(1, 1, 4), torch.randn(1, 1, 2))\n"
    )
    r = _run(code)
    assert r.returncode != 0 and "TRITON_INTERPRET=1" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "triton_version, numpy_version, refused",
    [("3.6.0", "2.4.0", True), ("3.6.0", "2.3.5", False), ("3.9.0", "2.4.6", False)],
)
def test_an_interpreter_numpy_cannot_serve_is_a_clear_error(
    monkeypatch, triton_version, numpy_version, refused
):
    """Triton 3.6's interpreter fails on NumPy 2.4 in every kernel with a runtime loop bound
    (``int()`` of a 1-element array): importing the kernels under it says what to install."""
    from importlib import metadata

    triton = pytest.importorskip("triton")
    from triton_kernels import _interpreter

    monkeypatch.setattr(triton, "__version__", triton_version)
    monkeypatch.setattr(metadata, "version", {"numpy": numpy_version}.__getitem__)
    if refused:
        with pytest.raises(ImportError, match=r"numpy<2\.4.*Triton 3\.9"):
            _interpreter._refuse_numpy_the_interpreter_cannot_use()
    else:
        _interpreter._refuse_numpy_the_interpreter_cannot_use()


@pytest.mark.parametrize("backend", ["auto", "triton", "torch"])
def test_meta_tensors_get_torchs_sizes_on_every_backend(backend):
    """A meta tensor holds no data: every backend gives the sizes and strides torch's op gives
    (a model built on the meta device runs its forward for sizes, whatever the backend)."""
    import torch.nn.functional as F

    from torchconv_ext import functional as TF

    x = torch.empty(2, 16, 6, 6, device="meta").to(memory_format=torch.channels_last)
    w = torch.empty(8, 16, 3, 3, device="meta")
    calls = [
        (lambda f: f.conv2d(x, w, stride=2, padding=1)),
        (lambda f: f.conv_transpose2d(x, w.transpose(0, 1), stride=2)),
        (lambda f: f.max_pool2d(x, 3, 2, 1)),
        (lambda f: f.interpolate(x, scale_factor=2)),
    ]
    with torchconv_ext.use_backend(backend):
        for call in calls:
            ours, theirs = call(TF), call(F)
            assert ours.is_meta
            assert (ours.shape, ours.stride()) == (theirs.shape, theirs.stride())


def test_imports_and_falls_back_without_triton():
    code = (
        "import sys, torch\n"
        "sys.modules['triton'] = None  # as if triton were not installed\n"
        "import torchconv_ext\n"
        "x, w = torch.randn(1, 2, 5), torch.randn(3, 2, 2)\n"
        "y = torchconv_ext.functional.conv1d(x, w)\n"
        "assert torch.equal(y, torch.nn.functional.conv1d(x, w))\n"
        "print('ok')\n"
    )
    r = _run(code)
    assert r.stdout.strip() == "ok", r.stderr


def test_auto_uses_fallback_on_cpu(monkeypatch):
    """Under 'auto' a CPU tensor never reaches a Triton launch."""
    import triton_kernels

    def boom(*args, **kwargs):
        raise AssertionError("Triton launched for a CPU tensor under 'auto'")

    monkeypatch.setattr(triton_kernels, "conv_forward", boom)
    x, w = torch.randn(1, 2, 5), torch.randn(3, 2, 2)
    torch.testing.assert_close(
        torchconv_ext.functional.conv1d(x, w), torch.nn.functional.conv1d(x, w)
    )
