"""torchconv_ext.summary: output sizes, parameters, FLOPs, bytes and receptive fields.

References: receptive fields worked out by hand from the notes' recurrences (VGG's three 3×3
convolutions see 7×7; AlexNet's pool5 sees 195×195), and measured independently by brute force —
the input pixels a unit's gradient reaches, on layers with positive weights; output sizes from
torch's own layers; FLOPs from ``FlopCounterMode`` on the whole model, run for real.
"""

from __future__ import annotations

import itertools
import resource

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import torchconv_ext
from torchconv_ext import init
from torchconv_ext import nn as tnn
from torchconv_ext._args import same_padding
from torchconv_ext.summary import fields, layers, summary

F64 = torch.float64


def run(model, input_size, **kw):
    return summary(model, input_size, verbose=False, **kw)


def by_name(result, name):
    return next(layer for layer in result.layers if layer.name == name)


def field_of(result, name):
    f = by_name(result, name).field
    return f.size, f.jump, f.start


# ---------------------------------------------------------------------------------------------
# Hand-worked receptive fields
# ---------------------------------------------------------------------------------------------


def vgg_like(ours: bool = True) -> nn.Sequential:
    L = tnn if ours else nn
    block = lambda cin, cout, n: [
        m
        for i in range(n)
        for m in (L.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.ReLU())
    ]
    return nn.Sequential(
        *block(3, 8, 2),
        L.MaxPool2d(2),
        *block(8, 16, 3),
        L.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )


def test_vgg_like_by_hand():
    result = run(vgg_like(), (2, 3, 32, 32))
    # conv3 → 3, conv3 → 5, pool2 → 6 (jump 2), conv3 ×3 → 6 + 3·2·2 = 18, pool2 → 20 (jump 4).
    assert field_of(result, "0") == ((3, 3), (1, 1), (0, 0))
    assert field_of(result, "1") == ((3, 3), (1, 1), (0, 0))  # ReLU passes it through
    assert field_of(result, "2") == ((5, 5), (1, 1), (0, 0))
    assert field_of(result, "4") == ((6, 6), (2, 2), (0.5, 0.5))
    assert field_of(result, "5") == ((10, 10), (2, 2), (0.5, 0.5))
    assert field_of(result, "9") == ((18, 18), (2, 2), (0.5, 0.5))
    assert field_of(result, "11") == ((20, 20), (4, 4), (1.5, 1.5))
    assert by_name(result, "11").output_shape == (2, 16, 8, 8)
    # The notes: three stacked 3×3 convolutions see what one 7×7 sees.
    three = run(nn.Sequential(*[tnn.Conv2d(1, 1, 3) for _ in range(3)]), (1, 1, 9, 9))
    assert three.field.size == (7, 7) and three.field.start == (3, 3)


