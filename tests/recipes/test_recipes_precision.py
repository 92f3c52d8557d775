"""Mixed precision: under autocast our layers run in the reduced precision exactly where
torch's would (checked on the CPU with bf16)."""

from __future__ import annotations

import lightning as L
import torch
from recipes_testutils import DIGITS, run_cli
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import torchconv_ext
from recipes.models import build_model


class OpDtypes(TorchDispatchMode):
    """Records the tensor dtypes that each torchconv_ext op is called with."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, set[torch.dtype]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.name())
        if name.startswith("torchconv_ext::"):
            dtypes = {a.dtype for a in args if isinstance(a, torch.Tensor)}
            self.calls.append((name.removeprefix("torchconv_ext::"), dtypes))
        return func(*args, **(kwargs or {}))


def _output_dtypes(model: nn.Module) -> tuple[list, list]:
    seen: list[tuple[str, torch.dtype]] = []
    handles = [
        m.register_forward_hook(lambda m, i, o, n=n: seen.append((n, o.dtype)))
        for n, m in model.named_modules()
        if not list(m.children())
    ]
    return seen, handles


def test_autocast_bf16_matches_torch_layer_by_layer():
    torch.manual_seed(0)
    kwargs = dict(batch_norm=True, width=1 / 16, pool_size=1, hidden=16, dropout=0.0)
    ours = build_model("vgg11", 10, **kwargs)
    torch.manual_seed(0)
    theirs = build_model("vgg11", 10, backend="torch", **kwargs)
    assert any(isinstance(m, torchconv_ext.nn.Conv2d) for m in ours.modules())
    x = torch.randn(4, 3, 32, 32)
    results = {}
    for name, model in (("ours", ours), ("theirs", theirs)):
        seen, handles = _output_dtypes(model)
        with OpDtypes() as ops:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
            out.float().sum().backward()
        for h in handles:
            h.remove()
        results[name] = out, seen, ops.calls, [p.grad for p in model.parameters()]
    out, seen, calls, grads = results["ours"]
    ref_out, ref_seen, ref_calls, ref_grads = results["theirs"]
    assert seen == ref_seen  # the same dtype after every layer
    assert all(d == torch.bfloat16 for n, d in seen if isinstance(ours.get_submodule(n), nn.Conv2d))
    assert ref_calls == []  # the torch model never reaches our ops
    for name, dtypes in calls:  # whichever of our registered ops ran, ran in bf16
        assert dtypes - {torch.int64} == {torch.bfloat16}, (name, dtypes)
    # On the CPU our layers run ATen's kernels: same dtypes in, bit-identical results out.
    assert out.dtype == torch.bfloat16 and torch.equal(out, ref_out)
    for g, ref in zip(grads, ref_grads):
        assert g.dtype == torch.float32 and torch.equal(g, ref)


def test_autocast_bf16_reaches_our_registered_convolution():
    """A convolution torch has no op for (TensorFlow's 'same' padding with stride 2) always goes
    through ``torchconv_ext::conv_*``: under autocast its operands arrive in bf16, and its
    result equals torch's autocast convolution of the explicitly padded input."""
    x = torch.randn(2, 3, 10, 10, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    with OpDtypes() as ops:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = torchconv_ext.functional.conv2d(x, w, b, stride=2, padding="same")
        out.float().sum().backward()
    names = [n for n, _ in ops.calls]
    assert {"conv_fwd", "conv_bwd_input", "conv_bwd_weight_bias"} <= set(names)
    assert all(dtypes == {torch.bfloat16} for n, dtypes in ops.calls if n.startswith("conv")), (
        ops.calls
    )
    grads = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # 10 → 5: one padding pixel, at the end
        ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 1, 0, 1)), w, b, stride=2)
    ref.float().sum().backward()
    assert out.dtype == ref.dtype == torch.bfloat16 and out.shape == (2, 4, 5, 5)
    assert torch.equal(out, ref)
    for g, t in zip(grads, (x, w, b)):
        assert g.dtype == torch.float32
        assert torch.equal(g, t.grad)


class ConvDtypes(L.Callback):
    """(input dtype, output dtype, autocast on?) of each of our convolutions while fitting."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.seen = []
        for m in pl_module.modules():
            if isinstance(m, torchconv_ext.nn.Conv2d):
                m.register_forward_hook(
                    lambda m, i, o: self.seen.append(
                        (i[0].dtype, o.dtype, torch.is_autocast_enabled("cpu"))
                    )
                )


def test_fit_with_bf16_mixed_precision(tmp_path):
    probe = ConvDtypes()
    cli = run_cli(
        "fit",
        "--config",
        str(DIGITS),
        "--model.width",
        "0.0625",
        "--trainer.precision",
        "bf16-mixed",
        "--trainer.fast_dev_run",
        "1",
        tmp_path=tmp_path,
        callbacks=[probe],
    )
    assert cli.trainer.precision == "bf16-mixed"
    steps = [s for s in probe.seen if s[2]]  # the training and validation steps run under autocast
    assert len(steps) == 2 * 8  # 8 convolutions, one training and one validation batch
    assert steps[0][:2] == (torch.float32, torch.bfloat16)  # the fp32 input is cast, as torch does
    assert all(out == torch.bfloat16 for _, out, _ in steps)
    # (the rest: ThroughputMonitor's FLOP count, outside autocast, in fp32)
    assert all(s[:2] == (torch.float32, torch.float32) for s in probe.seen if not s[2])
    assert all(p.dtype == torch.float32 for p in cli.model.parameters())  # fp32 master weights
    assert torch.isfinite(cli.trainer.callback_metrics["train_loss"])
