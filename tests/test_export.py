"""``torch.export`` with dynamic batch and spatial sizes, and ``torch.compile(dynamic=True)``
without a recompile per shape, on both backends.

Each rank's layers run side by side in one module (one export per rank keeps this quick). The
exported program then runs at other sizes and must give what torch's own layers give there (for
the layers torch lacks — TensorFlow-style ``'same'``, pyramid and global pooling — what our
eager layers give, which their own tests hold against torch). A shape computation that called
``int()`` on a symbolic size, or branched on one, would fail the export or fix the size.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend
from torch.export import Dim

import torchconv_ext
from tests.references.layers import SideBySide
from torchconv_ext import functional as TF
from torchconv_ext import nn as tnn

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]

#: Torch before 2.13 cannot export its own strided average pooling with dynamic sizes (its
#: shape function guards on divisibility). Our fallback calls torch's op there, so neither can
#: we: on that torch the fallback's export leaves torch's average pooling out.
_TORCH_EXPORTS_AVG_POOL = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 13)


def _torch_layers(nd: int) -> list[nn.Module]:
    """Every torch layer we convert, in rank ``nd``, with arguments that exercise the shape
    code (padding modes, 'same', dilation, output_padding, divisor_override, indices)."""
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[nd]
    transposed = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[nd]
    max_pool = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[nd]
    avg_pool = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[nd]
    adaptive_max = {1: nn.AdaptiveMaxPool1d, 2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d}
    adaptive_avg = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
    modes = {1: "reflect", 2: "circular", 3: "replicate"}
    layers = [
        conv(2, 2, 2, padding=1, padding_mode=modes[nd]),
        conv(2, 2, 3, padding="same", dilation=nd % 2 + 1),
        transposed(2, 2, 2, stride=2, padding=1, output_padding=1),
        max_pool(2, 1, 1, return_indices=nd < 3),
        avg_pool(2, 2, 1, count_include_pad=nd == 1),
        adaptive_max[nd](2),
        adaptive_avg[nd](3),
        nn.Upsample(scale_factor=2, mode="nearest-exact" if nd == 2 else "nearest"),
    ]
    if nd == 2:
        layers += [
            nn.Conv2d(2, 2, 3, stride=2, dilation=2, padding=2),
            nn.AvgPool2d(3, 2, 1, divisor_override=2),
            nn.Upsample(size=(5, 7)),
        ]
    return layers


def _our_layers() -> list[nn.Module]:
    """Layers torch has no counterpart of (2-d)."""
    return [
        tnn.Conv2d(2, 2, 3, stride=2, padding="same", padding_mode="reflect"),
        tnn.ConvTranspose2d(2, 2, 3, stride=2, padding="same"),
        tnn.MaxPool2d(3, 2, padding="same"),
        tnn.AvgPool2d(2, 2, padding="same"),
        tnn.SpatialPyramidPool((1, 2), "avg"),
        tnn.GlobalMaxPool(),
    ]


# The smallest spatial size exported. Torch decides from a size's range alone whether an output
# size can be 1 (a guard otherwise): for a stride-2 'same' output, ceil(size / 2), only from 4 on.
_MIN_SIZE = {1: 4, 2: 4, 3: 3}


def _dynamic(nd: int) -> dict:
    dims = {0: Dim("batch", min=2, max=16)}
    dims.update({2 + i: Dim(f"size{i}", min=_MIN_SIZE[nd], max=16) for i in range(nd)})
    return dims


def _assert_all_close(got: tuple, want: tuple) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        torch.testing.assert_close(g, w)


def _sizes(nd: int) -> list[tuple[int, ...]]:
    """The example input's size, then another one (tiny: the interpreter runs them)."""
    low = _MIN_SIZE[nd]
    return [(2, 2, *(low, low + 1, low + 2)[:nd]), (3, 2, *(low + 1, low, low)[:nd])]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_export_with_dynamic_batch_and_sizes(nd, backend):
    torch.manual_seed(nd)
    layers = _torch_layers(nd)
    if backend == "torch" and not _TORCH_EXPORTS_AVG_POOL:
        layers = [m for m in layers if not isinstance(m, nn.modules.pooling._AvgPoolNd)]
    theirs = SideBySide(layers).double()
    ours = torchconv_ext.convert_model(theirs)
    if nd == 2:  # layers only we have, against our eager layers on the fallback
        ours.layers.extend(_our_layers())
        ours.double()
    inputs = [torch.randn(size, dtype=torch.float64) for size in _sizes(nd)]
    with torchconv_ext.use_backend(backend):
        program = torch.export.export(ours, (inputs[0],), dynamic_shapes=(_dynamic(nd),))
        runs = [program.module()(x) for x in inputs[1:]]
    n_torch = len(theirs(inputs[0]))
    for x, got in zip(inputs[1:], runs):
        _assert_all_close(got[:n_torch], theirs(x))
        with torchconv_ext.use_backend("torch"):
            _assert_all_close(got[n_torch:], ours(x)[n_torch:])


