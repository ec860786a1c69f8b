"""ID switches of predicted tracks against ground truth."""

from __future__ import annotations

import numpy as np

from batchtrack.eval.identity import count_id_switches

H, W = 48, 64


def disc(cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_count_id_switches_counts_changes_of_matched_track() -> None:
    a, b = disc(15, 20, 6), disc(45, 20, 6)
    gt = {f: {10: a, 20: b} for f in range(4)}
    pred = {0: {0: a, 1: b}, 1: {0: a, 1: b}, 2: {1: a, 0: b}, 3: {5: a}}
    # Frame 2: both swap (2 switches); frame 3: GT 10 -> track 5 (1), GT 20 unmatched (no switch).
    assert count_id_switches(pred, gt) == 3
    # A low-IoU prediction is no match.
    assert count_id_switches({0: {0: a}, 1: {1: disc(24, 20, 6)}}, {0: {10: a}, 1: {10: a}}) == 0
