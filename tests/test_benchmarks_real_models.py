"""``python -m benchmarks real-models``: a model converted and fused against itself, one row."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks import real_models


def _block() -> tuple[nn.Module, tuple]:
    model = nn.Sequential(
        nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4),
        nn.Upsample(scale_factor=2, mode="bilinear"),
    )  # fmt: skip
    return model, (torch.randn(2, 3, 8, 8, dtype=torch.float64),)


def test_a_row_reports_conversion_fusion_and_errors():
    row = real_models.check_model("block", _block)
    assert row["ok"] and row["converted"] == 3 and len(row["left"]) == 1
    assert row["batch_norms"] == 2
    assert row["batch_norms_fused"] == row["batch_norms_fused_from_a_run"] == 2
    assert row["zero_pads"] == row["zero_pads_folded"] == row["zero_pads_folded_from_a_run"] == 1
    assert row["activations_fused"] == row["activations_fused_from_a_run"] == 1
    env = {"device_name": "a CPU", "torch": torch.__version__}
    doc = {"rows": [row], "missing": [], "versions": {}, "backend": "auto", "tolerance": 1e-9}
    assert "| block | 3 | 1 | 2 of 2, 2 | 1 of 1, 1 | 1, 1 |" in real_models.markdown(doc, env)
    assert set(row["errors"]) == {"converted", "fused", "fused from a run", "training"}


def test_a_library_not_installed_is_reported_not_failed(monkeypatch):
    monkeypatch.setattr(real_models, "_version", lambda package: None)
    doc = real_models.run(["monai"])
    assert doc["rows"] == [] and doc["missing"] == ["monai"]
    env = {"device_name": "a CPU", "torch": torch.__version__}
    assert "not installed: monai" in real_models.markdown(doc, env)


def test_a_model_that_fails_is_a_row_that_is_not_ok(monkeypatch):
    def broken() -> tuple[nn.Module, tuple]:
        return nn.Conv2d(3, 4, 3), (torch.randn(1, 5, 4, 4, dtype=torch.float64),)

    monkeypatch.setitem(real_models.LIBRARIES, "torch", lambda: iter([("broken", broken)]))
    doc = real_models.run(["torch"])
    (row,) = doc["rows"]
    assert not row["ok"] and "channels" in row["error"]


def test_shards_split_the_list_and_skipped_models_are_listed_not_rows(monkeypatch):
    def build(i: int):
        def make() -> tuple[nn.Module, tuple]:
            if i == 3:
                raise real_models.Skipped("too large")
            return nn.Conv2d(3, 4, 1), (torch.randn(1, 3, 4, 4, dtype=torch.float64),)

        return make

    found = [(f"model {i}", build(i)) for i in range(5)]
    monkeypatch.setitem(real_models.LIBRARIES, "torch", lambda: iter(found))
    doc = real_models.run(["torch"], shard=(1, 2))
    assert [row["model"] for row in doc["rows"]] == ["model 1"]
    assert doc["skipped"] == ["model 3: too large"] and doc["shard"] == [1, 2]
    text = real_models.markdown(doc, {"device_name": "a CPU", "torch": torch.__version__})
    assert "shard 2 of 2" in text and "skipped 1" in text and "1 of 1 models ok" in text


def test_every_timm_model_is_on_request_only(monkeypatch):
    assert "timm-all" in real_models.LIBRARIES and "timm-all" not in real_models.DEFAULT_LIBRARIES
    asked = []
    monkeypatch.setattr(real_models, "_version", lambda package: asked.append(package))
    assert real_models.run(["timm-all"])["missing"] == ["timm-all"] and asked[0] == "timm"
