"""Rectangular boolean masks for the mask IoU, NMS and association tests."""

from __future__ import annotations

import torch

H = W = 32


def box(x0: int, y0: int, x1: int, y1: int, size: tuple[int, int] = (H, W)) -> torch.Tensor:
    m = torch.zeros(size, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def stack(*masks: torch.Tensor) -> torch.Tensor:
    return torch.stack(masks) if masks else torch.zeros(0, H, W, dtype=torch.bool)
