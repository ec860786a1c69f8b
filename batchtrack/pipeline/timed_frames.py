"""TimedFrames: a video's decoded frames as (index, frame) pairs, with the time spent waiting on the decoder.

The time waited is each clip's decode share (`ClipCutter`); the rest of a clip's time is the tracker's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np


class TimedFrames:
    """(frame index, frame) pairs of a whole video, with the time spent waiting on the decoder.

    Its length is the video's: the tracker reads it as the sequence length (SAM 2 scales pointer
    distances by it), exactly as it would for a list of frames.
    """

    def __init__(self, frames: Iterator[np.ndarray], num_frames: int) -> None:
        self._frames = frames
        self._num_frames = num_frames
        self.seconds = 0.0
        self.count = 0

    def __len__(self) -> int:
        return self._num_frames

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        while True:
            began = time.perf_counter()
            try:
                frame = next(self._frames)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - began
            yield self.count, frame
            self.count += 1
