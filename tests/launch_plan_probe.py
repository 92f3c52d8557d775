"""Launch plans on the stand-in GPU (run by ``tests/test_launch_plan.py`` in a process of its
own: the kernels must be compiled ones, not the interpreter's).

Every kernel launch reaches the stand-in's launcher, replaced here by one that records what it
is given: grid, stream, compiled function, launch metadata, hooks and the kernel's arguments.
A planned launch must hand it exactly what Triton's own ``JITFunction.run`` hands it, and a
change in anything Triton specialises on must miss the plan. Prints ``OK <checks>`` at the end;
any failed check raises.
"""

from __future__ import annotations

import sys
import warnings

from benchmarks.standin import require_compiled_kernels, stand_in_gpu

require_compiled_kernels()

# ruff: noqa: E402  (the kernels are imported after the check above)
import torch
import triton
import triton.language as tl
from triton import knobs
from triton.runtime import driver

import torchconv_ext
import torchconv_ext.functional as TF
from triton_kernels import _plan

RECORDED: list[tuple] = []


class RecordingLauncher:
    """The stand-in's final launcher, recording its arguments instead of launching."""

    def __init__(self, src, metadata) -> None:
        pass

    def __call__(self, *args) -> None:
        RECORDED.append(args)


def normal(v):
    """What a launcher argument means to a launch: a tensor's dtype, address alignment and
    layout (outputs are new tensors on every call); launch metadata by its contents."""
    if isinstance(v, torch.Tensor):
        return ("tensor", v.dtype, v.data_ptr() % 16, tuple(v.shape), v.stride())
    if hasattr(v, "data") and type(v).__name__ == "LazyDict":
        return ("metadata", dict(v.data))
    return v


def read(args: tuple) -> tuple:
    """The launcher's arguments as the launch reads them: the launch metadata (position 6)
    goes only to the enter and exit hooks (7, 8), so with none set it is not read."""
    if not (_plan.hooked(args[7]) or _plan.hooked(args[8])):
        args = (*args[:6], "metadata unread", *args[7:])
    return args


def recorded(fn) -> list[tuple]:
    RECORDED.clear()
    fn()
    return [tuple(map(normal, read(r))) for r in RECORDED]


def _grad_call(op, shapes, **kwargs):
    g = torch.Generator().manual_seed(0)
    operands = [torch.randn(s, generator=g).requires_grad_() for s in shapes]

    def run():
        out = op(*operands, **kwargs)
        torch.autograd.grad(out, operands, torch.ones_like(out))

    run.operands = operands
    return run


def by_address(run) -> list[tuple]:
    """What ``run()`` hands the launcher, with each tensor as its dtype, alignment and address *role*: which
    operand it starts at, or the how-manieth new address of the call. A taped launch hands the
    kernel the tensor a view was taken of (same address), so shapes and strides are left out."""
    RECORDED.clear()
    run()
    known = {t.data_ptr(): f"operand {i}" for i, t in enumerate(run.operands)}
    new: dict[int, str] = {}

    def role(v):
        if isinstance(v, torch.Tensor):
            p = v.data_ptr()
            name = known.get(p) or new.setdefault(p, f"new {len(new)}")
            return ("tensor", v.dtype, p % 16, name)
        return normal(v)

    return [tuple(map(role, read(r))) for r in RECORDED]


#: One forward+backward per launcher family: implicit GEMM, 1x1 GEMM, depthwise (its weight
#: gradient launches directly), transposed, windowed, global and adaptive pooling, upsampling.
FAMILIES = {
    "conv gemm": _grad_call(TF.conv2d, [(1, 4, 6, 6), (4, 4, 3, 3), (4,)], padding=1),
    "conv 1x1": _grad_call(TF.conv2d, [(1, 32, 4, 4), (16, 32, 1, 1)]),
    "conv depthwise": _grad_call(TF.conv2d, [(1, 4, 6, 6), (4, 1, 3, 3)], groups=4, padding=1),
    "conv transpose": _grad_call(TF.conv_transpose2d, [(1, 4, 5, 5), (4, 4, 2, 2)], stride=2),
    "max pool": _grad_call(TF.max_pool2d, [(1, 4, 6, 6)], kernel_size=3, stride=2, padding=1),
    "avg pool": _grad_call(TF.avg_pool2d, [(1, 4, 6, 6)], kernel_size=2),
    "global pool": _grad_call(TF.adaptive_avg_pool2d, [(1, 4, 6, 6)], output_size=1),
    "adaptive pool": _grad_call(TF.adaptive_max_pool2d, [(1, 4, 6, 6)], output_size=4),
    "upsample": _grad_call(TF.interpolate, [(1, 4, 3, 3)], scale_factor=2, mode="nearest"),
    "upsample fractional": _grad_call(TF.interpolate, [(1, 4, 3, 3)], size=(5, 7)),
}


