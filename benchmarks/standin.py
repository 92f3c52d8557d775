"""A stand-in GPU: run the Triton path of torchconv_ext on CPU tensors without a GPU.

Two tools need what a GPU run does on the host without having a GPU: the compile report
(``benchmarks.compile_report``: which kernels a benchmark launches, compiled for a real target)
and the host-overhead measurement (``python -m benchmarks overhead``: the Python cost of a call
up to the kernel launch). :func:`stand_in_gpu` provides it:

* Triton gets a stand-in driver that reports a GPU target (``sm_90`` unless told otherwise), so
  its compiler builds real code for that target (PTX and cubin through ``ptxas``);
* tensors report ``is_cuda``, so torchconv_ext's backend ``"triton"`` and its launchers' device
  checks take the GPU path for CPU tensors — nothing is imported from the library beyond its
  public surfaces, and no private name of it is patched (but the launcher tapes' switch in
  capture mode and the tuner's benchmark or timing step in launch mode);
* what reaches the GPU is replaced, at Triton's level only:

  - ``mode="capture"``: every kernel launch (``Tuner.launch`` of our own tuner,
    ``Autotuner.run``, ``Heuristics.run``, ``JITFunction.run``) is recorded as a
    :class:`Launch` and not compiled or run (launcher tapes are off, so no launch is replayed
    past these); the compile report then compiles each record per autotune config through
    ``warmup``;
  - ``mode="launch"``: launches go all the way through Triton (autotuner key and cache,
    argument binder, kernel cache, compiling on first use) and only the final launcher — the
    object that packs the arguments in C and calls ``cuLaunchKernel`` — is a stub that counts.
    Configs cannot be benchmarked without a GPU, so the autotuner's benchmark step returns a
    fixed time per config, rising with its position: the first config (after the kernel's own
    pruning) wins and is cached per tuning key exactly as a measured winner would be.
    torchconv_ext's own tuner takes the config it launches untuned (its benchmark step,
    ``Tuner._benchmark``, returns ``Tuner.untuned``: pruning would compile every candidate —
    minutes on a cold Triton cache — for a choice nothing measured here depends on) and keeps
    its winners in a temporary cache directory, not the user's. With ``tuning="compile"`` it
    compiles and prunes every candidate as on a GPU and takes the first survivor instead of
    timing them (its timing step, ``Tuner._fastest``): what a first call costs the host.

Kernels are decorated when ``triton_kernels`` is imported, so that import must happen without
``TRITON_INTERPRET=1``: :func:`require_compiled_kernels` checks it. Both tools run in a process
of their own (the test suite runs them as subprocesses).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

#: Shared memory a Hopper block can use (227 KiB), as ``cudaFuncAttributeMaxDynamicSharedMemory``.
SM90_SHARED_BYTES = 232448

#: Device properties the stand-in reports, per compute capability (what Triton asks for).
_PROPERTIES: dict[int, dict[str, int]] = {
    80: {"max_shared_mem": 166912, "multiprocessor_count": 108},
    90: {"max_shared_mem": SM90_SHARED_BYTES, "multiprocessor_count": 132},
    100: {"max_shared_mem": SM90_SHARED_BYTES, "multiprocessor_count": 148},
}


def parse_target(name: str) -> int:
    """``sm_90`` / ``sm_90a`` / ``90`` → compute capability 90."""
    m = re.fullmatch(r"(?:sm_?)?(\d{2,3})a?", name.strip().lower())
    if not m:
        raise ValueError(f"unknown GPU target {name!r}: expected e.g. sm_90, sm_80 or sm_100")
    return int(m.group(1))


def require_compiled_kernels() -> None:
    """Refuse to run when Triton's interpreter is on: the kernels would not be compiled ones.

    Call before anything imports ``triton_kernels``; it drops ``TRITON_INTERPRET`` (and the
    tests' NaN poisoning, which would add a fill to every call) from this process's environment.
    """
    if "triton_kernels" in sys.modules:
        from triton_kernels import INTERPRET

        if INTERPRET:
            raise RuntimeError(
                "triton_kernels was imported with TRITON_INTERPRET=1: run this tool in a fresh "
                "process without it (its kernels must be compiled ones)"
            )
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ.pop("TORCHCONV_EXT_POISON", None)


def _mock_tensor() -> type:
    from triton.runtime.jit import MockTensor  # Triton's own stand-in for warmup's tensors

    return MockTensor


class PointerArg(_mock_tensor()):  # type: ignore[misc]
    """A captured tensor argument: what Triton's binder reads of a tensor — its dtype and the
    alignment of its address — without holding on to the tensor's memory."""

    def __init__(self, t: torch.Tensor) -> None:
        super().__init__(t.dtype, list(t.shape))
        self._ptr = t.data_ptr() % 1024 or 1024  # keeps the alignment Triton specialises on

    def data_ptr(self) -> int:
        return self._ptr

    def __repr__(self) -> str:
        return f"PointerArg({self.dtype}, align {self._ptr & -self._ptr})"


def _light(v: Any) -> Any:
    return PointerArg(v) if isinstance(v, torch.Tensor) else v


@dataclass
class Launch:
    """One captured kernel launch: the outermost Triton kernel object and its arguments
    (tensors as :class:`PointerArg`, the grid dropped: enough to compile, not to run)."""

    kernel: Any  # an Autotuner, Heuristics, JITFunction or one of our tuners (TunedKernel)
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @property
    def name(self) -> str:
        return kernel_name(self.kernel)


class _TunedConfig:
    """One of our ``Tuner``'s configs as the compile report reads Triton's ``Config``."""

    def __init__(self, config: Any) -> None:
        self.meta = config.meta  # (what ``check.tuners.pin_config`` reads)
        self.kwargs = dict(config.meta)
        self.num_warps = config.num_warps
        self.num_stages = config.num_stages
        self._all = dict(config.kwargs)

    def all_kwargs(self) -> dict[str, Any]:
        return dict(self._all)


class TunedKernel:
    """A ``triton_kernels._tuning.Tuner`` as a captured kernel: its jit function (``fn``) and
    every candidate config, as an ``Autotuner`` shows them."""

    _views: ClassVar[dict[int, TunedKernel]] = {}

    def __init__(self, tuner: Any) -> None:
        self.fn = tuner.kernel
        self.configs = [_TunedConfig(c) for c in tuner.configs]

    @classmethod
    def of(cls, tuner: Any) -> TunedKernel:
        """One view per tuner, so that launches of one kernel are recognised as such."""
        view = cls._views.get(id(tuner))
        if view is None or view.fn is not tuner.kernel:
            view = cls._views[id(tuner)] = cls(tuner)
        return view


def _captured(kernel: Any, args: tuple, kwargs: dict) -> Launch:
    kw = {k: _light(v) for k, v in kwargs.items() if k not in ("grid", "warmup")}
    return Launch(kernel, tuple(map(_light, args)), kw)


def kernel_name(obj: Any) -> str:
    """The Python name of the kernel function under any Triton wrappers."""
    while hasattr(obj, "fn") and not hasattr(obj, "__name__"):
        obj = obj.fn
    fn = getattr(obj, "fn", obj)
    return getattr(fn, "__name__", None) or getattr(obj, "__name__", repr(obj))


@dataclass
class StandIn:
    """What a stand-in session saw: captured launches (capture mode) and launch counts."""

    capability: int
    mode: str
    launches: list[Launch] = field(default_factory=list)
    launched: int = 0
    last_launched: str = ""


class _Utils:
    def __init__(self, capability: int) -> None:
        props = _PROPERTIES.get(capability, _PROPERTIES[90])
        self.properties = {
            **props,
            "max_num_regs": 65536,
            "warpSize": 32,
            "sm_clock_rate": 1980000,
            "mem_clock_rate": 3201000,
            "mem_bus_width": 6144,
        }

    def get_device_properties(self, device: int = 0) -> dict[str, int]:
        return dict(self.properties)

    def load_binary(self, name: str, kernel: bytes, shared: int, device: int) -> tuple:
        # module, function, registers, spills, max threads per block: read from the cubin by
        # the compile report instead (nothing is loaded on a GPU here)
        return (1, 1, 0, 0, 1024)

    def unload_module(self, module: Any) -> None:
        pass


def _make_launcher(state: StandIn) -> type:
    class CountingLauncher:
        """Stands in for Triton's launcher object: counts instead of launching."""

        def __init__(self, src: Any, metadata: Any) -> None:
            self.name = getattr(metadata, "name", "?")

        def __call__(self, *args: Any, **kwargs: Any) -> None:
            state.launched += 1
            state.last_launched = self.name

    return CountingLauncher


def _fixed_benchmark(fn: Any, *args: Any, **kwargs: Any) -> list[float]:
    return [1.0, 1.0, 1.0]


class StandInDriver:
    """A Triton driver for a GPU that is not there (see the module docstring)."""

    def __init__(self, state: StandIn) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", state.capability, 32)
        self.utils = _Utils(state.capability)
        self.launcher_cls = _make_launcher(state)

    @staticmethod
    def is_active() -> bool:
        return True

    def get_current_target(self) -> Any:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def set_current_device(self, device: int) -> None:
        pass

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_device_capability(self, device: int = 0) -> tuple[int, int]:
        return divmod(self.target.arch, 10)

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def get_device_interface(self) -> Any:
        return torch.cuda

    def get_benchmarker(self) -> Any:
        return _fixed_benchmark

    def get_empty_cache_for_benchmark(self) -> torch.Tensor:
        return torch.empty(1)

    def clear_cache(self, cache: Any) -> None:
        pass

    def map_python_to_cpp_type(self, ty: str) -> str:
        return ty


@contextlib.contextmanager
def _attribute(owner: Any, name: str, value: Any) -> Iterator[None]:
    """Set ``owner.name`` for the duration (class attributes of Triton and torch only)."""
    had = name in vars(owner)
    old = vars(owner).get(name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if had:
            setattr(owner, name, old)
        else:
            delattr(owner, name)


@contextlib.contextmanager
def plain_tensors() -> Iterator[None]:
    """Inside :func:`stand_in_gpu`: tensors report their real device again (for reference
    timings of torch's own ops)."""
    with _attribute(torch.Tensor, "is_cuda", torch._C.TensorBase.is_cuda):
        yield


def _untuned_config(self: Any, device: Any, grid: Any, args: tuple, constexprs: dict) -> Any:
    """torchconv_ext's tuner's benchmark step on the stand-in: the config it launches untuned,
    with no other config compiled."""
    return self.untuned(device, args)


def _first_config(self: Any, configs: Any, grid: Any, args: tuple, constexprs: dict) -> Any:
    """torchconv_ext's tuner's timing step on the stand-in: the first of the survivors."""
    return configs[0]


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _ranked_bench(self: Any, *args: Any, config: Any, **meta: Any) -> list[float]:
    """The autotuner's benchmark step on the stand-in: a config's position as its time."""
    rank = float(self.configs.index(config)) if config in self.configs else 0.0
    return [rank, rank, rank]


@contextlib.contextmanager
def stand_in_gpu(
    target: str = "sm_90", *, mode: str = "launch", tuning: str = "untuned"
) -> Iterator[StandIn]:
    """Run the enclosed code against a stand-in GPU of ``target`` (see the module docstring);
    ``tuning`` (launch mode): ``"untuned"`` or ``"compile"``."""
    if mode not in ("capture", "launch"):
        raise ValueError(f"mode must be 'capture' or 'launch', got {mode!r}")
    if tuning not in ("untuned", "compile"):
        raise ValueError(f"tuning must be 'untuned' or 'compile', got {tuning!r}")
    from triton.runtime import driver
    from triton.runtime.autotuner import Autotuner, Heuristics
    from triton.runtime.jit import JITFunction

    state = StandIn(parse_target(target), mode)
    previous = vars(driver).get("_active")
    driver.set_active(StandInDriver(state))
    patches = [_attribute(torch.Tensor, "is_cuda", property(lambda self: True))]
    if mode == "capture":
        original_jit_run = JITFunction.run

        original_run = {Autotuner: Autotuner.run, Heuristics: Heuristics.run}

        def capture(self: Any, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("warmup"):  # compiling, not launching: let it through
                run = next(f for cls, f in original_run.items() if isinstance(self, cls))
                return run(self, *args, **kwargs)
            state.launches.append(_captured(self, args, kwargs))
            return None

        def capture_jit(self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
            if warmup:  # compiling, not launching: let it through
                return original_jit_run(self, *args, grid=grid, warmup=warmup, **kwargs)
            state.launches.append(_captured(self, args, kwargs))
            return None

        def capture_tuned(self: Any, key: tuple, grid: Any, args: tuple, constexprs: dict) -> None:
            state.launches.append(_captured(TunedKernel.of(self), args, constexprs))

        from triton_kernels import _tape
        from triton_kernels._tuning import Tuner

        patches += [
            # a replayed launcher tape would skip the captured layers
            _attribute(_tape, "ENABLED", False),
            _attribute(Tuner, "launch", capture_tuned),
            _attribute(Autotuner, "run", capture),
            _attribute(Heuristics, "run", capture),
            _attribute(JITFunction, "run", capture_jit),
        ]
    else:
        from triton_kernels._tuning import Tuner

        if hasattr(Autotuner, "_bench"):
            patches.append(_attribute(Autotuner, "_bench", _ranked_bench))
        if tuning == "compile":
            patches.append(_attribute(Tuner, "_fastest", _first_config))
        else:
            patches.append(_attribute(Tuner, "_benchmark", _untuned_config))
    with contextlib.ExitStack() as stack:
        # tuned winners of the stand-in are not real ones: keep them out of the user's cache
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="standin-tuning-"))
        stack.enter_context(_environ("TORCHCONV_EXT_CACHE_DIR", tmp))
        for p in patches:
            stack.enter_context(p)
        try:
            yield state
        finally:
            driver.set_active(previous)
