"""The conv GEMM autotuners, found by introspection, and forcing their configs.

Every ``triton.runtime.autotuner.Autotuner`` in the namespace of ``triton_kernels.conv_gemm`` is
a conv GEMM tuner, whatever its name. A tuner is forced to one config by setting its
``configs`` to ``[cfg]`` (Triton then skips tuning) and clearing its ``cache``; :func:`forced`
restores both afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

GEMM_MODULE = "triton_kernels.conv_gemm"

# Each tuner's own config list, as first seen (before any forcing), by id of the tuner.
_original: dict[int, list[Any]] = {}


def discover() -> dict[str, Any]:
    """``{attribute name: tuner}`` of every conv GEMM tuner (one name per tuner object)."""
    from triton.runtime.autotuner import Autotuner

    module = importlib.import_module(GEMM_MODULE)
    found: dict[str, Any] = {}
    for name in sorted(vars(module)):
        obj = getattr(module, name)
        if isinstance(obj, Autotuner) and all(obj is not t for t in found.values()):
            found[name] = obj
            _original.setdefault(id(obj), list(obj.configs))
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
        for v in cfg.kwargs.values():
            tile *= v if isinstance(v, int) else 1
        return (cfg.num_stages * tile, cfg.num_warps)

    return min(configs(tuner), key=footprint)


def describe(cfg: Any) -> str:
    """``BLOCK_M=128 BLOCK_N=64 BLOCK_K=32 warps=4 stages=3`` (whatever the parameters)."""
    parts = [f"{k}={v}" for k, v in cfg.kwargs.items()]
    parts += [f"warps={cfg.num_warps}", f"stages={cfg.num_stages}"]
    if getattr(cfg, "num_ctas", 1) != 1:
        parts.append(f"ctas={cfg.num_ctas}")
    return " ".join(parts)


@contextlib.contextmanager
def forced(tuners: dict[str, Any], choice: dict[str, Any] | None = None) -> Iterator[None]:
    """Every tuner runs one config: ``choice[name]`` where given, else its :func:`pin_config`."""
    saved = [(t, t.configs, dict(t.cache)) for t in tuners.values()]
    try:
        for name, t in tuners.items():
            t.configs = [(choice or {}).get(name) or pin_config(t)]
            t.cache.clear()
        yield
    finally:
        for t, cfgs, cache in saved:
            t.configs = cfgs
            t.cache.clear()
            t.cache.update(cache)
