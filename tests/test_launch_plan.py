"""Launch plans (``triton_kernels._plan``): a planned launch hands Triton's launcher exactly
what ``kernel[grid](...)`` hands it, for every launcher family, and misses whenever Triton
would specialise differently (pointer alignment, an int's value class, dtypes).

Plans exist for compiled kernels only, so the checks run in a process of their own on the
stand-in GPU (``tests/launch_plan_probe.py``, compiling real sm_90 code); under the
interpreter, as on a machine without CUDA, nothing is planned.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_planned_launches_match_triton_and_miss_on_specialisation():
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.pop("TORCHCONV_EXT_POISON", None)
    env.pop("TRITON_DEFAULT_FP_FUSION", None)  # (the library's own choice is checked)
    cmd = [sys.executable, "-m", "tests.launch_plan_probe"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("OK ")


@pytest.mark.interpret
def test_the_interpreter_is_never_planned():
    from triton_kernels import INTERPRET, _plan, upsample_nearest_forward

    if not INTERPRET:
        pytest.skip("the kernels are compiled here (no interpreter): nothing to check")
    assert not _plan.ENABLED
    _plan.clear_plans()
    x = torch.randn(1, 2, 3, 3)
    out = torch.empty(1, 2, 6, 6)
    for _ in range(2):
        upsample_nearest_forward(x, out, [0.5, 0.5], exact=False)  # source scales
    assert torch.equal(out, x.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert _plan.plan_info() == {"plans": 0, "planned": 0, "unplanned": 0}


def test_compile_options_pin_fma_contraction_unless_the_user_chose(monkeypatch):
    """Triton 3.10 stops contracting multiplies and adds by default (3.9 warns of it): ours are
    compiled as before, unless ``TRITON_DEFAULT_FP_FUSION`` says otherwise."""
    from triton_kernels import _common

    monkeypatch.delenv("TRITON_DEFAULT_FP_FUSION", raising=False)
    assert _common._compile_options() == {"enable_fp_fusion": True}
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "0")
    assert _common._compile_options() == {}
