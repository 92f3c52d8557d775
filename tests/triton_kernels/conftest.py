"""Fixtures of the launcher tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import pytest

from torchconv_ext.check.tuners import forced
from triton_kernels._tuning import Config, Tuner


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


@pytest.fixture
def force():
    """``force(tuners, config)``: those tuners launch ``config`` until the test ends. Setting a
    tuner's ``configs`` alone is not enough: it keeps the config it chose for a problem seen
    before (in this process), and the launcher tapes replay earlier launches; ``forced`` sets
    both aside and restores them."""
    with contextlib.ExitStack() as stack:

        def force_(tuners: Iterable[Tuner], config: Config) -> None:
            tuners = list(tuners)
            stack.enter_context(
                forced({t.name: t for t in tuners}, dict.fromkeys((t.name for t in tuners), config))
            )

        yield force_