def alexnet_like(ours: bool = True) -> nn.Sequential:
    L = tnn if ours else nn
    return nn.Sequential(
        L.Conv2d(3, 64, 11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        L.MaxPool2d(3, 2),
        L.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(inplace=True),
        L.MaxPool2d(3, 2),
        L.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(inplace=True),
        L.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        L.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        L.MaxPool2d(3, 2),
        L.AdaptiveAvgPool2d((6, 6)),
        nn.Flatten(),
        nn.Dropout(),
        nn.Linear(256 * 36, 4096),
    )


@pytest.mark.parametrize("ours", [True, False])
def test_alexnet_like_by_hand(ours):
    result = run(alexnet_like(ours), (128, 3, 224, 224))
    # (224 − 11 + 2·2)/4 + 1 = 55, pool → 27, → 27, pool → 13, → 13 ×3, pool → 6.
    shapes = [by_name(result, str(i)).output_shape[2:] for i in (0, 2, 3, 5, 6, 12)]
    assert shapes == [(55, 55), (27, 27), (27, 27), (13, 13), (13, 13), (6, 6)]
    assert field_of(result, "0") == ((11, 11), (4, 4), (3, 3))
    assert field_of(result, "2") == ((19, 19), (8, 8), (7, 7))
    assert field_of(result, "3") == ((51, 51), (8, 8), (7, 7))
    assert field_of(result, "5") == ((67, 67), (16, 16), (15, 15))
    assert field_of(result, "10") == ((163, 163), (16, 16), (15, 15))
    assert field_of(result, "12") == ((195, 195), (32, 32), (31, 31))
    assert field_of(result, "13") == ((195, 195), (32, 32), (31, 31))  # 6 → 6: windows of 1
    # The notes' F·F·D1·K + K.
    assert by_name(result, "0").params == 11 * 11 * 3 * 64 + 64
    assert by_name(result, "3").params == 5 * 5 * 64 * 192 + 192
    assert result.params == sum(p.numel() for p in alexnet_like().parameters())
    assert by_name(result, "16").field.size == (195 + 5 * 32,) * 2  # sees the whole 6×6 map


def test_strided_dilated_and_grouped():
    model = nn.Sequential(
        tnn.Conv2d(4, 8, 3, dilation=2, padding=2, groups=2),
        tnn.Conv2d(8, 8, 3, stride=2),
        tnn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
    )
    result = run(model, (1, 4, 20, 20))
    assert field_of(result, "0") == ((5, 5), (1, 1), (0, 0))
    assert field_of(result, "1") == ((7, 7), (2, 2), (1, 1))
    assert field_of(result, "2") == ((11, 11), (4, 4), (1, 1))
    assert by_name(result, "0").params == 3 * 3 * (4 // 2) * 8 + 8  # F·F·(D1/groups)·K + K
    assert by_name(result, "2").output_shape == (1, 8, 5, 5)  # ceil((9 + 2 − 3)/2) + 1 = 5


def test_tensorflow_same_with_stride():
    model = nn.Sequential(
        tnn.Conv2d(1, 2, 4, stride=2, padding="same"), tnn.MaxPool2d(3, 2, padding="same")
    )
    result = run(model, (1, 1, 9, 10))
    # ⌈9/2⌉ = 5, ⌈10/2⌉ = 5; padding before: (4·2 + 4 − 9)//2 = 1, (4·2 + 4 − 10)//2 = 1.
    assert by_name(result, "0").output_shape == (1, 2, 5, 5)
    assert field_of(result, "0") == ((4, 4), (2, 2), (0.5, 0.5))
    assert by_name(result, "1").output_shape == (1, 2, 3, 3)


def test_transposed_conv_by_hand():
    model = nn.Sequential(
        tnn.Conv2d(1, 2, 3, stride=2, padding=1),  # r 3, j 2, start 0
        tnn.ConvTranspose2d(2, 2, 4, stride=2, padding=1),  # r 3 + 1·2, j 1, start −0.5
        tnn.ConvTranspose2d(2, 1, 3, stride=2, padding=1, output_padding=1),  # r 5 + 1, j 0.5
    )
    result = run(model, (1, 1, 16, 16))
    assert by_name(result, "1").output_shape == (1, 2, 16, 16)
    assert by_name(result, "2").output_shape == (1, 1, 32, 32)
    assert field_of(result, "1") == ((5, 5), (1, 1), (-0.5, -0.5))
    assert field_of(result, "2") == ((6, 6), (0.5, 0.5), (-0.5, -0.5))


def test_upsampling_and_adaptive_pooling():
    model = nn.Sequential(
        tnn.Conv1d(1, 1, 3),
        tnn.Upsample(scale_factor=2),
        nn.Upsample(scale_factor=1.5, mode="linear"),
        tnn.AdaptiveMaxPool1d(5),
    )
    result = run(model, (1, 1, 12))
    assert [by_name(result, str(i)).output_shape[-1] for i in range(4)] == [10, 20, 30, 5]
    assert field_of(result, "1") == ((3,), (0.5,), (0.75,))
    size, jump, _ = field_of(result, "2")  # linear interpolation reads 2 neighbours
    assert size[0] == 3.5 and jump[0] == pytest.approx(1 / 3)
    size, jump, _ = field_of(result, "3")  # windows of 6 over 30
    assert size[0] == pytest.approx(3.5 + 5 / 3) and jump[0] == pytest.approx(2.0)


# ---------------------------------------------------------------------------------------------
# Brute force: the input pixels a unit's gradient reaches (positive weights, no cancellation)
# ---------------------------------------------------------------------------------------------


def reach(model: nn.Module, input_size, unit) -> list[tuple[int, int]]:
    """Per spatial axis, the first and last input pixel unit ``unit`` depends on (none: [])."""
    x = torch.ones(input_size, dtype=F64, requires_grad=True)
    y = model(x)
    (g,) = torch.autograd.grad(y[(0, 0, *unit)], x)
    mask = g[0].abs().sum(0) > 0
    if not mask.any():
        return []
    spans = []
    for axis in range(mask.dim()):
        others = tuple(a for a in range(mask.dim()) if a != axis)
        hits = (mask.any(dim=others) if others else mask).nonzero().flatten()
        spans.append((int(hits[0]), int(hits[-1])))
    return spans


def positive(model: nn.Module) -> nn.Module:
    model = model.double()
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            init.average_(m, channels="mean")
    return model


BRUTE_FORCE_MODELS = {
    "stack-1d": lambda: nn.Sequential(
        tnn.Conv1d(1, 2, 5, stride=2, padding=1),
        nn.ReLU(),
        tnn.AvgPool1d(3, 2),
        tnn.Conv1d(2, 1, 3, dilation=3),
    ),
    "stack-2d": lambda: nn.Sequential(
        tnn.Conv2d(1, 2, (3, 5), stride=(1, 2), padding=(0, 2)),
        tnn.AvgPool2d(2),
        tnn.Conv2d(2, 2, 3, dilation=2, padding="same"),
        tnn.Conv2d(2, 1, 4, stride=3),
    ),
    "stack-3d": lambda: nn.Sequential(
        tnn.Conv3d(1, 2, 3, stride=2), tnn.AvgPool3d(2, 1), tnn.Conv3d(2, 1, 2, dilation=2)
    ),
    "tf-same": lambda: nn.Sequential(
        tnn.Conv2d(1, 2, 4, stride=3, padding="same"), tnn.Conv2d(2, 1, 3, stride=2, padding="same")
    ),
    "padding-pairs": lambda: nn.Sequential(
        tnn.Conv2d(1, 2, 4, stride=2, padding=((0, 3), 1)),
        tnn.AvgPool2d(3, 2, padding=((0, 1), (1, 0))),
        tnn.Conv2d(2, 1, 3, stride=3, padding=(2, (1, 0))),
    ),
    # Transposed: kernels a multiple of the stride (every output unit sees as much); a unit's
    # centre is off the formula's by a part of a step, which a whole period of units averages.
    "transposed-pairs": lambda: nn.Sequential(
        tnn.Conv2d(1, 2, 3, stride=2),
        tnn.ConvTranspose2d(2, 1, 4, stride=2, padding=((0, 3), (2, 1)), output_padding=1),
    ),
    "transposed-same": lambda: nn.Sequential(
        tnn.Conv2d(1, 2, 3), tnn.ConvTranspose2d(2, 1, (6, 4), stride=(3, 2), padding="same")
    ),
}


TRANSPOSED_PERIODS = {"transposed-pairs": 2, "transposed-same": 6}


@pytest.mark.parametrize("name", list(BRUTE_FORCE_MODELS))
def test_fields_match_brute_force(name):
    model = positive(BRUTE_FORCE_MODELS[name]())
    nd = {"stack-1d": 1, "stack-3d": 3}.get(name, 2)
    size = (1, 1, *[{1: 80, 2: 48, 3: 20}[nd]] * nd)
    result = run(model, size)
    f = result.field
    out = result.output_shape[2:]
    unit = [(o - 1) // 2 for o in out]  # inside, away from the borders
    period = TRANSPOSED_PERIODS.get(name, 1)  # units averaged along each axis
    for axis in range(nd):
        centres = []
        for step in range(period):
            at = [u + step * (a == axis) for a, u in enumerate(unit)]
            lo, hi = reach(model, size, at)[axis]
            assert hi - lo + 1 == f.size[axis]
            centres.append((lo + hi) / 2)
        middle = unit[axis] + (period - 1) / 2
        assert sum(centres) / period == f.start[axis] + middle * f.jump[axis]


@pytest.mark.parametrize(
    ("k", "s", "d"),
    [
        (3, 2, 1),
        (4, 2, 1),
        (2, 2, 1),
        (5, 3, 1),
        (3, 2, 2),
        (3, 4, 2),
        (5, 2, 3),
        (3, 3, 2),
        (4, 4, 3),
    ],
)
def test_transposed_size_is_the_widest_unit(k, s, d):
    model = positive(
        nn.Sequential(tnn.Conv1d(1, 1, 3), tnn.ConvTranspose1d(1, 1, k, stride=s, dilation=d))
    )
    result = run(model, (1, 1, 30))
    centre = result.output_shape[-1] // 2
    widest = max(
        hi - lo + 1 for u in range(centre, centre + s) for lo, hi in reach(model, (1, 1, 30), (u,))
    )
    assert result.field.size == (widest,)


# ---------------------------------------------------------------------------------------------
# Output-size formulas against torch's layers
# ---------------------------------------------------------------------------------------------


def meta(shape):
    return torch.empty(shape, device="meta")


def test_window_formula_against_torch_conv_and_pool():
    checked = 0
    for n, k, s, d in itertools.product(range(5, 12), range(1, 6), range(1, 4), range(1, 3)):
        x = meta((1, 1, n))
        for p in range(k // 2 + 1):
            if d * (k - 1) + 1 > n + 2 * p:
                continue
            conv = torch.nn.functional.conv1d(x, meta((1, 1, k)), stride=s, padding=p, dilation=d)
            assert conv.shape[-1] == fields.window_output(n, k, s, p, p, d), (n, k, s, p, d)
            for ceil in (False, True):
                pool = torch.nn.functional.max_pool1d(x, k, s, p, d, ceil_mode=ceil)
                assert pool.shape[-1] == fields.window_output(n, k, s, p, p, d, ceil), (
                    n,
                    k,
                    s,
                    p,
                    d,
                    ceil,
                )
                avg = torch.nn.functional.avg_pool1d(x, k, s, p, ceil_mode=ceil)
                assert avg.shape[-1] == fields.window_output(n, k, s, p, p, 1, ceil)
            checked += 1
        if d * (k - 1) + 1 <= n:
            same = torchconv_ext.functional.conv1d(
                x, meta((1, 1, k)), stride=s, padding="same", dilation=d
            )
            assert same.shape[-1] == fields.window_output(n, k, s, *same_padding(n, k, s, d), d)
            assert same.shape[-1] == -(-n // s)
    assert checked > 400


def test_transposed_formula_against_torch():
    for n, k, s, p, d, op in itertools.product(
        range(1, 7), range(1, 5), range(1, 4), range(3), range(1, 3), range(3)
    ):
        if op >= max(s, d) or (n - 1) * s - 2 * p + d * (k - 1) + op + 1 <= 0:
            continue
        y = torch.nn.functional.conv_transpose1d(
            meta((1, 1, n)), meta((1, 1, k)), stride=s, padding=p, output_padding=op, dilation=d
        )
        assert y.shape[-1] == fields.transposed_output(n, k, s, p, p - op, d)


def test_layers_are_cross_checked_against_the_formula(monkeypatch):
    model = nn.Sequential(tnn.Conv2d(1, 1, 3, stride=2))
    run(model, (1, 1, 9, 9))
    monkeypatch.setattr(layers, "window_output", lambda *a, **k: fields.window_output(*a, **k) + 1)
    with pytest.raises(RuntimeError, match="formula"):
        run(model, (1, 1, 9, 9))


def test_many_layer_geometries_pass_the_cross_check():
    for k, s, p, d, ceil in itertools.product(
        (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2), (False, True)
    ):
        if p > k // 2:
            continue
        for layer in (
            tnn.Conv2d(1, 1, (k, 3), stride=(s, 1), padding=(p, 1), dilation=(d, 1)),
            tnn.Conv2d(1, 1, k, stride=s, padding="same", dilation=d),
            nn.MaxPool2d(k, s, p, d, ceil_mode=ceil),
            tnn.MaxPool2d(k, s, p, d, ceil_mode=ceil),
            tnn.MaxPool2d(k, s, "same", d, ceil_mode=ceil),
            tnn.AvgPool2d(k, s, p, ceil_mode=ceil),
            tnn.AvgPool2d(k, s, "same", ceil_mode=ceil),
            tnn.MaxPool2d(k, s, ((p, 0), (0, p)), d, ceil_mode=ceil),
            tnn.AvgPool2d(k, s, (p, (0, p)), ceil_mode=ceil),
            tnn.ConvTranspose2d(1, 1, k, stride=s, padding=p, dilation=d),
            tnn.ConvTranspose2d(1, 1, k, stride=s, padding=((p, 0), (0, p)), dilation=d),
            tnn.ConvTranspose2d(1, 1, k, s, (p, (1, p)), output_padding=s - 1, dilation=d),
            tnn.ConvTranspose2d(1, 1, k, stride=s, padding="same", dilation=d),
            tnn.ConvTranspose2d(1, 1, k, stride=s, padding="valid", dilation=d),
        ):
            run(nn.Sequential(layer), (1, 1, 17, 12))


# ---------------------------------------------------------------------------------------------
# FLOPs, bytes, meta device
# ---------------------------------------------------------------------------------------------


def residual_net() -> nn.Module:
    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = tnn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = tnn.Conv2d(cin, cout, 1, stride=stride) if stride > 1 else nn.Identity()

        def forward(self, x):
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(y + self.shortcut(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = tnn.Conv2d(3, 8, 3, padding=1)
            self.layer1 = nn.Sequential(Block(8, 8, 1), Block(8, 16, 2))
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            x = self.layer1(self.stem(x))
            return self.head(torchconv_ext.functional.global_avg_pool(x))

    return Net()


@pytest.mark.parametrize(
    "make", [vgg_like, alexnet_like, residual_net], ids=["vgg", "alexnet", "resnet"]
)
def test_flops_equal_flop_counter_on_the_whole_model(make):
    model = make().eval()
    size = (2, 3, 64, 64) if make is alexnet_like else (2, 3, 32, 32)
    if make is alexnet_like:
        model[-1] = nn.Linear(256 * 36, 16)  # keep the real run small
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(size))
    result = run(model, size)
    assert result.flops == counter.get_total_flops() > 0
    assert sum(layer.flops for layer in result.layers) == result.flops  # all inside layers


def test_depth_lists_blocks_with_their_totals():
    model = residual_net()
    flat, blocks = run(model, (1, 3, 16, 16)), run(model, (1, 3, 16, 16), depth=2)
    assert [layer.name for layer in blocks.layers] == ["stem", "layer1.0", "layer1.1", "head"]
    block = by_name(blocks, "layer1.1")
    inside = [layer for layer in flat.layers if layer.name.startswith("layer1.1.")]
    assert block.params == sum(layer.params for layer in inside)
    assert block.flops == sum(layer.flops for layer in inside)
    assert run(model, (1, 3, 16, 16), depth=0).layers[0].name == ""


def test_residual_sum_takes_the_union_of_paths():
    result = run(residual_net(), (1, 3, 32, 32), depth=2)
    # stem 3; block 1: +2 +2 → 7 (identity shortcut: union 7); block 2: conv s2 → 9 (j 2),
    # conv → 13; shortcut 1×1 s2 → 7: the sum sees 13.
    assert field_of(result, "layer1.0") == ((7, 7), (1, 1), (0, 0))
    assert field_of(result, "layer1.1") == ((13, 13), (2, 2), (0, 0))
    flat = run(residual_net(), (1, 3, 32, 32))
    assert field_of(flat, "layer1.1.shortcut") == ((7, 7), (2, 2), (0, 0))
    assert flat.layers[-1].name == "head"
    assert flat.field.size == (13 + 15 * 2,) * 2  # the head sees the whole 16×16 map


def test_concatenated_branches_take_the_union():
    class Inception(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = tnn.Conv2d(1, 2, 1), tnn.Conv2d(1, 2, 5, padding=2)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], 1)

    model = nn.Sequential(Inception(), tnn.Conv2d(4, 1, 3))
    assert run(model, (1, 1, 12, 12)).field.size == (7, 7)


def test_output_bytes_and_dtype():
    model = nn.Sequential(tnn.Conv2d(3, 4, 3), tnn.MaxPool2d(2, return_indices=True))
    for dtype, size in ((torch.float32, 4), (torch.float16, 2)):
        result = run(model, (2, 3, 10, 10), dtype=dtype)
        assert by_name(result, "0").output_bytes == 2 * 4 * 8 * 8 * size
        assert by_name(result, "1").output_bytes == 2 * 4 * 4 * 4 * (size + 8)  # values + int64
        assert result.activation_bytes == 2 * 4 * 8 * 8 * size + 2 * 4 * 4 * 4 * (size + 8)


def test_meta_run_allocates_nothing():
    model = nn.Sequential(
        tnn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), tnn.Conv2d(64, 64, 3, padding=1)
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run(model, (512, 3, 224, 224))  # 20 GiB of activations, were it real
    assert result.activation_bytes == 3 * 512 * 64 * 224 * 224 * 4 > 16 * 2**30
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 512 * 2**10  # KiB


def test_summary_leaves_the_model_alone():
    model = vgg_like()
    model.insert(0, nn.BatchNorm2d(3))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run(model, (4, 3, 32, 32))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.device.type == "cpu" for p in model.parameters())
    real = run(model, (2, 3, 32, 32), device="cpu")  # a real run updates copies of the buffers
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert real.flops == run(model, (2, 3, 32, 32)).flops


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_shared_modules_and_tied_weights_stay_as_they_are(device):
    # one convolution registered twice, another tying its weight to it: the summary's run swaps
    # each tensor once and puts every one back (torch.func.functional_call restores neither)
    a, b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
    b.weight = a.weight
    model = nn.Sequential(nn.Conv2d(3, 4, 1), a, nn.ReLU(), b, a)
    params = dict(model.named_parameters(remove_duplicate=False))
    x = torch.randn(1, 3, 8, 8)
    expected = model(x)
    report = run(model, (1, 3, 8, 8), device=device)
    assert report.params == report.trainable_params == 16 + 148 + 4
    assert all(t is params[n] for n, t in model.named_parameters(remove_duplicate=False))
    assert torch.equal(model(x), expected)


def test_unknown_layers():
    class Crop(nn.Module):
        def forward(self, x):
            return x[..., 1:-1, 1:-1]

    result = run(
        nn.Sequential(tnn.Conv2d(1, 1, 3), Crop(), nn.ReLU(), tnn.Conv2d(1, 1, 3)), (1, 1, 12, 12)
    )
    assert by_name(result, "0").field is not None
    assert by_name(result, "1").field is None and by_name(result, "3").field is None
    assert "?" in str(result)


# ---------------------------------------------------------------------------------------------
# Effective receptive field
# ---------------------------------------------------------------------------------------------


def test_effective_field_of_linear_averages():
    # Five 3×3 averages: the centre unit's gradient is the 5-fold convolution of a box, a
    # discrete bell 11 pixels wide; computed here by convolving a delta.
    model = nn.Sequential(*[tnn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(5)]).double()
    for conv in model:
        init.average_(conv)
    result = run(model, (2, 1, 21, 21), effective=True, threshold=0.05)
    delta = torch.zeros(1, 1, 21, 21, dtype=F64)
    delta[..., 10, 10] = 1
    want = delta
    for _ in range(5):
        want = torch.nn.functional.conv2d(
            want, torch.full((1, 1, 3, 3), 1 / 9, dtype=F64), padding=1
        )
    want = want[0, 0] / want.max()
    torch.testing.assert_close(result.effective.gradient, want)
    one_axis = want[10]
    assert result.effective.size == (int((one_axis >= 0.05).sum()),) * 2
    assert result.effective.size[0] < result.field.size[0] == 11
    assert result.effective.layer == "(model)"  # the model's own output is the final map


def test_effective_field_is_opt_in_and_restores_modes():
    model = vgg_like()
    model[1] = nn.Dropout(0.5)
    model.train()
    assert run(model, (1, 3, 32, 32)).effective is None
    result = run(model, (1, 3, 32, 32), effective=True)
    assert result.effective.layer == "11"  # the last layer whose output is still a map
    assert 0 < result.effective.size[0] <= result.effective.field.size[0]
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="meta"):
        run(vgg_like().to("meta"), (1, 3, 32, 32), effective=True)
    with pytest.raises(ValueError, match="more than one unit"):
        run(
            nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(1)), (1, 1, 3, 3), effective=True
        )


def test_effective_field_of_a_residual_net_is_the_final_sum():
    result = run(residual_net(), (2, 3, 32, 32), effective=True)
    assert result.effective.layer == "layer1"  # the last block's sum, not its shortcut
    assert result.effective.field.size == (13, 13)
    assert result.effective.gradient.shape == (32, 32)


# ---------------------------------------------------------------------------------------------
# Interface
# ---------------------------------------------------------------------------------------------


def test_prints_the_table(capsys):
    result = torchconv_ext.summary(vgg_like(), (1, 3, 32, 32))
    printed = capsys.readouterr().out
    assert printed.strip() == str(result).strip()
    assert "Receptive field of the output" in printed and "(Conv2d)" in printed


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"input_size": (3,)}, ValueError, "input_size"),
        ({"input_size": (1, 3, 0)}, ValueError, "input_size"),
        ({"input_size": "abc"}, TypeError, "input_size"),
        ({"input_size": None}, TypeError, "input_size"),
        ({"input_size": 8}, TypeError, "input_size"),
        ({"input_size": (1, 3, 8.0, 8)}, TypeError, "input_size"),
        ({"depth": "1"}, TypeError, "depth"),
        ({"threshold": "a"}, TypeError, "threshold"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"input_size": torch.zeros(1, 3, 8, 8)}, TypeError, r"not a tensor; .*\(1, 3, 8, 8\)$"),
        ({"dtype": torch.int32}, TypeError, "dtype"),
        ({"depth": -1}, ValueError, "depth"),
        ({"threshold": 0}, ValueError, "threshold"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = {"input_size": (1, 3, 32, 32), **kwargs}
    with pytest.raises(error, match=match):
        run(vgg_like(), args.pop("input_size"), **args)


def test_numpy_sizes_and_a_model_that_is_not_a_module():
    np = pytest.importorskip("numpy")
    assert run(nn.Conv2d(3, 3, 3), (1, 3, np.int64(8), 8)).output_shape == (1, 3, 6, 6)
    with pytest.raises(TypeError, match=r"model must be an nn\.Module"):
        run(lambda x: x, (1, 3, 8, 8))


def test_a_model_error_on_meta_is_the_models_own():
    class Two(nn.Module):
        def forward(self, x, y):
            return x + y

    with pytest.raises(TypeError, match="missing 1 required") as meta:
        run(Two(), (1, 3, 8, 8))
    assert not getattr(meta.value, "__notes__", None)  # not a meta-only failure: no hint
    for size in ((1, 3, 8, 8, 8), (1, 3, 2, 2)):  # wrong rank, smaller than the kernel
        with pytest.raises(RuntimeError) as cpu:
            run(nn.Conv2d(3, 8, 3), size, device="cpu")
        with pytest.raises(RuntimeError) as meta:
            run(nn.Conv2d(3, 8, 3), size)
        # (torch's own error on either device; their words differ between torch versions)
        assert type(meta.value) is type(cpu.value)
        assert not getattr(meta.value, "__notes__", None)


def test_a_lazy_model_is_run_first():
    model = nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"\['0.weight', '0.bias'\] are not initialised"):
        run(model, (1, 3, 8, 8))
    model(torch.randn(1, 3, 8, 8))
    assert run(model, (1, 3, 8, 8)).params == 4 * 3 * 9 + 4


