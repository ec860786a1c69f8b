"""Track identity against ground truth: per-frame matching of predicted tracks to objects, and ID switches."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment

FrameMasks = Mapping[int, Mapping[int, np.ndarray]]  # frame_index -> {id: (H, W) bool}


def match_frame(pred: Mapping[int, np.ndarray], gt: Mapping[int, np.ndarray], iou_threshold: float) -> dict[int, int]:
    """GT object -> predicted track on one frame: Hungarian on IoU, pairs with IoU >= threshold."""
    pred_ids = [t for t, m in pred.items() if np.asarray(m).any()]
    gt_ids = [g for g, m in gt.items() if np.asarray(m).any()]
    if not pred_ids or not gt_ids:
        return {}
    p = np.stack([np.asarray(pred[t], dtype=bool).reshape(-1) for t in pred_ids]).astype(np.float32)  # (P, HW)
    g = np.stack([np.asarray(gt[o], dtype=bool).reshape(-1) for o in gt_ids]).astype(np.float32)  # (G, HW)
    inter = g @ p.T  # (G, P)
    union = g.sum(1)[:, None] + p.sum(1)[None, :] - inter  # (G, P)
    iou = inter / np.maximum(union, 1.0)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return {
        gt_ids[r]: pred_ids[c] for r, c in zip(rows.tolist(), cols.tolist(), strict=True) if iou[r, c] >= iou_threshold
    }


def count_id_switches(pred_tracks: FrameMasks, gt_tracks: FrameMasks, *, iou_threshold: float = 0.5) -> int:
    """ID switches of predicted tracks against ground truth.

    Both arguments map frame_index -> {id: (H, W) bool mask}. On every frame, GT objects are
    matched one-to-one to predicted tracks with IoU >= `iou_threshold`; a switch is a GT object
    whose matched track id differs from the one it was last matched to (frames where it is
    unmatched do not reset it).
    """
    last: dict[int, int] = {}
    switches = 0
    for frame in sorted(gt_tracks):
        for gt_id, track in match_frame(pred_tracks.get(frame, {}), gt_tracks[frame], iou_threshold).items():
            if gt_id in last and last[gt_id] != track:
                switches += 1
            last[gt_id] = track
    return switches
