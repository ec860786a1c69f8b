"""Bootstrap intervals for scores pooled over videos: videos are resampled, not objects.

Objects of one video share its scene (background, camera, who occludes whom), so their scores are not
independent; resampling whole videos keeps that correlation and gives honest, wider intervals. The
statistic is the mean over all objects of the resampled videos, as DAVIS pools J&F over objects.

    >>> interval = bootstrap_mean([[0.5, 0.7], [0.6], [0.9, 0.8]], resamples=200)
    >>> interval.low <= interval.estimate <= interval.high
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap percentile interval at `level`."""

    estimate: float
    low: float
    high: float
    level: float

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap_mean(
    per_video: Sequence[Sequence[float]], level: float = 0.9, resamples: int = 2000, seed: int = 0
) -> Interval:
    """Mean over all values and its percentile interval, resampling the videos (the outer lists) with replacement.

    For a paired difference between two trackers, pass each object's score difference: both see the
    same resampled videos.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    groups = [list(g) for g in per_video if len(g)]
    if not groups:
        return Interval(math.nan, math.nan, math.nan, level)
    sums = np.array([sum(g) for g in groups], dtype=np.float64)  # (V,)
    counts = np.array([len(g) for g in groups], dtype=np.float64)  # (V,)
    picks = np.random.default_rng(seed).integers(0, len(groups), size=(resamples, len(groups)))  # (R, V)
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)  # (R,)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(sums.sum() / counts.sum()), float(low), float(high), level)
