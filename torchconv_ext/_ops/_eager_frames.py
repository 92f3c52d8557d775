"""Functions whose frames Dynamo runs as they are, with everything they call: our
implementations at run time.

Where Dynamo skips a compiled function's frame it still tries to compile each frame that
function calls — under ``torch.func.grad(torch.compile(f))`` it skips every frame it can see
(it cannot trace under a functorch transform entered outside it) and so works its way down
through our functions into the kernels' launchers and Triton's runtime, which it cannot trace.
The implementation is never meant to be compiled (a graph calls it through the registered op),
so its entry points — and the registered op's kernels, which a compiled graph calls — carry
the mark ``torch.compiler.disable`` gives: Dynamo runs their frames and everything beneath them
eagerly. The mark sits on the code object, which only Dynamo reads: eager calls and compiled
graphs pay nothing for it (``torch.compiler.disable``'s wrapper costs about 0.7 µs a call,
torch's internal ``torch._disable_dynamo`` about 1 µs). A torch without the mark's API
leaves the functions unmarked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

try:
    from torch._C._dynamo.eval_frame import _FrameAction as FrameAction
    from torch._C._dynamo.eval_frame import _FrameExecStrategy as FrameExecStrategy
    from torch._C._dynamo.eval_frame import set_code_exec_strategy

    _SKIPPED = FrameExecStrategy(FrameAction.SKIP, FrameAction.SKIP)  # the frame and beneath
except ImportError:  # pragma: no cover - torch's private API moved
    set_code_exec_strategy = None


def runs_eagerly(fn: F) -> F:
    """Mark ``fn``'s frames to run, with everything they call, outside Dynamo (module doc);
    returns ``fn`` itself."""
    if set_code_exec_strategy is not None:
        set_code_exec_strategy(fn.__code__, _SKIPPED)
    return fn
