"""Launcher tapes (``triton_kernels._tape``): a launcher's work for a problem, recorded on its
second call and replayed from the third, computes exactly what the launcher computes; whatever a
tape cannot replay faithfully is never taped.

Under the interpreter a tape replays ``kernel[grid]`` itself, so these tests compare numbers;
``tests/launch_plan_probe.py`` checks, on the stand-in GPU, that replayed launches hand Triton's
launcher what the launchers hand it. Every other interpreter test replays tapes too, whenever a
problem repeats (gradcheck, for one).
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
def _axpy_kernel(x_ptr, y_ptr, n, a, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + i, tl.load(x_ptr + i, mask=i < n) * a + tl.load(y_ptr + i, mask=i < n),
             mask=i < n)  # fmt: skip


def _launch_axpy(x: torch.Tensor, y: torch.Tensor, a: float) -> None:
    n = x.numel()
    _plan.launch(_axpy_kernel, (triton.cdiv(n, 64),), (x.view(-1), y.view(-1), n, a),
                 {"BLOCK": 64})  # fmt: skip


@tape.taped
def _scaled_sum(x: torch.Tensor, out: torch.Tensor, *, a: float) -> None:
    """out = a·x + 2·x, through a workspace: ops before and after a launch."""
    work = torch.zeros_like(x)
    _launch_axpy(x, work, a)
    out.copy_(work + 2 * x)


def _calls(fn, n: int, *shapes, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    results = []
    for i in range(n):
        x = torch.randn(*shapes, generator=torch.Generator().manual_seed(i))
        out = torch.full_like(x, float("nan"))
        fn(x, out, **kwargs)
        results.append((x, out))
    return results


def test_replays_ops_and_launches_on_new_tensors():
    results = _calls(_scaled_sum, 5, 3, 50, a=0.5)
    info = tape.tape_info()
    assert info == {"tapes": 1, "replayed": 3, "recorded": 1, "untapeable": 0}
    for x, out in results:
        torch.testing.assert_close(out, 2.5 * x, rtol=0, atol=1e-6)


def test_a_new_problem_records_its_own_tape():
    for shape, a in [((3, 50), 0.5), ((4, 50), 0.5), ((3, 50), 1.5)]:
        for x, out in _calls(_scaled_sum, 3, *shape, a=a):
            torch.testing.assert_close(out, (a + 2) * x, rtol=0, atol=1e-6)
    assert tape.tape_info()["tapes"] == 3


def test_clearing_the_plans_drops_the_tapes():
    _calls(_scaled_sum, 3, 3, 50, a=0.5)
    assert tape.tape_info()["tapes"] == 1
    _plan.clear_plans()
    _calls(_scaled_sum, 1, 3, 50, a=0.5)
    assert tape.tape_info()["tapes"] == 0


@tape.taped
def _reads_a_value(x: torch.Tensor, out: torch.Tensor) -> None:
    # The launch depends on a tensor's value: a tape would freeze it.
    a = float(x.abs().max().item())
    out.zero_()
    _launch_axpy(x, out, a)


@tape.taped
def _launches_outside_the_plans(x: torch.Tensor, out: torch.Tensor) -> None:
    out.zero_()
    n = x.numel()
    _axpy_kernel[(triton.cdiv(n, 64),)](x.view(-1), out.view(-1), n, 3.0, BLOCK=64)


@tape.taped
def _returns_a_value(x: torch.Tensor, out: torch.Tensor) -> int:
    out.copy_(x)
    return 7


@pytest.mark.parametrize(
    "launcher, expected",
    [
        (_reads_a_value, lambda x: x * x.abs().max()),
        (_launches_outside_the_plans, lambda x: 3 * x),
    ],
    ids=["reads-a-value", "launches-outside-the-plans"],
)
def test_what_a_tape_cannot_replay_is_never_taped(launcher, expected):
    for x, out in _calls(launcher, 4, 2, 40):
        torch.testing.assert_close(out, expected(x), rtol=0, atol=1e-6)
    info = tape.tape_info()
    assert info["tapes"] == 0 and info["replayed"] == 0 and info["untapeable"] == 1


def test_a_launcher_that_returns_a_value_is_never_taped():
    for _ in range(4):
        x = torch.randn(5)
        out = torch.empty(5)
        assert _returns_a_value(x, out) == 7
        assert torch.equal(out, x)
    assert tape.tape_info()["tapes"] == 0


_elsewhere = torch.zeros(64)


@tape.taped
def _while_another_thread_launches(x: torch.Tensor, out: torch.Tensor) -> None:
    import threading

    # Another thread's launch in the middle of this call is not part of its tape.
    other = threading.Thread(target=_launch_axpy, args=(torch.ones(64), _elsewhere, 1.0))
    other.start()
    other.join()
    out.zero_()
    _launch_axpy(x, out, 1.0)


def test_launches_of_other_threads_stay_out_of_a_tape():
    _elsewhere.zero_()
    for x, out in _calls(_while_another_thread_launches, 4, 2, 40):
        torch.testing.assert_close(out, x, rtol=0, atol=0)
    assert tape.tape_info()["replayed"] == 2
    # the other thread ran in the two calls that were not replays; a tape holding its launch
    # would have added one per replay
    assert torch.equal(_elsewhere, torch.full((64,), 2.0))


def test_unhashable_arguments_and_subclasses_run_plainly():
    class Marked(torch.Tensor):
        pass

    for _ in range(4):
        x = torch.randn(3, 50)
        out = torch.empty_like(x)
        _scaled_sum(x.as_subclass(Marked), out, a=0.5)
        torch.testing.assert_close(out, 2.5 * x, rtol=0, atol=1e-6)
    assert tape.tape_info() == {"tapes": 0, "replayed": 0, "recorded": 0, "untapeable": 0}


def test_switched_off_tapes_run_the_launcher():
    tape.ENABLED = False
    try:
        for x, out in _calls(_scaled_sum, 4, 3, 50, a=0.5):
            torch.testing.assert_close(out, 2.5 * x, rtol=0, atol=1e-6)
    finally:
        tape.ENABLED = True
    assert tape.tape_info()["recorded"] == 0


def test_every_public_launcher_is_taped():
    import triton_kernels

    launchers = [n for n in triton_kernels.__all__ if "forward" in n or "backward" in n]
    assert launchers
    for name in launchers:
        assert hasattr(getattr(triton_kernels, name), "launcher"), name


def test_the_layers_replay_on_repeated_calls():
    """A convolution, a pooling and an upsampling forward and backward, called again and
    again on new tensors of one problem: replayed, and equal to torch."""
    import torchconv_ext
    import torchconv_ext.functional as TF

    calls = [
        (TF.conv2d, torch.nn.functional.conv2d, ((2, 4, 6, 6), (4, 4, 3, 3), (4,)),
         {"padding": 1}),
        (TF.conv2d, torch.nn.functional.conv2d, ((2, 4, 6, 6), (4, 1, 3, 3)),
         {"groups": 4, "stride": 2}),
        (TF.max_pool2d, torch.nn.functional.max_pool2d, ((2, 3, 7, 7),), {"kernel_size": 3}),
        (TF.interpolate, torch.nn.functional.interpolate, ((1, 2, 3, 4),), {"scale_factor": 2}),
    ]  # fmt: skip
    with torchconv_ext.use_backend("triton"):
        for ours, theirs, shapes, kwargs in calls:
            for seed in range(3):  # the third call replays
                g = torch.Generator().manual_seed(seed)
                operands = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
                operands = [t.requires_grad_() for t in operands]
                y = ours(*operands, **kwargs)
                grads = torch.autograd.grad(y, operands, torch.ones_like(y))
                y_ref = theirs(*operands, **kwargs)
                refs = torch.autograd.grad(y_ref, operands, torch.ones_like(y_ref))
                torch.testing.assert_close(y, y_ref)
                for got, want in zip(grads, refs, strict=True):
                    torch.testing.assert_close(got, want)
    info = tape.tape_info()
    assert info["replayed"] >= 2 * len(calls) and info["untapeable"] == 0, info
    # Each call's backward is one tape (max pooling saves its indices and keeps them as an
    # attribute too: one tensor in two places of its ctx, passed once).
    assert len(_backward_tapes()) == len(calls)


def test_a_tiled_convolution_replays_through_its_tuners():
    """The locally connected and tiled convolutions launch through ``Tuner`` as the other
    kernels do, so their calls tape and replay: one tile is an ordinary convolution."""
    import torchconv_ext
    import torchconv_ext.functional as TF

    with torchconv_ext.use_backend("triton"):
        for seed in range(4):  # replayed from the third or fourth call
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
            w = torch.randn(4, 3, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
            y = TF.conv2d_tiled(x, w[None, None], None, stride=(2, 1), padding=1)
            grads = torch.autograd.grad(y, (x, w), torch.ones_like(y))
            y_ref = torch.nn.functional.conv2d(x, w, None, stride=(2, 1), padding=1)
            refs = torch.autograd.grad(y_ref, (x, w), torch.ones_like(y_ref))
            torch.testing.assert_close(y, y_ref)
            for got, want in zip(grads, refs, strict=True):
                torch.testing.assert_close(got, want)
    info = tape.tape_info()
    assert info["replayed"] >= 3 and info["untapeable"] == 0, info


def test_the_registered_ops_replay_as_eager_calls_do():
    """``torch.ops.torchconv_ext.*`` on real tensors — what a compiled graph calls — runs the
    implementation through its tape: replayed from the third call, equal to torch."""
    import torchconv_ext

    op = torch.ops.torchconv_ext.conv_fwd.default
    geometry = ([1, 1], [1, 1], [1, 1], [1, 1], 1, "zeros")
    with torchconv_ext.use_backend("triton"):
        for seed in range(4):
            g = torch.Generator().manual_seed(seed)
            x, w, b = (torch.randn(s, generator=g, dtype=torch.float64)
                       for s in ((1, 4, 5, 5), (4, 4, 3, 3), (4,)))  # fmt: skip
            y = op(x, w, b, *geometry)
            torch.testing.assert_close(y, torch.nn.functional.conv2d(x, w, b, padding=1))
    from torchconv_ext._ops.conv import conv_fwd

    info = tape.tape_info()
    assert info["replayed"] == 2 and info["untapeable"] == 0, info
    # the implementation's own tape (not only its launcher's, which the raw implementation
    # would replay too)
    [tape_of_impl] = [t for k, t in tape._tapes.items() if k[0] == id(conv_fwd.impl)]
    assert type(tape_of_impl) is tape.Tape


def _backward_tapes() -> list:
    from torchconv_ext._ops._taping import backward_from_saved

    return [
        t for k, t in tape._tapes.items() if k[0] == id(backward_from_saved) and type(t) is tape.Tape
    ]  # fmt: skip


def _scaled_copy(x: torch.Tensor, *, a: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A computation with results (as an op's implementation is taped): new tensors out."""
    out = torch.empty_like(x)
    out.copy_(x)
    _launch_axpy(x, out, a)  # out = (1 + a)·x
    return out, x.view(-1)


