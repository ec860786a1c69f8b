"""DAVIS-style segmentation quality: J (region similarity) and F (boundary accuracy).

J is the intersection over union of a predicted and a ground-truth mask; two empty masks agree
perfectly (J = 1). F is the F-measure of boundary pixels: a predicted boundary pixel is correct when
a ground-truth boundary pixel lies within a tolerance of `bound_th` times the image diagonal, and
vice versa for recall. Scores of a clip are means over its frames; J&F is the mean of J and F.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

# DAVIS's boundary tolerance: a fraction of the image diagonal.
BOUND_TH = 0.008


def jaccard(gt: np.ndarray, pred: np.ndarray) -> float:
    """Region similarity J of two (H, W) masks; 1.0 when both are empty."""
    gt, pred = _as_bool(gt, "gt"), _as_bool(pred, "pred")
    _same_shape(gt, pred)
    union = np.count_nonzero(gt | pred)
    if union == 0:
        return 1.0
    return np.count_nonzero(gt & pred) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of `mask` whose right, lower or lower-right neighbour differs.

    This is how DAVIS thins a mask to a one-pixel boundary. Neighbours outside the image are
    ignored, so a mask touching the border has no boundary along the border itself.
    """
    m = _as_bool(mask, "mask")
    boundary = np.zeros_like(m)
    boundary[:, :-1] |= m[:, :-1] != m[:, 1:]
    boundary[:-1, :] |= m[:-1, :] != m[1:, :]
    boundary[:-1, :-1] |= m[:-1, :-1] != m[1:, 1:]
    return boundary


def _disk(radius: int) -> np.ndarray:
    size = 2 * radius + 1
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (xx * xx + yy * yy <= radius * radius).astype(np.uint8).reshape(size, size)


def boundary_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure of two (H, W) masks; 1.0 when both are empty, 0.0 when exactly one is.

    `bound_th` < 1 is a fraction of the image diagonal, >= 1 a distance in pixels.
    """
    gt, pred = _as_bool(gt, "gt"), _as_bool(pred, "pred")
    _same_shape(gt, pred)
    radius = int(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(*gt.shape))
    gt_b, pred_b = boundary_map(gt), boundary_map(pred)
    n_gt, n_pred = int(gt_b.sum()), int(pred_b.sum())
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0
    kernel = _disk(radius)
    gt_near = cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)
    pred_near = cv2.dilate(pred_b.astype(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(pred_b & gt_near) / n_pred
    recall = np.count_nonzero(gt_b & pred_near) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


class MeanJF:
    """Mixin for a score with `j` and `f` fields: J&F is their mean, as DAVIS defines it."""

    j: float
    f: float

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2.0


@dataclass(frozen=True)
class SequenceScore(MeanJF):
    """J, F and J&F of one object over a sequence of frames (means over frames)."""

    j: float
    f: float
    num_frames: int


def score_sequence(pairs: Iterable[tuple[np.ndarray, np.ndarray]], bound_th: float = BOUND_TH) -> SequenceScore:
    """Mean J and F over (gt, pred) mask pairs of one object; an empty sequence scores NaN."""
    js, fs = [], []
    for gt, pred in pairs:
        js.append(jaccard(gt, pred))
        fs.append(boundary_f(gt, pred, bound_th))
    if not js:
        return SequenceScore(j=float("nan"), f=float("nan"), num_frames=0)
    return SequenceScore(j=float(np.mean(js)), f=float(np.mean(fs)), num_frames=len(js))


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) mask, got shape {array.shape}")
    return array.astype(bool, copy=False)


def _same_shape(gt: np.ndarray, pred: np.ndarray) -> None:
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred masks differ in shape: {gt.shape} vs {pred.shape}")
