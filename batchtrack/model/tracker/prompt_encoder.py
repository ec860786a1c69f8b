"""SAM prompt encoder: clicks and box corners → sparse tokens, a mask prompt → a dense map.

Letters: B objects, P points, C embedding channels (256), h x w the decoder's feature grid,
S the model's input side (image_size). Point coordinates are in model-input pixels (0..S).

Point labels: 1 positive click, 0 negative click, 2 / 3 box top-left / bottom-right corner, -1 padding.
SAM 2 always appends one padding point, so a prompt of P points yields P + 1 sparse tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from batchtrack.model.nn.layers import LayerNorm2d

PAD_LABEL = -1
NUM_POINT_KINDS = 4  # negative, positive, box top-left, box bottom-right


class RandomFourierEncoding(nn.Module):
    """Position encoding through a fixed random projection: [sin, cos](2π · (2p - 1) G) for p in [0, 1]²."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        # A buffer (saved in checkpoints), not a parameter: it is drawn once and never trained.
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def encode_unit(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] → (..., 2 * num_pos_feats)."""
        gaussian: torch.Tensor = self.positional_encoding_gaussian_matrix
        proj = (2 * coords - 1) @ gaussian  # (..., F)
        proj = 2 * math.pi * proj
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def grid(self, height: int, width: int) -> torch.Tensor:
        """Encoding of the centres of an height x width grid: (2F, h, w)."""
        device = self.positional_encoding_gaussian_matrix.device
        ones = torch.ones((height, width), device=device, dtype=torch.float32)
        y = (ones.cumsum(dim=0) - 0.5) / height  # (h, w)
        x = (ones.cumsum(dim=1) - 0.5) / width  # (h, w)
        return self.encode_unit(torch.stack([x, y], dim=-1)).permute(2, 0, 1)  # (2F, h, w)


class PromptEncoder(nn.Module):
    """Attribute names match `sam_prompt_encoder.*` in SAM 2.1 checkpoints."""

    def __init__(self, embed_dim: int, feature_size: int, image_size: int, mask_in_chans: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.feature_size = feature_size
        self.image_size = image_size
        self.mask_input_size = 4 * feature_size  # the low-res mask grid (stride 4)
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(NUM_POINT_KINDS))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_pe(self) -> torch.Tensor:
        """Position encoding of the decoder's feature grid: (1, C, h, w)."""
        return self.pe_layer.grid(self.feature_size, self.feature_size).unsqueeze(0)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, P, 2) pixel coords + (B, P) labels → (B, P + 1, C), with SAM 2's trailing padding point."""
        b = coords.shape[0]
        coords = coords + 0.5  # pixel centres
        coords = torch.cat([coords, coords.new_zeros(b, 1, 2)], dim=1)  # (B, P+1, 2)
        labels = torch.cat([labels, labels.new_full((b, 1), PAD_LABEL)], dim=1)  # (B, P+1)
        emb = self.pe_layer.encode_unit(coords / self.image_size)  # (B, P+1, C)
        lab = labels.unsqueeze(-1)  # (B, P+1, 1)
        emb = torch.where(lab == PAD_LABEL, torch.zeros_like(emb) + self.not_a_point_embed.weight, emb)
        for kind in range(NUM_POINT_KINDS):
            emb = torch.where(lab == kind, emb + self.point_embeddings[kind].weight, emb)
        return emb

    def embed_mask(self, masks: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, 1, 4h, 4w) mask logits → (B, C, h, w); `no_mask_embed` everywhere when there is no mask."""
        if masks is not None:
            return self.mask_downscaling(masks)
        side = self.feature_size
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, side, side)  # (B, C, h, w)

    def forward(
        self, coords: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse (B, P + 1, C) and dense (B, C, h, w) prompt embeddings."""
        return self.embed_points(coords, labels), self.embed_mask(masks, coords.shape[0])
