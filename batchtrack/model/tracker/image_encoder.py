"""Image encoder: a Hiera trunk and an FPN neck, checkpoint-compatible with SAM 2.1's `image_encoder.*` keys.

Letters: B frames, S input side, H/W feature height/width, C channels, N tokens, w window side,
nW windows per frame, h heads, d head dim.

The encoder does not depend on the tracker's memory, so a clip's frames can be encoded ahead in batches.
Attribute names equal the official state-dict keys (trunk.blocks.N.attn.qkv, neck.convs.N.conv, ...).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from batchtrack.model.configs import PATCH_STRIDE, ImageEncoderConfig
from batchtrack.model.nn.position_encoding import SinePositionEncoding
from batchtrack.model.nn.windows import window_partition, window_unpartition

_LAYER_NORM_EPS = 1e-6
_Q_STRIDE = 2


@dataclass
class ImageFeatures:
    """FPN output of a batch of frames, highest resolution first (strides 4, 8, 16 for SAM 2.1)."""

    backbone_fpn: list[torch.Tensor]  # each (B, d_model, H_l, W_l)
    vision_pos_enc: list[torch.Tensor]  # each (B, d_model, H_l, W_l), sine encoding of the level

    @property
    def vision_features(self) -> torch.Tensor:
        """The lowest-resolution kept level (stride 16): what memory attention and the decoder attend over."""
        return self.backbone_fpn[-1]

    def select(self, index: int | slice) -> ImageFeatures:
        """The features of some frames of the batch, batch dimension kept."""
        idx = slice(index, index + 1) if isinstance(index, int) else index
        return ImageFeatures(
            backbone_fpn=[f[idx] for f in self.backbone_fpn],
            vision_pos_enc=[p[idx] for p in self.vision_pos_enc],
        )


def _max_pool_channels_last(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool of a (B, H, W, C) map -> (B, H/2, W/2, C)."""
    x = F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=_Q_STRIDE, stride=_Q_STRIDE)  # (B, C, H/2, W/2)
    return x.permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """7x7 convolution with stride 4: (B, 3, S, S) -> (B, S/4, S/4, C) channels-last tokens."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=PATCH_STRIDE, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # (B, H, W, C)


class Mlp(nn.Module):
    """Linear layers with an activation between them (none after the last)."""

    def __init__(self, dims: list[int], activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return x


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention over windows; on a stage transition the queries are 2x2 max-pooled first."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, pool_queries: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pool_queries = pool_queries
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape  # batch = B * nW, height = width = w (or H, W when global)
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1)  # (B', N, 3, h, d)
        q, k, v = qkv.unbind(2)  # each (B', N, h, d)
        if self.pool_queries:
            q = _max_pool_channels_last(q.reshape(batch, height, width, -1))  # (B', w/2, w/2, h * d)
            height, width = q.shape[1:3]
            q = q.reshape(batch, height * width, self.num_heads, -1)  # (B', N/4, h, d)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B', h, N, d)
        out = out.transpose(1, 2).reshape(batch, height, width, -1)  # (B', w, w, h * d)
        return self.proj(out)


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block over windows; the first block of stages 2-4 doubles channels and halves H, W."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, window_size: int, pool: bool, mlp_ratio: float) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.window_size = window_size
        self.pool = pool
        self.norm1 = nn.LayerNorm(dim, eps=_LAYER_NORM_EPS)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, pool_queries=pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=_LAYER_NORM_EPS)
        self.mlp = Mlp([dim_out, int(dim_out * mlp_ratio), dim_out])
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H', W', C')
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            # The residual is projected from the *normalised* input, then pooled like the queries.
            shortcut = self.proj(x)  # (B, H, W, C')
            if self.pool:
                shortcut = _max_pool_channels_last(shortcut)  # (B, H/2, W/2, C')
        window = self.window_size
        height, width = x.shape[1:3]
        padded_hw = (height, width)
        if window > 0:
            x, padded_hw = window_partition(x, window)  # (B * nW, w, w, C)
        x = self.attn(x)  # (B * nW, w', w', C'), w' = w/2 when pooling
        if self.pool:
            # This block partitioned with the previous stage's window; its output lives on the
            # pooled grid, so it is un-partitioned with half that window ("window size lag").
            window = window // _Q_STRIDE
            height, width = shortcut.shape[1:3]
            if window > 0:
                padded_hw = (height + (window - height % window) % window, width + (window - width % window) % window)
        if self.window_size > 0:
            x = window_unpartition(x, window, padded_hw, (height, width))  # (B, H', W', C')
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """Hierarchical ViT trunk: returns the four stage-end maps channels-first, highest resolution first."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        if config.drop_path_rate > 0:
            raise NotImplementedError("drop_path_rate > 0 (stochastic depth) is not implemented")
        self.window_spec = config.window_spec
        self.stage_ends = [sum(config.stages[: i + 1]) - 1 for i in range(len(config.stages))]
        pool_blocks = {end + 1 for end in self.stage_ends[:-1]}
        self.pos_embed = nn.Parameter(torch.zeros(1, config.embed_dim, *config.window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, config.embed_dim, config.window_spec[0], config.window_spec[0])
        )
        self.patch_embed = PatchEmbed(config.embed_dim)

        blocks = []
        dim, heads, stage = config.embed_dim, config.num_heads, 0
        for i in range(config.depth):
            # The window size is chosen before the stage index advances: the first block of a
            # stage still partitions with the previous stage's window.
            window = 0 if i in config.global_att_blocks else config.window_spec[stage]
            dim_out = dim
            if i in pool_blocks:
                dim_out, heads, stage = dim * 2, heads * 2, stage + 1
            blocks.append(MultiScaleBlock(dim, dim_out, heads, window, i in pool_blocks, config.mlp_ratio))
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)
        self.channel_list = [self.blocks[i].dim_out for i in reversed(self.stage_ends)]

    def _pos_embed(self, height: int, width: int) -> torch.Tensor:
        """Background embedding resized to the token grid plus the per-window embedding tiled over it."""
        window = self.pos_embed_window.shape[-1]
        pos = F.interpolate(self.pos_embed, size=(height, width), mode="bicubic")  # (1, C, H, W)
        pos = pos + self.pos_embed_window.tile(1, 1, height // window, width // window)  # (1, C, H, W)
        return pos.permute(0, 2, 3, 1)  # (1, H, W, C)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)  # (B, S/4, S/4, C)
        x = x + self._pos_embed(x.shape[1], x.shape[2])
        outputs = []
        ends = set(self.stage_ends)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in ends:
                outputs.append(x.permute(0, 3, 1, 2))  # (B, C_stage, H_stage, W_stage)
        return outputs


class _Lateral(nn.Module):
    """One 1x1 lateral convolution (a module of its own so the key reads `convs.N.conv`)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FpnNeck(nn.Module):
    """1x1 laterals to d_model; top-down nearest-neighbour fusion only into `fpn_top_down_levels`."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.position_encoding = SinePositionEncoding(config.d_model)
        # convs[0] takes the lowest-resolution map.
        self.convs = nn.ModuleList(_Lateral(c, config.d_model) for c in config.backbone_channel_list)
        self.fpn_top_down_levels = set(config.fpn_top_down_levels)

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n = len(self.convs) - 1
        if len(xs) != n + 1:
            raise ValueError(f"the neck expects {n + 1} trunk levels, got {len(xs)}")
        out: list[torch.Tensor] = [xs[0]] * (n + 1)
        pos: list[torch.Tensor] = [xs[0]] * (n + 1)
        previous: torch.Tensor | None = None
        for i in range(n, -1, -1):  # coarsest level first
            lateral = self.convs[n - i](xs[i])  # (B, d_model, H_i, W_i)
            if i in self.fpn_top_down_levels and previous is not None:
                # Upsampled in fp32 (as the reference does) so bf16 autocast gives the same fusion.
                top_down = F.interpolate(previous.to(torch.float32), scale_factor=2.0, mode="nearest")
                previous = lateral + top_down
            else:
                previous = lateral
            out[i] = previous
            pos[i] = self.position_encoding(previous).to(previous.dtype)
        return out, pos


class ImageEncoder(nn.Module):
    """Frames (B, 3, S, S), normalised -> `ImageFeatures` at strides 4, 8, 16 (with scalp 1)."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.trunk = Hiera(config)
        self.neck = FpnNeck(config)
        self.scalp = config.scalp

    def forward(self, images: torch.Tensor) -> ImageFeatures:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images shaped (B, 3, S, S), got {tuple(images.shape)}")
        features, pos = self.neck(self.trunk(images))
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return ImageFeatures(backbone_fpn=features, vision_pos_enc=pos)
