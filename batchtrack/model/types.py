"""Typed values that cross the tracker's boundary: what to track in, per-frame results out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Prompt:
    """One prompt for one object on one frame. Coordinates are video pixels.

    Exactly one of `points` (with `point_labels`), `box` or `mask` is usually set; points and a box
    may be combined, as in SAM 2.
    """

    frame_index: int  # absolute frame index, same numbering as the frames given to Tracker.track
    object_id: int
    points: np.ndarray | None = None  # (P, 2) float32 x, y
    point_labels: np.ndarray | None = None  # (P,) int32: 1 foreground, 0 background
    box: np.ndarray | None = None  # (4,) float32 x0, y0, x1, y1
    mask: np.ndarray | None = None  # (H, W) bool at video resolution


@dataclass
class FrameResult:
    """The tracker's output for one frame: one entry per live object, in `object_ids` order."""

    frame_index: int
    object_ids: list[int]
    mask_logits: torch.Tensor  # (N, H, W) float32 at video resolution, on CPU; mask = logits > 0
    object_score_logits: torch.Tensor  # (N,) float32; > 0 means the object is visible
    iou_predictions: torch.Tensor  # (N,) float32 predicted IoU of the chosen mask
    object_pointers: torch.Tensor  # (N, 256) float32 object-pointer embeddings
