"""render_overlay: masks tinted in a stable per-object colour, the rest of the frame untouched."""

from __future__ import annotations

import numpy as np
import pytest

from batchtrack.eval.visualize import object_color, render_overlay


def test_overlay_tints_mask_pixels_and_leaves_far_pixels_alone() -> None:
    frame = np.full((60, 80, 3), 100, dtype=np.uint8)
    mask = np.zeros((60, 80), dtype=bool)
    mask[10:40, 10:40] = True
    out = render_overlay(frame, [mask], [3])
    assert out.shape == frame.shape
    assert out.dtype == np.uint8
    color = np.array(object_color(3))
    # Inside (away from the outline and the id label) the pixel is half-way to the object's colour.
    assert np.abs(out[12, 12].astype(int) - (100 + color) // 2).max() <= 1
    assert np.array_equal(out[55, 75], frame[55, 75])
    assert np.array_equal(out[:, 50:], frame[:, 50:])


def test_object_colors_are_stable_and_distinct() -> None:
    assert object_color(5) == object_color(5)
    assert len({object_color(i) for i in range(1, 9)}) == 8


def test_overlay_rejects_mismatched_masks_and_ids() -> None:
    frame = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="2 masks for 1 object ids"):
        render_overlay(frame, [np.zeros((8, 8), bool)] * 2, [1])
    with pytest.raises(ValueError, match="mask of object 1 has shape"):
        render_overlay(frame, [np.zeros((4, 8), bool)], [1])
