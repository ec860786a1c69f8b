"""Memory encoder: a frame's image feature fused with its predicted mask → 64-channel memory.
Attribute names match `memory_encoder.*` in SAM 2.1 checkpoints.

Letters: B objects, C image channels (256), M memory channels (64), h x w the feature grid,
S the model input side (= 16 h). The mask enters at S x S, already mapped to [-10, 10] by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from batchtrack.model.nn.layers import LayerNorm2d
from batchtrack.model.nn.position_encoding import SinePositionEncoding

MASK_DOWNSAMPLE_LAYERS = 4  # 4 stride-2 convs: total stride 16, the feature grid's stride


class MaskDownSampler(nn.Module):
    """4 x [Conv 3x3 stride 2 → LayerNorm2d → GELU] with channels 1→4→16→64→256, then a 1x1 conv."""

    def __init__(self, embed_dim: int, mask_size: int | None = None) -> None:
        super().__init__()
        self.mask_size = mask_size
        layers: list[nn.Module] = []
        chans = 1
        for _ in range(MASK_DOWNSAMPLE_LAYERS):
            conv = nn.Conv2d(chans, chans * 4, kernel_size=3, stride=2, padding=1)
            layers += [conv, LayerNorm2d(chans * 4), nn.GELU()]
            chans *= 4
        layers.append(nn.Conv2d(chans, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        if self.mask_size is not None and mask.shape[-1] != self.mask_size:
            # SAM 3: S = 1008 would land on a 63 grid; 1152 = 72 x 16 lands on the 72 feature grid.
            size = (self.mask_size, self.mask_size)
            mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.encoder(mask)  # (B, 1, S, S) -> (B, C, h, w)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 → LayerNorm2d → Linear 4x → GELU → Linear → layer scale → residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # (B, h, w, C)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))  # (B, h, w, C)
        return x + y.permute(0, 3, 1, 2)  # (B, C, h, w)


class Fuser(nn.Module):
    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


@dataclass
class Memory:
    features: torch.Tensor  # (B, M, h, w)
    pos: torch.Tensor  # (B, M, h, w) sine encoding of the grid (the same for every frame)


class MemoryEncoder(nn.Module):
    def __init__(self, dim: int, mem_dim: int, fuser_layers: int, mask_size: int | None = None) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(dim, mask_size)
        self.pix_feat_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.fuser = Fuser(dim, fuser_layers)
        self.position_encoding = SinePositionEncoding(mem_dim)
        self.out_proj = nn.Conv2d(dim, mem_dim, kernel_size=1)

    def forward(self, pix_feat: torch.Tensor, mask_for_mem: torch.Tensor) -> Memory:
        """pix_feat (B, C, h, w) raw image feature; mask_for_mem (B, 1, S, S) in [-10, 10]."""
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(mask_for_mem)  # (B, C, h, w)
        x = self.out_proj(self.fuser(x))  # (B, M, h, w)
        return Memory(features=x, pos=self.position_encoding(x))