def test_model_that_fails_on_meta_says_so():
    class Item(nn.Module):
        def forward(self, x):
            return x * x.sum().item()

    with pytest.raises(RuntimeError, match="meta tensors") as error:
        run(Item(), (1, 1, 4))
    assert "device='cpu'" in error.value.__notes__[0]
    assert run(Item(), (1, 1, 4), device="cpu").output_shape == (1, 1, 4)


def test_locally_connected_tiled_and_maxout_layers_have_convolution_fields():
    from torchconv_ext import nn as tnn

    net = nn.Sequential(
        tnn.LocallyConnected2d(3, 8, 3, input_size=(8, 8), padding=1),
        nn.ReLU(),
        tnn.TiledConv2d(8, 8, 3, tiles=2, stride=2),
        tnn.Maxout(2),
    )
    s = torchconv_ext.summary(net, (2, 3, 8, 8), verbose=False)
    fields = [layer.field for layer in s.layers]
    assert [f.size for f in fields] == [(3.0, 3.0), (3.0, 3.0), (5.0, 5.0), (5.0, 5.0)]
    assert fields[-1].jump == (2.0, 2.0)


# ---------------------------------------------------------------------------------------------
# Layers the rules do not describe, functional operations, padding, memory
# ---------------------------------------------------------------------------------------------


