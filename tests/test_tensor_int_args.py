"""Int arguments given as tensors: torch's argument parser takes a tensor of one integer (or
bool) element for an int (``Tensor.__index__``), so ours do, on every backend — and never
remember a call by such a tensor's metadata, which would hide its value."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchconv_ext
import torchconv_ext.functional as TF

BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.interpret)]
T = torch.tensor


def _operands() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = {"x": (1, 2, 7, 6), "w": (3, 2, 3, 3), "wg": (4, 1, 3, 3), "wt": (2, 3, 3, 3)}
    return {k: torch.randn(s, dtype=torch.float64, generator=g) for k, s in shapes.items()}


# Each call takes (functional module, operands); its int arguments are tensors.
CALLS = {
    "conv2d": lambda f, o: f.conv2d(o["x"], o["w"], stride=T(2), padding=T(1), dilation=T([1])),
    "conv2d pairs": lambda f, o: f.conv2d(o["x"], o["w"], padding=(T(1), 0)),
    "conv2d groups": lambda f, o: f.conv2d(o["x"], o["wg"], groups=T(2)),
    "conv_transpose2d": lambda f, o: f.conv_transpose2d(
        o["x"], o["wt"], stride=T(2), output_padding=T(1, dtype=torch.int32)
    ),
    "max_pool2d": lambda f, o: f.max_pool2d(o["x"], T(3), stride=T(2), padding=T(1)),
    "avg_pool2d": lambda f, o: f.avg_pool2d(o["x"], (T(2), 2), divisor_override=T(3)),
    "adaptive_avg_pool2d": lambda f, o: f.adaptive_avg_pool2d(o["x"], (T(3), T(2))),
    "adaptive_max_pool1d": lambda f, o: f.adaptive_max_pool1d(o["x"][0], T(4)),
    "interpolate": lambda f, o: f.interpolate(o["x"], size=T(9)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CALLS)
def test_a_tensor_of_one_integer_is_an_int(backend, name):
    operands = _operands()
    expected = CALLS[name](F, operands)
    with torchconv_ext.use_backend(backend):
        got = CALLS[name](TF, operands)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_call_reads_the_tensor_s_value_again(backend):
    """Tensors of the same shape and dtype with other values: no remembered opening (nor
    memoized check) may answer for them."""
    o = _operands()
    with torchconv_ext.use_backend(backend):
        for value in (1, 2, 1, 3, 2):
            stride, kernel = T(value), T(value + 1)
            torch.testing.assert_close(
                TF.conv2d(o["x"], o["w"], stride=stride), F.conv2d(o["x"], o["w"], stride=stride)
            )
            torch.testing.assert_close(
                TF.max_pool2d(o["x"], kernel), F.max_pool2d(o["x"], kernel), rtol=0, atol=0
            )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "call",
    [
        lambda f, o: f.conv2d(o["x"], o["w"], stride=T(2.0)),  # not an integer
        lambda f, o: f.conv2d(o["x"], o["w"], stride=T([2, 2])),  # not one element
        lambda f, o: f.max_pool2d(o["x"], T([[2]], dtype=torch.float32)),
        lambda f, o: f.adaptive_avg_pool2d(o["x"], T(3)),  # torch's wrapper takes len() of it
    ],
    ids=["float", "two elements", "float pool", "adaptive 2-d"],
)
def test_other_tensors_are_refused_as_torch_refuses_them(backend, call):
    """As TypeErrors (torch's argument parser, or its wrappers' ``len()``)."""
    o = _operands()
    with pytest.raises(TypeError):
        call(F, o)
    with torchconv_ext.use_backend(backend), pytest.raises(TypeError):
        call(TF, o)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bool_tensor_size_is_refused_as_aten_refuses_it(backend):
    """``interpolate``'s wrapper lets a bool tensor through as a size; ATen's op refuses it."""
    x = _operands()["x"]
    with pytest.raises(RuntimeError):
        F.interpolate(x, size=T(True))
    with torchconv_ext.use_backend(backend), pytest.raises(RuntimeError, match="integer sizes"):
        TF.interpolate(x, size=T(True))
