"""Shortened tape keys (``taped``'s ``vouched``): a caller that vouches for what its arguments
are — a bound primitive, whose opening fixed its operands' types, shapes, dtypes and devices —
finds its tape by that and its tensors' strides and alignment alone, and replays exactly the
tape the full key found. Every case a shortened key could confuse is checked here against the
full path and against torch: other strides, another alignment, other gradients wanted, other
incoming gradients, a caller naming the wrong tensors, plans cleared, a tape that cannot
launch.
"""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

pytestmark = [pytest.mark.interpret, pytest.mark.usefixtures("tapes_on")]

tape = pytest.importorskip("triton_kernels._tape")
from triton_kernels import _plan  # noqa: E402


@triton.jit
def _scale_kernel(x_ptr, y_ptr, n, a, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + i, tl.load(x_ptr + i, mask=i < n) * a, mask=i < n)


def _scaled(x: torch.Tensor, a: float) -> torch.Tensor:
    """``a·x``, contiguous, through a contiguous copy of ``x`` (a step that reads strides)."""
    x = x.contiguous()
    out = torch.empty_like(x)
    n = x.numel()
    _plan.launch(_scale_kernel, (triton.cdiv(n, 64),), (x.view(-1), out.view(-1), n, a),
                 {"BLOCK": 64})  # fmt: skip
    return out


_scaled_taped = tape.taped(_scaled, returns=True)


def _x(seed: int, shape=(3, 40)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_a_vouched_call_replays_the_tape_its_full_key_found():
    for i in range(5):
        x = _x(i)
        torch.testing.assert_close(_scaled_taped.vouched("x", [x], x, 0.5), 0.5 * x)
    assert len(tape._shortcuts) == 1
    (shortcut,) = tape._shortcuts.values()
    # (a shortcut holds its tape's replay function itself: one call less on every replay)
    assert shortcut is next(t for t in tape._tapes.values() if type(t) is tape.Tape).replay_steps
    # calls 3 (the full key's replay, which made the shortcut), 4 and 5 (the shortcut's)
    assert tape.tape_info() == {"tapes": 1, "replayed": 3, "recorded": 1, "untapeable": 0}


def test_strides_and_alignment_are_part_of_the_shortened_key():
    """One vouched value, tensors of one shape laid out three ways: three shortcuts, each
    replaying its own tape (the copy step differs)."""
    for i in range(4):
        base = _x(i, (41, 3))
        for x in (base[1:].t().contiguous(), base[:40].t(), base.view(-1)[1:121].view(3, 40)):
            torch.testing.assert_close(_scaled_taped.vouched("x", [x], x, 2.0), 2 * x)
    assert len(tape._shortcuts) == 3
    assert len(set(map(id, tape._shortcuts.values()))) == 3


def test_a_caller_naming_other_tensors_gets_no_shortcut():
    other = _x(99)
    for i in range(4):
        x = _x(i)
        torch.testing.assert_close(_scaled_taped.vouched("x", [other], x, 0.5), 0.5 * x)
    assert tape._shortcuts == {}


def test_clearing_the_plans_drops_the_shortcuts():
    for i in range(3):
        x = _x(i)
        _scaled_taped.vouched("x", [x], x, 0.5)
    assert tape._shortcuts
    _plan.clear_plans()
    x = _x(7)
    torch.testing.assert_close(_scaled_taped.vouched("x", [x], x, 0.5), 0.5 * x)
    assert tape._shortcuts == {}


def test_a_shortcut_that_cannot_launch_sends_the_call_the_full_way():
    """A tape whose plan cannot launch (a global rebound) raises ``Unplanned`` before any step:
    its shortcut is dropped and the full path marks the problem untapeable and runs the
    function."""
    for i in range(3):
        x = _x(i)
        _scaled_taped.vouched("x", [x], x, 0.5)
    (short,) = tape._shortcuts

    def unplanned(*tensors):
        raise _plan.Unplanned("a global the kernel uses was rebound or deleted")

    tape._shortcuts[short] = unplanned  # (what the shortcut's replay runs)
    (stuck,) = (t for t in tape._tapes.values() if type(t) is tape.Tape)
    stuck.replay_steps = unplanned  # (what the full key's replay runs)
    for i in range(3):
        x = _x(10 + i)
        torch.testing.assert_close(_scaled_taped.vouched("x", [x], x, 0.5), 0.5 * x)
    assert tape._shortcuts == {}
    assert tape.tape_info()["tapes"] == 0  # (the problem is untapeable now)


def _conv_grads(x, w, b, gy, *, stride=1):
    """Our conv2d's output and gradients (``None`` where not wanted), and torch's."""
    import torchconv_ext.functional as TF

    wants = [t for t in (x, w, b) if t.requires_grad]
    out = TF.conv2d(x, w, b, stride=stride, padding=1)
    ref = torch.nn.functional.conv2d(x, w, b, stride=stride, padding=1)
    return (out, *torch.autograd.grad(out, wants, gy)), (ref, *torch.autograd.grad(ref, wants, gy))


def test_bound_calls_and_their_backwards_replay_through_shortcuts():
    """A layer's calls — the forward and its backward — with the input in three layouts and
    alignments, with and without its gradient, with the incoming gradient in three layouts:
    each right against torch in float64, and each repeated problem replayed by a shortcut."""
    import torchconv_ext

    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(4, generator=g, dtype=torch.float64))

    def inputs():
        base = torch.randn(2 * 3 * 25 + 1, generator=g, dtype=torch.float64)
        yield base[: 2 * 3 * 25].view(2, 3, 5, 5)
        yield base[: 2 * 3 * 25].view(2, 3, 5, 5).contiguous(memory_format=torch.channels_last)
        yield base[1:].view(2, 3, 5, 5)  # (8 bytes off: another alignment)

    def incoming(out):
        gy = torch.randn(out.shape, generator=g, dtype=torch.float64)
        yield gy
        yield gy.contiguous(memory_format=torch.channels_last)
        yield torch.ones(()).to(gy).expand_as(gy)  # (as from ``out.sum().backward()``)

    with torchconv_ext.use_backend("triton"):
        for _ in range(3):  # the third round replays, through the shortcuts made on it
            for x in inputs():
                for wants_input in (True, False):
                    x = x.detach().requires_grad_(wants_input)
                    out = torch.nn.functional.conv2d(x, w, b, padding=1)
                    for gy in incoming(out):
                        got, want = _conv_grads(x, w, b, gy)
                        for a, c in zip(got, want, strict=True):
                            torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)
                            assert a.stride() == c.stride()
    shortcuts = list(tape._shortcuts)
    # the forwards: one per input layout and alignment; the backwards: one per those, the
    # gradients wanted and the incoming gradient's layout
    assert len(shortcuts) == 3 + 3 * 2 * 3
