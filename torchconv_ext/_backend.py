"""Backend selection: which implementation an op runs.

* ``"auto"`` (default): Triton kernels for CUDA tensors, the ATen fallback for anything else;
* ``"triton"``: always Triton; CPU tensors then need ``TRITON_INTERPRET=1`` (set before import);
* ``"torch"``: the ATen fallback everywhere.

Names are case-insensitive. The environment variable ``TORCHCONV_EXT_BACKEND`` gives the initial
choice; it is read, and a bad value reported, at first use rather than at import. The choice is
read when an op runs, so it also holds inside ``torch.compile``-d graphs; switching it *inside* a
compiled function runs the switch outside the graph (a graph break), and under
``fullgraph=True`` that is an error naming the switch.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import torch

BACKENDS: tuple[str, ...] = ("auto", "triton", "torch")
_ENV_VAR = "TORCHCONV_EXT_BACKEND"


#: What a switch in the environment may say (any case, spaces ignored); unset or empty: its default.
_SWITCH_VALUES = {"1": True, "true": True, "yes": True, "on": True,
                  "0": False, "false": False, "no": False, "off": False}  # fmt: skip


def env_flag(name: str, default: bool) -> bool:
    """The environment variable ``name`` as a switch: ``1``/``true``/``yes``/``on`` or
    ``0``/``false``/``no``/``off``; ``default`` where unset or empty. Anything else raises
    ``ValueError`` naming the variable (a misspelt "off" must not leave a feature on).

    (``triton_kernels._common.env_flag`` reads its package's switches alike: that package
    imports nothing of ``torchconv_ext``.)"""
    value = os.environ.get(name, "")
    if not value.strip():
        return default
    flag = _SWITCH_VALUES.get(value.strip().lower())
    if flag is None:
        raise ValueError(
            f"environment variable {name}={value!r} is not a switch: expected 1, true, yes or on, "
            "or 0, false, no or off"
        )
    return flag


def _validated(name: str) -> str:
    normal = name.strip().lower() if isinstance(name, str) else name
    if normal not in BACKENDS:
        raise ValueError(
            f"unknown torchconv_ext backend {name!r}: expected one of "
            f"{', '.join(map(repr, BACKENDS))} (case-insensitive)"
        )
    return normal


def _from_environment() -> str | None:
    """The backend the environment variable names (unset: ``"auto"``), or ``None`` for a name
    that is none (:func:`get_backend` reports it at the first use, not at import)."""
    try:
        return _validated(os.environ.get(_ENV_VAR, "").strip() or "auto")
    except ValueError:
        return None


# Chosen at import: a graph traced before any eager call reads the backend in force — a guard
# on a backend not chosen yet would fail, and the graph recompile, at the first eager call.
_current: str | None = _from_environment()  # None: the environment variable's name is bad


def get_backend() -> str:
    """The backend in force: ``"auto"``, ``"triton"`` or ``"torch"``."""
    global _current
    if _current is None:
        value = os.environ.get(_ENV_VAR, "").strip() or "auto"
        try:
            _current = _validated(value)
        except ValueError:
            raise ValueError(
                f"environment variable {_ENV_VAR}={value!r} is not a torchconv_ext backend: "
                f"expected one of {', '.join(map(repr, BACKENDS))} (case-insensitive)"
            ) from None
    return _current


def _switch(name: str) -> None:
    # Compiled code cannot record the switch (ops read the backend when they run): refuse it
    # while tracing. Without fullgraph=True, torch.compile then runs this part eagerly, where the
    # switch works; with fullgraph=True this error is what the user sees.
    if torch.compiler.is_compiling():
        raise RuntimeError(
            "torchconv_ext.set_backend / use_backend switch the backend, which compiled code "
            "cannot record: choose the backend outside the compiled function, or compile "
            "without fullgraph=True so the switch runs eagerly"
        )
    global _current
    _current = name


def set_backend(name: str) -> None:
    """Choose the backend for every op from now on (see the module docstring for the names)."""
    _switch(_validated(name))


class use_backend:  # a context manager, named like a function as torch names its own
    """Context manager: run the enclosed code with backend ``name``, then restore the previous.

    ``with torchconv_ext.use_backend("torch"): ...``
    """

    def __init__(self, name: str) -> None:
        self._name = _validated(name)
        self._previous: str | None = None

    def __enter__(self) -> None:
        self._previous = get_backend()
        _switch(self._name)

    def __exit__(self, *exc_info) -> None:
        _switch(self._previous)


def jit_tracing() -> bool:
    """Whether ``torch.jit.trace`` is recording (also under the TorchScript-based
    ``torch.onnx.export``)."""
    return torch._C._get_tracing_state() is not None


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """The enclosed code unrecorded by a ``torch.jit.trace`` in progress, its sizes plain ints
    (the tracer's are tensors): for decisions on the example's metadata alone."""
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)


def exporting() -> bool:
    """Whether ops are being recorded for another runtime: by ``torch.jit.trace`` or by
    ``torch.onnx.export`` (either exporter). Every op then computes with torch's own ops, so that
    the graph holds ATen ops any runtime has — not our registered ops, which only Python knows,
    nor Triton launches, which a trace cannot see."""
    if torch.compiler.is_dynamo_compiling():
        return False  # (Dynamo traces none of the calls below; ONNX's exporter does not use it)
    if jit_tracing():
        return True
    # The torch.export-based exporter traces under dispatch modes (fake tensors); and torch.onnx
    # not imported cannot be exporting (asking it costs 1 µs).
    if not torch._C._len_torch_dispatch_stack():
        return False
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


def exporting_onnx() -> bool:
    """Whether ops are being recorded for ONNX (by either exporter), where some of torch's ops
    lose an argument (``avg_pool*d``'s ``divisor_override``)."""
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


class aten_only:  # a context manager, as use_backend
    """Run the enclosed code on the fallback (backend ``"torch"``), whatever the backend; unlike
    :class:`use_backend`, also inside code that ``torch.export`` traces (exporting to ONNX)."""

    def __enter__(self) -> None:
        global _current
        self._previous, _current = _current, "torch"

    def __exit__(self, *exc_info) -> None:
        global _current
        _current = self._previous


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


def loaded_kernels():
    """The ``triton_kernels`` package once :func:`kernels` has imported it, else ``None`` (never
    imports it)."""
    return _kernels


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported here."""
    if sys.modules.get("triton") is not None:
        return True  # imported already (an import would only look it up there)
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


#: The (op family, dtype) pairs Triton's CPU interpreter computes wrongly, found by test
#: (``tests/test_interpreter_dtypes.py`` runs every family in every dtype against torch): the
#: interpreter has no bfloat16 matrix product (``tl.dot`` on bfloat16 tiles gives values around
#: 1e10), and the convolution kernels are matrix products. The same kernels are right on a GPU.
INTERPRETER_REFUSES: frozenset[tuple[str, torch.dtype]] = frozenset({("conv", torch.bfloat16)})


def check_interpreter(family: str, dtype: torch.dtype) -> None:
    """Refuse a ``family`` op (``"conv"``, ``"pool"``, ``"upsample"``) in a dtype the interpreter
    cannot compute, rather than return wrong numbers."""
    if (family, dtype) in INTERPRETER_REFUSES:
        raise RuntimeError(
            f"torchconv_ext backend 'triton' on CPU tensors runs Triton's interpreter "
            f"(TRITON_INTERPRET=1), which cannot compute {family} in {dtype}: its results would "
            "be wrong. Use another dtype (float16, float32 and float64 work), CUDA tensors, or "
            "backend 'auto'/'torch'"
        )


def use_triton(
    t: torch.Tensor, family: str | None = None, dtype: torch.dtype | None = None
) -> bool:
    """Whether an op on tensor ``t`` runs the Triton kernels under the current backend.

    Raises ``RuntimeError`` when the backend demands Triton where it cannot run, instead of
    letting a launch fail deep inside Triton — and, given the op's ``family`` (and the ``dtype``
    it will compute in, ``t``'s by default), where Triton's interpreter would compute it wrongly
    (:data:`INTERPRETER_REFUSES`).
    """
    backend = _current or get_backend()
    if backend == "torch" or t.is_meta:  # (meta: sizes only, which ATen's meta kernels give)
        return False
    if backend == "auto":
        runs = t.is_cuda and triton_available()
    else:
        _check_triton_runs(t)
        runs = True
    if runs and family is not None and _interpreted(t):
        check_interpreter(family, t.dtype if dtype is None else dtype)
    return runs


def _check_triton_runs(t: torch.Tensor) -> None:
    """Refuse backend ``"triton"`` where its kernels cannot run on ``t``."""
    if not triton_available():
        raise RuntimeError(
            "torchconv_ext backend 'triton' needs the triton package, which is not installed"
        )
    if t.device.type not in ("cuda", "cpu"):
        raise RuntimeError(
            f"torchconv_ext backend 'triton' supports CUDA and CPU tensors, not {t.device.type!r}"
        )
    # Not while compiling: that would import the kernels inside the traced code and guard on it
    # (a recompile); the registered op checks again when it runs.
    if not t.is_cuda and not torch.compiler.is_compiling() and not kernels().INTERPRET:
        raise RuntimeError(
            "torchconv_ext backend 'triton' on CPU tensors runs Triton's interpreter: set "
            "TRITON_INTERPRET=1 before importing torchconv_ext, or use backend 'auto'/'torch'"
        )


def _interpreted(t: torch.Tensor) -> bool:
    """Whether the kernels run on ``t`` in Triton's interpreter: always on the CPU; on CUDA
    under ``TRITON_INTERPRET=1`` (asked outside compiled code only, see above)."""
    return not t.is_cuda or (not torch.compiler.is_compiling() and kernels().INTERPRET)
