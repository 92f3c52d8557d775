"""``convert_model(fuse=True)``: an eval-mode batch norm that alone reads the channel
concatenation of convolutions' outputs (timm's ``MixedConv2d`` in MixNet) folds into each
convolution, its own channels' part, and the activation after it into each; outputs unchanged
(float64, both backends, read from the code and from a run), and what is left is reported."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchconv_ext
from torchconv_ext import convert_model_with_report

from .test_convert_fuse import BACKENDS, _randomise_batch_norms
from .test_convert_fuse_norm_before import _PreNorm


class _Mixed(nn.ModuleDict):
    """timm's ``MixedConv2d``: the input's channels split, each part convolved with a kernel of
    its own size, the results concatenated."""

    def __init__(self, channels: int, outputs: list[int], kernels: list[int], **kwargs) -> None:
        super().__init__()
        inputs = [channels // len(kernels)] * len(kernels)
        inputs[0] += channels - sum(inputs)
        for i, (c_in, c_out, k) in enumerate(zip(inputs, outputs, kernels)):
            self.add_module(str(i), nn.Conv2d(c_in, c_out, k, padding=k // 2, **kwargs))
        self.splits = inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.splits, 1)
        return torch.cat([conv(parts[i]) for i, conv in enumerate(self.values())], 1)


class _MixBlock(nn.Module):
    """MixNet's block: mixed convolutions, each followed by a batch norm (with its activation
    inside, as timm's ``BatchNormAct2d``, or after it)."""

    def __init__(self, norm_act: bool = True) -> None:
        super().__init__()
        self.conv_pw = _Mixed(4, [3, 5], [1, 1], bias=False)
        self.bn1 = _PreNorm(8, nn.ReLU()) if norm_act else nn.BatchNorm2d(8)
        self.act1 = nn.Identity() if norm_act else nn.SiLU()
        self.conv_dw = _Mixed(8, [3, 3, 2], [3, 5, 7], bias=True)
        self.bn2 = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_dw(self.act1(self.bn1(self.conv_pw(x)))))


