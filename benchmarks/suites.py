"""The benchmark suites by name, each with its cases and a ``run_case`` producing records.

The convolution suites live in :mod:`benchmarks.bench_conv`. ``pool`` and ``upsample`` come from
``benchmarks/bench_pool.py`` and ``benchmarks/bench_upsample.py`` when those exist: modules
exposing ``cases(quick: bool) -> list[dict]`` and ``run_case(case, dtype, device) -> dict``
(``dtype`` a ``torch.dtype``).
:class:`ModuleSuite` adapts them, accepting the record format of ``benchmarks/README.md`` with a
few spellings allowed (``results``/``timings`` for ``providers``, a bare number as milliseconds).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from . import bench_conv
from .options import DIRECTIONS, DTYPES, RunOptions
from .timing import method_name


@dataclass(frozen=True)
class Suite:
    """A named family of cases."""

    name: str
    description: str

    def unavailable(self) -> str | None:
        """Why this suite cannot run here, or ``None``."""
        raise NotImplementedError

    def cases(self, options: RunOptions) -> list[dict[str, Any]]:
        raise NotImplementedError

    def run_case(
        self, case: dict[str, Any], dtype: str, options: RunOptions
    ) -> list[dict[str, Any]]:
        raise NotImplementedError

    def batch_policy(self, options: RunOptions) -> str:
        return "as chosen by the suite's cases()"

    def timer(self, options: RunOptions) -> str:
        """How this suite's times are taken, as recorded in the result files."""
        return method_name(options.device)


@dataclass(frozen=True)
class ConvSuite(Suite):
    """A convolution suite of :mod:`benchmarks.bench_conv`."""

    def unavailable(self) -> str | None:
        return bench_conv.unavailable(self.name)

    def cases(self, options: RunOptions) -> list[dict[str, Any]]:
        return bench_conv.cases(self.name, options.quick, options)

    def run_case(
        self, case: dict[str, Any], dtype: str, options: RunOptions
    ) -> list[dict[str, Any]]:
        return bench_conv.run_case(case, dtype, options.device, options)

    def batch_policy(self, options: RunOptions) -> str:
        return bench_conv.batch_policy(options)


@dataclass(frozen=True)
class ModuleSuite(Suite):
    """A suite defined by another module's ``cases(quick)`` and ``run_case(case, dtype, device)``."""

    module: str = ""

    def _module(self) -> Any:
        return importlib.import_module(self.module)

    def unavailable(self) -> str | None:
        try:
            mod = self._module()
        except ModuleNotFoundError as e:
            if e.name == self.module:
                return f"{self.module.replace('.', '/')}.py does not exist yet"
            return f"{self.module} cannot be imported: {e}"
        except Exception as e:  # a half-written module must not break the other suites
            return f"{self.module} cannot be imported: {type(e).__name__}: {e}"
        missing = [f for f in ("cases", "run_case") if not callable(getattr(mod, f, None))]
        if missing:
            return f"{self.module} has no {' or '.join(missing)}()"
        return None

    def cases(self, options: RunOptions) -> list[dict[str, Any]]:
        out = [
            dict(c) if isinstance(c, dict) else {"value": c}
            for c in self._module().cases(options.quick)
        ]
        counts: dict[str, int] = {}
        for i, case in enumerate(out):
            case.setdefault("name", f"{self.name}.{i}")
            counts[case["name"]] = counts.get(case["name"], 0) + 1
        for i, case in enumerate(out):  # names must be unique: a layer in several layouts
            if counts[case["name"]] > 1:
                case["name"] = f"{case['name']}.{case.get('layout', i)}"
        return out

    def timer(self, options: RunOptions) -> str:
        # the module times its cases itself; its timer() says how, where it has one
        where = self.module.replace(".", "/") + ".py"
        describe = getattr(self._module(), "timer", None)
        how = describe(options.device) if callable(describe) else "its own timer"
        return f"{how} (in {where})"

    def batch_policy(self, options: RunOptions) -> str:
        where = self.module.replace(".", "/") + ".py"
        return (
            f"chosen by {where}'s cases(quick={options.quick}) and run_case: each record's "
            "'shape' is what ran, 'full_shape' (where given) the layer at training size"
        )

    def run_case(
        self, case: dict[str, Any], dtype: str, options: RunOptions
    ) -> list[dict[str, Any]]:
        try:
            result = self._module().run_case(case, DTYPES[dtype], options.device)
        except Exception as e:
            return [
                _base_record(
                    self.name,
                    case,
                    {"status": "error", "error": f"{type(e).__name__}: {str(e)[:300]}"},
                )
            ]
        if isinstance(result, dict) and isinstance(result.get("records"), list):
            result = result["records"]
        items = result if isinstance(result, list) else [result]
        return [rec for item in items for rec in normalize_record(self.name, case, item)]


def _shape_text(shape: Any, layout: Any = None) -> str:
    if isinstance(shape, (list, tuple)) and all(isinstance(v, int) for v in shape):
        shape = "x".join(map(str, shape))
    text = shape if isinstance(shape, str) else str(shape)
    return f"{text} {layout}" if layout and layout != "contiguous" else text


