"""SAM 3's image trunk: a Perception Encoder ViT (plain ViT, windowed + global blocks, 2-D axial RoPE).

Attribute names equal the official state-dict keys under `detector.backbone.vision_backbone.trunk.`
(patch_embed.proj, pos_embed, ln_pre, blocks.N.{norm1, attn.qkv, attn.proj, attn.freqs_cis, norm2, mlp.fc1,
mlp.fc2}); `freqs_cis` (the RoPE table, complex64) is a buffer stored in the checkpoint, and it is the
stored table that rotates q and k.

Letters: B frames, S input side, G grid side (S / patch), C channels, w window side, L tokens of one
attention (w*w or G*G), h heads, d head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from batchtrack.model.configs import PEViTConfig
from batchtrack.model.nn.windows import window_partition, window_unpartition

_LAYER_NORM_EPS = 1e-5


def axial_rope_table(head_dim: int, side: int, theta: float, scale: float) -> torch.Tensor:
    """(side*side, head_dim/2) complex64 rotations: first half of the pairs turn with x, second half with y.

    Token t sits at x = t mod side, y = t div side; positions are multiplied by `scale` (global blocks map
    their whole grid onto the window-sized range the model was trained with).
    """
    quarter = head_dim // 4
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4)[:quarter].float() / head_dim))  # (d/4,)
    t = torch.arange(side * side, dtype=torch.float32)
    x = (t % side) * scale
    y = torch.div(t, side, rounding_mode="floor") * scale
    angles = torch.cat([torch.outer(x, freqs), torch.outer(y, freqs)], dim=-1)  # (L, d/2)
    return torch.polar(torch.ones_like(angles), angles)


def _rotate(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of x (B, h, L, d) by table (L, d/2)."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (B, h, L, d/2)
    return torch.view_as_real(pairs * table).flatten(3).type_as(x)  # (B, h, L, d)


class PEAttention(nn.Module):
    """Multi-head self-attention over a (B, w, w, C) window (or the whole grid) with 2-D axial RoPE."""

    def __init__(self, dim: int, num_heads: int, side: int, rope_scale: float, rope_theta: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("freqs_cis", axial_rope_table(dim // num_heads, side, rope_theta, rope_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)  # (B, L, 3, heads, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, d)
        q, k = _rotate(q, self.freqs_cis), _rotate(k, self.freqs_cis)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, d)
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, c)  # (B, w, w, C)
        return self.proj(out)


class PEMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PEBlock(nn.Module):
    """Pre-norm ViT block; `window` > 0 attends within non-overlapping windows, 0 over the whole grid."""

    def __init__(self, config: PEViTConfig, grid: int, window: int) -> None:
        super().__init__()
        dim = config.embed_dim
        side = window if window > 0 else grid
        # RoPE was trained on windows: a global block squeezes its grid into the window's coordinate range.
        scale = config.window_size / side
        self.window = window
        self.norm1 = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)
        self.attn = PEAttention(dim, config.num_heads, side, scale, config.rope_theta)
        self.norm2 = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)
        self.mlp = PEMlp(dim, int(dim * config.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, G, G, C) -> (B, G, G, C)
        shortcut = x
        x = self.norm1(x)
        if self.window > 0:
            hw = (x.shape[1], x.shape[2])
            windows, padded = window_partition(x, self.window)  # (B * nW, w, w, C)
            x = window_unpartition(self.attn(windows), self.window, padded, hw)  # (B, G, G, C)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PEViT(nn.Module):
    """(B, 3, S, S) normalised frames -> (B, C, G, G): the output of the last global block."""

    def __init__(self, config: PEViTConfig, image_size: int) -> None:
        super().__init__()
        self.config = config
        grid = image_size // config.patch_size
        dim = config.embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, kernel_size=config.patch_size, stride=config.patch_size, bias=False)
        pretrain_grid = config.pretrain_img_size // config.patch_size
        # One extra row: the pretraining cls token's position, kept in the checkpoint, unused here.
        self.pos_embed = nn.Parameter(torch.zeros(1, pretrain_grid * pretrain_grid + 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.ln_pre = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)
        self.blocks = nn.ModuleList(
            PEBlock(config, grid, 0 if i in config.global_att_blocks else config.window_size)
            for i in range(config.depth)
        )
        self.out_block = max(config.global_att_blocks)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def _tiled_pos_embed(self, grid: int) -> torch.Tensor:
        """The pretraining grid's embedding repeated over a grid x grid map: (1, G, G, C)."""
        rows = self.pos_embed[:, 1:]  # (1, P*P, C)
        side = int(rows.shape[1] ** 0.5)
        pe = rows.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, C, P, P)
        if side != grid:
            reps = grid // side + 1
            pe = pe.tile(1, 1, reps, reps)[:, :, :grid, :grid]  # (1, C, G, G)
        return pe.permute(0, 2, 3, 1)  # (1, G, G, C)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(images).permute(0, 2, 3, 1)  # (B, G, G, C)
        x = self.ln_pre(x + self._tiled_pos_embed(x.shape[1]))
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.out_block:
                break
        return x.permute(0, 3, 1, 2)  # (B, C, G, G)
