"""Launch configurations chosen per problem, pruned before benchmarking, remembered on disk.

A :class:`Tuner` serves one kernel variant. For a key (dtype, layout class, geometry and
bucketed sizes, built by the launcher) it finds the launch config in

1. this process's memory (the only lookup most calls make);
2. the per-user cache on disk (:func:`cache_dir`), one small JSON file per key, named by device,
   Triton version, kernel source and key, so a new process reuses the winners without
   benchmarking;
3. a benchmark of the candidates that survive pruning — first a shared-memory estimate (no
   compile), then the compiled kernel's registers, spills and shared memory (:func:`prune`) —
   whose winner is then written to disk. The candidates compile at once, in threads (Triton's
   ``AsyncCompileMode``: its compiler and ``ptxas`` do not hold the GIL), so a cold tuning
   costs about one compile per core rather than one per candidate; they are timed one at a
   time.

Candidates of a shape Triton has miscompiled (``Tuner.unproven``: the implicit GEMMs' tap loops
at 8 warps) are timed only once proven on the problem being tuned, on this device: their results
must match a proven candidate's up to summation order (:func:`same_results`). One that does not
is dropped with a warning, so a miscompiled config can never be picked, nor persisted.

Files are written atomically (a temporary file, then ``os.replace``); an unreadable or foreign
file is ignored with a warning and replaced after re-tuning, so corrupt or concurrent files never
crash a launch. Under Triton's interpreter a tuner holds one small config: nothing is compiled,
benchmarked or written.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import triton
import triton.testing
from triton.runtime.errors import OutOfResources

from ._common import COMPILE_OPTIONS
from ._plan import launch

#: Environment variable naming the cache directory (else ``$XDG_CACHE_HOME/torchconv_ext``, else
#: ``~/.cache/torchconv_ext``).
CACHE_DIR_ENV = "TORCHCONV_EXT_CACHE_DIR"
#: Bumped when the file format changes (older files are then ignored).
FILE_FORMAT = 1
#: Environment variable: how many threads compile a tuning's candidates (else the CPUs this
#: process may run on; 1 compiles them one after another on the calling thread).
COMPILE_THREADS_ENV = "TORCHCONV_EXT_COMPILE_THREADS"
#: Registers a thread can hold on NVIDIA GPUs: a kernel at the cap is (or is about to be)
#: spilling to local memory.
REGISTER_CAP = 255


def cache_dir() -> Path:
    """Where tuned configs persist (read at every use, so tests can point it elsewhere)."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "torchconv_ext"


