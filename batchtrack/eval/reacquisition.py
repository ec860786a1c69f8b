"""Re-acquisition: is an object found again soon after it was fully hidden for a while?

A hidden span is a run of at least `min_hidden` consecutive frames on which an object's ground-truth
mask is empty (fully occluded or out of the frame), starting after the object's prompt frame, and
followed by at least `within` frames of the video. The object counts as found again when the
predicted mask has IoU >= `iou_threshold` with the ground truth on any of the `within` frames from
the one it reappears on. Every span counts once (an object hidden twice counts twice).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from batchtrack.eval.metrics import jaccard
from batchtrack.synthetic.ground_truth import GroundTruth

MIN_HIDDEN_FRAMES = 10
WITHIN_FRAMES = 5
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class HiddenSpan:
    """Object `object_id` is fully hidden on frames `hidden_from` .. `returns_at - 1`."""

    object_id: int
    hidden_from: int
    returns_at: int


@dataclass(frozen=True)
class Reacquisition:
    """How many hidden spans ended with the object found again."""

    found: int
    spans: int

    @property
    def share(self) -> float:
        return self.found / self.spans if self.spans else float("nan")

    def __add__(self, other: Reacquisition) -> Reacquisition:
        return Reacquisition(self.found + other.found, self.spans + other.spans)


def hidden_spans(
    gt: GroundTruth,
    first_frames: Mapping[int, int],
    min_hidden: int = MIN_HIDDEN_FRAMES,
    within: int = WITHIN_FRAMES,
) -> list[HiddenSpan]:
    """The hidden spans of the prompted objects (`first_frames`: object id -> prompt frame)."""
    spans = []
    for object_id, prompt_frame in sorted(first_frames.items()):
        if object_id not in gt.object_ids:
            continue
        visible = [bool(gt.mask(t, object_id).any()) for t in range(gt.num_frames)]
        hidden_from: int | None = None
        for t in range(prompt_frame + 1, gt.num_frames):
            if not visible[t]:
                hidden_from = t if hidden_from is None else hidden_from
                continue
            if hidden_from is not None and t - hidden_from >= min_hidden and t + within <= gt.num_frames:
                spans.append(HiddenSpan(object_id, hidden_from, t))
            hidden_from = None
    return spans


def count_reacquisitions(
    gt: GroundTruth,
    predicted: Mapping[tuple[int, int], np.ndarray],
    first_frames: Mapping[int, int],
    min_hidden: int = MIN_HIDDEN_FRAMES,
    within: int = WITHIN_FRAMES,
    iou_threshold: float = IOU_THRESHOLD,
) -> Reacquisition:
    """Of one video's hidden spans, how many end with the object found again (missing predictions are empty)."""
    empty = np.zeros((gt.height, gt.width), dtype=bool)
    found = 0
    spans = hidden_spans(gt, first_frames, min_hidden, within)
    for span in spans:
        for t in range(span.returns_at, span.returns_at + within):
            truth = gt.mask(t, span.object_id)
            if truth.any() and jaccard(truth, predicted.get((t, span.object_id), empty)) >= iou_threshold:
                found += 1
                break
    return Reacquisition(found, len(spans))
