"""Launch plans: a compiled kernel called directly, skipping Triton's argument binder.

``kernel[grid](*args, **kwargs)`` costs tens of µs of Python on every call: Triton binds the
arguments to the signature, specialises each one (a pointer's 16-byte alignment; an int's
value 1, divisibility by 16 and 32/64-bit range; dtypes), builds a cache key from that and looks
the compiled kernel up. For one launcher called again with the same problem all of that comes
out the same, so :func:`launch` remembers, per *plan key*, the compiled kernel the first launch
returned, and later calls hand the arguments to its launcher the way ``JITFunction.run`` does.

The plan key is finer than Triton's specialisation, so a call that Triton would compile
differently never meets another call's plan:

* each tensor by its dtype and whether its address is a multiple of 16;
* every other argument by its type and its value (so an int's size class, divisibility and
  ``== 1`` are covered), and every keyword (constexprs, ``num_warps``...) likewise;
* the current device, and the knobs that enter Triton's own cache key (``debug``,
  instrumentation).

What is read at each call, as Triton reads it: the current stream, the launch hooks
(``knobs.runtime.launch_enter_hook`` / ``launch_exit_hook``, with the kernel's launch
metadata), and the globals the kernel was compiled against (one rebound since sends the call
back to Triton, which compares values and reports a change).

Kernels with pre-run hooks, callable grids, tensor subclasses or unhashable arguments are never
planned; under Triton's interpreter (``kernel[grid]`` there *is* the interpreter) nothing is,
and ``TORCHCONV_EXT_LAUNCH_PLANS=0`` turns plans off. A plan that cannot prepare its launch is
dropped and the launch goes through ``kernel[grid]``; what the launcher itself raises reaches
the caller as it would from Triton's path (the kernel may have been launched by then, so it is
never launched twice).

Launcher tapes (``_tape``) watch launches through :func:`observe` — each one with its plan, or,
under the interpreter, a :class:`Direct` ``kernel[grid]`` — and replay plans with
:meth:`Plan.run`; :func:`clear_plans` drops the tapes with the plans.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from triton import knobs
from triton.runtime import driver

from ._common import COMPILE_OPTIONS, INTERPRET, env_flag

#: Whether launches are planned (never under the interpreter).
ENABLED: bool = not INTERPRET and env_flag("TORCHCONV_EXT_LAUNCH_PLANS", True)
#: Plans kept before the table is cleared (a plan is per problem, so this bounds memory only).
CAPACITY = 4096

#: Tensor types planned (subclasses may mean anything to Triton: never planned).
_TENSORS = (torch.Tensor, torch.nn.Parameter)
_plans: dict[tuple, Plan] = {}
#: Which arguments are tensors, per tuple of argument types.
_tensor_positions: dict[tuple, tuple[int, ...]] = {}
_stats = {"planned": 0, "unplanned": 0}
#: Bumped by :func:`clear_plans` (what holds plans, the launcher tapes, drops them then).
_generation = 0
#: Called with ``(plan or None, device, grid, args)`` after each launch (the tapes' recorder).
_observer: Any = None


class Plan:
    """One compiled kernel and the constant tail of its arguments (keywords and defaults, in
    signature order after the positional ones)."""

    __slots__ = ("compiled", "globals", "kernel", "tail")

    def __init__(self, kernel: Any, compiled: Any, tail: tuple, used_globals: tuple) -> None:
        self.kernel = kernel
        self.compiled = compiled
        self.tail = tail
        self.globals = used_globals

    def run(self, device: int, grid: tuple, args: tuple) -> None:
        """Launch as ``JITFunction.run`` does once it holds the compiled kernel. Raises
        :class:`Unplanned` when the launch cannot be prepared (nothing was launched then);
        what the launcher itself raises goes to the caller, as from Triton's path."""
        kernel = self.compiled
        try:
            for name, namespace, value in self.globals:
                if namespace.get(name) is not value:
                    raise Unplanned("a global the kernel uses was rebound")
            stream = driver.active.get_current_stream(device)
            full = (*args, *self.tail)
            n = len(grid)
            g1, g2 = (grid[1] if n > 1 else 1), (grid[2] if n > 2 else 1)
            enter, exit_ = knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook
            # The metadata is for the hooks alone: none set, none made.
            hooks = hooked(enter) or hooked(exit_)
            metadata = kernel.launch_metadata(grid, stream, *full) if hooks else None
            run, function, packed = kernel.run, kernel.function, kernel.packed_metadata
        except Exception as e:
            raise Unplanned(str(e)) from e
        run(grid[0], g1, g2, stream, function, packed, metadata, enter, exit_, *full)

    def launch_parts(self, grid: tuple) -> tuple[Any, tuple, tuple, tuple]:
        """This plan's launch on ``grid`` as a tape's replay makes it inline, with no launch hook
        set (tapes replay only then): Triton's launcher, then what it takes before the stream
        (the grid's three sizes), between the stream and the arguments (the function, its
        metadata, no launch metadata, the hooks as they are) and after them (the constant
        tail). The replay checks :attr:`globals` first and reads the stream as
        :func:`current_stream` does, as :meth:`run` does at each launch."""
        kernel, n = self.compiled, len(grid)
        sizes = (grid[0], grid[1] if n > 1 else 1, grid[2] if n > 2 else 1)
        hooks = (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook)
        return kernel.run, sizes, (kernel.function, kernel.packed_metadata, None, *hooks), self.tail


def current_stream(device: int) -> Any:
    """The stream a launch on ``device`` goes to now (as Triton reads it at each launch)."""
    return driver.active.get_current_stream(device)