@triton.jit
def _scale_kernel(x_ptr, y_ptr, n, a, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + i, tl.load(x_ptr + i, mask=i < n) * a, mask=i < n)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def off_then_on(switch, run, observe, info, warm: int) -> tuple:
    """``observe(run)`` with ``switch.ENABLED`` off; then, on again with no plans, ``warm`` calls
    (their launches returned) and ``observe(run)`` once more, with ``info()`` before and after."""
    switch.ENABLED = False
    off = observe(run)
    switch.ENABLED = True
    _plan.clear_plans()
    warmed = [recorded(run) for _ in range(warm)]
    before = info()
    on = observe(run)
    return off, warmed, on, before, info()


def check_families() -> int:
    for name, run in FAMILIES.items():
        # the first call on makes the plans
        unplanned, (first,), planned, before, after = off_then_on(
            _plan, run, recorded, _plan.plan_info, warm=1
        )
        check(len(unplanned) > 0, f"{name}: no launch reached the launcher")
        check(first == unplanned, f"{name}: the launch that makes a plan differs")
        check(planned == unplanned, f"{name}: planned launches differ:\n{planned}\n{unplanned}")
        check(
            after["planned"] - before["planned"] == len(planned)
            and after["unplanned"] == before["unplanned"],
            f"{name}: not every launch of the repeated call was planned ({before} -> {after})",
        )
    return len(FAMILIES)


def launch_scale(x, y, n, a=2.0) -> tuple:
    """One launch of the test kernel through the plans; the launcher's arguments as given."""
    RECORDED.clear()
    _plan.launch(_scale_kernel, (triton.cdiv(max(n, 1), 64),), (x, y, n, a), {"BLOCK": 64})
    [args] = RECORDED
    return args


def compiled_of(x, y, n) -> str:
    """The hash of the compiled kernel the plan of these arguments holds."""
    key = _plan._key(
        _scale_kernel, driver.active.get_current_device(), (x, y, n, 2.0), {"BLOCK": 64}
    )
    return _plan._plans[key].compiled.hash


def check_specialisation() -> int:
    """A plan misses when Triton would specialise differently, and the variant it then makes
    is Triton's own (a kernel compiled for that specialisation)."""
    _plan.ENABLED = True
    _plan.clear_plans()
    x, y = torch.randn(64), torch.empty(64)
    first = launch_scale(x, y, 40)
    again = launch_scale(x, y, 40)
    check(first[9:] == again[9:] and again[9] is x and again[10] is y, "same arguments")
    check(
        tuple(map(normal, read(first)[:9])) == tuple(map(normal, read(again)[:9])),
        "same grid, stream, function, metadata and hooks",
    )
    check(_plan.plan_info()["planned"] == 1, "a repeated launch is planned")
    variants = {
        "a misaligned pointer": (x[1:], y, 40),
        "an int equal to 1": (x, y, 1),
        "an int divisible by 16": (x, y, 48),
        "an int beyond int32": (x, y, 2**31),
        "another dtype": (x.double(), y.double(), 40),
    }
    seen = {compiled_of(x, y, 40)}
    for what, args in variants.items():
        info = _plan.plan_info()
        launch_scale(*args)
        check(_plan.plan_info()["unplanned"] == info["unplanned"] + 1, f"{what} must miss")
        compiled = compiled_of(*args)
        check(compiled not in seen, f"{what}: Triton compiled no variant of its own")
        seen.add(compiled)
        info = _plan.plan_info()
        launch_scale(*args)
        check(_plan.plan_info()["planned"] == info["planned"] + 1, f"{what}: then planned")
    return len(variants)


def check_call_time_state() -> int:
    """The stream, hooks and metadata are read at each call, as Triton reads them."""
    x, y = torch.randn(64), torch.empty(64)
    launch_scale(x, y, 40)
    streams = iter(range(100, 200))
    original = driver.active.get_current_stream
    driver.active.get_current_stream = lambda device=None: next(streams)
    try:
        args = launch_scale(x, y, 40)
        check(args[3] == 100, "the current stream at call time")
    finally:
        driver.active.get_current_stream = original
    calls = []
    hook = calls.append
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        info = _plan.plan_info()
        args = launch_scale(x, y, 40)
        check(_plan.plan_info()["planned"] == info["planned"] + 1, "planned with a hook set")
        check(args[7] is knobs.runtime.launch_enter_hook, "the enter hook as Triton passes it")
        check(args[6].data["name"] == "_scale_kernel", "launch metadata for the hook")
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    return 3


