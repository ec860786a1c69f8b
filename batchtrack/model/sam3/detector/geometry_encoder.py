"""SAM 3's geometry encoder: exemplar boxes and points (positive or negative) -> prompt tokens.

Each exemplar becomes one token, the sum of: a linear map of its coordinates, a linear map of the image
features pooled at it (points: bilinear sample; boxes: RoIAlign to roi_size x roi_size, then a roi_size
conv), a linear map of the sine encoding of its position (boxes: centre plus height and width), and a label
embedding (negative / positive). Per prompt the tokens are packed without gaps: valid points, valid boxes, a
learned CLS token, then padding. They are projected and normalised, then attend to each other and to the
image (position encoding on the image keys) through `geometry_layers` pre-norm layers. With no exemplar at
all the CLS token is the whole output: SAM 3 appends it to every text prompt. Attribute names are Meta's
keys below `detector.geometry_encoder.`.

Letters: N prompts, K exemplars (Kp points, Kb boxes), D d_model, H x W the image grid, r roi_size, S samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from batchtrack.model.configs import DetectorConfig
from batchtrack.model.nn.boxes import cxcywh_to_xyxy, sine_coordinates
from batchtrack.model.sam3.detector.fusion_encoder import FusionLayer


@dataclass
class Exemplars:
    """Exemplar prompts of N prompts, batch first; padded entries are ignored. Coordinates normalised to [0, 1]."""

    boxes: torch.Tensor  # (N, Kb, 4) cx, cy, w, h
    box_labels: torch.Tensor  # (N, Kb) bool or int: 1 positive (more like this), 0 negative (not like this)
    box_padding: torch.Tensor  # (N, Kb) bool, True = no box here
    points: torch.Tensor  # (N, Kp, 2) x, y
    point_labels: torch.Tensor  # (N, Kp)
    point_padding: torch.Tensor  # (N, Kp)

    @staticmethod
    def none(n: int, device: torch.device | str | None = None) -> Exemplars:
        """No exemplar for any of n prompts (a text-only prompt: the geometry encoder gives its CLS token)."""
        return Exemplars(
            boxes=torch.zeros(n, 0, 4, device=device),
            box_labels=torch.zeros(n, 0, dtype=torch.long, device=device),
            box_padding=torch.zeros(n, 0, dtype=torch.bool, device=device),
            points=torch.zeros(n, 0, 2, device=device),
            point_labels=torch.zeros(n, 0, dtype=torch.long, device=device),
            point_padding=torch.zeros(n, 0, dtype=torch.bool, device=device),
        )


@dataclass
class GeometryTokens:
    tokens: torch.Tensor  # (N, Kp + Kb + 1, D), valid tokens first in each row
    padding: torch.Tensor  # (N, Kp + Kb + 1) True = padding


def _bilinear_weights(coords: torch.Tensor, size: int) -> torch.Tensor:
    """(S,) sample coordinates in pixels -> (S, size) interpolation weights, RoIAlign's edge rules.

    A sample more than one pixel outside the map is zero; one within a pixel of the edge is clamped to it.
    """
    inside = (coords >= -1.0) & (coords <= size)
    c = coords.clamp(min=0)
    low = c.floor().long().clamp(max=size - 1)
    at_end = low >= size - 1
    c = torch.where(at_end, low.to(c.dtype), c)
    high = torch.where(at_end, low, low + 1)
    frac = c - low.to(c.dtype)
    weights = torch.zeros(coords.shape[0], size, dtype=coords.dtype, device=coords.device)
    rows = torch.arange(coords.shape[0], device=coords.device)
    weights.index_put_((rows, low), 1 - frac, accumulate=True)
    weights.index_put_((rows, high), frac, accumulate=True)
    return weights * inside[:, None].to(coords.dtype)


def roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: int) -> torch.Tensor:
    """RoIAlign (torchvision's `roi_align(..., aligned=False, sampling_ratio=-1)`) of each image's boxes.

    features (N, D, H, W); boxes (N, K, 4) corners in feature pixels -> (N * K, D, r, r), image-major. Each
    output cell averages ceil(box side / r) x ceil(...) bilinear samples spread evenly over it; boxes are at
    least one pixel wide and high. One box at a time: the number of samples differs from box to box.
    """
    n, d, height, width = features.shape
    out = []
    for i in range(n):
        for x0, y0, x1, y1 in boxes[i].tolist():
            box_w, box_h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
            grid_h, grid_w = math.ceil(box_h / output_size), math.ceil(box_w / output_size)
            cell_h, cell_w = box_h / output_size, box_w / output_size
            ys = torch.arange(output_size * grid_h, dtype=features.dtype, device=features.device)
            xs = torch.arange(output_size * grid_w, dtype=features.dtype, device=features.device)
            # Sample j of cell c sits at (c + (j + 0.5) / grid) cell sizes from the box's corner.
            ys = y0 + torch.div(ys, grid_h, rounding_mode="floor") * cell_h + (ys % grid_h + 0.5) * cell_h / grid_h
            xs = x0 + torch.div(xs, grid_w, rounding_mode="floor") * cell_w + (xs % grid_w + 0.5) * cell_w / grid_w
            wy = _bilinear_weights(ys, height)  # (S_y, H)
            wx = _bilinear_weights(xs, width)  # (S_x, W)
            samples = torch.einsum("yh,dhw,xw->dyx", wy, features[i], wx)  # (D, S_y, S_x)
            cells = samples.reshape(d, output_size, grid_h, output_size, grid_w).sum(dim=(2, 4))  # (D, r, r)
            out.append(cells / max(grid_h * grid_w, 1))
    if not out:
        return features.new_zeros(0, d, output_size, output_size)
    return torch.stack(out)


def pack_valid_first(
    first: torch.Tensor, first_pad: torch.Tensor, second: torch.Tensor, second_pad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Join two batch-first padded sequences so each row holds its valid tokens first (first's, then second's).

    (N, A, D), (N, A) and (N, B, D), (N, B) -> (N, A + B, D), (N, A + B); padded slots hold zeros.
    """
    n, a, d = first.shape
    b = second.shape[1]
    len_first = (~first_pad).sum(dim=1)  # (N,)
    total = len_first + (~second_pad).sum(dim=1)  # (N,)
    out = first.new_zeros(n, a + b, d)
    out[:, :a] = first * (~first_pad)[..., None].to(first.dtype)
    valid_second = ~second_pad  # (N, B)
    rank = valid_second.long().cumsum(dim=1) - 1  # (N, B) position among the row's valid second tokens
    rows, cols = valid_second.nonzero(as_tuple=True)
    out[rows, len_first[rows] + rank[rows, cols]] = second[rows, cols]
    padding = torch.arange(a + b, device=first.device)[None] >= total[:, None]  # (N, A + B)
    return out, padding


class GeometryEncoder(nn.Module):
    """Exemplars + the image's coarsest detector level -> prompt tokens (ending with the CLS token)."""

    def __init__(self, config: DetectorConfig, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.roi_size = config.roi_size
        self.label_embed = nn.Embedding(2, d_model)
        self.cls_embed = nn.Embedding(1, d_model)
        self.points_direct_project = nn.Linear(2, d_model)
        self.points_pool_project = nn.Linear(d_model, d_model)
        self.points_pos_enc_project = nn.Linear(d_model, d_model)
        self.boxes_direct_project = nn.Linear(4, d_model)
        self.boxes_pool_project = nn.Conv2d(d_model, d_model, config.roi_size)
        self.boxes_pos_enc_project = nn.Linear(d_model + 2, d_model)
        self.final_proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.img_pre_norm = nn.LayerNorm(d_model)
        self.encode = nn.ModuleList(
            FusionLayer(
                d_model,
                config.num_heads,
                config.dim_feedforward,
                pos_in_self_attn=False,
                pos_in_cross_keys=True,
            )
            for _ in range(config.geometry_layers)
        )
        self.encode_norm = nn.LayerNorm(d_model)

    def _points(self, ex: Exemplars, pooled_from: torch.Tensor) -> torch.Tensor:
        grid = ex.points[:, :, None, :] * 2 - 1  # (N, Kp, 1, 2) in [-1, 1]
        sampled = F.grid_sample(pooled_from, grid, align_corners=False)[..., 0].transpose(1, 2)  # (N, Kp, D)
        x, y = ex.points.unbind(-1)  # each (N, Kp)
        half = self.d_model // 2
        sine = torch.cat([sine_coordinates(x, half), sine_coordinates(y, half)], dim=-1)  # (N, Kp, D)
        return (
            self.points_direct_project(ex.points)
            + self.points_pool_project(sampled)
            + self.points_pos_enc_project(sine)
            + self.label_embed(ex.point_labels.long())
        )

    def _boxes(self, ex: Exemplars, pooled_from: torch.Tensor) -> torch.Tensor:
        n, k, _ = ex.boxes.shape
        height, width = pooled_from.shape[-2:]
        scale = torch.tensor([width, height, width, height], dtype=ex.boxes.dtype, device=ex.boxes.device)
        cells = roi_align(pooled_from, cxcywh_to_xyxy(ex.boxes) * scale, self.roi_size)  # (N * Kb, D, r, r)
        pooled = self.boxes_pool_project(cells).reshape(n, k, self.d_model)  # (N, Kb, D)
        cx, cy, w, h = ex.boxes.unbind(-1)
        half = self.d_model // 2
        sine = torch.cat([sine_coordinates(cy, half), sine_coordinates(cx, half), h[..., None], w[..., None]], -1)
        return (
            self.boxes_direct_project(ex.boxes)
            + pooled
            + self.boxes_pos_enc_project(sine)
            + self.label_embed(ex.box_labels.long())
        )

    def forward(
        self,
        exemplars: Exemplars,
        image: torch.Tensor,  # (N, HW, D) the coarsest detector level's tokens
        image_pos: torch.Tensor,  # (N, HW, D)
        grid: tuple[int, int],  # (H, W)
    ) -> GeometryTokens:
        n = image.shape[0]
        # Pooling reads LayerNorm-ed features; the attention layers read the raw ones.
        pooled_from = self.img_pre_norm(image).transpose(1, 2).reshape(n, self.d_model, *grid)  # (N, D, H, W)
        tokens, padding = pack_valid_first(
            self._points(exemplars, pooled_from),
            exemplars.point_padding,
            self._boxes(exemplars, pooled_from),
            exemplars.box_padding,
        )
        cls = self.cls_embed.weight[None].expand(n, 1, -1)  # (N, 1, D)
        no_padding = torch.zeros(n, 1, dtype=torch.bool, device=padding.device)
        tokens, padding = pack_valid_first(tokens, padding, cls, no_padding)
        tokens = self.norm(self.final_proj(tokens))
        for layer in self.encode:
            tokens = layer(tokens, image, padding_mask=padding, memory_pos=image_pos)
        return GeometryTokens(tokens=self.encode_norm(tokens), padding=padding)
