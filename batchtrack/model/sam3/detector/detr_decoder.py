"""SAM 3's DETR-style decoder: object queries refine boxes layer by layer while reading the prompt and the image.

Each of the decoder's layers takes the queries (plus one presence token in front of them) through
self-attention, cross-attention to the prompt tokens, cross-attention to the fusion encoder's image memory
and a ReLU MLP (post-norm, as the checkpoint was trained). A query's position encoding is an MLP of the
sine encoding of its current reference box; its image cross-attention gets an additive bias per head from
the box's log-scaled distances to every grid row and column ("box relative position bias"), so a query
looks mostly inside and around its box. After each layer the normalised query predicts a box offset in
logit space (box refinement) and the presence token predicts one logit: whether the concept is in the image
at all. Attribute names are Meta's keys below `detector.transformer.decoder.`.

Letters: N prompts, Q queries, D d_model, h heads, P prompt tokens, HW image tokens (H x W grid), Y layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from batchtrack.model.configs import DetectorConfig
from batchtrack.model.nn.boxes import cxcywh_to_xyxy, inverse_sigmoid, sine_coordinates
from batchtrack.model.nn.layers import MLP

# Distances to the box edges, in image fractions, are stretched x8 before the signed log2, then divided by log2(8).
_RPB_STRETCH = 8.0
_RPB_LOG_NORM = 3.0


@dataclass
class DecoderOutput:
    """Per decoder layer (Y of them), batch first."""

    queries: torch.Tensor  # (Y, N, Q, D) the layer's output queries after the shared final LayerNorm
    boxes: torch.Tensor  # (Y, N, Q, 4) refined boxes, normalised cx, cy, w, h
    reference_boxes: torch.Tensor  # (Y, N, Q, 4) the boxes each layer started from (its position input)
    presence_logits: torch.Tensor  # (Y, N) presence token logit: is the prompt's concept in the image


class DetrDecoderLayer(nn.Module):
    """Self-attention, prompt cross-attention, image cross-attention (with a bias), MLP; post-norm."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int) -> None:
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.ca_text = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.catext_norm = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        x: torch.Tensor,  # (N, 1 + Q, D): presence token, then the queries
        pos: torch.Tensor,  # (N, 1 + Q, D): zero for the presence token
        memory: torch.Tensor,  # (N, HW, D)
        memory_pos: torch.Tensor,  # (N, HW, D)
        prompt: torch.Tensor,  # (N, P, D)
        prompt_padding: torch.Tensor,  # (N, P) True = padding
        image_bias: torch.Tensor,  # (N * h, 1 + Q, HW) added to the image attention logits
    ) -> torch.Tensor:
        q = x + pos
        x = self.norm2(x + self.self_attn(q, q, x, need_weights=False)[0])
        x = self.catext_norm(
            x + self.ca_text(x + pos, prompt, prompt, key_padding_mask=prompt_padding, need_weights=False)[0]
        )
        attended = self.cross_attn(x + pos, memory + memory_pos, memory, attn_mask=image_bias, need_weights=False)[0]
        x = self.norm1(x + attended)
        return self.norm3(x + self.linear2(F.relu(self.linear1(x))))


