"""Re-acquisition: hidden spans come from the ground truth; an object counts as found at IoU >= 0.5 within 5 frames."""

from __future__ import annotations

import numpy as np

from batchtrack.eval.reacquisition import count_reacquisitions, hidden_spans
from batchtrack.io.rle import encode_mask
from batchtrack.synthetic.ground_truth import GroundTruth

H, W = 16, 16


def _square() -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[4:10, 4:10] = True
    return mask


def _gt(visible: list[bool]) -> GroundTruth:
    empty = np.zeros((H, W), dtype=bool)
    rles = {(t, 1): encode_mask(_square() if v else empty) for t, v in enumerate(visible)}
    return GroundTruth(height=H, width=W, num_frames=len(visible), object_ids=[1], rles=rles)


def test_a_long_hidden_span_after_the_prompt_is_found_and_short_or_late_ones_are_not() -> None:
    # Visible 0-4, hidden 5-16 (12 frames), visible 17-23; then hidden 3 frames, visible again to the end.
    visible = [True] * 5 + [False] * 12 + [True] * 7 + [False] * 3 + [True] * 6
    spans = hidden_spans(_gt(visible), {1: 0})
    assert [(s.object_id, s.hidden_from, s.returns_at) for s in spans] == [(1, 5, 17)]
    # A return too close to the end of the video leaves no 5 frames to look at.
    assert hidden_spans(_gt([True] * 2 + [False] * 10 + [True] * 4), {1: 0}) == []
    # Hidden before the object was prompted does not count.
    assert hidden_spans(_gt([False] * 12 + [True] * 8), {1: 12}) == []


def test_found_again_needs_iou_at_least_one_half_within_five_frames_of_the_return() -> None:
    visible = [True] * 3 + [False] * 10 + [True] * 8
    gt = _gt(visible)
    late = {(t, 1): _square() for t in range(18, 21)}  # first right answer 5 frames after the return (13)
    assert count_reacquisitions(gt, late, {1: 0}).found == 0
    on_time = {(17, 1): _square()}
    result = count_reacquisitions(gt, on_time, {1: 0})
    assert (result.found, result.spans, result.share) == (1, 1, 1.0)
    shifted = np.roll(_square(), 4, axis=1)  # IoU 2/10 with the truth
    assert count_reacquisitions(gt, {(13, 1): shifted}, {1: 0}).found == 0
    assert (count_reacquisitions(gt, on_time, {1: 0}) + count_reacquisitions(gt, {}, {1: 0})).spans == 2