def check_fallback() -> int:
    """A plan that fails is dropped and the launch goes through Triton."""
    x, y = torch.randn(64), torch.empty(64)
    expected = launch_scale(x, y, 40)
    for plan in _plan._plans.values():
        plan.compiled = None  # anything: the planned call raises
    info = _plan.plan_info()
    got = launch_scale(x, y, 40)
    check(
        tuple(map(normal, read(got))) == tuple(map(normal, read(expected))),
        "the fallback launches as Triton",
    )
    check(_plan.plan_info()["unplanned"] == info["unplanned"] + 1, "through Triton")
    again = launch_scale(x, y, 40)
    check(tuple(map(normal, read(again))) == tuple(map(normal, read(expected))), "and plans again")
    return 1


def check_tapes() -> int:
    """A replayed launcher tape hands Triton's launcher what the launcher itself hands it."""
    from triton_kernels import _tape

    for name, run in FAMILIES.items():
        # plans, then the recording, then a replay
        plain, _, replayed, before, after = off_then_on(
            _tape, run, by_address, _tape.tape_info, warm=_tape.RECORD_AT
        )
        check(replayed == plain, f"{name}: replayed launches differ:\n{replayed}\n{plain}")
        check(
            after["replayed"] > before["replayed"] and after["untapeable"] == 0,
            f"{name}: the repeated call was not replayed ({before} -> {after})",
        )
    return len(FAMILIES)


def check_tape_call_time_state() -> int:
    """A replay reads the current stream at each call, and checks the globals its kernels use
    before any step: one rebound raises ``Unplanned`` with nothing launched (the caller then
    runs the launcher in full, through Triton)."""
    from triton_kernels import _tape

    run = FAMILIES["conv gemm"]
    for _ in range(_tape.RECORD_AT + 1):
        run()
    tapes = [t for t in _tape._tapes.values() if type(t) is _tape.Tape]
    planned = [t for t in tapes if "Unplanned" in t.source]
    check(bool(planned), "a conv tape with planned launches")
    streams = iter(range(300, 400))
    original = driver.active.get_current_stream
    driver.active.get_current_stream = lambda device=None: next(streams)
    try:
        RECORDED.clear()
        run()
        # (each replay reads it once, and so does each launch of a call replayed whole)
        streams_seen = [r[3] for r in RECORDED]
        check(
            bool(streams_seen) and all(s in range(300, 400) for s in streams_seen),
            f"the stream read at this call, not at the recording: {streams_seen}",
        )
    finally:
        driver.active.get_current_stream = original
    tape = planned[0]  # (its tensors are never read: the check comes first)
    plan = next(step.run for kind, step, _ in tape.steps if kind == "launch")
    check(bool(plan.globals), "a kernel that reads globals")
    name, space, value = plan.globals[-1]
    # Rebound to another value, or deleted: the replay stops before any step. (Triton compares
    # globals by value: an equal value rebound would launch the same kernel.)
    for change in ("rebound", "deleted"):
        if change == "rebound":
            space[name] = object()
        else:
            del space[name]
        try:
            RECORDED.clear()
            try:
                tape.replay([None] * tape.replay_steps.__code__.co_argcount)
            except _plan.Unplanned:
                pass
            else:
                raise AssertionError(f"a {change} global did not stop the replay")
            check(RECORDED == [], f"nothing launched before the check ({change})")
        finally:
            space[name] = value
    return 5


def check_compile_options(caught: list) -> int:
    """Every kernel was compiled with the library's options (FMA contraction pinned on), so
    Triton warned of no default it would have chosen for us."""
    compiled = [plan.compiled for plan in _plan._plans.values()]
    check(len(compiled) > 0, "some kernel was planned")
    for kernel in compiled:
        check(kernel.metadata.enable_fp_fusion is True, f"{kernel.name}: compiled without FMAs")
    fusion = [str(w.message) for w in caught if "FP_FUSION" in str(w.message)]
    check(not fusion, f"Triton warned of its FP fusion default: {fusion}")
    return 2


def main() -> int:
    with (
        warnings.catch_warnings(record=True) as caught,
        stand_in_gpu("sm_90", mode="launch"),
        torchconv_ext.use_backend("triton"),
    ):
        warnings.simplefilter("always")
        driver.active.launcher_cls = RecordingLauncher
        n = check_specialisation()
        n += check_call_time_state()
        n += check_fallback()
        n += check_families()
        n += check_tapes()
        n += check_tape_call_time_state()
        n += check_compile_options(caught)
    print(f"OK {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