class _Transposed1d(nn.Module):
    """Two transposed 1-d convolutions of one input, concatenated, then a batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.up_a = nn.ConvTranspose1d(3, 2, 4, stride=2, padding=1)
        self.up_b = nn.ConvTranspose1d(3, 4, 4, stride=2, padding=1, groups=1, bias=False)
        self.bn = nn.BatchNorm1d(6)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(torch.cat((self.up_a(x), self.up_b(x)), dim=1)))


BN_RELU = "BatchNorm2d over the concatenation"
CASES = {
    "mixnet block": (
        _MixBlock,
        (2, 4, 7, 6),
        {
            "conv_pw.0": ["bn1 (_PreNorm over the concatenation, with act (ReLU))"],
            "conv_pw.1": ["bn1 (_PreNorm over the concatenation, with act (ReLU))"],
            "conv_dw.0": [f"bn2 ({BN_RELU})"],
            "conv_dw.1": [f"bn2 ({BN_RELU})"],
            "conv_dw.2": [f"bn2 ({BN_RELU})"],
        },
    ),
    "activation after": (
        lambda: _MixBlock(norm_act=False),
        (2, 4, 5, 5),
        {
            "conv_pw.0": [f"bn1 ({BN_RELU})", "act1 (SiLU)"],
            "conv_pw.1": [f"bn1 ({BN_RELU})", "act1 (SiLU)"],
            "conv_dw.0": [f"bn2 ({BN_RELU})"],
            "conv_dw.1": [f"bn2 ({BN_RELU})"],
            "conv_dw.2": [f"bn2 ({BN_RELU})"],
        },
    ),
    "transposed 1d": (
        _Transposed1d,
        (2, 3, 5),
        {
            "up_a": ["bn (BatchNorm1d over the concatenation)", "act (LeakyReLU)"],
            "up_b": ["bn (BatchNorm1d over the concatenation)", "act (LeakyReLU)"],
        },
    ),
}


def _fusions(report) -> dict[str, list[str]]:
    return {e.name: [f"{name} ({kind})" for name, kind in e.fused] for e in report.fused}


def _refusals(report) -> dict[str, str]:
    return {e.name: e.reason for e in report.fused if e.reason}


def _batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("example", [False, True], ids=["from the code", "from a run"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_a_batch_norm_over_concatenated_convolutions_folds_into_each(case, backend, example):
    build, shape, fusions = CASES[case]
    torch.manual_seed(0)
    model = _randomise_batch_norms(build().double()).eval()
    x = torch.randn(*shape, dtype=torch.float64)
    expected = model(x)
    fused, report = convert_model_with_report(
        model, fuse=True, example_inputs=x if example else None
    )
    assert _fusions(report) == fusions
    assert _batch_norms(fused) == 0
    with torchconv_ext.use_backend(backend):
        got = fused(x)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


class _Concatenated(nn.Module):
    """Two 1×1 convolutions of one input concatenated (along ``dim``), a batch norm, then
    ``after``; ``shared`` names a module called once more, on the input."""

    def __init__(self, dim: int = 1, shared: str = "", after: nn.Module | None = None) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)
        self.bn = nn.BatchNorm2d(4 if dim == 1 else 2)
        self.after = after if after is not None else nn.Identity()
        self.dim, self.shared = dim, shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.after(self.bn(torch.cat([self.a(x), self.b(x)], self.dim)))
        if self.shared == "bn":
            return out + self.bn(torch.cat([x, x], 1)).sum()
        if self.shared:
            return out + getattr(self, self.shared)(x).sum()
        return out


def _hooked_b() -> nn.Module:
    model = _Concatenated()
    model.b.register_forward_hook(lambda module, args, out: None)
    return model


def _with_b_read_again() -> nn.Module:
    class ReadAgain(_Concatenated):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b = self.b(x)
            return self.bn(torch.cat([self.a(x), b], 1)) + b.sum()

    return ReadAgain()


LEFT = {
    "a part with hooks": (_hooked_b, {"bn": "the convolution b it concatenates has hooks"}),
    "a part called twice": (
        lambda: _Concatenated(shared="b"),
        {"bn": "the convolution b it concatenates called 2 times in the forward"},
    ),
    "the batch norm called twice": (
        lambda: _Concatenated(shared="bn"),
        {"bn": "called 2 times in the forward"},
    ),
    "a part read again": (_with_b_read_again, {}),  # (no chain: b's output has two readers)
    "along another dim": (lambda: _Concatenated(dim=2), {}),
}


@pytest.mark.parametrize("example", [False, True], ids=["from the code", "from a run"])
@pytest.mark.parametrize("case", list(LEFT))
def test_what_does_not_fold_over_a_concatenation_stays_and_says_why(case, example):
    build, refusals = LEFT[case]
    torch.manual_seed(0)
    model = _randomise_batch_norms(build().double()).eval()
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    expected = model(x)
    fused, report = convert_model_with_report(
        model, fuse=True, example_inputs=x if example else None
    )
    assert _refusals(report) == refusals
    assert _batch_norms(fused) == 1
    torch.testing.assert_close(fused(x), expected, rtol=1e-9, atol=1e-9)


def test_a_prelu_after_the_concatenation_stays_after_the_folded_batch_norm():
    """Its weight would be split between the parts: the batch norm folds, the PReLU stays."""
    torch.manual_seed(0)
    model = _randomise_batch_norms(_Concatenated(after=nn.PReLU(4)).double()).eval()
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    expected = model(x)
    fused, report = convert_model_with_report(model, fuse=True)
    assert _fusions(report) == {
        "a": ["bn (BatchNorm2d over the concatenation)"],
        "b": ["bn (BatchNorm2d over the concatenation)"],
    }
    assert isinstance(fused.after, nn.PReLU) and fused.a.fused_activation is None
    torch.testing.assert_close(fused(x), expected, rtol=1e-9, atol=1e-9)