class CausalConv1d(nn.Conv1d):
    """Pads both ends and crops the end in its own forward (TCN / WaveNet)."""

    def forward(self, x):
        return super().forward(x)[..., : -self.padding[0]]


class Conv2dSame(nn.Conv2d):
    """Pads in its own forward, TensorFlow's 'same' (timm's ``Conv2dSame``)."""

    def forward(self, x):
        pads = [same_padding(s, 3, 2, 1) for s in reversed(x.shape[-2:])]
        x = torch.nn.functional.pad(x, [p for pair in pads for p in pair])
        return torch.nn.functional.conv2d(x, self.weight, self.bias, self.stride)


class ScaledConv2d(nn.Conv2d):
    """Its own forward, the size the layer's rule predicts."""

    def forward(self, x):
        return 2 * super().forward(x)


def test_conv_subclasses_that_pad_or_crop_get_unknown_fields():
    tcn = nn.Sequential(CausalConv1d(1, 2, 3, padding=2), nn.ReLU(), nn.Conv1d(2, 2, 3))
    for device in ("meta", "cpu"):
        result = run(tcn, (1, 1, 16), device=device)
        assert result.output_shape == (1, 2, 14) and result.field is None
        assert by_name(result, "0").field is None
    same = run(nn.Sequential(Conv2dSame(3, 4, 3, stride=2)), (1, 3, 9, 9))
    assert same.output_shape == (1, 4, 5, 5) and same.field is None
    scaled = run(nn.Sequential(ScaledConv2d(1, 1, 3)), (1, 1, 8, 8))
    assert scaled.field.size == (3, 3)