_scaled_copy_taped = tape.taped(_scaled_copy, returns=True)


def test_a_computation_with_results_replays_them():
    for i in range(5):
        x = torch.randn(3, 50, generator=torch.Generator().manual_seed(i))
        out, flat = _scaled_copy_taped(x, a=0.5)
        torch.testing.assert_close(out, 1.5 * x, rtol=0, atol=1e-6)
        assert out.data_ptr() != x.data_ptr()
        assert flat.shape == (150,) and flat.data_ptr() == x.data_ptr()
    assert tape.tape_info() == {"tapes": 1, "replayed": 3, "recorded": 1, "untapeable": 0}


def _folded(x: torch.Tensor) -> torch.Tensor:
    """In-place updates through views (as a padding's gradient is folded onto its source)."""
    out = x[1:].clone()
    out.narrow(0, 0, 1).add_(x[:1])
    return out


_folded_taped = tape.taped(_folded, returns=True)


def test_in_place_updates_through_views_are_replayed():
    for i in range(4):
        x = torch.randn(4, 3, generator=torch.Generator().manual_seed(i))
        want = x[1:].clone()
        want[0] += x[0]
        torch.testing.assert_close(_folded_taped(x), want, rtol=0, atol=0)
    assert tape.tape_info()["replayed"] == 2


