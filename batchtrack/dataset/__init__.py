"""Reading a job's output: the committed tracked masks as a dataset, exports, embedding search.

    from batchtrack import open_dataset
    data = open_dataset("s3://bucket/out", storage_options={...})

torch is imported only by `to_torch()`.
"""

from __future__ import annotations

from batchtrack.dataset.reader import TrackedMaskDataset, open_dataset
from batchtrack.dataset.video_rows import PRESENT_SCORE, FrameRows, TrackSpan, VideoRows, VideoSummary

__all__ = [
    "PRESENT_SCORE",
    "FrameRows",
    "TrackSpan",
    "TrackedMaskDataset",
    "VideoRows",
    "VideoSummary",
    "open_dataset",
]
