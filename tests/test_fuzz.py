"""The differential fuzzer ``python -m tests.fuzz``: seeded cases agree with torch, and a
difference is reported with its configuration."""

from __future__ import annotations

import random
import re

import pytest
import torch

import torchconv_ext._activation
from tests import fuzz, fuzz_modes

pytestmark = pytest.mark.interpret


def _float64_case(draw, rng: random.Random, wanted) -> fuzz.Case:
    """The first float64 case ``draw`` gives that is ``wanted``, second order compared."""
    case = draw(rng)
    while case.operands[0].dtype != torch.float64 or not wanted(case):
        case = draw(rng)
    case.second_order = True
    return case


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_seeded_cases_agree_with_torch(backend):
    lines = []  # (seed 207: six op families; plain cases, and cases repeated, compiled, under
    # jvp, autocast and fake tensors, and as modules)
    assert fuzz.run(207, cases=8, backend=backend, report=lines.append) == []
    assert lines == ["8 cases, 0 failed (seed 207)"]


def test_second_order_gradients_of_seeded_cases_agree_with_torch(monkeypatch):
    monkeypatch.setattr(fuzz_modes, "MODES", ())
    monkeypatch.setattr(fuzz, "SECOND_ORDER_SHARE", 1.0)
    lines = []
    assert fuzz.run(6, cases=6, report=lines.append) == []
    assert lines == ["6 cases, 0 failed (seed 6)"]


def test_large_cases_compare_first_order_only(monkeypatch):
    """Cases whose operands hold more than ``SECOND_ORDER_MAX_ELEMENTS`` compare first-order
    gradients only; the bound is applied after the draw, so a seed draws the same cases."""
    monkeypatch.setattr(fuzz, "SECOND_ORDER_SHARE", 1.0)

    def drawn(bound):
        monkeypatch.setattr(fuzz, "SECOND_ORDER_MAX_ELEMENTS", bound)
        cases = []
        monkeypatch.setattr(fuzz, "check", lambda case, backend: cases.append(case))
        fuzz.run(3, cases=12, report=lambda line: None)
        return [({**c.config, "second_order": None}, c.second_order) for c in cases]

    everything, nothing = drawn(10**9), drawn(0)
    assert [config for config, _ in everything] == [config for config, _ in nothing]
    assert any(second for _, second in everything) and not any(s for _, s in nothing)


def test_a_second_order_difference_is_found():
    case = fuzz.interpolate_case(random.Random(0))
    case.operands = [t.detach().double().requires_grad_() for t in case.operands]
    theirs = case.theirs
    # the same values and first-order gradients (zero), a second-order gradient 2·v·sum(grad)
    case.ours = lambda x: theirs(x) + ((x - x.detach()) ** 2).sum()
    case.compare_layout = False  # (the term's gradient has the input's layout)
    assert fuzz.check(case) is None
    case.second_order = True
    with pytest.raises(AssertionError, match="second-order grad 0"):
        fuzz.check(case)


def test_every_op_family_is_drawn():
    rng = random.Random(0)
    families = {
        re.sub(r"\d", "", fuzz.DRAWS[i % len(fuzz.DRAWS)](rng).config["op"]) for i in range(400)
    }
    assert families == {
        "convd", "conv_transposed", "convd_local", "convd_tiled", "max_poold", "avg_poold",
        "adaptive_max_poold", "adaptive_avg_poold", "spatial_pyramid_pool", "global_max_pool",
        "global_avg_pool", "interpolate", "upsample_nearest", "maxout",
    }  # fmt: skip


