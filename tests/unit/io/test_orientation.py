"""Display matrices as FFmpeg defines them (libavutil/display.h), turned into the frame a player shows.

The expected pictures come from numpy's rot90 / fliplr, as PyAV documents `set_display_rotation`
(counter-clockwise degrees, then the mirror); the matrices are those FFmpeg's av_display_rotation_set
and av_display_matrix_flip write, typed in here in 16.16 fixed point.
"""

from __future__ import annotations

import numpy as np
import pytest

from batchtrack.io.orientation import Orientation

ONE = 1 << 16
W = 1 << 30

# (rotation, mirrored) -> the 9-entry display matrix a file carries
MATRICES = {
    (0, False): (ONE, 0, 0, 0, ONE, 0, 0, 0, W),
    (90, False): (0, -ONE, 0, ONE, 0, 0, 0, 0, W),
    (180, False): (-ONE, 0, 0, 0, -ONE, 0, 0, 0, W),
    (270, False): (0, ONE, 0, -ONE, 0, 0, 0, 0, W),
    (0, True): (-ONE, 0, 0, 0, ONE, 0, 0, 0, W),
    (90, True): (0, -ONE, 0, -ONE, 0, 0, 0, 0, W),
    (180, True): (ONE, 0, 0, 0, -ONE, 0, 0, 0, W),
    (270, True): (0, ONE, 0, ONE, 0, 0, 0, 0, W),
}


@pytest.mark.parametrize(("rotation", "mirrored"), sorted(MATRICES))
def test_each_matrix_shows_the_frame_turned_then_mirrored(rotation: int, mirrored: bool) -> None:
    frame = np.arange(3 * 5 * 2, dtype=np.uint8).reshape(3, 5, 2)  # (H, W, C), every pixel distinct
    expected = np.rot90(frame, rotation // 90)
    expected = np.fliplr(expected) if mirrored else expected

    orientation = Orientation.from_display_matrix(MATRICES[(rotation, mirrored)])

    assert (orientation.rotation, orientation.mirrored) == (rotation, mirrored)
    np.testing.assert_array_equal(orientation.apply(frame), expected)
    assert orientation.apply(frame).flags.c_contiguous
    assert orientation.displayed_size(5, 3) == (expected.shape[1], expected.shape[0])
    assert orientation.is_identity == (rotation == 0 and not mirrored)


def test_a_matrix_off_the_quarter_turns_snaps_to_the_nearest() -> None:
    angle = np.deg2rad(80)  # a slightly tilted 90 degree turn
    cos, sin = round(np.cos(angle) * ONE), round(np.sin(angle) * ONE)
    orientation = Orientation.from_display_matrix((cos, -sin, 0, sin, cos, 0, 0, 0, W))
    assert (orientation.rotation, orientation.mirrored) == (90, False)


def test_describe_names_the_turn_and_the_mirror() -> None:
    assert Orientation.from_display_matrix(MATRICES[(270, True)]).describe() == "rotate 270, mirror"
    assert Orientation().describe() == "none"
