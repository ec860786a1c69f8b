"""Classical ("traditional") mask trackers, the seed's point of comparison for the memory tracker.

Both carry the previous frame's mask of each object to the next frame, with nothing learned:
- `HomographyTracker` (homography.py): KLT corners inside a dilated mask, forward-backward checked, a RANSAC
  homography (cv2.findHomography), the mask warped by it;
- `FlowTracker` (flow.py): dense optical flow from the new frame back to the previous one (DIS or Farneback),
  the previous mask pulled along it (backward warping with cv2.remap).
They have the neural tracker's interface (`track(frames, prompts, *, reverse)` -> FrameResult per frame),
so a job runs them as trackers (`--model baseline-flow`), and the benchmark and the evaluation run them
unchanged. A box prompt starts a mask with GrabCut inside the box (prompt_mask.py); once a mask is empty
(the object is lost) it stays empty.
"""

from __future__ import annotations

from batchtrack.baselines.flow import FlowTracker
from batchtrack.baselines.homography import HomographyTracker
from batchtrack.baselines.prompt_mask import initial_mask
from batchtrack.baselines.propagation import MaskPropagationTracker
from batchtrack.errors import ConfigError

__all__ = ["FlowTracker", "HomographyTracker", "MaskPropagationTracker", "build_baseline", "initial_mask"]


def build_baseline(name: str) -> MaskPropagationTracker:
    """The classical tracker called `name` ("baseline-flow" or "baseline-homography")."""
    if name == FlowTracker.name:
        return FlowTracker()
    if name == HomographyTracker.name:
        return HomographyTracker()
    raise ConfigError(f"unknown baseline tracker {name!r}; choose 'baseline-flow' or 'baseline-homography'")