def test_functional_ops_that_change_the_map_make_the_field_unknown():
    F = torch.nn.functional

    class Net(nn.Module):
        def __init__(self, op):
            super().__init__()
            self.conv1, self.conv2, self.op = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 1), op

        def forward(self, x):
            return self.conv2(self.op(self.conv1(x)))

    for op in (
        lambda x: F.max_pool2d(x, 2),
        lambda x: F.interpolate(x, scale_factor=2),
        lambda x: x.mean(-1, keepdim=True),
        lambda x: x.view(1, 2, 5, 20),
        lambda x: x[..., 1:, :],
        lambda x: F.avg_pool2d(x, 3, 1, 1),  # keeps the shape but mixes neighbours
        lambda x: x.transpose(-1, -2),
        lambda x: torch.roll(x, 1, -1),
        lambda x: x.softmax(-1),
    ):
        result = run(Net(op), (1, 1, 12, 12))
        assert by_name(result, "conv1").field is not None
        assert by_name(result, "conv2").field is None and result.field is None
    # What keeps each pixel where it was passes the field.
    for op in (torch.relu, lambda x: x.softmax(1), lambda x: torch.cat([x, x], 0)):
        assert run(Net(op), (1, 1, 12, 12)).field.size == (3, 3)


def test_functional_global_pooling_and_flattening_see_the_whole_map():
    class Net(nn.Module):
        def __init__(self, pool):
            super().__init__()
            self.conv, self.fc, self.pool = nn.Conv2d(1, 4, 3), nn.Linear(4 * 36, 2), pool

        def forward(self, x):
            x = torch.flatten(self.pool(self.conv(x)), 1)
            return x if x.shape[1] == 4 else self.fc(x)

    for pool in (
        lambda x: x.mean((2, 3)),
        lambda x: x.amax(dim=(-1, -2), keepdim=True),
        lambda x: torch.nn.functional.adaptive_avg_pool2d(x, 1),
        torchconv_ext.functional.global_max_pool,
        lambda x: x,  # flattened, then a fully-connected layer
    ):
        assert run(Net(pool), (1, 1, 8, 8)).field.size == (8, 8)
    assert run(Net(lambda x: x[:, :, :1, :1]), (1, 1, 8, 8)).field is None


