"""SAM 3's fusion encoder: image tokens attend to each other and to the prompt (text + exemplar tokens).

Six pre-norm layers, each: self-attention over the image tokens (position encoding on queries and keys),
cross-attention from the image tokens to the prompt tokens (padding masked), then a ReLU MLP. The prompt
itself passes through unchanged; the result ("memory") is what the DETR decoder and the segmentation head
read. Attribute names are Meta's keys below `detector.transformer.encoder.` (layers.N.self_attn,
layers.N.cross_attn_image, linear1, linear2, norm1..3). `FusionLayer` is also the geometry encoder's layer,
with the position encoding moved from the self-attention to the cross-attention keys.

Letters: N prompts (one image and one phrase each), T tokens of the attending sequence, S tokens attended
to, D d_model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from batchtrack.model.configs import DetectorConfig


class FusionLayer(nn.Module):
    """Pre-norm self-attention, cross-attention and MLP over a batch-first (N, T, D) sequence."""

    def __init__(
        self, d_model: int, num_heads: int, dim_feedforward: int, *, pos_in_self_attn: bool, pos_in_cross_keys: bool
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.cross_attn_image = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.pos_in_self_attn = pos_in_self_attn
        self.pos_in_cross_keys = pos_in_cross_keys

    def forward(
        self,
        x: torch.Tensor,  # (N, T, D)
        memory: torch.Tensor,  # (N, S, D)
        *,
        pos: torch.Tensor | None = None,  # (N, T, D), used when pos_in_self_attn
        padding_mask: torch.Tensor | None = None,  # (N, T) True = padding
        memory_pos: torch.Tensor | None = None,  # (N, S, D), used when pos_in_cross_keys
        memory_padding_mask: torch.Tensor | None = None,  # (N, S) True = padding
    ) -> torch.Tensor:
        y = self.norm1(x)
        q = y + pos if self.pos_in_self_attn and pos is not None else y
        x = x + self.self_attn(q, q, y, key_padding_mask=padding_mask, need_weights=False)[0]
        y = self.norm2(x)
        keys = memory + memory_pos if self.pos_in_cross_keys and memory_pos is not None else memory
        x = x + self.cross_attn_image(y, keys, memory, key_padding_mask=memory_padding_mask, need_weights=False)[0]
        return x + self.linear2(F.relu(self.linear1(self.norm3(x))))


class FusionEncoder(nn.Module):
    """(N, HW, D) image tokens + (N, P, D) prompt -> (N, HW, D) prompt-aware image memory."""

    def __init__(self, config: DetectorConfig, d_model: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            FusionLayer(
                d_model,
                config.num_heads,
                config.dim_feedforward,
                pos_in_self_attn=True,
                pos_in_cross_keys=False,
            )
            for _ in range(config.encoder_layers)
        )

    def forward(
        self,
        image: torch.Tensor,  # (N, HW, D)
        image_pos: torch.Tensor,  # (N, HW, D)
        prompt: torch.Tensor,  # (N, P, D)
        prompt_padding: torch.Tensor,  # (N, P) True = padding
    ) -> torch.Tensor:
        x = image
        for layer in self.layers:
            x = layer(x, prompt, pos=image_pos, memory_padding_mask=prompt_padding)
        return x