def _one_of_each(draw, rng: random.Random, kind, count: int, wanted=lambda case: True) -> list:
    """The first case ``draw`` gives of each of ``count`` kinds (``kind(case)``) that is
    ``wanted``."""
    found: dict = {}
    while len(found) < count:
        case = draw(rng)
        if kind(case) not in found and wanted(case):
            found[kind(case)] = case
    return list(found.values())


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_maxouts_with_ties_and_nans_agree_with_their_definition(backend):
    cases = _one_of_each(  # (values random, on a coarse grid, with NaNs; negative dims)
        fuzz.maxout_case, random.Random(0), lambda c: c.config["values"], 3,
        lambda c: c.config["pieces"] > 1 and c.config["dim"] < 0,
    )  # fmt: skip
    for case in cases:
        case.second_order = case.operands[0].dtype == torch.float64
        assert fuzz.check(case, backend) is None, case.config


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_padding_strings_beyond_torch_agree_with_their_definition(backend):
    """TensorFlow's 'same' with a stride (for the transposed convolution: a stride longer than
    the kernel, whose output is extended) against torch's op on a padded input or a cropped or
    extended output."""

    def wanted(case: fuzz.Case) -> bool:
        config, stride = case.config, case.config["stride"]
        spans = [(k - 1) * d + 1 for k, d in zip(config["kernel"], config["dilation"])]
        extends = any(s > span for s, span in zip(stride, spans))
        transposed = config["op"][:-2] == "conv_transpose"
        return config["padding"] == "same" and max(stride) > 1 and (extends or not transposed)

    kind = lambda case: case.config["op"][:-2]
    for case in _one_of_each(fuzz.padding_string_case, random.Random(0), kind, 4, wanted):
        case.second_order = case.operands[0].dtype == torch.float64
        assert fuzz.check(case, backend) is None, case.config


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_padding_pairs_agree_with_a_padded_input(backend):
    """Convolutions padded by ``(before, after)`` pairs, one case per padding mode, and max
    and average pooling, against torch's op on an input ``F.pad`` padded; and a transposed
    convolution's pairs (with an output padding) against torch's full output cropped."""

    def wanted(case: fuzz.Case) -> bool:
        config = case.config
        padding = config["padding"]
        if isinstance(padding, str) or not any(isinstance(p, tuple) for p in padding):
            return False
        return not config["op"].startswith("conv_transpose") or max(config["output_padding"]) > 0

    kind = lambda case: (case.config["op"][:-2], case.config["padding_mode"])
    for case in _one_of_each(fuzz.padding_string_case, random.Random(0), kind, 7, wanted):
        case.second_order = case.operands[0].dtype == torch.float64
        assert fuzz.check(case, backend) is None, case.config


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_sizes_rounded_half_to_even_agree_with_atens_op_given_them(backend):
    cases = _one_of_each(
        fuzz.interpolate_case, random.Random(0), lambda c: c.config.get("mode"), 2,
        lambda c: "output_size_rounding" in c.config,
    )  # fmt: skip
    for case in cases:
        assert case.layers is None
        assert fuzz.check(case, backend) is None, case.config


def test_upsample_nearest_is_drawn_as_a_function_and_as_a_module():
    rng = random.Random(0)
    case = fuzz.interpolate_case(rng)
    while case.config["op"] != "upsample_nearest" or len(case.config["input_size"]) != 2:
        case = fuzz.interpolate_case(rng)
    assert fuzz.check(case) is None, case.config
    module, _ = case.layers(torch.nn)
    assert type(module) is torch.nn.UpsamplingNearest2d
    assert fuzz.check(fuzz_modes.as_module(case, rng)) is None, case.config


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_locally_connected_and_tiled_cases_agree_with_their_definition(backend):
    rng = random.Random(5)  # (padding modes, both with kernels wider than 1)
    for op in ("conv2d_local", "conv1d_tiled"):
        case = _float64_case(fuzz.local_case, rng, lambda c, op=op: c.config["op"] == op)
        assert fuzz.check(case, backend) is None


def test_fused_activations_are_drawn():
    rng = random.Random(0)
    drawn = {fuzz.conv_case(rng).config["activation"] for _ in range(400)}
    assert drawn == {None, *torchconv_ext._activation.ACTIVATION_ARGS}


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_a_fused_prelu_agrees_with_torch(backend):
    rng = random.Random(1)
    case = _float64_case(fuzz.conv_case, rng, lambda c: c.config["activation"] == "prelu")
    assert len(case.operands) == 3 + case.config["bias"]  # (the PReLU weight is an operand)
    assert fuzz.check(case, backend) is None


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_a_maxout_convolution_agrees_with_torch(backend):
    rng = random.Random(1)
    case = _float64_case(fuzz.conv_case, rng, lambda c: c.config["maxout_pieces"] > 1)
    assert fuzz.check(case, backend) is None