def test_linear_and_flatten_on_maps():
    assert run(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Linear(10, 5)), (1, 1, 12, 12)).field is None
    assert run(nn.Sequential(nn.Flatten(2), nn.Linear(144, 5)), (1, 1, 12, 12)).field is None
    flat = run(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten(), nn.ReLU()), (1, 1, 12, 12))
    assert flat.field.size == (3, 3)


def test_align_corners_adaptive_spacing_and_transposed_output_size():
    model = positive(
        nn.Sequential(
            nn.Conv1d(1, 1, 3), nn.Upsample(scale_factor=3, mode="linear", align_corners=True)
        )
    )
    f = run(model, (1, 1, 6)).field  # 4 → 12: output o at input o·3/11
    assert f.jump == (3 / 11,) and f.start == (1,) and f.size == (4,)
    assert reach(model, (1, 1, 6), (11,)) == [(3, 5)]  # exactly on pixel 3: its 3 inputs
    model = positive(nn.Sequential(nn.Conv1d(1, 1, 3), nn.AdaptiveAvgPool1d(3)))
    f = run(model, (1, 1, 12)).field  # windows [0, 4), [3, 7), [6, 10) of the 10 units
    for u in range(3):
        first, last = reach(model, (1, 1, 12), (u,))[0]
        assert f.start[0] + u * f.jump[0] == (first + last) / 2

    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose1d(1, 1, 3, stride=2, padding=1)

        def forward(self, x):
            return self.up(x, output_size=[16])

    up = by_name(run(Up(), (1, 1, 8)), "up")
    assert up.output_shape == (1, 1, 16) and up.field.extent == (16,)


