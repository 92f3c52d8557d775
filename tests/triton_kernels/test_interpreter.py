"""Triton's CPU interpreter as the kernels adapt it (``triton_kernels._interpreter``): work it
would discard or repeat is skipped, and what it builds is what Triton builds."""

from __future__ import annotations

import pytest
import torch

from triton_kernels import INTERPRET

pytestmark = pytest.mark.interpret


@pytest.fixture(autouse=True)
def _interpreted():
    if not INTERPRET:
        pytest.skip("only under TRITON_INTERPRET=1")


def test_interpreter_skips_the_overflow_sanitizer_it_would_discard():
    """Triton's interpreter redoes every int32 add, sub and mul in int64 to check overflow and
    drops the check unless ``debug`` is set, which it never is there: the kernels turn it off
    (half the interpreted kernels' time)."""
    from triton.runtime import interpreter

    options = interpreter.interpreter_builder.options
    assert not options.debug and not options.sanitize_overflow


def test_interpreter_patches_the_language_once_per_launch():
    """A launch points ``triton.language`` at interpreted functions until it ends; the
    helpers it calls would patch again each time (a third of the interpreted kernels' time):
    they do not, and the language is restored after the launch, helpers and all."""
    import triton.language as tl
    from triton.runtime import interpreter

    import triton_kernels as K

    assert interpreter._patch_lang.repeats_skipped
    load = tl.load
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    out = torch.full((2, 4, 5, 6), float("nan"), dtype=torch.float64)
    geo = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, allow_tf32=False)
    K.conv_forward(x, w, None, out, pad_mode="reflect", **geo)  # (its loads call helpers)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    torch.testing.assert_close(out, torch.nn.functional.conv2d(padded, w))
    assert tl.load is load


def _made(cls, init, *args) -> dict[str, str]:
    obj = cls.__new__(cls)
    init(obj, *args)
    return {name: f"{type(v).__name__}:{v}" for name, v in vars(obj).items()}


def test_block_types_and_tensors_of_a_known_shape_are_what_triton_builds():
    """Block types and tensors are built from what their shape's first block type derived:
    the same attributes as Triton's own construction, in containers of their own (a change to
    one object's shape reaches no other)."""
    import triton.language as tl

    core = tl.core
    block_type = core.block_type
    assert block_type.__init__.shapes_once
    triton_block = _made(block_type, block_type.__init__.__wrapped__, tl.float16, [2, 32])
    for shape in ([2, 32], [core.constexpr(2), 32], core.tuple([2, 32])):
        assert _made(block_type, block_type.__init__, tl.float16, shape) == triton_block
    a, b = block_type(tl.int64, [2, 32]), block_type(tl.int64, [2, 32])
    assert a == b and a.shape is not b.shape and a.shape.values is not b.shape.values
    s, t = core.tensor(None, a), core.tensor(None, b)
    assert s.shape is not t.shape and s.shape.values is not t.shape.values
    triton_tensor = _made(core.tensor, core.tensor.__init__.__wrapped__, None, a)
    assert _made(core.tensor, core.tensor.__init__, None, a) == triton_tensor
    scalar = _made(core.tensor, core.tensor.__init__.__wrapped__, None, tl.int32)
    assert _made(core.tensor, core.tensor.__init__, None, tl.int32) == scalar


@pytest.mark.parametrize(
    "shape, error, message",
    [([3, 4], ValueError, "power of 2"), ([], TypeError, "0d block_type")],
)
def test_a_bad_block_shape_is_triton_s_error(shape, error, message):
    """Shapes the adaptation has not derived are built by Triton, checks and errors included
    (a bad one is never derived)."""
    import triton.language as tl

    for _ in range(2):
        with pytest.raises(error, match=message):
            tl.core.block_type(tl.float32, shape)


def test_the_adaptation_steps_aside_for_objects_it_does_not_know():
    """Where this Triton's constructors build more than the adaptation knows, it changes
    nothing."""
    import triton.language as tl

    from triton_kernels import _interpreter

    core = tl.core
    block, tensor = core.block_type.__init__, core.tensor.__init__
    triton_block, triton_tensor = block.__wrapped__, tensor.__wrapped__

    def richer_tensor(self, handle, type):
        triton_tensor(self, handle, type)
        self.layout = "new in a later Triton"

    assert _interpreter._same_objects(triton_block, block, triton_tensor, tensor)
    assert not _interpreter._same_objects(triton_block, block, richer_tensor, tensor)


def test_type_rules_are_remembered_with_triton_s_answers():
    """The computation type of a binary operation and the NumPy dtype of a Triton type are
    remembered per question, with Triton's answers (pointers, which have no hash, asked anew),
    and Triton's errors for operands it refuses."""
    import triton.language as tl
    from triton.language import semantic
    from triton.runtime import interpreter

    rules = semantic.TritonSemantic
    remembered, computed = rules.computation_type_impl, rules.computation_type_impl.__wrapped__
    assert remembered.remembered
    for a, b in [(tl.int32, tl.float16), (tl.bfloat16, tl.float32), (tl.int32, tl.int64)]:
        for flags in [(False, False), (True, False), (False, True)]:
            for div in (False, True):
                args = (a, flags[0], b, flags[1], div)
                assert remembered(rules(None), *args) == computed(rules(None), *args)
                assert remembered(rules(None), *args) == computed(
                    rules(None), *args
                )  # (now remembered)
    for _ in range(2):
        with pytest.raises(TypeError, match="different signedness"):
            remembered(rules(None), tl.int32, False, tl.uint32, False, True)
        with pytest.raises(TypeError, match="unexpected type pointer"):
            remembered(rules(None), tl.pointer_type(tl.float32), False, tl.int32, False, False)

    np_dtype = interpreter._get_np_dtype
    assert np_dtype.remembered
    for ty in [tl.float64, tl.bfloat16, tl.int1, tl.pointer_type(tl.float16)]:
        for asked in (ty, tl.core.block_type(ty, [4, 2])):
            assert np_dtype(asked) == np_dtype.__wrapped__(asked)
            assert np_dtype(asked) == np_dtype.__wrapped__(asked)


def test_a_scalar_condition_masks_a_block_as_compiled_code_does():
    """A scalar condition combined with a block of them masks a load and a store: the
    interpreter's splat of the scalar (labelled with its operands' type) no longer turns the
    mask into int32, which its loads refuse."""
    import triton
    import triton.language as tl

    @triton.jit
    def masked_copy(x_ptr, y_ptr, N, LIMIT):
        row = tl.program_id(0)
        offsets = tl.arange(0, 4)
        ok = (offsets < N) & (row < LIMIT)  # (a block, then a scalar)
        v = tl.load(x_ptr + row * 4 + offsets, mask=(row >= 0) & ok, other=0.0)
        tl.store(y_ptr + row * 4 + offsets, v, mask=ok)

    x = torch.arange(12, dtype=torch.float32)
    y = torch.full((12,), -1.0)
    masked_copy[(3,)](x, y, 3, 2)
    assert y.tolist() == [0, 1, 2, -1, 4, 5, 6, -1, -1, -1, -1, -1]
