"""Fixtures of the launcher tests."""

from __future__ import annotations

import pytest

from triton_kernels._tuning import Tuner


@pytest.fixture
def ran(monkeypatch):
    """Names of the tuned kernel variants launched during the test, in order."""
    names = []
    launch = Tuner.launch

    def spy(self, *args, **kwargs):
        names.append(self.name)
        return launch(self, *args, **kwargs)

    monkeypatch.setattr(Tuner, "launch", spy)
    return names
