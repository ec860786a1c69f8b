"""Box and coordinate helpers shared by SAM 3's detector modules (DETR decoder, geometry encoder, detections).

Boxes are normalised to the model input: (cx, cy, w, h) or (x0, y0, x1, y1) in [0, 1]. Letters: K any number
of boxes or points (leading dimensions are kept), F channels per coordinate.
"""

from __future__ import annotations

import math

import torch

_INVERSE_SIGMOID_EPS = 1e-3


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre/size boxes -> (..., 4) corner boxes."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) corner boxes -> (..., 4) centre/size boxes."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """log(x / (1 - x)) of x clamped to [0, 1], both terms floored at 1e-3 (SAM 3's box-refinement logit)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=_INVERSE_SIGMOID_EPS) / (1 - x).clamp(min=_INVERSE_SIGMOID_EPS))


def sine_coordinates(coords: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """(K,) coordinates in [0, 1] -> (K, num_feats) sine features, sin and cos interleaved.

    Channel pair i turns at frequency temperature ** (2 i / num_feats) over a 2 pi range, the encoding DETR-style
    models give a query's reference box and SAM 3's geometry encoder gives exemplar points and boxes.
    """
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)  # (F,)
    angles = (coords * (2 * math.pi))[..., None] / dim_t  # (..., F)
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)  # (..., F)
