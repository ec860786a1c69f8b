"""ClipCutter: one video's tracked frames cut into its clips, each closed with its rows and its `ok` status row.

A video is tracked in one pass and its results arrive in frame order. A clip closes when the first frame past
its end arrives, or when the video ends (`finish`): its status row gets its counts and times, and its rows are
kept for the unit's files. When tracking fails midway, the clip being tracked and every later one become
`failed` rows (`fail_rest`): their frames cannot be reached in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from batchtrack.model.types import FrameResult
from batchtrack.pipeline.clip_rows import ClipKeys, ClipRows
from batchtrack.pipeline.commit import ClipStatus
from batchtrack.pipeline.plan import VideoTask, make_clip_id
from batchtrack.pipeline.sampling import FrameSample
from batchtrack.pipeline.timed_frames import TimedFrames

# A video's status row: (clip_id, start, end, status, **values) -> ClipStatus (see VideoRun.status).
StatusRow = Callable[..., ClipStatus]


class ClipCutter:
    """Rows and status rows of one video's clips, fed its tracked frames in order."""

    def __init__(
        self,
        video: VideoTask,
        spans: list[tuple[int, int]],
        timestamps: np.ndarray,
        sample: FrameSample,
        frames: TimedFrames,
        began: float,
        status: StatusRow,
    ) -> None:
        """`spans`: the video's clips, [start, end) frames, at least one; `frames`: what the tracker reads (its
        decoder wait is each clip's decode time); `began`: when the video started opening, the first clip's start."""
        self._video = video
        self._spans = spans
        self._clip_ids = [make_clip_id(video.key, start, end) for start, end in spans]
        self._timestamps = timestamps
        self._sample = sample
        self._frames = frames
        self._status = status
        self._current = 0
        self._clip_began = began
        self._decode_before = 0.0
        self._rows = self._rows_of(0)
        self.statuses: list[ClipStatus] = []
        self.rows: list[ClipRows] = []  # rows of the ok clips that have any, in order

    @property
    def current(self) -> int:
        """The index of the clip being tracked (len(spans) once every clip is closed)."""
        return self._current

    def feed(self, result: FrameResult, frame_index: int) -> None:
        """One tracked frame; `frame_index` is its index in the video (the tracker numbers sampled frames)."""
        while frame_index >= self._spans[self._current][1]:
            self._close()
        self._rows.add(result, frame_index)

    def finish(self) -> None:
        """Close the clip being tracked and any later ones: the video has no more frames."""
        while self._current < len(self._spans):
            self._close()

    def fail_rest(self, error: dict[str, Any]) -> None:
        """`failed` status rows, with `error`'s fields, for the clip being tracked and every later one."""
        for index in range(self._current, len(self._spans)):
            start, end = self._spans[index]
            self.statuses.append(self._status(self._clip_ids[index], start, end, "failed", **error))

    def _rows_of(self, index: int) -> ClipRows:
        return ClipRows(ClipKeys(self._video.video_id, self._video.ref.uri, self._clip_ids[index], self._timestamps))

    def _close(self) -> None:
        now = time.perf_counter()
        decode = self._frames.seconds - self._decode_before
        start, end = self._spans[self._current]
        rows = self._rows
        self.statuses.append(
            self._status(
                self._clip_ids[self._current],
                start,
                end,
                "ok",
                frames=self._sample.count_in(start, end),
                tracked_frames=self._sample.listed_in(start, end),
                objects=rows.num_objects,
                mask_rows=len(rows),
                seconds=now - self._clip_began,
                decode_seconds=decode,
                track_seconds=now - self._clip_began - decode,
            )
        )
        if len(rows):
            self.rows.append(rows)
        self._current += 1
        self._clip_began, self._decode_before = now, self._frames.seconds
        if self._current < len(self._spans):
            self._rows = self._rows_of(self._current)
