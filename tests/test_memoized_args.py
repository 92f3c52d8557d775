"""Argument checks remembered per plain argument tuple (``torchconv_ext._args.memoized``): a
remembered result is only ever returned for arguments the check would treat alike, and a call
that raises raises again."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torchconv_ext._args import memoized
from torchconv_ext._conv_args import conv_geometry
from torchconv_ext._pool_args import adaptive_output_size, pool_geometry


def test_remembers_per_plain_arguments_and_tells_them_apart():
    calls = []

    @memoized
    def check(t, value):
        calls.append(value)
        return (tuple(t.shape), t.dtype, value)

    x = torch.zeros(2, 3)
    assert check(x, 1) == ((2, 3), torch.float32, 1)
    assert check(torch.ones(2, 3), 1) == ((2, 3), torch.float32, 1)  # same shape/dtype/device
    assert len(calls) == 1
    # what a check can read differs: it runs again
    for t, v in [(x, True), (x, 1.0), (x, (1,)), (x, [1]), (x.double(), 1), (x.t(), 1)]:
        check(t, v)
    assert len(calls) == 7
    # not plain (NumPy ints, nested objects, tensor subclasses): never remembered
    check(x, np.int64(1))
    check(x, np.int64(1))
    check(torch.nn.Parameter(x), 1)  # a Parameter is a plain tensor type
    assert len(calls) == 10
    check(x, (1.5,))  # a sequence of other than ints
    check(x, (1.5,))
    assert len(calls) == 12

    @memoized
    def scalars(a, b):  # no tensor, no sequence: the arguments are their own key
        calls.append((a, b))
        return a

    assert [scalars(1, "x"), scalars(1, "x"), scalars(True, "x"), scalars(1.0, "x")] == [1] * 4
    assert calls[12:] == [(1, "x"), (True, "x"), (1.0, "x")]


def test_errors_are_raised_every_time():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    assert conv_geometry("conv2d", x, w, None, 1, 1, 1, 1, "zeros").stride == (1, 1)
    for _ in range(2):
        with pytest.raises(TypeError):
            conv_geometry("conv2d", x, w, None, 1, 1, 1, True, "zeros")  # bool groups
        with pytest.raises(RuntimeError, match="stride"):
            conv_geometry("conv2d", x, w, None, 0, 1, 1, 1, "zeros")
        with pytest.raises(RuntimeError, match="Kernel size"):
            conv_geometry("conv2d", x[..., :2, :2], w, None, 1, 0, 1, 1, "zeros")
        with pytest.raises(RuntimeError, match="type"):
            conv_geometry("conv2d", x, w.double(), None, 1, 1, 1, 1, "zeros")


def test_results_follow_the_shape():
    x = torch.randn(1, 2, 6, 6)
    a = pool_geometry("max_pool2d", x, 2, None, "same", 1, False)
    b = pool_geometry("max_pool2d", x[..., :5, :5], 2, None, "same", 1, False)
    assert a.padding_end != b.padding_end  # 'same' padding depends on the size
    sizes = adaptive_output_size("adaptive_avg_pool2d", x, (None, 3))
    sizes.append(0)  # the caller's list is its own
    assert adaptive_output_size("adaptive_avg_pool2d", x, (None, 3)) == [6, 3]
    assert adaptive_output_size("adaptive_avg_pool2d", x, 2) == [2, 2]
    assert adaptive_output_size("adaptive_avg_pool2d", x, 2) == [2, 2]


# --- remembered openings of the functional ops (``functional._common.Openings``) ------------


def _openings():
    from torchconv_ext.functional import conv as conv_module
    from torchconv_ext.functional import conv_transpose as conv_transpose_module
    from torchconv_ext.functional import local as local_module
    from torchconv_ext.functional import pool as pool_module
    from torchconv_ext.functional import upsample as upsample_module

    return (
        conv_module._OPENINGS,
        pool_module._OPENINGS,
        conv_transpose_module._OPENINGS,
        upsample_module._OPENINGS,
        local_module._OPENINGS,
    )


@pytest.fixture
def fresh_openings():
    for table in _openings():
        table._table.clear()
    yield _openings()


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("batched", [True, False])
def test_remembered_openings_give_the_same_results(fresh_openings, backend, batched):
    import torchconv_ext
    import torchconv_ext.functional as TF

    if backend == "triton":
        pytest.importorskip("triton")
    g = torch.Generator().manual_seed(0)
    shape = (2, 3, 7, 7) if batched else (3, 7, 7)
    w, b = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64), torch.randn(4).double()
    calls = [
        (TF.conv2d, F.conv2d, (w, b), dict(stride=2, padding=1)),
        (TF.max_pool2d, F.max_pool2d, (), dict(kernel_size=3, stride=2, padding=1)),
        (TF.avg_pool2d, F.avg_pool2d, (), dict(kernel_size=2, count_include_pad=False)),
        (TF.conv_transpose2d, F.conv_transpose2d, (w.transpose(0, 1), None),
         dict(stride=2, output_padding=1)),
        (TF.adaptive_avg_pool2d, F.adaptive_avg_pool2d, (), dict(output_size=3)),
        (TF.interpolate, F.interpolate, (), dict(scale_factor=2, mode="nearest")),
    ]  # fmt: skip
    with torchconv_ext.use_backend(backend):
        for ours, theirs, rest, kwargs in calls:
            for layout in (torch.contiguous_format, torch.channels_last, None):
                # opened, then remembered: the layout (strides) is decided afresh each call
                x = torch.randn(shape, generator=g, dtype=torch.float64)
                if layout is not None and batched:
                    x = x.contiguous(memory_format=layout)
                got, want = ours(x, *rest, **kwargs), theirs(x, *rest, **kwargs)
                torch.testing.assert_close(got, want)
                assert got.stride() == want.stride()
    conv, pool, transposed, upsample, _ = fresh_openings
    assert len(upsample._table) == 1  # our op or torch's, on the checked geometry
    if backend == "torch":  # torch's own ops compute these: that is what is remembered
        from torchconv_ext.functional._common import TORCH_OP

        assert list(conv._table.values()) == [TORCH_OP]
        # max pooling hands over to torch; adaptive pooling runs our op (ATen inside); average
        # pooling's torch path is not remembered
        assert [v is TORCH_OP for v in pool._table.values()] == [True, False]
    else:
        assert len(conv._table) == 1 and len(pool._table) == 3 and len(transposed._table) == 1


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
@pytest.mark.parametrize("batched", [True, False])
def test_remembered_local_openings_give_the_same_results(fresh_openings, backend, batched):
    """A tiled and a locally connected convolution, opened then remembered (one opening per
    call signature, the tiled and the locally connected one apart), against the definition."""
    import torchconv_ext
    import torchconv_ext.functional as TF
    from tests.references.local import reference_local

    g = torch.Generator().manual_seed(0)
    tiled = torch.randn(2, 2, 4, 3, 3, 3, generator=g, dtype=torch.float64)
    local = torch.randn(3, 3, 4, 3, 3, 3, generator=g, dtype=torch.float64)
    with torchconv_ext.use_backend(backend):
        for _ in range(3):
            x = torch.randn((2, 3, 5, 5) if batched else (3, 5, 5), generator=g).double()
            for op, w, kw in ((TF.conv2d_tiled, tiled, dict(padding=1, stride=2)),
                              (TF.conv2d_local, local, {})):  # fmt: skip
                got = op(x, w, **kw)
                want = reference_local(x if batched else x[None], w, None, **kw)
                torch.testing.assert_close(got, want if batched else want[0])
    assert len(fresh_openings[-1]._table) == 2


def test_openings_are_told_apart_by_backend_and_not_kept_under_autocast(fresh_openings):
    import torchconv_ext
    import torchconv_ext.functional as TF

    x, w = torch.randn(1, 2, 6, 6), torch.randn(3, 2, 3, 3)
    with torchconv_ext.use_backend("triton"):
        TF.conv2d(x, w, padding="same", padding_mode="reflect")
    with torchconv_ext.use_backend("torch"):
        TF.conv2d(x, w, padding="same", padding_mode="reflect")
    conv, *_ = fresh_openings
    assert {key[0] for key in conv._table} == {"triton", "torch"}
    with torch.autocast("cpu", dtype=torch.bfloat16), torchconv_ext.use_backend("torch"):
        assert conv.key("conv2d", x, w) is None
        out = TF.conv2d(x, w, padding="same", padding_mode="reflect")
    assert out.dtype == torch.bfloat16 and len(conv._table) == 2


def test_a_call_that_raises_is_not_remembered(fresh_openings):
    import torchconv_ext
    import torchconv_ext.functional as TF

    x, w = torch.randn(1, 2, 6, 6), torch.randn(3, 4, 3, 3)  # 2 channels against 4
    with torchconv_ext.use_backend("triton"):  # our checks raise
        for _ in range(2):
            with pytest.raises(RuntimeError):
                TF.conv2d(x, w)
    conv, *_ = fresh_openings
    assert not conv._table
    with torchconv_ext.use_backend("torch"):  # torch's op raises, every time
        for _ in range(2):
            with pytest.raises(RuntimeError):
                TF.conv2d(x, w)
