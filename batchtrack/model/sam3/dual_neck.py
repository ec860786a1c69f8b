"""SAM 3's dual ViTDet neck and its image encoder (PE ViT trunk + neck), keys as under
`detector.backbone.vision_backbone.` (trunk.*, convs.*, sam2_convs.*).

One trunk map feeds two SimpleFPN necks with the same shape and separate weights: `convs` for the
detector and `sam2_convs` for the tracker. Each level is a resampling stage (x4: two 2x2 transposed
convs with a GELU between; x2: one; x1: none; x0.5: 2x2 max-pool), then a 1x1 and a 3x3 conv to d_model.

Letters: B frames, C trunk channels, D d_model (256), G grid side, H x W a level's side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from batchtrack.model.configs import PEViTConfig
from batchtrack.model.nn.position_encoding import SinePositionEncoding
from batchtrack.model.sam3.pe_vit import PEViT
from batchtrack.model.tracker.image_encoder import ImageFeatures


def _level(dim: int, d_model: int, scale: float) -> nn.Sequential:
    """One neck level; submodule names are the official keys (dconv_2x2_0, conv_1x1, ...)."""
    level = nn.Sequential()
    out = dim
    if scale == 4.0:
        level.add_module("dconv_2x2_0", nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2))
        level.add_module("gelu", nn.GELU())
        level.add_module("dconv_2x2_1", nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2))
        out = dim // 4
    elif scale == 2.0:
        level.add_module("dconv_2x2", nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2))
        out = dim // 2
    elif scale == 0.5:
        level.add_module("maxpool_2x2", nn.MaxPool2d(kernel_size=2, stride=2))
    level.add_module("conv_1x1", nn.Conv2d(out, d_model, kernel_size=1))
    level.add_module("conv_3x3", nn.Conv2d(d_model, d_model, kernel_size=3, padding=1))
    return level


@dataclass
class DualFeatures:
    """Both necks' levels, highest resolution first, coarsest `scalp` levels dropped."""

    detector: ImageFeatures  # the `convs` branch
    tracker: ImageFeatures  # the `sam2_convs` branch


class Sam3ImageEncoder(nn.Module):
    """PE ViT trunk + dual neck. `forward` gives the tracker branch as `ImageFeatures` (what `Tracker` reads);
    `forward_dual` gives both branches (the detector's input)."""

    def __init__(self, config: PEViTConfig, image_size: int) -> None:
        super().__init__()
        self.trunk = PEViT(config, image_size)
        dim, d = config.embed_dim, config.d_model
        self.convs = nn.ModuleList(_level(dim, d, s) for s in config.scale_factors)
        self.sam2_convs = nn.ModuleList(_level(dim, d, s) for s in config.scale_factors)
        self.position_encoding = SinePositionEncoding(d)
        self.kept = len(config.scale_factors) - config.scalp

    def _branch(self, convs: nn.ModuleList, x: torch.Tensor) -> ImageFeatures:
        maps = [convs[i](x) for i in range(self.kept)]  # each (B, D, H, W)
        return ImageFeatures(backbone_fpn=maps, vision_pos_enc=[self.position_encoding(m) for m in maps])

    def forward_dual(self, images: torch.Tensor) -> DualFeatures:
        x = self.trunk(images)  # (B, C, G, G)
        return DualFeatures(detector=self._branch(self.convs, x), tracker=self._branch(self.sam2_convs, x))

    def forward(self, images: torch.Tensor) -> ImageFeatures:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images shaped (B, 3, S, S), got {tuple(images.shape)}")
        return self._branch(self.sam2_convs, self.trunk(images))