def test_export_ceil_mode_like_torch():
    """Torch's ceil_mode output size branches on the size (so does ours, the same rule): both
    export with a dynamic batch, neither with a dynamic spatial size."""
    theirs = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    ours = torchconv_ext.convert_model(theirs)
    x = torch.randn(2, 2, 6, 5)
    for layer in (theirs, ours):
        program = torch.export.export(layer, (x,), dynamic_shapes=({0: Dim("batch", min=2)},))
        y = torch.randn(5, 2, 6, 5)
        torch.testing.assert_close(program.module()(y), theirs(y))
        with pytest.raises(torch._dynamo.exc.UserError, match="Constraints violated"):
            torch.export.export(layer, (x,), dynamic_shapes=(_dynamic(2),))


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_dynamic_does_not_recompile_per_shape(backend):
    model = torchconv_ext.convert_model(
        nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"),
            tnn.Conv2d(3, 2, 3, stride=2, padding="same"),
            tnn.MaxPool2d(2, 1, padding="same"),
            nn.ConvTranspose2d(2, 2, 2, stride=2),
            nn.AvgPool2d(2, 1, 1, count_include_pad=False),
            nn.Upsample(scale_factor=1.5),
            nn.AdaptiveMaxPool2d((3, 2)),
        )
    )
    counter = CompileCounterWithBackend("eager")
    compiled = torch.compile(model, backend=counter, dynamic=True, fullgraph=True)
    with torchconv_ext.use_backend(backend):
        # Sizes unlike each other and the channel counts in the first call: torch gives equal
        # sizes one symbol, and a size equal to a fixed channel count is fixed with it. The
        # second call would recompile if the first had fixed a size.
        results = [(x, compiled(x)) for x in map(torch.randn, [(4, 2, 5, 6), (5, 2, 7, 4)])]
    assert counter.frame_count == 1
    for x, got in results:
        with torchconv_ext.use_backend("torch"):
            torch.testing.assert_close(got, model(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_eager_calls_opening_other_signatures_recompile_no_compiled_caller(backend):
    """Eager calls remember their openings (``functional._common.Openings``) in tables that a
    traced call never reads: a guard on one would recompile every compiled caller whenever an
    eager call met a new signature."""
    torch.manual_seed(0)
    w = torch.randn(2, 2, 3, 3)
    counter = CompileCounterWithBackend("eager")
    compiled = torch.compile(lambda x: TF.conv2d(x, w, padding=1), backend=counter, fullgraph=True)
    x = torch.randn(1, 2, 4, 4)
    with torchconv_ext.use_backend(backend):
        compiled(x)
        for size in (5, 6):
            TF.conv2d(torch.randn(1, 2, size, size), w, padding=1)
            TF.max_pool2d(torch.randn(1, 2, size, size), 2)
        got = compiled(x)
    assert counter.frame_count == 1
    torch.testing.assert_close(got, torch.nn.functional.conv2d(x, w, padding=1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dynamic", [False, True])
def test_compiled_same_padding_with_a_stride_longer_than_the_kernel(dynamic, backend):
    """'same' with a stride longer than the kernel's span pads max(total, 0): on plain ints
    where the sizes are (torch 2.11's Dynamo cannot trace ``sym_max`` on them), symbolically
    where they are not."""
    layer = tnn.Conv2d(2, 2, 1, stride=3, padding="same", padding_mode="reflect")
    torch._dynamo.reset()  # (earlier tests' compiles of the same code count to its limit)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True, dynamic=dynamic)
    with torchconv_ext.use_backend(backend):
        for x in map(torch.randn, [(1, 2, 7, 5), (2, 2, 8, 10)]):
            torch.testing.assert_close(compiled(x), layer(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_compiled_unbatched_channels_last_gradient_is_read_right(backend):
    """A compiled graph gets the incoming gradient of an unbatched output with the strides its
    trace gave that output (here channels-last, from the weight) and lifts it to a batch of
    one stepping by its channels: ATen's CPU convolutions misread such an operand (grouped
    weight gradients were wrong on the fallback)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, 2, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 2, 2, 2, generator=gen, dtype=torch.float64)
    w = w.contiguous(memory_format=torch.channels_last)

    def up(x, w):
        return TF.conv_transpose2d(x, w, None, 2, "same", 0, 2)

    torch._dynamo.reset()  # (earlier tests' compiles of the same code count to its limit)
    compiled = torch.compile(up, backend="aot_eager", fullgraph=True)
    grads = []
    with torchconv_ext.use_backend(backend):
        for call in (up, compiled):
            operands = [t.clone().requires_grad_() for t in (x, w)]
            y = call(*operands)
            gy = torch.randn(y.shape, generator=gen.manual_seed(1), dtype=y.dtype)
            grads.append(torch.autograd.grad(y, operands, gy))
    for eager, traced in zip(*grads):
        torch.testing.assert_close(traced, eager)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_compiled_dynamic_backward_takes_a_one_channel_gradient_strided_either_way(backend):
    """With dynamic sizes, AOTAutograd promises a compiled backward's incoming gradient only
    dense in the traced one's memory format: a one-channel gradient, traced channels-last as
    our output is, may come contiguous, and its size-1 channel's stride would steer ATen's
    layout rule (ours) away from what the op's fake promised. Inductor checks the strides."""
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 1, 3, 3, dtype=torch.float64)

    def f(x, w):  # ('same': ours on either backend)
        return TF.conv_transpose2d(x, w, stride=2, padding="same")

    torch._dynamo.reset()
    compiled = torch.compile(f, backend="inductor", dynamic=True, fullgraph=True)
    grads = []
    with torchconv_ext.use_backend(backend):
        for run in (compiled, f):
            operands = [t.clone().requires_grad_() for t in (x, w)]
            y = run(*operands)
            incoming = torch.randn(y.shape, dtype=y.dtype, generator=torch.manual_seed(0))
            grads.append(torch.autograd.grad(y, operands, incoming))
    for traced, eager in zip(*grads):
        torch.testing.assert_close(traced, eager)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_exported_program_saves_loads_and_decomposes(backend):
    """An exported program with our ops (and layers only we have) survives ``torch.export.save``
    and ``load`` — the ops are found again by name, with their schemas — and
    ``run_decompositions`` keeps them whole: both give what the model gives."""
    import io

    layers = [nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    model = torchconv_ext.convert_model(nn.Sequential(*layers, nn.ConvTranspose2d(3, 2, 2, 2)))
    model.append(tnn.Conv2d(2, 2, 3, stride=2, padding="same"))  # ours on either backend
    x = torch.randn(2, 2, 6, 6)
    with torchconv_ext.use_backend(backend):
        program = torch.export.export(model, (x,))
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        buffer.seek(0)
        loaded = torch.export.load(buffer)
        decomposed = program.run_decompositions()
        want = model(x)
        for again in (loaded, decomposed):
            targets = [n.target for n in again.graph.nodes if n.op == "call_function"]
            assert any(getattr(t, "namespace", None) == "torchconv_ext" for t in targets)
            torch.testing.assert_close(again.module()(x), want)
