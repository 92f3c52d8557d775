"""Which kernels a test's calls launch: a spy on a launcher module's ``launch`` and its tuners."""

from __future__ import annotations

from typing import Any


def launched_kernels(monkeypatch, module: Any, tuners: tuple = ()) -> list[str]:
    """Names of the kernels ``module`` launches from now on, directly through its ``launch`` or
    through one of ``tuners`` (whose ``launch`` picks a config first)."""
    names: list[str] = []
    launch = module.launch

    def counting(kernel, *args, **kwargs):
        names.append(kernel.fn.__name__)
        return launch(kernel, *args, **kwargs)

    monkeypatch.setattr(module, "launch", counting)
    for tuner in tuners:

        def counting_tuner(*args, tuned=tuner.launch, name=tuner.kernel.fn.__name__, **kwargs):
            names.append(name)
            return tuned(*args, **kwargs)

        # (in the instance's dict: undone, the class's launch shows again, so a later spy on
        # ``Tuner.launch`` sees this tuner; ``setattr`` would leave the old bound method behind)
        monkeypatch.setitem(vars(tuner), "launch", counting_tuner)
    return names
