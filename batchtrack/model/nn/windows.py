"""Window partition for windowed attention (Hiera's and PE ViT's blocks): a (B, H, W, C) map cut into w x w windows.

Letters: B frames, H x W the map, C channels, w window side, nW windows per frame, Hp x Wp the padded map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split (B, H, W, C) into (B * nW, w, w, C) windows, zero-padding H and W up to multiples of w."""
    batch, height, width, channels = x.shape
    pad_h = (window - height % window) % window
    pad_w = (window - width % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C)
    hp, wp = height + pad_h, width + pad_w
    x = x.view(batch, hp // window, window, wp // window, window, channels)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, channels)  # (B * nW, w, w, C)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nW, w, w, C) -> (B, H, W, C), padding removed."""
    hp, wp = padded_hw
    height, width = hw
    batch = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(batch, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, hp, wp, -1)  # (B, Hp, Wp, C)
    if hp > height or wp > width:
        x = x[:, :height, :width, :]
    return x
