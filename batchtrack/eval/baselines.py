"""Classical ("traditional") mask trackers, the seed's point of comparison for the memory tracker.

Both carry the previous frame's mask of each object to the next frame, with nothing learned:
- `HomographyTracker`: KLT corners inside a dilated mask, forward-backward checked, a RANSAC homography
  (cv2.findHomography), the mask warped by it;
- `FlowTracker`: dense optical flow from the new frame back to the previous one (DIS or Farneback), the
  previous mask pulled along it (backward warping with cv2.remap).
They have the neural tracker's interface (`track(frames, prompts, *, reverse)` -> FrameResult per frame),
so the pipeline, the benchmark and the evaluation run them unchanged. A box prompt starts a mask with
GrabCut inside the box; once a mask is empty (the object is lost) it stays empty.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from batchtrack.errors import ConfigError, PromptError
from batchtrack.model.types import FrameResult, Prompt

POINTER_DIM = 256
# Logits of a hard mask: confident, but finite so that downstream sigmoid/threshold code behaves.
_LOGIT = 10.0
_GRABCUT_ITERATIONS = 3
_SMALL_DISK = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


def _disk_kernel(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _grabcut(image: np.ndarray, init: np.ndarray) -> np.ndarray | None:
    """Run GrabCut from an initial label map (cv2.GC_* values); None when it cannot run."""
    labels = init.astype(np.uint8).copy()
    has_fg = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).any()
    has_bg = np.isin(labels, (cv2.GC_BGD, cv2.GC_PR_BGD)).any()
    if not (has_fg and has_bg):
        return None
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(
            np.ascontiguousarray(image), labels, None, bgd, fgd, _GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK
        )
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
        labels = (
            np.ones(len(points), np.int32) if prompt.point_labels is None else np.asarray(prompt.point_labels)
        )
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


def _frame_result(frame_index: int, masks: dict[int, np.ndarray], shape: tuple[int, int]) -> FrameResult:
    ids = sorted(masks)
    stacked = np.stack([masks[i] for i in ids]) if ids else np.zeros((0, *shape), dtype=bool)  # (N, H, W)
    logits = torch.from_numpy(np.where(stacked, _LOGIT, -_LOGIT).astype(np.float32))
    visible = stacked.any(axis=(1, 2))  # (N,)
    return FrameResult(
        frame_index=frame_index,
        object_ids=ids,
        mask_logits=logits,
        object_score_logits=torch.from_numpy(np.where(visible, _LOGIT, -_LOGIT).astype(np.float32)),
        iou_predictions=torch.ones(len(ids), dtype=torch.float32),
        object_pointers=torch.zeros(len(ids), POINTER_DIM, dtype=torch.float32),
    )


class MaskPropagationTracker(ABC):
    """Shared frame loop: join objects at their prompts, carry every live mask from frame to frame."""

    name: str

    def track(
        self,
        frames: Iterable[tuple[int, np.ndarray]],
        prompts: Sequence[Prompt],
        *,
        reverse: bool = False,
    ) -> Iterator[FrameResult]:
        """Yield one FrameResult per frame, in the order given; `reverse` means indices decrease."""
        by_frame: dict[int, list[Prompt]] = defaultdict(list)
        for prompt in prompts:
            by_frame[prompt.frame_index].append(prompt)
        masks: dict[int, np.ndarray] = {}
        previous: np.ndarray | None = None  # grey image of the last frame
        last_index: int | None = None
        for frame_index, image in frames:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"frame {frame_index}: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
            if last_index is not None and (frame_index <= last_index if not reverse else frame_index >= last_index):
                order = "decreasing" if reverse else "increasing"
                raise ValueError(
                    f"frame {frame_index} came after frame {last_index}: reverse={reverse} needs {order} indices"
                )
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            if previous is not None and any(m.any() for m in masks.values()):
                state = self._prepare(previous, grey)
                masks = {i: self._propagate(state, previous, grey, m) if m.any() else m for i, m in masks.items()}
            for prompt in by_frame.get(frame_index, ()):
                masks[prompt.object_id] = initial_mask(prompt, image)
            yield _frame_result(frame_index, masks, grey.shape)
            previous, last_index = grey, frame_index

    def _prepare(self, previous: np.ndarray, current: np.ndarray) -> Any:
        """Work shared by all objects of a frame pair (e.g. a dense flow field)."""
        return None

    @abstractmethod
    def _propagate(self, state: Any, previous: np.ndarray, current: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Carry one object's (H, W) bool mask from the previous grey frame to the current one."""


class FlowTracker(MaskPropagationTracker):
    """Warp masks along dense optical flow (DIS by default, or Farneback)."""

    name = "baseline-flow"

    def __repr__(self) -> str:
        return f"FlowTracker(method={self.method!r})"

    def __init__(self, method: str = "dis") -> None:
        if method not in ("dis", "farneback"):
            raise ConfigError(f"FlowTracker method must be 'dis' or 'farneback', got {method!r}")
        self.method = method
        self._grid: tuple[np.ndarray, np.ndarray] | None = None  # pixel coordinates, cached per frame size
        self._dis = None
        if method == "dis":
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
            # The presets stop at half resolution; there the flow of a small object is biased towards its
            # background, and the warped mask lags behind the object a little more every frame.
            self._dis.setFinestScale(0)

    def _prepare(self, previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Flow from the current frame back to the previous one: every new pixel looks up where it came from,
        # so the warped mask has no holes (forward splatting would leave some).
        if self._dis is not None:
            flow = self._dis.calc(current, previous, None)
        else:
            flow = cv2.calcOpticalFlowFarneback(current, previous, None, 0.5, 4, 15, 3, 5, 1.2, 0)
        if self._grid is None or self._grid[0].shape != current.shape:
            height, width = current.shape
            self._grid = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        grid_x, grid_y = self._grid
        return grid_x + flow[..., 0], grid_y + flow[..., 1]

    def _propagate(
        self, state: tuple[np.ndarray, np.ndarray], previous: np.ndarray, current: np.ndarray, mask: np.ndarray
    ) -> np.ndarray:
        map_x, map_y = state
        warped = cv2.remap(mask.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        # Flow errors leave specks and pinholes that would otherwise be carried on and grow frame after frame.
        tidy = cv2.morphologyEx((warped > 0.5).astype(np.uint8), cv2.MORPH_OPEN, _SMALL_DISK)
        return cv2.morphologyEx(tidy, cv2.MORPH_CLOSE, _SMALL_DISK).astype(bool)


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


def build_baseline(name: str) -> MaskPropagationTracker:
    """The classical tracker called `name` ("baseline-flow" or "baseline-homography")."""
    if name == FlowTracker.name:
        return FlowTracker()
    if name == HomographyTracker.name:
        return HomographyTracker()
    raise ConfigError(f"unknown baseline tracker {name!r}; choose 'baseline-flow' or 'baseline-homography'")