def hooked(hook: Any) -> bool:
    """Whether a launch hook is set: Triton >= 3.9 holds hooks in a ``HookChain`` (empty: none
    set), earlier versions a callable or ``None``."""
    return hook is not None and bool(getattr(hook, "calls", True))


class Unplanned(Exception):
    """A plan that cannot launch (a global rebound, anything unexpected): Triton's own path
    launches instead."""


def _key(kernel: Any, device: int, args: tuple, kwargs: dict) -> tuple:
    types = tuple(map(type, args))
    tensors = _tensor_positions.get(types)
    if tensors is None:
        tensors = tuple(i for i, t in enumerate(types) if issubclass(t, torch.Tensor))
        _tensor_positions[types] = tensors
    values = list(args)
    for i in tensors:
        a = args[i]
        values[i] = (a.dtype, not a.data_ptr() & 15)
    return (
        id(kernel),  # the kernel's own hash is Python code; the plan checks it is the same one
        device,
        knobs.runtime.debug,
        knobs.compilation.instrumentation_mode,
        getattr(knobs.compilation, "fpsan_homomorphic_casts", None),  # triton >= 3.9
        types,
        tuple(values),
        tuple(kwargs.items()),
        tuple(map(type, kwargs.values())),
    )


def launch(kernel: Any, grid: tuple[int, ...], args: tuple, kwargs: dict[str, Any]) -> None:
    """``kernel[grid](*args, **kwargs)``, through a plan once one exists (module docstring).

    ``args`` are the kernel's leading parameters, in order; ``kwargs`` the rest (constexprs)
    and launch options (``num_warps``, ``num_stages``).
    """
    if (
        not ENABLED
        or callable(grid)
        or kernel.pre_run_hooks
        or getattr(knobs.runtime, "add_stages_inspection_hook", None) is not None
    ):
        _direct(kernel, grid, args, kwargs)
        if _observer is not None:
            _observer(Direct(kernel, kwargs) if INTERPRET else None, None, grid, args)
        return
    try:
        device = driver.active.get_current_device()
        key = _key(kernel, device, args, kwargs)
        plan = _plans.get(key)
    except Exception:  # unhashable or unexpected arguments: Triton's own path decides
        key = plan = None
    if plan is not None and plan.kernel is kernel:
        try:
            plan.run(device, grid, args)
        except Unplanned:
            _plans.pop(key, None)
        else:
            _stats["planned"] += 1
            if _observer is not None:
                _observer(plan, device, grid, args)
            return
    compiled = _direct(kernel, grid, args, kwargs)
    _stats["unplanned"] += 1
    if _observer is not None:
        _observer(None, None, grid, args)
    if key is not None and compiled is not None:
        _remember(key, kernel, compiled, args, kwargs)


#: Per thread, the launches of ``kernel[grid]`` :func:`launch` is making now (any other one,
#: while launcher tapes record, is a launch they would miss).
_inside = threading.local()


def _direct(kernel: Any, grid: Any, args: tuple, kwargs: dict) -> Any:
    _inside.depth = getattr(_inside, "depth", 0) + 1
    try:
        return kernel[grid](*args, **kwargs, **COMPILE_OPTIONS)
    finally:
        _inside.depth -= 1


def inside_launch() -> bool:
    """Whether a Triton launch of this thread now comes from :func:`launch`."""
    return getattr(_inside, "depth", 0) > 0


class Direct:
    """A launch through ``kernel[grid]`` with fixed keywords, as a plan is called (what launcher
    tapes replay under the interpreter, where ``kernel[grid]`` is the whole launch)."""

    __slots__ = ("kernel", "kwargs")

    def __init__(self, kernel: Any, kwargs: dict) -> None:
        self.kernel = kernel
        self.kwargs = dict(kwargs)

    def run(self, device: int, grid: tuple, args: tuple) -> None:
        _direct(self.kernel, grid, args, self.kwargs)


def _remember(key: tuple, kernel: Any, compiled: Any, args: tuple, kwargs: dict) -> None:
    """Plan ``key`` when every argument is plain (tensors of torch's own types, hashable
    values) and the keywords name exactly the parameters after the positional ones."""
    if any(isinstance(a, torch.Tensor) and type(a) not in _TENSORS for a in args):
        return
    if any(type(a) not in _PLAIN for a in args if not isinstance(a, torch.Tensor)):
        return
    params = list(kernel.signature.parameters.values())
    tail = []
    for p in params[len(args) :]:
        if p.name in kwargs:
            tail.append(kwargs[p.name])
        elif p.default is not p.empty:
            tail.append(p.default)
        else:
            return
    if len(_plans) >= CAPACITY:
        _plans.clear()
    # the globals' objects as they are now (Triton compared their values when it launched):
    # a global rebound since sends the call back to Triton
    used = tuple(
        (name, namespace, namespace.get(name))
        for (name, _), (_, namespace) in kernel.used_global_vals.items()
    )
    _plans[key] = Plan(kernel, compiled, tuple(tail), used)


#: Argument types a plan takes by value (besides tensors).
_PLAIN = (int, float, bool, type(None))


def observe(observer: Any) -> None:
    """Call ``observer(plan or None, device, grid, args)`` after every launch from now on
    (``None``: stop)."""
    global _observer
    _observer = observer


def generation() -> int:
    """How many times the plans were cleared."""
    return _generation


def clear_plans() -> None:
    """Forget every plan (the next launch of each problem goes through Triton again)."""
    global _generation
    _generation += 1
    _plans.clear()
    _stats.update(planned=0, unplanned=0)


def plan_info() -> dict[str, int]:
    """``{"plans", "planned", "unplanned"}``: plans held, and launches each way so far."""
    return {"plans": len(_plans), **_stats}
