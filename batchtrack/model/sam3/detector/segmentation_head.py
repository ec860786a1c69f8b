"""SAM 3's segmentation head: a mask per decoder query from a pixel decoder over the detector's neck levels.

The fusion encoder's image memory first attends once more to the prompt (pre-norm, residual). It then takes
the place of the neck's coarsest kept level (stride 14), and the pixel decoder walks up the levels: upsample
(nearest) the running map to the next level's size, add that level, 3x3 conv, GroupNorm(8), ReLU. The finest
map (stride 3.5: 288 x 288 at 1008 px) gives per-pixel embeddings (1x1 conv); each query's mask logits are
the dot product of its MLP embedding with them. A 1x1 conv of the same map is the semantic (concept-wide)
logit map. Attribute names are Meta's keys below `detector.segmentation_head.`; the pixel decoder holds one
conv + norm per configured stage even when fewer levels are present (SAM 3 keeps 3 and uses 2).

Letters: N prompts, Q queries, D d_model, P prompt tokens, H x W the coarse grid, h x w the finest level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from batchtrack.model.nn.layers import MLP

_GROUPS = 8


@dataclass
class SegmentationOutput:
    mask_logits: torch.Tensor  # (N, Q, h, w) per query, at the finest neck level
    semantic_logits: torch.Tensor  # (N, 1, h, w) the prompt's concept anywhere in the image


class PixelDecoder(nn.Module):
    """Neck levels, finest first (the coarsest replaced by the encoder memory) -> (N, D, h, w)."""

    def __init__(self, d_model: int, num_convs: int) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList(nn.Conv2d(d_model, d_model, 3, padding=1) for _ in range(num_convs))
        self.norms = nn.ModuleList(nn.GroupNorm(_GROUPS, d_model) for _ in range(num_convs))

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        x = levels[-1]
        for i, level in enumerate(reversed(levels[:-1])):
            # Levels may hold one image for N prompts: broadcasting in the sum gives one map per prompt.
            x = level + F.interpolate(x, size=level.shape[-2:], mode="nearest")
            x = F.relu(self.norms[i](self.conv_layers[i](x)))
        return x


class MaskPredictor(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.mask_embed = MLP(d_model, d_model, d_model, 3)

    def forward(self, queries: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """(N, Q, D) queries, (N, D, h, w) pixel embeddings -> (N, Q, h, w) mask logits."""
        return torch.einsum("nqc,nchw->nqhw", self.mask_embed(queries), pixels)


class SegmentationHead(nn.Module):
    def __init__(self, d_model: int, num_heads: int, pixel_decoder_convs: int) -> None:
        super().__init__()
        self.pixel_decoder = PixelDecoder(d_model, pixel_decoder_convs)
        self.mask_predictor = MaskPredictor(d_model)
        self.cross_attend_prompt = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.cross_attn_norm = nn.LayerNorm(d_model)
        self.semantic_seg_head = nn.Conv2d(d_model, 1, kernel_size=1)
        self.instance_seg_head = nn.Conv2d(d_model, d_model, kernel_size=1)

    def forward(
        self,
        fine_levels: list[torch.Tensor],  # neck levels above the coarsest, finest first, each (1 or N, D, h_l, w_l)
        memory: torch.Tensor,  # (N, HW, D) fusion encoder output on the coarsest level's grid
        grid: tuple[int, int],  # (H, W) of that grid
        queries: torch.Tensor,  # (N, Q, D) the last decoder layer's normalised queries
        prompt: torch.Tensor,  # (N, P, D)
        prompt_padding: torch.Tensor,  # (N, P) True = padding
    ) -> SegmentationOutput:
        n, _, d = memory.shape
        y = self.cross_attn_norm(memory)
        memory = memory + self.cross_attend_prompt(y, prompt, prompt, key_padding_mask=prompt_padding)[0]
        coarse = memory.transpose(1, 2).reshape(n, d, *grid)  # (N, D, H, W)
        pixels = self.pixel_decoder([*fine_levels, coarse])  # (N, D, h, w)
        return SegmentationOutput(
            mask_logits=self.mask_predictor(queries, self.instance_seg_head(pixels)),
            semantic_logits=self.semantic_seg_head(pixels),
        )
