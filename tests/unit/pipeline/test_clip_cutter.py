"""ClipCutter: a video's tracked frames cut into clips, each closed with its rows and its status row."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from batchtrack.io.corpus import VideoRef
from batchtrack.model.types import FrameResult
from batchtrack.pipeline.clip_cutter import ClipCutter
from batchtrack.pipeline.commit import ClipStatus
from batchtrack.pipeline.plan import VideoTask, make_clip_id
from batchtrack.pipeline.sampling import FrameSample
from batchtrack.pipeline.timed_frames import TimedFrames

VIDEO = VideoTask(VideoRef("v" * 16, "/videos/v.mp4", 10, "1"), (), "prompted", "key")
SPANS = [(0, 4), (4, 8), (8, 10)]


def _status(clip_id: str, start: int, end: int, status: str, **values: Any) -> ClipStatus:
    return ClipStatus(VIDEO.video_id, VIDEO.ref.uri, clip_id, "unit", start, end, status, "m", "h", **values)


def _result(frame_index: int, objects: int = 1) -> FrameResult:
    return FrameResult(
        frame_index=frame_index,
        object_ids=list(range(objects)),
        mask_logits=torch.ones(objects, 6, 8),
        object_score_logits=torch.zeros(objects),
        iou_predictions=torch.ones(objects),
        object_pointers=torch.zeros(objects, 256),
    )


def _cutter() -> ClipCutter:
    frames, sample = TimedFrames(iter([]), 10), FrameSample.every_frame(10)
    return ClipCutter(VIDEO, SPANS, np.arange(10) / 10.0, sample, frames, time.perf_counter(), _status)


def test_each_clip_closes_at_the_first_frame_past_its_end_and_the_rest_at_finish() -> None:
    cutter = _cutter()
    for index in range(6):
        cutter.feed(_result(index), index)
    assert [s.end_frame for s in cutter.statuses] == [4]  # the second clip is still open
    cutter.finish()
    assert [(s.start_frame, s.end_frame, s.status) for s in cutter.statuses] == [
        (0, 4, "ok"),
        (4, 8, "ok"),
        (8, 10, "ok"),
    ]
    assert [s.clip_id for s in cutter.statuses] == [make_clip_id("key", a, b) for a, b in SPANS]
    assert [s.mask_rows for s in cutter.statuses] == [4, 2, 0]
    assert [len(rows) for rows in cutter.rows] == [4, 2], "a clip without rows keeps none"
    assert cutter.current == len(SPANS)


def test_a_failure_midway_fails_the_clip_being_tracked_and_every_later_one() -> None:
    cutter = _cutter()
    for index in range(5):
        cutter.feed(_result(index), index)
    cutter.fail_rest({"error_stage": "track", "error_class": "ValueError", "error_message": "boom"})
    assert [(s.start_frame, s.status, s.error_class) for s in cutter.statuses] == [
        (0, "ok", None),
        (4, "failed", "ValueError"),
        (8, "failed", "ValueError"),
    ]
    assert len(cutter.rows) == 1