_lookups = []


def _looked_up(x: torch.Tensor) -> torch.Tensor:
    """Stands for a cache: decided afresh on every call, replays included."""
    _lookups.append(x)
    return x * 2


@tape.taped
def _with_a_lookup(x: torch.Tensor, out: torch.Tensor) -> None:
    out.zero_()
    _launch_axpy(tape.replayed_whole(_looked_up, x), out, 1.0)


def test_a_call_replayed_whole_runs_again_on_every_replay():
    _lookups.clear()
    for x, out in _calls(_with_a_lookup, 5, 2, 40):
        torch.testing.assert_close(out, 2 * x, rtol=0, atol=0)
    assert len(_lookups) == 5 and tape.tape_info()["replayed"] == 3


@tape.taped
def _writes_through_setitem(x: torch.Tensor, out: torch.Tensor) -> None:
    out.zero_()
    _launch_axpy(x, out, 1.0)
    out[0] = 5.0  # an effect no result carries: never taped


def test_a_call_with_effects_but_no_tensor_result_is_never_taped():
    for x, out in _calls(_writes_through_setitem, 4, 3, 20):
        want = x.clone()
        want[0] = 5.0
        torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert tape.tape_info()["untapeable"] == 1 and tape.tape_info()["replayed"] == 0


