"""2-D sine position encoding of a feature map, numerically identical to SAM 2's `PositionEmbeddingSine`.

Letters: B batch, C channels (= num_pos_feats), H height, W width, F frequencies per axis (= C // 2).

Row positions 1..H and column positions 1..W are normalised to (0, scale] by dividing by (last + 1e-6);
each axis gets F channels whose pairs are interleaved [sin, cos, sin, cos, ...] at frequencies
temperature ** (2 * (i // 2) / F). The output puts the y channels first, then the x channels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_NORMALISE_EPS = 1e-6


class SinePositionEncoding(nn.Module):
    """Fixed (parameter-free) sine encoding of an (H, W) grid, cached per (H, W, device, dtype).

    `forward(x)` takes any tensor shaped (B, ..., H, W) and returns (B, num_pos_feats, H, W) in x's dtype.
    The result is a broadcast view of a cached tensor: do not modify it in place.
    """

    def __init__(
        self,
        num_pos_feats: int,
        temperature: float = 10000,
        normalize: bool = True,
        scale: float = 2 * math.pi,
    ) -> None:
        super().__init__()
        if num_pos_feats <= 0 or num_pos_feats % 4 != 0:
            # Each axis gets num_pos_feats // 2 channels made of (sin, cos) pairs.
            raise ValueError(f"num_pos_feats must be a positive multiple of 4, got {num_pos_feats}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self._cache: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    def extra_repr(self) -> str:
        return f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, normalize={self.normalize}"

    def _axis(self, length: int, device: torch.device) -> torch.Tensor:
        """Encode positions 1..length along one axis: (length, F) float32."""
        freqs = self.num_pos_feats // 2
        pos = torch.arange(1, length + 1, dtype=torch.float32, device=device)  # (L,)
        if self.normalize:
            # Same operation order as the reference (divide, then scale) so results agree bit for bit.
            pos = pos / (pos[-1:] + _NORMALISE_EPS) * self.scale
        dim_t = torch.arange(freqs, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / freqs)  # (F,)
        angles = pos[:, None] / dim_t  # (L, F)
        # (L, F/2, 2) -> (L, F): sin of even channels and cos of odd channels, interleaved.
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    @torch.no_grad()
    def encode(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The (C, H, W) encoding of an height x width grid (cached)."""
        key = (height, width, torch.device(device), dtype)
        cached = self._cache.get(key)
        if cached is None:
            freqs = self.num_pos_feats // 2
            pos_y = self._axis(height, key[2]).t()[:, :, None].expand(freqs, height, width)  # (F, H, W)
            pos_x = self._axis(width, key[2]).t()[:, None, :].expand(freqs, height, width)  # (F, H, W)
            cached = torch.cat((pos_y, pos_x), dim=0).to(dtype).contiguous()  # (C, H, W)
            self._cache[key] = cached
        return cached

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width = x.shape[0], x.shape[-2], x.shape[-1]
        pe = self.encode(height, width, x.device, x.dtype)  # (C, H, W)
        return pe.unsqueeze(0).expand(batch, -1, -1, -1)  # (B, C, H, W)
