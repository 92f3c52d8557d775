"""Upsampling modules: drop-in ``torch.nn`` subclasses, and ``convert_model`` swapping nearest
upsampling only."""

from __future__ import annotations

import torch
from torch import nn

import torchconv_ext


def test_upsample_module_is_a_drop_in():
    for kwargs in (
        dict(scale_factor=2),
        dict(size=(3, 9), mode="nearest-exact"),
        dict(scale_factor=1.5, mode="bilinear", align_corners=False),
        dict(scale_factor=(2, 1), recompute_scale_factor=True),
    ):
        ours, theirs = torchconv_ext.nn.Upsample(**kwargs), nn.Upsample(**kwargs)
        assert isinstance(ours, nn.Upsample)
        assert repr(ours).replace("torchconv_ext.", "") == repr(theirs)
        assert vars(ours).keys() == vars(theirs).keys() and ours.state_dict() == {}
        x = torch.randn(2, 3, 5, 4)
        assert torch.equal(ours(x), theirs(x))
    n2d = torchconv_ext.nn.UpsamplingNearest2d(scale_factor=3)
    assert isinstance(n2d, nn.UpsamplingNearest2d)
    x = torch.randn(1, 2, 3, 4)
    assert torch.equal(n2d(x), nn.UpsamplingNearest2d(scale_factor=3)(x))


def test_convert_model_swaps_nearest_upsampling_only():
    model = nn.Sequential(
        nn.Upsample(scale_factor=2),
        nn.Upsample(size=(8, 8), mode="nearest-exact"),
        nn.Upsample(scale_factor=2, mode="bilinear"),
        nn.UpsamplingNearest2d(scale_factor=2),
        nn.UpsamplingBilinear2d(scale_factor=2),
    )
    converted = torchconv_ext.convert_model(model)
    kinds = [type(m) for m in converted]
    assert kinds == [
        torchconv_ext.nn.Upsample,
        torchconv_ext.nn.Upsample,
        nn.Upsample,
        torchconv_ext.nn.UpsamplingNearest2d,
        nn.UpsamplingBilinear2d,
    ]
    assert all(type(m) is type(o) for m, o in zip(model, [*model]))  # original untouched
    x = torch.randn(1, 2, 3, 3)
    assert torch.equal(converted(x), model(x))
    torchconv_ext.convert_model(model, inplace=True)
    assert type(model[0]) is torchconv_ext.nn.Upsample
