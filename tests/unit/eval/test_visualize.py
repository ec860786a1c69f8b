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


def test_id_label_sits_on_the_mask_even_where_the_centroid_is_off_it() -> None:
    from batchtrack.eval.visualize import label_point

    ring = np.zeros((60, 60), dtype=bool)
    ring[5:55, 5:55] = True
    ring[15:45, 15:45] = False  # the centroid (30, 30) is in the hole
    x, y = label_point(ring)
    assert ring[y, x]
    # Two pieces (an object cut in two by an occluder): the label goes on the larger one.
    split = np.zeros((40, 80), dtype=bool)
    split[10:30, 2:12] = True
    split[5:35, 50:78] = True
    x, y = label_point(split)
    assert split[y, x] and x >= 50


def test_overlay_draws_each_id_inside_its_own_mask_not_at_its_centroid() -> None:
    frame = np.zeros((60, 100, 3), dtype=np.uint8)
    crescent = np.zeros((60, 100), dtype=bool)
    crescent[5:55, 5:25] = True
    crescent[5:15, 5:60] = True
    crescent[45:55, 5:60] = True  # a C shape whose centroid lies in its opening
    inside = np.zeros((60, 100), dtype=bool)
    inside[22:38, 35:55] = True  # another object sitting in that opening
    out = render_overlay(frame, [crescent, inside], [1, 2])
    white = (out > 200).all(axis=2)
    # Label pixels of id 1 sit on the crescent's thick bar, those of id 2 on its own square; none lands in
    # the opening, where the crescent's centroid (x 25.8, y 30) is.
    assert white[5:55, 5:25].any() and white[22:38, 35:55].any()
    assert not (white & ~(crescent | inside)).any()
