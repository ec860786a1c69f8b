"""Bootstrap intervals over videos: the estimate is the pooled object mean, the interval resamples videos."""

from __future__ import annotations

import math

import pytest

from batchtrack.eval.bootstrap import Interval, bootstrap_mean


def test_estimate_is_the_mean_over_objects_and_lies_in_the_interval() -> None:
    interval = bootstrap_mean([[0.2, 0.4], [0.9], [0.5, 0.6, 0.7]])
    assert interval.estimate == pytest.approx((0.2 + 0.4 + 0.9 + 0.5 + 0.6 + 0.7) / 6)
    assert interval.low <= interval.estimate <= interval.high
    assert interval.level == 0.9


def test_identical_videos_give_a_zero_width_interval_and_spread_widens_it() -> None:
    flat = bootstrap_mean([[0.5, 0.5]] * 10)
    assert flat.low == flat.high == pytest.approx(0.5)
    spread = bootstrap_mean([[0.1], [0.9]] * 5)
    assert spread.high - spread.low > 0.2


def test_resampling_is_by_video_so_a_video_of_identical_objects_counts_as_one_draw() -> None:
    # 1 video of 20 identical objects vs 20 videos of one object each: same values, very different certainty.
    one_video = bootstrap_mean([[0.0] * 10 + [1.0] * 10])
    many_videos = bootstrap_mean([[0.0]] * 10 + [[1.0]] * 10)
    assert one_video.high - one_video.low == 0
    assert many_videos.high - many_videos.low > 0.2


def test_empty_input_is_nan_and_bad_level_is_refused() -> None:
    assert math.isnan(bootstrap_mean([]).estimate)
    with pytest.raises(ValueError, match="level must be between 0 and 1"):
        bootstrap_mean([[1.0]], level=1.5)


def test_intervals_know_whether_they_overlap() -> None:
    assert Interval(0.5, 0.4, 0.6, 0.9).overlaps(Interval(0.65, 0.55, 0.7, 0.9))
    assert not Interval(0.5, 0.4, 0.5, 0.9).overlaps(Interval(0.7, 0.6, 0.8, 0.9))
    assert str(Interval(0.5, 0.4, 0.6, 0.9)) == "0.500 [0.400, 0.600]"
