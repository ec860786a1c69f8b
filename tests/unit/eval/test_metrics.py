"""DAVIS-style J and F on hand-made masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from batchtrack.eval.metrics import boundary_f, boundary_map, jaccard, score_sequence


def _square(size: int, x: int, y: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[y : y + side, x : x + side] = True
    return mask


def test_identical_masks_score_one() -> None:
    mask = _square(40, 5, 7, 12)
    assert jaccard(mask, mask) == 1.0
    assert boundary_f(mask, mask) == 1.0


def test_two_empty_masks_agree_perfectly() -> None:
    empty = np.zeros((10, 12), dtype=bool)
    assert jaccard(empty, empty) == 1.0
    assert boundary_f(empty, empty) == 1.0


def test_disjoint_masks_score_zero() -> None:
    a, b = _square(60, 2, 2, 10), _square(60, 40, 40, 10)
    assert jaccard(a, b) == 0.0
    assert boundary_f(a, b) == 0.0
    assert jaccard(a, np.zeros_like(a)) == 0.0
    assert boundary_f(np.zeros_like(a), a) == 0.0


def test_jaccard_of_hand_worked_example() -> None:
    gt = np.zeros((4, 4), dtype=bool)
    gt[0:2, 0:2] = True  # 4 pixels
    pred = np.zeros((4, 4), dtype=bool)
    pred[0:2, 1:3] = True  # 4 pixels, 2 shared -> union 6
    assert jaccard(gt, pred) == pytest.approx(2 / 6)
    pred[3, 3] = True  # one more false positive -> union 7
    assert jaccard(gt, pred) == pytest.approx(2 / 7)


def test_boundary_map_marks_pixels_whose_right_or_lower_neighbour_differs() -> None:
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True
    expected = np.array(
        [
            [1, 1, 1, 0],  # (0,0) differs from its lower-right neighbour (1,1)
            [1, 0, 1, 0],
            [1, 1, 1, 0],
            [0, 0, 0, 0],
        ],
        dtype=bool,
    )
    assert np.array_equal(boundary_map(mask), expected)


def test_boundary_f_tolerates_shifts_within_the_bound_then_decreases() -> None:
    size = 100  # diagonal 141.4 px -> tolerance ceil(0.008 * 141.4) = 2 px
    gt = _square(size, 30, 30, 40)
    assert boundary_f(gt, _square(size, 32, 30, 40)) == 1.0
    scores = [boundary_f(gt, _square(size, 30 + shift, 30, 40)) for shift in range(2, 12)]
    assert all(a > b for a, b in itertools.pairwise(scores)), scores
    assert scores[-1] < 0.6
    # An explicit pixel tolerance widens what counts as a hit.
    assert boundary_f(gt, _square(size, 36, 30, 40), bound_th=6) == 1.0


def test_score_sequence_averages_frames() -> None:
    a = _square(20, 0, 0, 4)
    empty = np.zeros_like(a)
    score = score_sequence([(a, a), (a, empty), (empty, empty), (empty, a)])
    assert score.num_frames == 4
    assert score.j == pytest.approx(0.5)
    assert score.f == pytest.approx(0.5)
    assert score.jf == pytest.approx(0.5)


def test_metrics_reject_masks_of_different_shapes() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        jaccard(np.zeros((3, 3)), np.zeros((3, 4)))
