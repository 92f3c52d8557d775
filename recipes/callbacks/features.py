"""What a layer of the network responds to, after every validation epoch:

- :class:`FeatureMaps` — a layer's activation maps for a few validation images: where in each
  image each channel fires;
- :class:`TopPatches` — for each channel of a layer, the validation patches (the unit's
  receptive field) that activate it most, as the lecture notes visualise later layers:
  "taking actual patches, maximizing convolution activation".
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only

from ._layers import Field, default_layer, layer_output, receptive_field
from ._log_dir import LogDirCallback
from ._plot import display_images, diverging, publish, sequential, tile_figure, when


def _network(pl_module: L.LightningModule) -> torch.nn.Module:
    return getattr(pl_module, "net", pl_module)


class _LayerCallback(LogDirCallback):
    def __init__(self, layer: str | None, filename: str) -> None:
        self.layer = layer
        self.filename = filename
        self._chosen: str | None = None

    def _layer(self, net: torch.nn.Module, x: torch.Tensor) -> str:
        if self.layer is not None:
            return self.layer
        if self._chosen is None:
            self._chosen = default_layer(net, x.shape[1], x.shape[-1])
        return self._chosen

    def _features(self, pl_module: L.LightningModule, x: torch.Tensor) -> tuple[str, torch.Tensor]:
        net = _network(pl_module)
        layer = self._layer(net, x)
        with torch.no_grad():
            return layer, layer_output(net, layer, x).float()


class FeatureMaps(_LayerCallback):
    """Writes ``<run folder>/feature_maps.png`` after every validation epoch (TensorBoard:
    ``feature_maps``): for the first ``images`` validation images, the input and the maps of
    the ``channels`` channels of ``layer`` that are most active on them, each map on its own
    colour scale (the number under it: its maximum).

    Args:
        layer: module name inside the network (``features.10``, ``layer2.0.relu2``; see
            ``print(model)``); default: the deepest activation whose receptive field spans at
            most 60 % of the image.
        images, channels: how many of each to show.
    """

    def __init__(
        self,
        layer: str | None = None,
        images: int = 4,
        channels: int = 8,
        filename: str = "feature_maps.png",
    ) -> None:
        super().__init__(layer, filename)
        self.images = images
        self.channels = channels

    @rank_zero_only
    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if trainer.sanity_checking or batch_idx != 0 or dataloader_idx != 0:
            return
        x = batch[0][: self.images]
        layer, maps = self._features(pl_module, x)
        if maps.dim() != 4:
            return
        maps = maps.cpu()
        top = maps.mean(dim=(0, 2, 3)).argsort(descending=True)[: self.channels].tolist()
        pixels = display_images(x, trainer.datamodule)
        side = pixels.shape[1]
        tiles, labels = [], []
        for image, fmap in zip(pixels, maps):
            tiles.append(image)
            labels.append("input")
            for c in top:
                m = fmap[c].numpy()
                scale = float(np.abs(m).max())
                colour = sequential(m, scale) if m.min() >= 0 else diverging(m, scale)
                reps = max(1, side // m.shape[0])
                colour = np.repeat(np.repeat(colour, reps, 0), reps, 1)[:side, :side]
                pad = side - colour.shape[0]
                if pad:  # (an output side that does not divide the input's)
                    colour = np.pad(colour, ((0, pad), (0, pad), (0, 0)), constant_values=np.nan)
                tiles.append(colour)
                labels.append(f"max {scale:.2g}")
        h, w = maps.shape[-2:]
        title = (
            f"Feature maps of {layer} ({maps.shape[1]} channels, {h}×{w}) for {len(x)} "
            f"validation images{when(trainer)}\n"
            f"the {len(top)} channels most active on them; each map on its own scale "
            "(black 0 … yellow max; blue < 0 < red if signed)"
        )
        fig = tile_figure(
            tiles,
            cols=len(top) + 1,
            title=title,
            labels=labels,
            col_labels=["image", *(f"ch {c}" for c in top)],
            tile_px=72,
        )
        publish(trainer, fig, self.log_dir, self.filename, "feature_maps", trainer.current_epoch)


class TopPatches(_LayerCallback):
    """Writes ``<run folder>/top_patches.png`` after every validation epoch (TensorBoard:
    ``top_patches``): for each of the first ``channels`` channels of ``layer``, the ``k``
    validation images whose strongest response in that channel is highest, cropped to the
    receptive field of the unit that responds (grey where it reaches past the image). The
    number under a patch is the activation.

    Args:
        layer: as for :class:`FeatureMaps`.
        k: patches per channel.
        channels: channels shown (the first ones).
    """

    def __init__(
        self,
        layer: str | None = None,
        k: int = 8,
        channels: int = 16,
        filename: str = "top_patches.png",
    ) -> None:
        super().__init__(layer, filename)
        self.k = k
        self.channels = channels
        self._field: Field | None = None
        self._reset()

    def _reset(self) -> None:
        self._values: torch.Tensor | None = None  # (C, k), descending; -inf where empty
        self._patches: torch.Tensor | None = None  # (C, k, rf, rf, 3) display pixels

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def _crop(self, pixels: torch.Tensor, row: int, col: int) -> torch.Tensor:
        """The receptive field of unit (row, col) in an image (H, W, 3), NaN outside it."""
        f = self._field
        top, bottom = f.box(row)
        left, right = f.box(col)
        h, w = pixels.shape[:2]
        out = pixels.new_full((f.size, f.size, 3), float("nan"))
        t, b, lft, r = max(top, 0), min(bottom, h), max(left, 0), min(right, w)
        if t < b and lft < r:
            out[t - top : b - top, lft - left : r - left] = pixels[t:b, lft:r]
        return out

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if trainer.sanity_checking:
            return
        x = batch[0]
        layer, maps = self._features(pl_module, x)
        if maps.dim() != 4:
            return
        if self._field is None:
            self._field = receptive_field(_network(pl_module), layer, x.shape[1], x.shape[-1])
            if self._field is None:  # not measurable: show whole images
                self._field = Field(x.shape[-1], 0, 0)
        maps = maps[:, : self.channels].cpu()
        c, w = maps.shape[1], maps.shape[3]
        best, where = maps.flatten(2).max(dim=2)  # (N, C): each image's strongest unit
        if self._values is None:
            rf = self._field.size
            self._values = torch.full((c, self.k), float("-inf"))
            self._patches = torch.full((c, self.k, rf, rf, 3), float("nan"))
        old = self._values.shape[1]
        values, index = torch.cat([self._values, best.T], dim=1).topk(self.k, dim=1)
        pixels = torch.from_numpy(display_images(x, trainer.datamodule))
        patches = self._patches.new_full((c, self.k, *self._patches.shape[2:]), float("nan"))
        for ch in range(c):
            for j, src in enumerate(index[ch].tolist()):
                if src < old:
                    patches[ch, j] = self._patches[ch, src]
                else:
                    i = src - old
                    row, col = divmod(int(where[i, ch]), w)
                    patches[ch, j] = self._crop(pixels[i], row, col)
        self._values, self._patches = values, patches

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self._values is None:
            return
        values, patches = self._values, self._patches
        if trainer.world_size > 1:  # every process saw part of the validation set
            device = pl_module.device
            all_values = pl_module.all_gather(values.to(device)).cpu()  # (W, C, k)
            all_patches = pl_module.all_gather(patches.nan_to_num(-1.0).to(device)).cpu()
            merged = all_values.permute(1, 0, 2).flatten(1)
            values, index = merged.topk(self.k, dim=1)
            flat = all_patches.permute(1, 0, 2, 3, 4, 5).flatten(1, 2)
            patches = torch.stack([flat[ch, index[ch]] for ch in range(len(index))])
            patches = patches.masked_fill(patches < 0, float("nan"))
        self._write(trainer, values, patches)

    @rank_zero_only
    def _write(self, trainer, values: torch.Tensor, patches: torch.Tensor) -> None:
        layer = self.layer or self._chosen
        c, k = values.shape
        tiles, labels = [], []
        for ch in range(c):
            for j in range(k):
                tiles.append(patches[ch, j].numpy())
                v = float(values[ch, j])
                labels.append(f"{v:.2g}" if np.isfinite(v) else "")
        f = self._field
        title = (
            f"Validation patches that activate each channel of {layer} most "
            f"(receptive field {f.size}×{f.size} px){when(trainer)}\n"
            "one patch per image, strongest first; the number: the activation"
        )
        fig = tile_figure(
            tiles,
            cols=k,
            title=title,
            labels=labels,
            row_labels=[f"ch {ch}" for ch in range(c)],
            tile_px=48,
        )
        publish(trainer, fig, self.log_dir, self.filename, "top_patches", trainer.current_epoch)
