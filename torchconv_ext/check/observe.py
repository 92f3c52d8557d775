"""Watching what actually ran: Triton kernel launches, launcher calls and autotuners.

A check that compares torch with itself would pass anything, so every comparison of ours is
made inside a :func:`window` that counts

* launches of Triton kernels defined in ``triton_kernels`` (``JITFunction.run``, or the
  interpreter's ``InterpretedFunction.run``, and the launch plans' ``Plan.run`` — what launcher
  tapes replay — wrapped at class level);
* calls of the public launchers (``triton_kernels.__all__``), the way ``torchconv_ext`` reaches
  the kernels;
* which tuners (``triton_kernels._tuning.Tuner``) launched (to find the tuner of a call).

The wrappers are installed while at least one window is open (or for good in a worker
process, see :func:`install`) and only count; they change nothing that runs.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

KERNEL_PACKAGE = "triton_kernels"


@dataclass(eq=False)  # windows are told apart by identity
class Window:
    """What ran while the window was open."""

    launches: int = 0
    launcher_calls: int = 0
    kernels: Counter = field(default_factory=Counter)
    tuners: list[Any] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        """Whether our Triton code ran at all (a silent fallback to torch calls neither)."""
        return self.launches > 0 or self.launcher_calls > 0

    def summary(self) -> dict[str, Any]:
        return {
            "launches": self.launches,
            "launcher_calls": self.launcher_calls,
            "kernels": sorted(self.kernels),
        }


_open: list[Window] = []
_restore: list[tuple[Any, str, Any]] = []  # (owner, attribute, original) of installed wrappers
_installs = 0


def _ours(fn: Any) -> bool:
    module = getattr(getattr(fn, "fn", None), "__module__", None) or ""
    return module == KERNEL_PACKAGE or module.startswith(KERNEL_PACKAGE + ".")


def _wrap_launch(original):
    @functools.wraps(original)
    def run(self, *args, **kwargs):
        if _open and not kwargs.get("warmup", False) and _ours(self):
            for w in _open:
                w.launches += 1
                w.kernels[getattr(self.fn, "__name__", "?")] += 1
        return original(self, *args, **kwargs)

    return run


def _wrap_planned(original):
    @functools.wraps(original)
    def run(self, *args, **kwargs):
        if _open and _ours(self.kernel):
            for w in _open:
                w.launches += 1
                w.kernels[getattr(self.kernel.fn, "__name__", "?")] += 1
        return original(self, *args, **kwargs)

    return run


def _wrap_tuner(original):
    @functools.wraps(original)
    def run(self, *args, **kwargs):
        for w in _open:
            if not any(t is self for t in w.tuners):
                w.tuners.append(self)
        return original(self, *args, **kwargs)

    return run


def _wrap_launcher(original):
    @functools.wraps(original)
    def call(*args, **kwargs):
        for w in _open:
            w.launcher_calls += 1
        return original(*args, **kwargs)

    return call


def _targets() -> list[tuple[Any, str, Any]]:
    """(owner, attribute, wrapper factory) of everything wrapped."""
    import importlib

    from triton.runtime.jit import JITFunction

    tuning = importlib.import_module(f"{KERNEL_PACKAGE}._tuning")
    plans = importlib.import_module(f"{KERNEL_PACKAGE}._plan")
    targets = [
        (JITFunction, "run", _wrap_launch),
        (plans.Plan, "run", _wrap_planned),
        (tuning.Tuner, "launch", _wrap_tuner),
    ]
    try:
        from triton.runtime.interpreter import InterpretedFunction

        targets.append((InterpretedFunction, "run", _wrap_launch))
    except ImportError:  # an interpreter elsewhere in a future Triton: the launchers still count
        pass
    kernels = importlib.import_module(KERNEL_PACKAGE)
    for name in getattr(kernels, "__all__", ()):
        if inspect.isfunction(getattr(kernels, name, None)):
            targets.append((kernels, name, _wrap_launcher))
    return targets


def install() -> None:
    """Install the counting wrappers (idempotent; paired with :func:`uninstall`)."""
    global _installs
    _installs += 1
    if _installs > 1:
        return
    for owner, attr, wrap in _targets():
        original = getattr(owner, attr)
        _restore.append((owner, attr, original))
        setattr(owner, attr, wrap(original))


def uninstall() -> None:
    global _installs
    _installs -= 1
    if _installs > 0:
        return
    while _restore:
        owner, attr, original = _restore.pop()
        if getattr(getattr(owner, attr), "__wrapped__", None) is original:
            setattr(owner, attr, original)


@contextlib.contextmanager
def window() -> Iterator[Window]:
    """Count what runs inside the ``with`` block."""
    install()
    w = Window()
    _open.append(w)
    try:
        yield w
    finally:
        _open.remove(w)
        uninstall()
