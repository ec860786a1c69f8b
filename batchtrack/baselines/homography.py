"""HomographyTracker: each mask warped by a homography fitted to the corners tracked inside it.

KLT corners (cv2.goodFeaturesToTrack, cv2.calcOpticalFlowPyrLK) inside a dilated mask, forward-backward
checked, a RANSAC homography (cv2.findHomography); the median shift when too few corners agree.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from batchtrack.baselines.propagation import MaskPropagationTracker


def _disk_kernel(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


class HomographyTracker(MaskPropagationTracker):
    """Warp each mask by a homography fitted with RANSAC to KLT corner tracks inside the (dilated) mask."""

    name = "baseline-homography"

    def __repr__(self) -> str:
        return "HomographyTracker()"

    def __init__(self, max_corners: int = 300, margin: int = 5, ransac_threshold: float = 2.0) -> None:
        self.max_corners = max_corners
        self.margin = margin
        self.ransac_threshold = ransac_threshold
        self._lk = {"winSize": (15, 15), "maxLevel": 3}

    def _tracks(self, previous: np.ndarray, current: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        region = cv2.dilate(mask.astype(np.uint8), _disk_kernel(self.margin))
        corners = cv2.goodFeaturesToTrack(previous, self.max_corners, 0.01, 3, mask=region, blockSize=5)
        if corners is None or len(corners) < 4:
            return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
        moved, ok, _ = cv2.calcOpticalFlowPyrLK(previous, current, corners, None, **self._lk)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(current, previous, moved, None, **self._lk)
        # Forward-backward check: a corner that does not come back to itself was tracked wrongly.
        good = (ok[:, 0] == 1) & (ok_back[:, 0] == 1) & (np.linalg.norm((corners - back)[:, 0], axis=1) < 1.0)
        return corners[good, 0], moved[good, 0]

    def _propagate(self, state: Any, previous: np.ndarray, current: np.ndarray, mask: np.ndarray) -> np.ndarray:
        src, dst = self._tracks(previous, current, mask)
        if len(src) == 0:
            return mask
        height, width = mask.shape
        mask_u8 = mask.astype(np.uint8) * 255
        shift = np.median(dst - src, axis=0)
        translated = np.array([[1, 0, shift[0]], [0, 1, shift[1]]], dtype=np.float64)
        by_translation = cv2.warpAffine(mask_u8, translated, (width, height), flags=cv2.INTER_LINEAR) > 127
        if len(src) < 8:
            return by_translation
        homography, inliers = cv2.findHomography(src, dst, cv2.RANSAC, self.ransac_threshold)
        if homography is None or int(inliers.sum()) < 6:
            return by_translation
        warped = cv2.warpPerspective(mask_u8, homography, (width, height), flags=cv2.INTER_LINEAR) > 127
        # A homography fitted to few, clustered points can fold or blow up the mask; fall back to the shift.
        ratio = (warped.sum() + 1.0) / (mask.sum() + 1.0)
        if not 0.6 < ratio < 1.6:
            return by_translation
        return warped
