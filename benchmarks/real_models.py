"""``python -m benchmarks real-models``: other libraries' models converted, against themselves.

Each model of timm, Transformers, Diffusers and MONAI listed here (those installed) is built from a
small configuration with random weights (nothing is downloaded), its batch norms' statistics
drawn far from the identity, and run in float64 on the CPU: in eval mode, ``convert_model`` and
``convert_model(fuse=True)`` — with who consumes what read from the code, and recorded from a
run on the input (``example_inputs``) — against the model itself; in training mode,
``convert_model``'s output and parameter gradients. ``--backend triton`` runs our kernels
(on the CPU under Triton's interpreter, ``TRITON_INTERPRET=1``: minutes). A row reports the
layers converted and left, the batch norms and zero-padding layers folded and the activations
fused by each fusion, and the largest error relative to the output's scale. It is a check of
correctness and of how much fuses, not a timing.

``--only timm-all`` checks every model timm lists instead of a chosen few (not by default: its
eight shards took 36 minutes one after another on a 2-core Xeon), each with at most
``--max-parameters`` parameters (counted on the meta device; larger ones are listed as skipped), at its default input size capped at 64×64 (its own
size where it fixes one or refuses the smaller one). ``--shard K/N`` checks every N-th model
from the K-th, so that N processes share the list (one results file each).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: A model: its name, a builder of the model and of its positional inputs (float64).
Builder = Callable[[], tuple[nn.Module, tuple]]
_TOLERANCE = 1e-9
#: ``timm-all``'s default limit: larger models take minutes each on a CPU.
MAX_PARAMETERS = 40_000_000


class Skipped(Exception):
    """A model this run does not check, and why (a builder raises it)."""


def _image(*shape: int) -> tuple:
    return (torch.randn(*shape, dtype=torch.float64),)


def _transformers() -> Iterator[tuple[str, Builder]]:
    import transformers as T

    small = {"image_size": 32}
    yield (
        "transformers ResNet",
        lambda: (
            T.ResNetModel(T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])),
            _image(2, 3, 32, 32),
        ),
    )
    yield (
        "transformers MobileNetV1",
        lambda: (
            T.MobileNetV1Model(T.MobileNetV1Config(depth_multiplier=0.25, **small)),
            _image(2, 3, 32, 32),
        ),
    )
    yield (
        "transformers MobileNetV2",
        lambda: (
            T.MobileNetV2Model(T.MobileNetV2Config(depth_multiplier=0.25, **small)),
            _image(2, 3, 32, 32),
        ),
    )
    yield "transformers EfficientNet", lambda: (
        T.EfficientNetModel(
            T.EfficientNetConfig(width_coefficient=0.5, depth_coefficient=0.2, hidden_dim=640, **small)
        ),
        _image(2, 3, 32, 32),
    )  # fmt: skip
    yield (
        "transformers RegNet",
        lambda: (
            T.RegNetModel(
                T.RegNetConfig(
                    embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=4
                )
            ),
            _image(2, 3, 32, 32),
        ),
    )
    # BiT: weight-standardised convolutions with TensorFlow "SAME" padding (its max pooling,
    # padding with zeros, is left: ours never lets padding win a max)
    yield "transformers BiT", lambda: (
        T.BitModel(
            T.BitConfig(global_padding="SAME", embedding_dynamic_padding=True, embedding_size=16,
                        hidden_sizes=[16, 32], depths=[1, 1], num_groups=4, out_features=None)
        ),
        _image(2, 3, 37, 41),
    )  # fmt: skip
    yield "transformers MobileViT", lambda: (
        T.MobileViTModel(
            T.MobileViTConfig(hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32],
                              num_attention_heads=2, **small)
        ),
        _image(2, 3, 32, 32),
    )  # fmt: skip
    yield (
        "transformers ConvNeXt",
        lambda: (
            T.ConvNextModel(T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)),
            _image(2, 3, 32, 32),
        ),
    )
    yield (
        "transformers PoolFormer",
        lambda: (
            T.PoolFormerModel(
                T.PoolFormerConfig(hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1])
            ),
            _image(2, 3, 32, 32),
        ),
    )
    yield "transformers Wav2Vec2", lambda: (
        T.Wav2Vec2Model(
            T.Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=16, conv_dim=(8, 8), conv_stride=(5, 2),
                             conv_kernel=(10, 3), num_conv_pos_embeddings=4,
                             num_conv_pos_embedding_groups=2, mask_time_prob=0.0)
        ),
        (torch.randn(2, 400, dtype=torch.float64),),
    )  # fmt: skip
    # Audio codecs and vocoders: 1-d convolutions and transposed convolutions (EnCodec's
    # weight-normalised by parametrization, DAC's by the old hook), HiFi-GAN's dilated ones
    yield "transformers EnCodec", lambda: (
        T.EncodecModel(T.EncodecConfig(num_filters=4, hidden_size=16, codebook_size=16,
                                       upsampling_ratios=[2, 2], num_lstm_layers=1,
                                       codebook_dim=16)),
        (torch.randn(2, 1, 64, dtype=torch.float64),),
    )  # fmt: skip
    yield "transformers DAC", lambda: (
        T.DacModel(T.DacConfig(encoder_hidden_size=4, downsampling_ratios=[2, 2],
                               decoder_hidden_size=16, n_codebooks=2, codebook_size=16,
                               codebook_dim=4, hidden_size=32, upsampling_ratios=[2, 2])),
        (torch.randn(2, 1, 64, dtype=torch.float64),),
    )  # fmt: skip
    yield "transformers SpeechT5HifiGan", lambda: (
        T.SpeechT5HifiGan(T.SpeechT5HifiGanConfig(
            model_in_dim=8, upsample_initial_channel=16, upsample_rates=[2, 2],
            upsample_kernel_sizes=[4, 4], resblock_kernel_sizes=[3, 5],
            resblock_dilation_sizes=[[1, 3], [1, 3]])),
        (torch.randn(2, 10, 8, dtype=torch.float64),),
    )  # fmt: skip
    yield "transformers SwiftFormer", lambda: (
        T.SwiftFormerModel(T.SwiftFormerConfig(depths=[1, 1, 1, 1], embed_dims=[8, 16, 16, 16])),
        _image(2, 3, 32, 32),
    )  # fmt: skip
    yield "transformers TextNet", lambda: (
        T.TextNetModel(T.TextNetConfig(stem_out_channels=8, hidden_sizes=[8, 8, 8, 8, 8],
                                       conv_layer_kernel_sizes=[[[3, 3]]] * 4,
                                       conv_layer_strides=[[1], [2], [2], [2]])),
        _image(2, 3, 32, 32),
    )  # fmt: skip


def _diffusers() -> Iterator[tuple[str, Builder]]:
    import diffusers as D

    blocks = {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4}
    yield "diffusers UNet2DModel", lambda: (
        D.UNet2DModel(
            sample_size=16, in_channels=3, out_channels=3, attention_head_dim=4,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), **blocks,
        ),
        (torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.tensor([3, 7])),
    )  # fmt: skip
    yield "diffusers AutoencoderKL", lambda: (
        D.AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, **blocks,
        ),
        _image(2, 3, 16, 16),
    )  # fmt: skip
    yield "diffusers UNet2DConditionModel", lambda: (
        D.UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, cross_attention_dim=8,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=4, **blocks,
        ),
        (torch.randn(2, 4, 16, 16, dtype=torch.float64), torch.tensor([3, 7]),
         torch.randn(2, 5, 8, dtype=torch.float64)),
    )  # fmt: skip
    yield "diffusers VQModel", lambda: (
        D.VQModel(
            in_channels=3, out_channels=3, latent_channels=4, num_vq_embeddings=16,
            vq_embed_dim=4, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, **blocks,
        ),
        _image(2, 3, 16, 16),
    )  # fmt: skip
    # Wan's video autoencoder: causal 3-d convolutions whose forward pads time on one side,
    # then hands the input on to torch's (ours, once converted)
    yield "diffusers AutoencoderKLWan", lambda: (
        D.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1,
                           attn_scales=[], temperal_downsample=[True]),
        (torch.randn(1, 3, 5, 16, 16, dtype=torch.float64),),
    )  # fmt: skip
    # CogVideoX's: 3-d convolutions that chunk long inputs, then hand each to torch's
    yield "diffusers AutoencoderKLCogVideoX", lambda: (
        D.AutoencoderKLCogVideoX(
            in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 2,
            up_block_types=("CogVideoXUpBlock3D",) * 2, block_out_channels=(8, 16),
            latent_channels=4, layers_per_block=1, norm_num_groups=4,
            temporal_compression_ratio=2,
        ),
        (torch.randn(1, 3, 5, 16, 16, dtype=torch.float64),),
    )  # fmt: skip


def _monai() -> Iterator[tuple[str, Builder]]:
    from monai.networks import nets

    yield "MONAI UNet 2D", lambda: (
        nets.UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16),
                  strides=(2, 2), num_res_units=1, norm="batch"),
        _image(2, 1, 16, 16),
    )  # fmt: skip
    yield "MONAI UNet 3D", lambda: (
        nets.UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,),
                  num_res_units=1, norm="batch"),
        _image(2, 1, 8, 8, 8),
    )  # fmt: skip
    yield "MONAI BasicUNet", lambda: (
        nets.BasicUNet(spatial_dims=2, in_channels=1, out_channels=2,
                       features=(4, 4, 8, 8, 16, 4), norm="batch"),
        _image(2, 1, 32, 32),
    )  # fmt: skip
    yield "MONAI DynUNet", lambda: (
        nets.DynUNet(2, 1, 2, kernel_size=[3, 3, 3], strides=[1, 2, 2],
                     upsample_kernel_size=[2, 2], filters=[4, 8, 16], norm_name="batch"),
        _image(2, 1, 16, 16),
    )  # fmt: skip
    yield (
        "MONAI SegResNet",
        lambda: (
            nets.SegResNet(
                spatial_dims=2, init_filters=4, in_channels=1, out_channels=2, norm="batch"
            ),
            _image(2, 1, 16, 16),
        ),
    )
    yield "MONAI DenseNet121", lambda: (
        nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=3, init_features=4,
                         growth_rate=4, block_config=(1, 1, 1, 1)),
        _image(2, 1, 32, 32),
    )  # fmt: skip
    yield "MONAI AttentionUnet", lambda: (
        nets.AttentionUnet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16),
                           strides=(2, 2)),
        _image(2, 1, 16, 16),
    )  # fmt: skip
    yield "MONAI ResNet", lambda: (
        nets.ResNet("basic", [1, 1, 1, 1], [8, 16, 16, 16], spatial_dims=2, n_input_channels=1,
                    num_classes=3),
        _image(2, 1, 32, 32),
    )  # fmt: skip
    yield "MONAI EfficientNet-B0", lambda: (
        nets.EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=1,
                            num_classes=3),
        _image(2, 1, 32, 32),
    )  # fmt: skip
    yield (
        "MONAI SEResNet50",
        lambda: (
            nets.SEResNet50(spatial_dims=2, in_channels=1, num_classes=3, layers=(1, 1, 1, 1)),
            _image(2, 1, 32, 32),
        ),
    )
    yield (
        "MONAI HighResNet",
        lambda: (
            nets.HighResNet(spatial_dims=2, in_channels=1, out_channels=2),
            _image(2, 1, 16, 16),
        ),
    )
    yield "MONAI SegResNetDS", lambda: (
        nets.SegResNetDS(spatial_dims=2, init_filters=4, in_channels=1, out_channels=2,
                         norm="batch"),
        _image(2, 1, 32, 32),
    )  # fmt: skip
    yield (
        "MONAI RegUNet",
        lambda: (
            nets.RegUNet(spatial_dims=2, in_channels=1, num_channel_initial=4, depth=2),
            _image(2, 1, 16, 16),
        ),
    )
    yield "MONAI FlexibleUNet", lambda: (
        nets.FlexibleUNet(in_channels=1, out_channels=2, backbone="efficientnet-b0",
                          spatial_dims=2, pretrained=False),
        _image(2, 1, 32, 32),
    )  # fmt: skip


def _timm() -> Iterator[tuple[str, Builder]]:
    import timm

    # (tf_efficientnet_b0: TensorFlow "SAME" padding in timm's Conv2dSame; resnetv2_50x1_bit,
    # eca_nfnet_l0 and dm_nfnet_f0: timm's weight-standardised StdConv2d, ScaledStdConv2d and
    # ScaledStdConv2dSame; then one of each other family: large depthwise kernels (ConvNeXt,
    # FastViT, InceptionNeXt's asymmetric ones), multi-branch blocks reparameterisable for
    # inference (RepVGG, MobileOne), split and concatenated channels (CSP, Res2Net, GhostNet,
    # MixNet's mixed kernels, DPN), hierarchical aggregation (DLA), multi-resolution fusion
    # with nearest upsampling (HRNet), split attention and selective kernels (ResNeSt, SKNet),
    # pre-activation (DenseNet), separable convolutions (Xception), space-to-depth and
    # anti-aliased downsampling (TResNet), and more of the mobile designs. A batch of two:
    # training-mode batch norm needs more than one value per channel after a global pool.)
    for name in ("resnet18", "efficientnet_b0", "mobilenetv3_large_100", "regnety_002",
                 "tf_efficientnet_b0", "resnetv2_50x1_bit", "eca_nfnet_l0", "dm_nfnet_f0",
                 "convnext_atto", "fastvit_t8", "inception_next_tiny", "repvgg_a0",
                 "mobileone_s0", "cspresnet50", "res2net50_14w_8s", "ghostnet_100", "mixnet_s",
                 "dpn68", "dla34", "hrnet_w18_small", "resnest14d", "skresnet18", "densenet121",
                 "xception41", "tresnet_m", "efficientnetv2_rw_t", "rexnet_100", "lcnet_050",
                 "mobilenetv4_conv_small", "efficientvit_b0"):  # fmt: skip
        yield (
            f"timm {name}",
            lambda name=name: (
                timm.create_model(name, pretrained=False, num_classes=3),
                _image(2, 3, 64, 64),
            ),
        )
    # MaxViT's TensorFlow port: TensorFlow "SAME" padding in timm's own layers (Conv2dSame,
    # AvgPool2dSame); at 64×64 its windows and grids are 2×2.
    yield (
        "timm maxvit_tiny_tf_224",
        lambda: (
            timm.create_model("maxvit_tiny_tf_224", pretrained=False, num_classes=3, img_size=64),
            _image(2, 3, 64, 64),
        ),
    )


def _timm_all(max_parameters: int = MAX_PARAMETERS) -> Iterator[tuple[str, Builder]]:
    """Every model timm lists (module docstring)."""
    import timm

    def build(name: str) -> tuple[nn.Module, tuple]:
        with torch.device("meta"):
            size = sum(p.numel() for p in timm.create_model(name, num_classes=3).parameters())
        if size > max_parameters:
            raise Skipped(f"{size / 1e6:.0f}M parameters (over {max_parameters / 1e6:g}M)")
        model = timm.create_model(name, pretrained=False, num_classes=3)
        config = model.pretrained_cfg or {}
        channels, height, width = config.get("input_size", (3, 224, 224))
        if config.get("fixed_input_size", False):
            return model, _image(2, channels, height, width)
        try:  # (windowed attention may need its own size: a block per window)
            with torch.no_grad():
                model.eval()(torch.zeros(2, channels, min(height, 64), min(width, 64)))
        except Exception:
            return model, _image(2, channels, height, width)
        return model, _image(2, channels, min(height, 64), min(width, 64))

    for name in timm.list_models():
        yield f"timm {name}", lambda name=name: build(name)


LIBRARIES: dict[str, Callable[[], Iterator[tuple[str, Builder]]]] = {
    "timm": _timm,
    "transformers": _transformers,
    "diffusers": _diffusers,
    "monai": _monai,
    "timm-all": _timm_all,
}
#: The libraries a run checks unless told (``timm-all`` only on request).
DEFAULT_LIBRARIES = ("timm", "transformers", "diffusers", "monai")
#: The package each library needs (its own name where not listed).
PACKAGES = {"timm-all": "timm"}


def _tensors(output: Any) -> list[torch.Tensor]:
    """The tensors a model returned, in order (Transformers' and Diffusers' outputs too)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if hasattr(output, "to_tuple"):
        output = output.to_tuple()
    elif hasattr(output, "sample"):
        output = (output.sample,)
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors(item)]
    return []