def _check_entry(check: Any) -> dict[str, Any] | None:
    if check is None or isinstance(check, dict):
        return check
    ok = check is True or check == "ok"
    return {"status": "ok" if ok else "mismatch", "ok": ok, "message": "" if ok else str(check)}


def _base_record(suite: str, case: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    shape = item.get("shape", case.get("shape"))
    if shape is None:
        shape = ", ".join(f"{k}={v}" for k, v in case.items() if k not in ("name", "suite"))
    layout = item.get("layout", case.get("layout"))
    check = _check_entry(item.get("check"))
    status = item.get("status") or ("mismatch" if check and check["status"] != "ok" else "ok")
    full = item.get("full_shape", case.get("full_shape"))
    rec = {
        "suite": suite,
        "name": case.get("name", item.get("name")),
        "net": item.get("net", case.get("net", "")),
        "layer": item.get("layer", case.get("layer", "")),
        "direction": item.get("direction", case.get("direction", "fwd")),
        "shape": _shape_text(shape, layout),
        "full_shape": _shape_text(full, layout) if full is not None else None,
        "case": case,
        "flops": item.get("flops", case.get("flops")),
        "bytes": item.get("bytes", case.get("bytes")),
        "status": status,
        "check": check,
        "providers": {},
    }
    if item.get("error"):
        rec["error"] = str(item["error"])
    return rec


_MS_KEYS = ("ms", "median_ms", "time_ms", "median")


def _provider_entry(value: Any) -> dict[str, Any]:
    if isinstance(value, (int, float)):
        return {"status": "ok", "ms": float(value)}
    if not isinstance(value, dict):
        value = getattr(value, "to_dict", lambda: vars(value))()
    entry = dict(value)
    ms = next((entry[k] for k in _MS_KEYS if entry.get(k) is not None), None)
    entry["ms"] = float(ms) if ms is not None else None
    entry.setdefault("p20_ms", entry.pop("p20", None))
    entry.setdefault("p80_ms", entry.pop("p80", None))
    entry.setdefault("status", "ok" if entry["ms"] is not None else "error")
    return entry


def _per_direction(value: Any, direction: str) -> Any:
    return value.get(direction) if isinstance(value, dict) else value


def normalize_record(suite: str, case: dict[str, Any], item: Any) -> list[dict[str, Any]]:
    """Records in the harness's format from a dict a suite's ``run_case`` returned.

    Either one record (``direction`` and ``providers``), or one dict holding each direction's
    provider timings under ``"fwd"``/``"bwd"``/``"both"`` (with ``bytes``/``flops`` given per
    direction or once); then one record per direction.
    """
    if not isinstance(item, dict):
        item = {"status": "error", "error": f"run_case returned {type(item).__name__}, not a dict"}
    provs = next(
        (item[k] for k in ("providers", "results", "timings") if isinstance(item.get(k), dict)),
        None,
    )
    nested = [d for d in DIRECTIONS if isinstance(item.get(d), dict)]
    if provs is None and nested:
        out = []
        for d in nested:
            sub = {k: v for k, v in item.items() if k not in DIRECTIONS}
            sub.update(
                direction=d,
                bytes=_per_direction(item.get("bytes"), d),
                flops=_per_direction(item.get("flops"), d),
            )
            rec = _base_record(suite, case, sub)
            rec["providers"] = {
                str(p): _provider_entry(v) for p, v in item[d].items() if isinstance(v, dict)
            }  # not the scalars (ratio, % peak)
            out.append(rec)
        return out
    rec = _base_record(suite, case, item)
    if provs is None and rec["status"] != "ok" and "direction" not in item:
        rec["direction"] = "all"  # failed before any direction was timed
    rec["providers"] = {str(p): _provider_entry(v) for p, v in (provs or {}).items()}
    return [rec]


SUITES: dict[str, Suite] = {
    "conv": ConvSuite("conv", "2-D convolutions: AlexNet, VGG-16, ResNet-50 (3x3, 1x1, 7x7 stem)"),
    "transposed": ConvSuite("transposed", "transposed convolutions: U-Net and DCGAN decoders"),
    "depthwise": ConvSuite("depthwise", "depthwise 3x3 convolutions: MobileNetV2"),
    "conv3d": ConvSuite("conv3d", "3-D convolutions: a 3D U-Net"),
    "pool": ModuleSuite(
        "pool",
        "pooling: AlexNet, VGG-16, ResNet max pools, global average and pyramid pooling",
        module="benchmarks.bench_pool",
    ),
    "upsample": ModuleSuite(
        "upsample",
        "nearest upsampling: U-Net, 3D U-Net and FPN decoders",
        module="benchmarks.bench_upsample",
    ),
}


def get(name: str) -> Suite:
    """The suite called ``name`` (``KeyError`` naming the known suites otherwise)."""
    try:
        return SUITES[name]
    except KeyError:
        raise KeyError(f"unknown suite {name!r}: expected one of {', '.join(SUITES)}") from None