class DetrDecoder(nn.Module):
    """Queries + encoder memory + prompt -> per-layer queries, refined boxes and presence logits."""

    def __init__(self, config: DetectorConfig, d_model: int) -> None:
        super().__init__()
        h = config.num_heads
        self.d_model = d_model
        self.num_heads = h
        self.layers = nn.ModuleList(
            DetrDecoderLayer(d_model, h, config.dim_feedforward) for _ in range(config.decoder_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.query_embed = nn.Embedding(config.num_queries, d_model)
        self.reference_points = nn.Embedding(config.num_queries, 4)
        self.boxRPB_embed_x = MLP(2, d_model, h, 2)
        self.boxRPB_embed_y = MLP(2, d_model, h, 2)
        self.presence_token = nn.Embedding(1, d_model)
        self.presence_token_head = MLP(d_model, d_model, 1, 3)
        self.presence_token_out_norm = nn.LayerNorm(d_model)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)

    def _box_bias(self, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(N, Q, 4) cxcywh boxes -> (N, h, Q, HW) attention bias from log-scaled distances to the box edges."""
        n, q, _ = boxes.shape
        xyxy = cxcywh_to_xyxy(boxes)  # (N, Q, 4)
        rows = torch.arange(height, dtype=torch.float32, device=boxes.device) / height  # (H,)
        cols = torch.arange(width, dtype=torch.float32, device=boxes.device) / width  # (W,)
        dy = rows[None, None, :, None] - xyxy[:, :, None, 1::2]  # (N, Q, H, 2): to top and bottom edges
        dx = cols[None, None, :, None] - xyxy[:, :, None, 0::2]  # (N, Q, W, 2): to left and right edges
        dy = dy * _RPB_STRETCH
        dx = dx * _RPB_STRETCH
        dy = torch.sign(dy) * torch.log2(dy.abs() + 1.0) / _RPB_LOG_NORM
        dx = torch.sign(dx) * torch.log2(dx.abs() + 1.0) / _RPB_LOG_NORM
        by = self.boxRPB_embed_y(dy)  # (N, Q, H, h)
        bx = self.boxRPB_embed_x(dx)  # (N, Q, W, h)
        bias = by[:, :, :, None, :] + bx[:, :, None, :, :]  # (N, Q, H, W, h)
        return bias.reshape(n, q, height * width, -1).permute(0, 3, 1, 2)  # (N, h, Q, HW)

    def forward(
        self,
        memory: torch.Tensor,  # (N, HW, D)
        memory_pos: torch.Tensor,  # (N, HW, D)
        grid: tuple[int, int],  # (H, W)
        prompt: torch.Tensor,  # (N, P, D)
        prompt_padding: torch.Tensor,  # (N, P) True = padding
    ) -> DecoderOutput:
        n = memory.shape[0]
        height, width = grid
        x = self.query_embed.weight[None].expand(n, -1, -1)  # (N, Q, D)
        presence = self.presence_token.weight[None].expand(n, -1, -1)  # (N, 1, D)
        boxes = self.reference_points.weight.sigmoid()[None].expand(n, -1, -1)  # (N, Q, 4)
        queries, refined, starts, presence_logits = [], [], [], []
        for layer in self.layers:
            # Position of a query: MLP of the sine encoding of its box, coordinates in the order y, x, w, h.
            cx, cy, w, h = boxes.unbind(-1)
            sine = torch.cat([sine_coordinates(c, self.d_model // 2) for c in (cy, cx, w, h)], dim=-1)  # (N, Q, 2D)
            pos = self.ref_point_head(sine)  # (N, Q, D)
            pos = torch.cat([torch.zeros_like(presence), pos], dim=1)  # (N, 1 + Q, D)
            bias = self._box_bias(boxes, height, width)  # (N, h, Q, HW)
            # The presence token attends to the whole image: a zero bias row in front of the queries' rows.
            bias = torch.cat([torch.zeros_like(bias[:, :, :1]), bias], dim=2)  # (N, h, 1 + Q, HW)
            tokens = layer(
                torch.cat([presence, x], dim=1),
                pos,
                memory,
                memory_pos,
                prompt,
                prompt_padding,
                bias.flatten(0, 1),  # (N * h, 1 + Q, HW)
            )
            presence, x = tokens[:, :1], tokens[:, 1:]
            normed = self.norm(x)  # (N, Q, D)
            new_boxes = (self.bbox_embed(normed) + inverse_sigmoid(boxes)).sigmoid()  # (N, Q, 4)
            starts.append(boxes)
            queries.append(normed)
            refined.append(new_boxes)
            presence_logits.append(self.presence_token_head(self.presence_token_out_norm(presence))[:, 0, 0])  # (N,)
            # Each layer's box is a fresh starting point for the next: no gradient flows through the chain.
            boxes = new_boxes.detach()
        return DecoderOutput(
            queries=torch.stack(queries),
            boxes=torch.stack(refined),
            reference_boxes=torch.stack(starts),
            presence_logits=torch.stack(presence_logits),
        )