@pytest.mark.parametrize(
    "pad",
    [nn.ZeroPad2d(2), nn.ReflectionPad2d(2), nn.ReplicationPad2d(2), nn.CircularPad2d(2)],
    ids=lambda m: type(m).__name__,
)
def test_padding_layers_shift_the_start(pad):
    conv = nn.Sequential(nn.Conv2d(1, 1, 5, padding=2), nn.Conv2d(1, 1, 3, stride=2))
    want = run(conv, (1, 1, 16, 16)).field
    padded = run(
        nn.Sequential(pad, nn.Conv2d(1, 1, 5), nn.Conv2d(1, 1, 3, stride=2)), (1, 1, 16, 16)
    )
    assert padded.field == want


def test_padding_layers_of_other_ranks():
    one = run(nn.Sequential(nn.ConstantPad1d((1, -2), 0.0), nn.Conv2d(1, 1, 3)), (1, 1, 8, 8))
    assert by_name(one, "0").output_shape == (1, 1, 8, 7)
    assert one.field.start == (1, 0) and one.field.extent == (6, 5)
    three = run(nn.Sequential(nn.ReplicationPad3d((0, 0, 1, 1, 2, 0))), (1, 1, 4, 4, 4))
    assert three.field.start == (-2, -1, 0) and three.field.extent == (6, 6, 4)


def test_a_real_run_frees_the_intermediate_activations():
    import weakref

    seen = []
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 1, 3))
    model[0].register_forward_hook(lambda m, a, out: seen.append(weakref.ref(out)))
    result = run(model, (1, 1, 8, 8), device="cpu")
    assert result.field.size == (5, 5) and seen[0]() is None