@dataclass(frozen=True)
class Config:
    """One launch config: the kernel's block-size constexprs, warps and pipeline stages."""

    meta: tuple[tuple[str, int], ...]
    num_warps: int
    num_stages: int
    kwargs: dict[str, int] = field(init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        launch = dict(self.meta, num_warps=self.num_warps, num_stages=self.num_stages)
        object.__setattr__(self, "kwargs", launch)

    @classmethod
    def of(cls, num_warps: int, num_stages: int, **meta: int) -> Config:
        return cls(tuple(sorted(meta.items())), num_warps, num_stages)

    def __getitem__(self, name: str) -> int:
        return self.kwargs[name]

    def __str__(self) -> str:
        blocks = " ".join(f"{k}={v}" for k, v in self.meta)
        return f"{blocks}, {self.num_warps} warps, {self.num_stages} stages"

    def to_json(self) -> dict[str, Any]:
        return {"meta": dict(self.meta), "num_warps": self.num_warps, "num_stages": self.num_stages}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Config:
        return cls.of(int(data["num_warps"]), int(data["num_stages"]), **data["meta"])


@dataclass(frozen=True)
class Resources:
    """What the compiler gave one config: registers per thread, spilled bytes, shared memory."""

    registers: int
    spills: int
    shared: int


def prune(
    configs: Sequence[Config], resources: dict[Config, Resources | None], shared_limit: int
) -> list[Config]:
    """The configs that can run well: compiled (``resources`` not ``None``), no spills, below
    the register cap, and within the device's shared memory per block. Never empty: when
    nothing survives, the config that spills least (then uses fewest registers) is kept."""
    fine = [
        c
        for c in configs
        if (r := resources.get(c)) is not None
        and r.spills == 0
        and r.registers < REGISTER_CAP
        and r.shared <= shared_limit
    ]
    if fine:
        return fine
    compiled = [c for c in configs if resources.get(c) is not None]
    fitting = [c for c in compiled if resources[c].shared <= shared_limit] or compiled
    if not fitting:
        return list(configs[:1])
    return [min(fitting, key=lambda c: (resources[c].spills, resources[c].registers))]


#: How far two configs' results may differ (their largest difference over the largest magnitude)
#: by the dtype written: the summation order of tiles of other sizes, rounded to that dtype. A
#: miscompile (a tile computed from the wrong operands, or not written) differs by far more.
RESULT_TOLERANCE = {torch.float16: 2**-5, torch.bfloat16: 2**-5, torch.float32: 1e-3}


#: Elements compared at a time: the comparison's temporaries stay small beside the output.
COMPARED_AT_ONCE = 1 << 25


def same_results(expected: torch.Tensor, actual: torch.Tensor) -> bool:
    """Whether two configs computed the same results: integers equal; floating point with the
    same non-finite values in the same places, and elsewhere within :data:`RESULT_TOLERANCE`
    (1e-9 for float64) of the largest finite magnitude. Compared a slab of the first dim at a
    time (about :data:`COMPARED_AT_ONCE` elements)."""
    if not expected.is_floating_point():
        return torch.equal(expected, actual)
    if expected.numel() == 0:
        return True
    rows = max(COMPARED_AT_ONCE // max(expected[0].numel(), 1), 1) if expected.dim() else 1
    slabs = (
        zip(expected.split(rows), actual.split(rows)) if expected.dim() else [(expected, actual)]
    )
    scale = difference = 0.0
    for e, a in slabs:
        finite = e.isfinite()
        if not torch.equal(finite, a.isfinite()):
            return False
        if not finite.all():  # NaN and ±inf alike: each to a value of its own
            if not torch.equal(e[~finite].nan_to_num(0.0), a[~finite].nan_to_num(0.0)):
                return False
            e, a = e.where(finite, 0.0), a.where(finite, 0.0)
        scale = max(scale, e.abs().max().item())
        difference = max(difference, (a - e).abs().max().item())
    return difference <= RESULT_TOLERANCE.get(expected.dtype, 1e-9) * scale


def _key_json(key: tuple) -> list:
    """The key as it reads back from JSON (dtypes and other objects as strings)."""
    return json.loads(json.dumps(list(key), default=str))


@dataclass
class Tuner:
    """Chooses and launches one kernel variant's config per key (see the module docstring).

    Args:
        name: the variant's name (in file names and messages).
        kernel: the ``@triton.jit`` function.
        configs: the candidates, best guess first. With a single candidate nothing is
            compiled ahead, benchmarked or stored (the kernel files give the interpreter one).
        shared_estimate: ``(config, element_size) -> bytes`` of shared memory, to skip configs
            that cannot fit before compiling them.
        unproven: candidates timed only after their results matched a proven candidate's on
            the problem being tuned (see the module docstring).
        outputs: the names of the kernel's parameters it writes (what proving compares); the
            kernel must compute them afresh on every launch, as benchmarking needs anyway.
    """

    name: str
    kernel: Any
    configs: list[Config]
    shared_estimate: Callable[[Config, int], int] | None = None
    unproven: frozenset[Config] = frozenset()
    outputs: tuple[str, ...] = ()
    #: How long each candidate is timed (ms): ``triton.testing.do_bench``'s warm-up and repeat.
    bench_ms: tuple[int, int] = (5, 25)
    _chosen: dict = field(default_factory=dict, repr=False)
    _source: str | None = field(default=None, repr=False)

    # -- the hot path ------------------------------------------------------------------------

    def launch(
        self,
        key: tuple,
        grid: Callable[[Config], tuple[int, ...]],
        args: tuple,
        constexprs: dict[str, Any],
    ) -> None:
        """Launch ``kernel[grid(config)](*args, **constexprs, **config)`` with the key's config.

        ``key`` must determine everything the config's speed depends on except the device,
        which is added here (the device of ``args[0]``).
        """
        device = args[0].device
        config = self._chosen.get((device, key))
        if config is None:
            config = self._choose(device, key, grid, args, constexprs)
        launch(self.kernel, grid(config), args, {**constexprs, **config.kwargs})

    # -- misses ------------------------------------------------------------------------------

    def _choose(self, device, key, grid, args, constexprs) -> Config:
        if len(self.configs) == 1:
            config = self.configs[0]
        else:
            name = device_name(device)
            config = self.load(name, key)
            if config is None:
                if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                    # Benchmarking would break the graph being captured: run the first guess
                    # now and leave the choice to a later uncaptured call.
                    return self.untuned(device, args)
                config = self._benchmark(device, grid, args, constexprs)
                self.store(name, key, config)
        self._chosen[(device, key)] = config
        return config

    def untuned(self, device: torch.device, args: tuple) -> Config:
        """The config launched without tuning: the first whose shared-memory estimate fits the
        device (a table's first row may not, for fp32 or fp64 operands); nothing compiled."""
        return self._fitting(device, args)[0]

    def _fitting(self, device, args) -> list[Config]:
        """The configs whose shared-memory estimate fits the device, else the last (smallest)."""
        limit = _device_properties(device)["max_shared_mem"]
        elem = next(a.element_size() for a in args if isinstance(a, torch.Tensor))
        fits = [
            c
            for c in self.configs
            if self.shared_estimate is None or self.shared_estimate(c, elem) <= limit
        ]
        return fits or self.configs[-1:]

    def _benchmark(self, device, grid, args, constexprs) -> Config:
        limit = _device_properties(device)["max_shared_mem"]
        fits = self._fitting(device, args)
        resources = self._compile_all(fits, grid, args, constexprs)
        survivors = prune(fits, resources, limit)
        if any(c in self.unproven for c in survivors):
            proven = [c for c in fits if c not in self.unproven]
            reference = prune(proven, resources, limit)[:1] if proven else []
            survivors = self._proven(survivors, reference, grid, args, constexprs)
        if len(survivors) == 1:
            return survivors[0]
        return self._fastest(survivors, grid, args, constexprs)

    def _proven(self, configs: list[Config], reference: list[Config], grid, args, constexprs):
        """``configs`` less the unproven ones whose results differ from the ``reference``
        config's on these arguments (``reference``: one config, or none to compare with — then
        every unproven config is dropped, as where the reference cannot run); never empty (the
        reference stays where nothing else does)."""
        unproven = [c for c in configs if c in self.unproven]
        failed, fallback = set(unproven), reference or configs[:1]
        positions = [self.kernel.arg_names.index(name) for name in self.outputs]
        written = [args[i] for i in positions if isinstance(args[i], torch.Tensor)]
        try:
            for c in reference:
                self._run(c, grid, args, constexprs)
        except OutOfResources:
            reference = []
        expected = [t.clone() for t in written] if reference else None
        for c in unproven if reference else ():
            try:
                self._run(c, grid, args, constexprs)
            except OutOfResources:
                continue  # (cannot run here: dropped without a word, as in timing)
            if all(map(same_results, expected, written)):
                failed.discard(c)
            else:
                warnings.warn(
                    f"{self.name}: the config {c} computed other results than {reference[0]} "
                    "on this device (a miscompile?); it is not used",
                    stacklevel=5,
                )
        return [c for c in configs if c not in failed] or fallback

    def _fastest(self, configs: Sequence[Config], grid, args, constexprs) -> Config:
        """The config of the shortest median time, each timed alone (the first if none runs)."""
        timings = {}
        for c in configs:
            try:
                timings[c] = triton.testing.do_bench(
                    lambda c=c: self._run(c, grid, args, constexprs),
                    warmup=self.bench_ms[0],
                    rep=self.bench_ms[1],
                    return_mode="median",
                )
            except OutOfResources:
                continue
        return min(timings, key=timings.get) if timings else configs[0]

    def _run(self, config: Config, grid, args, constexprs) -> None:
        """Launch ``config`` through Triton, compiled as every launch of ours is."""
        self.kernel[grid(config)](*args, **constexprs, **config.kwargs, **COMPILE_OPTIONS)

    def _compile_all(
        self, configs: Sequence[Config], grid, args, constexprs
    ) -> dict[Config, Resources | None]:
        """Compile every config (no launch) and read what each uses (``None``: it cannot run
        here — as Triton's own autotuner, a config that cannot load or compile for the device
        is skipped; any other error propagates, as a launch's would).

        Several configs compile at once in threads: Triton binds the arguments on this thread
        and hands each compile to the pool; the binaries are loaded here, which is where a lack
        of resources shows.
        """
        workers = min(len(configs), compile_threads())
        if workers < 2 or _compiling_async():  # AsyncCompileModes do not nest
            return {c: _resources(self._started(c, grid, args, constexprs)) for c in configs}
        try:
            with (
                ThreadPoolExecutor(workers, thread_name_prefix="torchconv_ext-compile") as pool,
                triton.AsyncCompileMode(pool, ignore_errors=True),  # (each result read below)
            ):
                started = {c: self._started(c, grid, args, constexprs) for c in configs}
                return {c: _resources(kernel) for c, kernel in started.items()}
        finally:
            # Triton 3.6 leaves the mode set, its pool shut down, when a compile raised: every
            # later compile of this thread would go to that pool and fail.
            _async_compile_mode().set(None)

    def _started(self, config, grid, args, constexprs) -> Any:
        """:meth:`_warmup`, or ``None`` where the config cannot compile for the device."""
        try:
            return self._warmup(config, grid, args, constexprs)
        except Exception as error:
            if cannot_run(error):
                return None
            raise

    def _warmup(self, config, grid, args, constexprs) -> Any:
        """Triton's compile of one config: the kernel, or a future of it in an async mode."""
        return self.kernel.warmup(
            *args, grid=grid(config), **constexprs, **config.kwargs, **COMPILE_OPTIONS
        )

    # -- the disk cache ----------------------------------------------------------------------

    def source_hash(self) -> str:
        """A hash of the kernel's source (Triton's, with its dependencies, where it has one), so
        that a changed kernel is tuned afresh."""
        if self._source is None:
            try:
                text = self.kernel.cache_key
            except AttributeError:  # the interpreter's functions have no cache key
                text = inspect.getsource(getattr(self.kernel, "fn", self.kernel))
            self._source = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self._source

    def _identity(self, device: str, key: tuple) -> dict[str, Any]:
        return {
            "format": FILE_FORMAT,
            "device": device,
            "triton": triton.__version__,
            "kernel": self.name,
            "source": self.source_hash(),
            "key": _key_json(key),
        }

    def path(self, device: str, key: tuple) -> Path:
        """The file holding ``key``'s config on ``device`` (a device name)."""
        ident = json.dumps(self._identity(device, key), sort_keys=True)
        digest = hashlib.sha256(ident.encode()).hexdigest()[:24]
        return cache_dir() / "autotune" / f"{self.name}-{digest}.json"

    def load(self, device: str, key: tuple) -> Config | None:
        """The stored config of ``key``, or ``None`` (absent; unreadable or foreign: warned)."""
        path = self.path(device, key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            warnings.warn(f"ignoring unreadable autotune cache file {path}: {e}", stacklevel=3)
            return None
        try:
            record = json.loads(data)  # (bytes: not UTF-8 is a ValueError here)
            if any(record.get(k) != v for k, v in self._identity(device, key).items()):
                raise ValueError("it was written for another kernel, device or key")
            config = Config.from_json(record["config"])
            if config not in self.configs:
                raise ValueError(f"{config} is not a candidate of {self.name}")
        except Exception as e:  # (whatever a file written elsewhere holds: never a crash)
            warnings.warn(f"ignoring invalid autotune cache file {path}: {e!r}", stacklevel=3)
            return None
        return config

    def store(self, device: str, key: tuple, config: Config) -> None:
        """Write ``key``'s config atomically; a cache that cannot be written is only warned of."""
        path = self.path(device, key)
        record = {**self._identity(device, key), "config": config.to_json()}
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=1)
            os.replace(tmp, path)
        except OSError as e:
            warnings.warn(f"could not write the autotune cache file {path}: {e}", stacklevel=3)
            if tmp is not None and os.path.exists(tmp):
                os.remove(tmp)


#: What a config raises where it cannot run on the device, which Triton's own autotuner skips:
#: more shared memory or threads than the device has, a failed compile-time assertion, ptxas.
CANNOT_RUN = frozenset({"OutOfResources", "CompileTimeAssertionFailure", "PTXASError"})


def cannot_run(error: BaseException) -> bool:
    """Whether ``error`` says a config cannot run on this device (:data:`CANNOT_RUN`)."""
    return any(cls.__name__ in CANNOT_RUN for cls in type(error).__mro__)


def _resources(compiled: Any) -> Resources | None:
    """What a compiled kernel (or the future of one) uses, once loaded; ``None`` if it cannot
    run here (:data:`CANNOT_RUN`: it did not compile, or cannot load)."""
    if compiled is None:
        return None
    try:
        if isinstance(compiled, triton.FutureKernel):
            compiled = compiled.result()
        compiled._init_handles()
    except Exception as error:
        if cannot_run(error):
            return None
        raise
    return Resources(compiled.n_regs, compiled.n_spills, compiled.metadata.shared)


def _async_compile_mode() -> ContextVar:
    """Triton's record of the ``triton.AsyncCompileMode`` this context compiles in."""
    from triton.runtime import _async_compile

    return _async_compile.active_mode


def _compiling_async() -> bool:
    """Whether the caller already compiles in a ``triton.AsyncCompileMode``."""
    return _async_compile_mode().get() is not None


def compile_threads() -> int:
    """Threads that compile a tuning's candidates: ``$TORCHCONV_EXT_COMPILE_THREADS``, else the
    CPUs this process may run on."""
    explicit = os.environ.get(COMPILE_THREADS_ENV)
    if explicit:
        try:
            return max(int(explicit), 1)
        except ValueError:
            raise ValueError(
                f"{COMPILE_THREADS_ENV} must be a whole number of threads, got {explicit!r}"
            ) from None
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def bucket(n: int) -> int:
    """A size as tuning keys hold it: the next power of two (so every batch size does not
    re-tune)."""
    return 1 << (max(int(n), 1) - 1).bit_length()


_NAMES: dict[torch.device, str] = {}


def device_name(device: torch.device) -> str:
    """The device's name as the disk cache keys it."""
    name = _NAMES.get(device)
    if name is None:
        if device.type == "cuda":
            name = torch.cuda.get_device_name(device)
        else:
            name = f"{device.type}-interpreter"
        _NAMES[device] = name
    return name


def _device_properties(device: torch.device) -> dict[str, int]:
    from triton.runtime import driver

    # the driver's current device (torch's on a GPU; a stand-in driver has its own)
    index = device.index if device.index is not None else driver.active.get_current_device()
    return driver.active.utils.get_device_properties(index)
