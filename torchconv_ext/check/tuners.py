"""The kernels' tuners, found by introspection, and forcing their configs.

Every ``triton_kernels._tuning.Tuner`` held by a module of the kernel package (the implicit and
1×1 GEMMs, the depthwise and the locally connected convolutions), alone or in a dict of variants,
is found. A tuner is forced to one config by setting its ``configs`` to ``[cfg]`` (a tuner with
one candidate neither benchmarks nor reads its disk cache) and clearing its chosen configs, with
launcher tapes off (they replay earlier choices); :func:`forced` restores both afterwards and
drops the tapes.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any

KERNEL_PACKAGE = "triton_kernels"

# Each tuner's own config list, as first seen (before any forcing), by id of the tuner.
_original: dict[int, list[Any]] = {}


def discover() -> dict[str, Any]:
    """``{tuner name: tuner}`` of every tuner of the kernel package."""
    from triton_kernels._tuning import Tuner

    package = importlib.import_module(KERNEL_PACKAGE)
    found: dict[str, Any] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{KERNEL_PACKAGE}.{info.name}")
        for attr in sorted(vars(module)):
            obj = getattr(module, attr)
            held = obj.values() if isinstance(obj, dict) else [obj]
            for tuner in held:
                if isinstance(tuner, Tuner) and all(tuner is not t for t in found.values()):
                    found[tuner.name] = tuner
                    _original.setdefault(id(tuner), list(tuner.configs))
    return found


def configs(tuner: Any) -> list[Any]:
    """The tuner's own configs (not the ones a :func:`forced` block set)."""
    return _original.get(id(tuner), list(tuner.configs))


def pin_config(tuner: Any) -> Any:
    """The config the pinned runs use: the smallest footprint (stages x tile, which bounds the
    shared memory), then the fewest warps — the config least likely to hit a resource limit in
    any dtype, fp64 included. (Every config is checked on its own by the per-config sweep.)"""

    def footprint(cfg):
        tile = 1
        for _, v in cfg.meta:
            tile *= v
        return (cfg.num_stages * tile, cfg.num_warps)

    return min(configs(tuner), key=footprint)


def describe(cfg: Any) -> str:
    """``BLOCK_M=128 BLOCK_N=64 BLOCK_K=32 warps=4 stages=3`` (whatever the parameters)."""
    parts = [f"{k}={v}" for k, v in cfg.meta]
    parts += [f"warps={cfg.num_warps}", f"stages={cfg.num_stages}"]
    return " ".join(parts)


@contextlib.contextmanager
def forced(tuners: dict[str, Any], choice: dict[str, Any] | None = None) -> Iterator[None]:
    """Every tuner runs one config: ``choice[name]`` where given, else its :func:`pin_config`."""
    # Launcher tapes replay earlier choices without asking the tuners: off while forcing.
    tapes = importlib.import_module("triton_kernels._tape")
    saved = [(t, t.configs, dict(t._chosen)) for t in tuners.values()]
    taping = tapes.ENABLED
    try:
        for name, t in tuners.items():
            t.configs = [(choice or {}).get(name) or pin_config(t)]
            t._chosen.clear()
        tapes.ENABLED = False
        yield
    finally:
        for t, cfgs, chosen in saved:
            t.configs = cfgs
            t._chosen.clear()
            t._chosen.update(chosen)
        tapes.ENABLED = taping
        tapes.clear_tapes()