def test_a_difference_is_reported_with_its_configuration(monkeypatch):
    def off_by_one(rng):
        case = fuzz.interpolate_case(rng)
        theirs = case.theirs
        case.theirs = lambda x: theirs(x) + 1
        return case

    monkeypatch.setattr(fuzz, "DRAWS", (off_by_one,))
    lines = []
    [failure] = fuzz.run(0, cases=1, report=lines.append)
    assert re.match(r'\{"op": "(interpolate|upsample_nearest)"', failure)
    assert "AssertionError" in failure
    assert lines == [f"FAIL {failure}", "1 cases, 1 failed (seed 0)"]


def test_refusals_must_match_torchs():
    def raising(kind):
        def call(*_):
            raise kind("refused")

        return call

    case = fuzz.pool_case(random.Random(2))
    case.theirs = raising(ValueError)
    assert fuzz.check(case) == "accepted what torch refuses (ValueError: refused)"
    case.ours = raising(RuntimeError)
    assert fuzz.check(case) == "raised RuntimeError where torch raised ValueError"
    case.ours = raising(ValueError)
    assert fuzz.check(case) is None


def test_layouts_cpu_torch_reads_from_group_slices_are_not_compared():
    # a depthwise convolution of 1×1 images in a strided channels-last view: CPU torch's
    # float64 path copies each group's slice, (2, 1, 1, 1) with strides all 1, which reads as
    # contiguous, so its result is contiguous where CUDA's (and ours) is channels-last
    x = torch.randn(2, 4, 1, 2, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x, w = x[..., ::2], torch.randn(4, 2, 1, 1, dtype=torch.float64)
    result = torch.nn.functional.conv_transpose2d(x, w, stride=2, output_padding=(1, 0), groups=4)
    assert result.is_contiguous() and not result.is_contiguous(memory_format=torch.channels_last)
    assert not fuzz._layouts_comparable(2, x, w, 4)
    assert fuzz._layouts_comparable(2, x.float(), w.float(), 4)  # (oneDNN: whole operands)
    assert fuzz._layouts_comparable(2, x, w, 1)
    assert not fuzz._layouts_comparable(3, x, w, 1)


def test_max_pools_whose_windows_miss_the_input_are_not_drawn():
    # max_pool2d(x of width 1, kernel 3, stride 3, padding 1, dilation 2, ceil_mode): the one
    # window reads positions -1, 1 and 3, none of them in the input
    assert not fuzz._windows_meet_input(1, 3, 3, 1, 2, True)
    assert not fuzz._windows_meet_input(1, 2, 3, 1, 2, True)
    assert fuzz._windows_meet_input(1, 2, 3, 1, 1, True)
    assert fuzz._windows_meet_input(6, 3, 2, 1, 2, False)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_pyramid_and_global_poolings_agree_with_their_definition(backend):
    cases = _one_of_each(
        fuzz.pyramid_case, random.Random(3), lambda c: c.config["op"].startswith("global"), 2,
        lambda c: c.operands[0].dtype == torch.float64,
    )  # fmt: skip
    for case in cases:
        assert fuzz.check(case, backend) is None, case.config


def _moded(mode, rng: random.Random, wanted=lambda case: True) -> fuzz.Case:
    """The first drawn case that ``wanted`` accepts, in ``mode``."""
    while True:
        case = rng.choice(fuzz.DRAWS)(rng)
        if mode is not fuzz_modes.as_module or case.layers is not None:
            moded = mode(case, rng)
            if wanted(moded):
                return moded


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize(
    "mode",
    [
        "repeated", "vmapped", "forward_mode", "autocast", "cross_checked", "compiled", "traced",
        "inference",
    ],
)  # fmt: skip
def test_a_case_in_each_mode_agrees_with_torch(mode, backend):
    rng = random.Random(4)
    mode = getattr(fuzz_modes, mode)
    for _ in range(2):
        case = _moded(mode, rng)
        calls = ("repeat", "vmap", "jvp", "autocast", "fake", "compile", "trace", "inference")
        assert case.config["call"] in calls
        assert fuzz.check(case, backend) is None, case.config


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize(
    "draw",
    ["conv_case", "conv_transpose_case", "local_case", "pool_case", "adaptive_case",
     "pyramid_case", "maxout_case", "interpolate_case"],
)  # fmt: skip
def test_forward_mode_traced_by_linearize_agrees_with_torch(draw, backend):
    """``torch.func.linearize`` traces forward mode with ``make_fx``: a dispatch mode, under
    which the registered ops take the call, and their autograd carries the tangents."""
    rng = random.Random(5)
    draw = getattr(fuzz, draw)
    case = fuzz_modes.forward_mode(_float64_case(draw, rng, lambda c: True), rng)
    while not case.config["linearized"]:
        case = fuzz_modes.forward_mode(_float64_case(draw, rng, lambda c: True), rng)
    assert fuzz.check(case, backend) is None, case.config


def test_inductor_never_compiles_an_activation_it_lowers_imprecisely():
    """torch's Inductor computes ``hardsigmoid_backward`` about 1e-8 off in float64 (its own
    compiled ``F.hardsigmoid`` too): such cases are compiled by the other backends only."""
    rng = random.Random(0)
    cases = (fuzz.conv_case(rng) for _ in range(2000))
    case = next(c for c in cases if c.config.get("activation") in fuzz_modes.INDUCTOR_IMPRECISE)
    drawn = {fuzz_modes.compiled(case, random.Random(i)).config["backend"] for i in range(40)}
    assert drawn == {"eager", "aot_eager"}


def test_inductor_compiles_a_case_on_our_kernels_only():
    rng = random.Random(0)
    cases = [fuzz_modes.compiled(fuzz.pool_case(rng), rng, inductor=False) for _ in range(30)]
    assert {case.config["backend"] for case in cases} == {"eager", "aot_eager"}  # (the fallback)
    case = _moded(
        fuzz_modes.compiled, rng,
        lambda c: c.config["backend"] == "inductor" and c.config["op"] == "conv2d"
        and c.config["dynamic"],
    )  # fmt: skip
    assert fuzz.check(case) is None, case.config


@pytest.mark.parametrize("built", ["convert_model", "our class"])
def test_a_convolution_as_a_module_agrees_with_torch(built):
    rng = random.Random(2)
    case = _moded(
        fuzz_modes.as_module,
        rng,
        lambda c: c.config["op"] == "conv2d" and c.config["built"] == built
        and c.config["activation"] is not None,
    )  # fmt: skip
    assert fuzz.check(case) is None, case.config


def test_a_vmapped_case_batches_its_other_operands_too():
    rng = random.Random(0)
    base = _float64_case(fuzz.conv_case, rng, lambda c: c.config["maxout_pieces"] == 1)
    case = fuzz_modes.vmapped(base, rng)
    while case.config["in_dims"][1] is None:
        case = fuzz_modes.vmapped(base, rng)
    dim = case.config["in_dims"][1]
    assert case.operands[1].shape[dim] == 2 and case.operands[1].dim() == base.operands[1].dim() + 1
    assert fuzz.check(case) is None


def test_a_difference_under_a_mode_is_found():
    case = fuzz_modes.vmapped(fuzz.interpolate_case(random.Random(0)), random.Random(0))
    theirs = case.theirs
    case.theirs = lambda x: theirs(x) * 2
    with pytest.raises(AssertionError):
        fuzz.check(case)


def test_modes_are_drawn_by_their_shares():
    rng = random.Random(0)
    calls = [
        fuzz_modes.draw_mode(fuzz.adaptive_case(rng), rng).config.get("call") for _ in range(400)
    ]
    calls_by_mode = (
        "repeat", "vmap", "jvp", "autocast", "module", "fake", "compile", "trace", "inference",
    )  # fmt: skip
    for call, share in zip(calls_by_mode, fuzz_modes.MODES):
        assert abs(calls.count(call) / 400 - share[1]) < 0.05
    local = fuzz.local_case(rng)  # (ours alone: no torch.nn layers, a definition to compare)
    assert {fuzz_modes.draw_mode(local, random.Random(i)).config.get("call") for i in range(99)} == {
        None, "repeat", "vmap", "jvp", "fake", "compile", "trace", "inference",
    }  # fmt: skip


def test_a_repeated_case_compares_a_replayed_call():
    from triton_kernels import _tape

    rng = random.Random(0)
    case = fuzz_modes.repeated(_float64_case(fuzz.conv_transpose_case, rng, lambda c: True), rng)
    replayed = _tape.tape_info()["replayed"]
    assert fuzz.check(case) is None
    assert _tape.tape_info()["replayed"] - replayed == 2  # the third call's forward and backward
