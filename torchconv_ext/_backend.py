"""Backend selection: which implementation a registered op runs.

* ``"auto"`` (default): Triton kernels for CUDA tensors, the ATen fallback for anything else;
* ``"triton"``: always Triton; CPU tensors then need ``TRITON_INTERPRET=1`` (set before import);
* ``"torch"``: the ATen fallback everywhere.

The choice is read when an op runs (not when it is traced), so it also holds inside
``torch.compile``-d graphs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

BACKENDS: tuple[str, ...] = ("auto", "triton", "torch")
_ENV_VAR = "TORCHCONV_EXT_BACKEND"


def _validated(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(
            f"unknown torchconv_ext backend {name!r}: expected one of {', '.join(map(repr, BACKENDS))}"
        )
    return name


_current: str = _validated(os.environ.get(_ENV_VAR, "auto").strip().lower() or "auto")


def get_backend() -> str:
    """The backend in force: ``"auto"``, ``"triton"`` or ``"torch"``."""
    return _current


def set_backend(name: str) -> None:
    """Choose the backend for every op from now on (see the module docstring for the names)."""
    global _current
    _current = _validated(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager: run the enclosed code with backend ``name``, then restore the previous."""
    global _current
    previous, _current = _current, _validated(name)
    try:
        yield
    finally:
        _current = previous


_kernels = None


def kernels():
    """The ``triton_kernels`` package (our launchers), imported on first use so that
    ``torchconv_ext`` imports where Triton is absent."""
    global _kernels
    if _kernels is None:
        import triton_kernels

        if not getattr(triton_kernels, "IS_TORCHCONV_EXT_KERNELS", False):
            raise ImportError(
                f"the module 'triton_kernels' found at {getattr(triton_kernels, '__file__', '?')} "
                "is not torchconv_ext's kernel package but another package of the same name "
                "(Triton's 'triton-kernels' distribution, used by vLLM, installs it): uninstall "
                "one of the two, or put torchconv_ext's first on sys.path"
            )
        _kernels = triton_kernels
    return _kernels


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported here."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton(t: torch.Tensor) -> bool:
    """Whether an op on tensor ``t`` runs the Triton kernels under the current backend.

    Raises ``RuntimeError`` when the backend demands Triton where it cannot run, instead of
    letting a launch fail deep inside Triton.
    """
    if _current == "torch":
        return False
    if _current == "auto":
        return t.is_cuda and triton_available()
    if not triton_available():
        raise RuntimeError(
            "torchconv_ext backend 'triton' needs the triton package, which is not installed"
        )
    if t.is_cuda:
        return True
    if t.device.type == "cpu":
        if not kernels().INTERPRET:
            raise RuntimeError(
                "torchconv_ext backend 'triton' on CPU tensors runs Triton's interpreter: set "
                "TRITON_INTERPRET=1 before importing torchconv_ext, or use backend 'auto'/'torch'"
            )
        return True
    raise RuntimeError(
        f"torchconv_ext backend 'triton' supports CUDA and CPU tensors, not {t.device.type!r}"
    )