def _error(got: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    """The largest difference over each tensor's scale (``max |expected| + 1``)."""
    if len(got) != len(expected):
        return float("inf")
    return max(
        ((a - b).abs().max() / (b.abs().max() + 1)).item() for a, b in zip(got, expected)
    )  # fmt: skip


def _batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _zero_pads(model: nn.Module) -> int:
    from torchconv_ext._fuse_steps import is_zero_pad

    return sum(map(is_zero_pad, model.modules()))


def _activated(model: nn.Module) -> int:
    """Our convolutions with an activation in their epilogue."""
    return sum(isinstance(getattr(m, "fused_activation", None), str) for m in model.modules())


def _randomise_batch_norms(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)


def _gradients(model: nn.Module, inputs: tuple) -> tuple[list[torch.Tensor], list]:
    """Training-mode outputs and the gradients of a fixed weighting of them (same seed: the
    same dropout masks)."""
    torch.manual_seed(1)
    outputs = _tensors(model(*inputs))
    loss = sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).view_as(t)).sum()
               for t in outputs)  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]
    return outputs, list(torch.autograd.grad(loss, params, allow_unused=True))


def check_model(name: str, build: Builder) -> dict[str, Any]:
    """One row: ``build``'s model converted and fused, against itself (module docstring)."""
    from torchconv_ext import convert_model, convert_model_with_report

    torch.manual_seed(0)
    model, inputs = build()
    model = model.double().eval()
    _randomise_batch_norms(model)
    with torch.no_grad():
        expected = _tensors(model(*inputs))
        converted, report = convert_model_with_report(model)
        errors = {"converted": _error(_tensors(converted(*inputs)), expected)}
        from_code = convert_model(model, fuse=True)
        errors["fused"] = _error(_tensors(from_code(*inputs)), expected)
        from_run = convert_model(model, fuse=True, example_inputs=inputs)
        errors["fused from a run"] = _error(_tensors(from_run(*inputs)), expected)
    model.train()
    outputs, grads = _gradients(model, inputs)
    trained = convert_model(model).train()
    got_outputs, got_grads = _gradients(trained, inputs)
    pairs = [(a, b) for a, b in zip(got_grads, grads) if a is not None and b is not None]
    errors["training"] = max(
        _error(got_outputs, outputs), _error([a for a, _ in pairs], [b for _, b in pairs])
    )
    return {
        "model": name,
        "converted": len(report.converted),
        "left": [f"{e.name}: {e.reason}" for e in report.left],
        "batch_norms": _batch_norms(model),
        "batch_norms_fused": _batch_norms(model) - _batch_norms(from_code),
        "batch_norms_fused_from_a_run": _batch_norms(model) - _batch_norms(from_run),
        "zero_pads": _zero_pads(model),
        "zero_pads_folded": _zero_pads(model) - _zero_pads(from_code),
        "zero_pads_folded_from_a_run": _zero_pads(model) - _zero_pads(from_run),
        "activations_fused": _activated(from_code),
        "activations_fused_from_a_run": _activated(from_run),
        "errors": errors,
        "ok": all(e <= _TOLERANCE for e in errors.values()),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def run(
    libraries: Sequence[str],
    backend: str = "auto",
    models: Sequence[str] = (),
    shard: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """Check every model of ``libraries`` (``models``: only those whose name has one of these;
    ``shard`` ``(k, n)``: only every ``n``-th of those, from the ``k``-th)."""
    import torchconv_ext

    rows, missing, skipped = [], [], []
    for library in libraries:
        if _version(PACKAGES.get(library, library)) is None:
            missing.append(library)
            continue
        with warnings.catch_warnings(), torchconv_ext.use_backend(backend):
            warnings.simplefilter("ignore")
            try:
                found = list(LIBRARIES[library]())
            except ImportError as error:  # (timm imports torchvision)
                missing.append(f"{library} ({error})")
                continue
            found = [(name, build) for name, build in found
                     if not models or any(m.lower() in name.lower() for m in models)]  # fmt: skip
            for name, build in found[shard[0] :: shard[1]]:
                try:
                    rows.append(check_model(name, build))
                except Skipped as why:
                    skipped.append(f"{name}: {why}")
                except Exception as error:  # a row of its own: the others still run
                    rows.append({"model": name, "ok": False, "error": repr(error)})
    packages = {PACKAGES.get(library, library) for library in libraries}
    versions = {package: _version(package) for package in sorted(packages)}
    return {
        "rows": rows,
        "missing": missing,
        "skipped": skipped,
        "shard": list(shard),
        "versions": versions,
        "backend": backend,
        "tolerance": _TOLERANCE,
    }


def markdown(doc: dict[str, Any], env: dict[str, Any]) -> str:
    lines = [
        f"other libraries' models converted, float64 on {env['device_name']}, backend "
        f"{doc['backend']}, torch "
        f"{env['torch']}, "
        + ", ".join(f"{k} {v}" for k, v in doc["versions"].items() if v)
        + f", commit `{(env.get('git_sha') or '?')[:7]}`, {env.get('date', '')}",
        "",
        "| model | layers converted | left | batch norms folded (code, a run) | zero pads folded "
        "(code, a run) | activations fused (code, a run) | largest error: converted, fused, "
        "fused from a run, training | ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in doc["rows"]:
        if "error" in row:
            lines.append(f"| {row['model']} |{' – |' * 5} {row['error']} | no |")
            continue
        errors = ", ".join(f"{e:.1e}" for e in row["errors"].values())
        cells = [
            str(row["converted"]),
            str(len(row["left"])),
            f"{row['batch_norms_fused']} of {row['batch_norms']}, "
            f"{row['batch_norms_fused_from_a_run']}",
            f"{row['zero_pads_folded']} of {row['zero_pads']}, "
            f"{row['zero_pads_folded_from_a_run']}",
            f"{row['activations_fused']}, {row['activations_fused_from_a_run']}",
        ]
        lines.append(
            f"| {row['model']} | {' | '.join(cells)} | {errors} | {'yes' if row['ok'] else 'no'} |"
        )
    if doc["missing"]:
        lines.append(f"\nnot installed: {', '.join(doc['missing'])}")
    k, n = doc.get("shard", (0, 1))
    if n > 1:
        lines.append(f"\nshard {k + 1} of {n}: every {n}-th model listed, from the {k + 1}-th")
    if doc.get("skipped"):
        lines.append(f"\nskipped {len(doc['skipped'])} (listed in the JSON), e.g. "
                     f"{doc['skipped'][0]}")  # fmt: skip
    ok = sum(bool(row["ok"]) for row in doc["rows"])
    lines.append(f"\n{ok} of {len(doc['rows'])} models ok")
    lines.append(
        f"\nok: every error at most {doc['tolerance']:g} (relative to each output's largest "
        "magnitude + 1). Layers left are listed in the JSON with the reason (a class "
        "overriding the computation that torchconv_ext does not know, such as BiT's max pooling "
        "padded with zeros; a mode we do not replace, such as SegResNet's bilinear "
        "upsampling).\n"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks real-models", description=__doc__)
    p.add_argument(
        "--only",
        nargs="+",
        choices=list(LIBRARIES),
        default=list(DEFAULT_LIBRARIES),
        help="libraries (default: all but timm-all, every model timm lists)",
    )
    p.add_argument(
        "--backend",
        choices=["auto", "triton", "torch"],
        default="auto",
        help="ours on: auto (the fallback on the CPU), triton (on the CPU: TRITON_INTERPRET=1)",
    )
    p.add_argument("--models", nargs="+", default=(), help="only models whose name has one")
    p.add_argument(
        "--shard", default="1/1", help="K/N: every N-th model from the K-th (N processes)"
    )
    p.add_argument(
        "--max-parameters",
        type=float,
        default=MAX_PARAMETERS,
        help=f"timm-all: larger models are skipped (default {MAX_PARAMETERS:g})",
    )
    p.add_argument("--note", default="", help="a line for the report: how the run was made")
    p.add_argument("--tag", help="file name tag: real-models-<tag>.{json,md}")
    p.add_argument("--out", type=Path, help="results root (default benchmarks/results)")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    from .results import RESULTS_DIR, environment, write_tool

    k, _, n = args.shard.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        p.error(f"--shard takes K/N with 1 <= K <= N, not {args.shard!r}")
    LIBRARIES["timm-all"] = lambda: _timm_all(int(args.max_parameters))
    doc = run(args.only, args.backend, args.models, (int(k) - 1, int(n)))
    env = environment("cpu")
    text = markdown(doc, env) + (f"\n{args.note}\n" if args.note else "")
    print(text)
    if not args.no_write:
        stem = write_tool(args.out or RESULTS_DIR, "real-models", args.tag, {**env, **doc}, text)
        print(f"wrote {stem}.{{json,md}}")
    return 0 if all(row["ok"] for row in doc["rows"]) else 1
