"""FlowTracker: masks pulled along dense optical flow from the new frame back to the previous one.

DIS (cv2.DISOpticalFlow) or Farneback (cv2.calcOpticalFlowFarneback) flow; backward warping with cv2.remap.
"""

from __future__ import annotations

import cv2
import numpy as np

from batchtrack.baselines.propagation import MaskPropagationTracker
from batchtrack.errors import ConfigError

_SMALL_DISK = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


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
