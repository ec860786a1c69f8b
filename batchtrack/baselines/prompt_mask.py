"""The first mask of a classical baseline's object: the prompt's mask, or GrabCut inside its box or around its points.

GrabCut (cv2.grabCut) separates foreground from background with colour models seeded by the prompt; when it
keeps almost nothing of the box, the box itself is the better guess.
"""

from __future__ import annotations

import cv2
import numpy as np

from batchtrack.errors import PromptError
from batchtrack.model.types import Prompt

_GRABCUT_ITERATIONS = 3


def _grabcut(image: np.ndarray, init: np.ndarray) -> np.ndarray | None:
    """Run GrabCut from an initial label map (cv2.GC_* values); None when it cannot run."""
    labels = init.astype(np.uint8).copy()
    has_fg = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).any()
    has_bg = np.isin(labels, (cv2.GC_BGD, cv2.GC_PR_BGD)).any()
    if not (has_fg and has_bg):
        return None
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(image), labels, None, bgd, fgd, _GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        # GrabCut's colour models need samples of both kinds; a box covering the whole frame has none.
        return None
    return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))


def initial_mask(prompt: Prompt, image: np.ndarray) -> np.ndarray:
    """(H, W) bool mask that starts tracking `prompt` on `image`."""
    height, width = image.shape[:2]
    where = f"prompt for object {prompt.object_id} on frame {prompt.frame_index}"
    if prompt.mask is not None:
        mask = np.asarray(prompt.mask).astype(bool)
        if mask.shape != (height, width):
            raise PromptError(f"{where}: mask shape {mask.shape} differs from the frame's {(height, width)}")
        return mask
    if prompt.box is None and prompt.points is None:
        raise PromptError(f"{where}: has no box, points or mask")
    init = np.full((height, width), cv2.GC_BGD, dtype=np.uint8)
    positive = np.zeros((0, 2), dtype=np.float32)
    negative = np.zeros((0, 2), dtype=np.float32)
    if prompt.points is not None:
        points = np.asarray(prompt.points, dtype=np.float32).reshape(-1, 2)
        labels = np.ones(len(points), np.int32) if prompt.point_labels is None else np.asarray(prompt.point_labels)
        if labels.shape != (len(points),):
            raise PromptError(f"{where}: {len(points)} points but point_labels of shape {labels.shape}")
        positive, negative = points[labels == 1], points[labels != 1]
    if prompt.box is not None:
        x0, y0, x1, y1 = (float(v) for v in np.asarray(prompt.box, dtype=np.float32).reshape(4))
    elif len(positive):
        # Without a box, the region around the positive points is where the object can be.
        pad = 0.1 * min(height, width)
        x0, y0 = positive.min(axis=0) - pad
        x1, y1 = positive.max(axis=0) + pad
    else:
        raise PromptError(f"{where}: points prompt without any positive point")
    ix0, iy0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    ix1, iy1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    if ix1 <= ix0 or iy1 <= iy0:
        raise PromptError(f"{where}: box {[x0, y0, x1, y1]} does not overlap the {width}x{height} frame")
    region = np.zeros((height, width), dtype=bool)
    region[iy0:iy1, ix0:ix1] = True
    init[region] = cv2.GC_PR_FGD
    radius = max(2, min(height, width) // 60)
    for x, y in positive:
        cv2.circle(init, (round(float(x)), round(float(y))), radius, cv2.GC_FGD, thickness=-1)
    for x, y in negative:
        cv2.circle(init, (round(float(x)), round(float(y))), radius, cv2.GC_BGD, thickness=-1)
    if ix1 - ix0 < 4 or iy1 - iy0 < 4:
        return region
    mask = _grabcut(image, init)
    # A GrabCut that keeps almost nothing of the box has failed; the box itself is the better guess.
    if mask is None or mask.sum() < 0.15 * region.sum():
        return region
    return mask
