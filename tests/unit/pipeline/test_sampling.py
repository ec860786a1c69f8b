"""Frame sampling by timestamp: which frames a --sample-fps run tracks, and how prompts map onto them."""

from __future__ import annotations

import numpy as np
import pytest

from batchtrack.errors import PromptError
from batchtrack.pipeline.sampling import FrameSample, sample_frames


def test_six_per_second_of_a_24_fps_video_is_every_fourth_frame() -> None:
    assert sample_frames(np.arange(48) / 24, 6.0).tolist() == list(range(0, 48, 4))


def test_ntsc_rate_sampled_at_six_keeps_frames_nearest_each_sixth_of_a_second() -> None:
    stamps = np.arange(60) * 1001 / 30000
    chosen = sample_frames(stamps, 6.0)
    grid = np.arange(len(chosen)) / 6
    assert chosen[:4].tolist() == [0, 5, 10, 15]
    assert np.abs(stamps[chosen] - grid).max() <= 0.5 * 1001 / 30000  # each is the nearest frame to its point


def test_a_variable_rate_video_is_sampled_evenly_in_time_not_in_frames() -> None:
    # a burst of 60 fps between slow 5 fps stretches
    stamps = np.concatenate([np.arange(0, 1, 0.2), 1 + np.arange(60) / 60, 2 + np.arange(0, 1, 0.2)])
    chosen = sample_frames(stamps, 5.0)
    assert np.allclose(stamps[chosen], np.arange(len(chosen)) * 0.2)
    assert len(chosen) == 15  # 3 s at 5/s, not a third of the 70 frames


def test_a_rate_above_the_videos_keeps_every_frame_once() -> None:
    assert sample_frames(np.arange(10) / 25, 60.0).tolist() == list(range(10))


def test_an_empty_video_samples_nothing_and_a_bad_rate_is_refused() -> None:
    assert sample_frames(np.zeros(0), 6.0).tolist() == []
    with pytest.raises(ValueError, match="positive"):
        sample_frames(np.arange(3) / 25, 0.0)


def test_positions_number_the_sampled_frames_and_unsampled_ones_name_their_neighbours() -> None:
    sample = FrameSample.of(np.arange(24) / 24, 6.0)
    assert sample.frames.tolist() == [0, 4, 8, 12, 16, 20]
    assert [sample.position(f, "p") for f in (0, 4, 20)] == [0, 1, 5]
    assert sample.absolute(2) == 8
    assert sample.count_in(4, 13) == 3
    assert sample.listed_in(4, 13) == [4, 8, 12]
    assert sample.keep == frozenset({0, 4, 8, 12, 16, 20})
    with pytest.raises(PromptError, match=r"frame 6, which --sample-fps 6 does not track; .* are 4 and 8"):
        sample.position(6, "the prompt of object 1")
    with pytest.raises(PromptError, match=r"frame 23, .* frames are 20:"):
        sample.position(23, "the prompt of object 1")


def test_every_frame_is_the_identity() -> None:
    sample = FrameSample.of(np.arange(5) / 25, None)
    assert sample.keep is None and len(sample) == 5 and sample.position(3, "p") == 3
