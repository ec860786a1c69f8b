"""Frame sampling: the frames a tracker sees when a job tracks at a lower rate than the video's.

The frames are those nearest, by presentation time, to a grid of `fps` points per second starting
at the stream's first frame, so a variable-rate video is sampled evenly in time, not in frame
count. The tracker numbers the sampled frames 0, 1, 2, ... (SAM 2's memory reads "the previous
frames" of what it saw, as SA-V's 6 fps annotation does); rows keep the absolute frame index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from batchtrack.errors import PromptError

__all__ = ["FrameSample", "sample_frames"]

# Grid points within this of a frame's time count as on it (float error of k / fps vs i / rate).
_TIME_EPS = 1e-9


def sample_frames(timestamps: np.ndarray, fps: float) -> np.ndarray:
    """Sorted unique indices of the frames nearest to the times 0, 1/fps, 2/fps, ... up to the last frame.

    `timestamps` are the frames' presentation times in seconds (sorted, from 0). A grid point halfway
    between two frames takes the earlier one.

    >>> sample_frames(np.arange(12) / 24, 6.0).tolist()
    [0, 4, 8]
    >>> sample_frames(np.array([0.0, 0.04, 0.09, 0.12, 0.21, 0.25]), 10.0).tolist()
    [0, 2, 4]
    """
    if fps <= 0:
        raise ValueError(f"sample fps must be positive, got {fps}")
    if len(timestamps) == 0:
        return np.zeros(0, dtype=np.int64)
    count = int(np.floor(float(timestamps[-1]) * fps + _TIME_EPS)) + 1
    grid = np.arange(count, dtype=np.float64) / fps  # (G,)
    after = np.clip(np.searchsorted(timestamps, grid - _TIME_EPS), 0, len(timestamps) - 1)  # (G,)
    before = np.clip(after - 1, 0, len(timestamps) - 1)
    take_after = np.abs(timestamps[after] - grid) < np.abs(timestamps[before] - grid) - _TIME_EPS
    return np.unique(np.where(take_after, after, before))


@dataclass(frozen=True)
class FrameSample:
    """The frames of one video the tracker sees: absolute indices, and the tracker's numbering of them."""

    frames: np.ndarray  # (S,) absolute frame indices, ascending
    fps: float | None  # the grid rate; None: every frame

    @classmethod
    def every_frame(cls, num_frames: int) -> FrameSample:
        return cls(np.arange(num_frames, dtype=np.int64), None)

    @classmethod
    def of(cls, timestamps: np.ndarray, fps: float | None) -> FrameSample:
        if fps is None:
            return cls.every_frame(len(timestamps))
        return cls(sample_frames(timestamps, fps), fps)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def keep(self) -> frozenset[int] | None:
        """The absolute indices to decode into pictures; None when every frame is."""
        return None if self.fps is None else frozenset(int(i) for i in self.frames)

    def absolute(self, position: int) -> int:
        """The video's frame index of the tracker's frame `position`."""
        return int(self.frames[position])

    def count_in(self, start: int, end: int) -> int:
        """Sampled frames in [start, end)."""
        return int(np.searchsorted(self.frames, end) - np.searchsorted(self.frames, start))

    def listed_in(self, start: int, end: int) -> list[int] | None:
        """The sampled frames of [start, end) for a clips/ row; None when every frame is tracked."""
        if self.fps is None:
            return None
        return [int(i) for i in self.frames[np.searchsorted(self.frames, start) : np.searchsorted(self.frames, end)]]

    def position(self, frame: int, what: str) -> int:
        """The tracker's number of absolute frame `frame`; PromptError naming the nearest sampled frames
        when it is not sampled (`what` says whose frame it is, for the message)."""
        at = int(np.searchsorted(self.frames, frame))
        if at < len(self.frames) and self.frames[at] == frame:
            return at
        nearest = [int(self.frames[i]) for i in (at - 1, at) if 0 <= i < len(self.frames)]
        raise PromptError(
            f"{what} is on frame {frame}, which --sample-fps {self.fps:g} does not track; the nearest tracked "
            f"frames are {' and '.join(map(str, nearest))}: move the prompt to one of them"
        )