def test_torch_function_modes_and_autocast_get_their_own_calls():
    # A device context (a torch function mode) may change what factory calls make: plain.
    with torch.device("cpu"):
        for x, out in _calls(_scaled_sum, 4, 3, 50, a=0.5):
            torch.testing.assert_close(out, 2.5 * x, rtol=0, atol=1e-6)
    assert tape.tape_info()["recorded"] == 0
    # Autocast's state is part of the key: a tape made outside it is not replayed inside.
    _calls(_scaled_sum, 3, 3, 50, a=0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _calls(_scaled_sum, 1, 3, 50, a=0.5)
    assert tape.tape_info()["replayed"] == 1


def test_a_repacked_weight_is_fresh_in_every_replay():
    """A convolution on an NCHW weight whose channels-last copy the weight cache keeps: the
    optimizer's in-place update between calls reaches every replayed call."""
    import torchconv_ext
    import torchconv_ext.functional as TF

    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 4, 3, 3, generator=g, dtype=torch.float64))
    with torchconv_ext.use_backend("triton"):
        for _ in range(5):
            x = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
            y = TF.conv2d(x, w, padding=1)
            gx, gw = torch.autograd.grad(y, (x, w), torch.ones_like(y))
            ref = torch.nn.functional.conv2d(x, w, padding=1)
            rx, rw = torch.autograd.grad(ref, (x, w), torch.ones_like(ref))
            torch.testing.assert_close(y, ref)
            torch.testing.assert_close(gx, rx)
            torch.testing.assert_close(gw, rw)
            with torch.no_grad():
                w.sub_(0.1 * gw)  # the optimizer's step
    assert tape.tape_info()["replayed"] >= 6


def _with_nones(x: torch.Tensor, y: torch.Tensor) -> tuple:
    """A gradient-like result: tensors and ``None``s in a flat tuple."""
    return None, x * 2, None, y + x


_with_nones_taped = tape.taped(_with_nones, returns=True)


def test_results_with_nones_are_replayed():
    for i in range(4):
        x, y = torch.randn(2, 3, generator=torch.Generator().manual_seed(i)).unbind(0)
        result = _with_nones_taped(x, y)
        assert result[0] is None and result[2] is None and len(result) == 4
        torch.testing.assert_close(result[1], x * 2, rtol=0, atol=0)
        torch.testing.assert_close(result[3], y + x, rtol=0, atol=0)
    assert tape.tape_info()["replayed"] == 2


def test_a_tensor_passed_twice_is_never_recorded():
    """One tensor in two places would give a tape one slot for both: such calls run plainly,
    the next call of the problem with two tensors records, and replays serve both kinds."""
    x = torch.randn(3)
    for _ in range(3):
        _with_nones_taped(x, x)
    assert tape.tape_info()["recorded"] == 0
    for i in range(3):
        y = torch.randn(3, generator=torch.Generator().manual_seed(i))
        torch.testing.assert_close(_with_nones_taped(x, y)[3], y + x, rtol=0, atol=0)
        torch.testing.assert_close(_with_nones_taped(y, y)[3], 2 * y, rtol=0, atol=0)
    assert tape.tape_info()["recorded"] == 1 and tape.tape_info()["replayed"] == 5


def test_a_backward_replays_as_one_tape():
    """A convolution's backward outside a graph — input, weight and bias gradients — is one
    tape from the third call on; with ``create_graph`` it runs the primitives (a graph of the
    backward), and double backward stays right."""
    import torchconv_ext
    import torchconv_ext.functional as TF

    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(4, generator=g, dtype=torch.float64))
    with torchconv_ext.use_backend("triton"):
        for _ in range(4):
            x = torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
            grads = torch.autograd.grad(TF.conv2d(x, w, b, stride=2, padding=1), (x, w, b),
                                        torch.ones(2, 4, 3, 3, dtype=torch.float64))  # fmt: skip
            ref = torch.nn.functional.conv2d(x, w, b, stride=2, padding=1)
            refs = torch.autograd.grad(ref, (x, w, b), torch.ones_like(ref))
            for got, want in zip(grads, refs, strict=True):
                torch.testing.assert_close(got, want)
        assert len(_backward_tapes()) == 1
        # A graph of the backward: the primitives themselves, differentiable again.
        x = torch.randn(2, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
        (gx,) = torch.autograd.grad(TF.conv2d(x, w, b, stride=2, padding=1).square().sum(), x,
                                    create_graph=True)  # fmt: skip
        (ggw,) = torch.autograd.grad(gx.square().sum(), w)
        ref = torch.nn.functional.conv2d(x, w, b, stride=2, padding=1).square().sum()
        (rx,) = torch.autograd.grad(ref, x, create_graph=True)
        (rw,) = torch.autograd.grad(rx.square().sum(), w)
        torch.testing.assert_close(gx, rx)
        torch.testing.assert_close(ggw, rw)
