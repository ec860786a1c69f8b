"""One video's mask rows, in frame order, and what they say per frame and per track.

The rows of one video are small (compressed RLE strings), so a video is the unit everything here
streams by: masks are decoded one frame at a time and never held for a whole video.
An object is *present* on a frame when its score is above 0.5 and its mask is not empty; rows exist
for every frame of a live object, present or not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchtrack.io.rle import decode_mask

PRESENT_SCORE = 0.5
ROW_COLUMNS = ["video_id", "video_uri", "frame_index", "timestamp_s", "track_id", "score", "area", "bbox",
               "height", "width", "rle"]


@dataclass(frozen=True)
class TrackSpan:
    """Where one track lives in its video: its rows' frame range and the frames it is present on."""

    track_id: int
    first_frame: int  # first frame with a row (the object is live from here)
    last_frame: int  # last frame with a row
    rows: int
    frames_present: int  # frames with score > 0.5 and a non-empty mask
    first_present: int | None  # None when the track is never present
    last_present: int | None


@dataclass(frozen=True)
class FrameRows:
    """The rows of one frame of one video, ordered by track_id; masks still RLE-encoded."""

    video_id: str
    frame_index: int
    height: int
    width: int
    track_ids: list[int]
    rles: list[str]
    scores: list[float]
    areas: list[int]
    bboxes: list[list[float]]
    present: list[bool]

    def decode(self, present_only: bool = True) -> dict[int, np.ndarray]:
        """track_id -> (H, W) bool mask; only present objects unless `present_only` is False."""
        return {
            track: decode_mask(rle, self.height, self.width)
            for track, rle, here in zip(self.track_ids, self.rles, self.present, strict=True)
            if here or not present_only
        }


def present_mask(table: pa.Table) -> pa.ChunkedArray:
    """Boolean column: score > 0.5 and area > 0."""
    return pc.and_(pc.greater(table.column("score"), PRESENT_SCORE), pc.greater(table.column("area"), 0))


def _spans_from_groups(rows: pa.Table, present: pa.Table) -> list[TrackSpan]:
    presence = {row["track_id"]: row for row in present.to_pylist()}
    spans = []
    for row in rows.to_pylist():
        seen = presence.get(row["track_id"])
        spans.append(
            TrackSpan(
                track_id=int(row["track_id"]),
                first_frame=int(row["frame_index_min"]),
                last_frame=int(row["frame_index_max"]),
                rows=int(row["frame_index_count"]),
                frames_present=int(seen["frame_index_count"]) if seen else 0,
                first_present=int(seen["frame_index_min"]) if seen else None,
                last_present=int(seen["frame_index_max"]) if seen else None,
            )
        )
    return sorted(spans, key=lambda span: span.track_id)


@dataclass(frozen=True)
class VideoRows:
    """All mask rows of one video, sorted by (frame_index, track_id)."""

    video_id: str
    table: pa.Table

    @classmethod
    def from_table(cls, video_id: str, table: pa.Table) -> VideoRows:
        ordered = table.sort_by([("frame_index", "ascending"), ("track_id", "ascending")])
        return cls(video_id=video_id, table=ordered.combine_chunks())

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the video's masks; (0, 0) when it has no rows."""
        if self.table.num_rows == 0:
            return (0, 0)
        return int(self.table.column("height")[0].as_py()), int(self.table.column("width")[0].as_py())

    @property
    def track_ids(self) -> list[int]:
        return sorted(int(t) for t in pc.unique(self.table.column("track_id")).to_pylist())

    @property
    def last_frame(self) -> int:
        """The last frame with a row, or -1 when there are none."""
        if self.table.num_rows == 0:
            return -1
        return int(pc.max(self.table.column("frame_index")).as_py())

    def tracks(self) -> list[TrackSpan]:
        """Per-track frame ranges, ordered by track_id."""
        keys = self.table.select(["track_id", "frame_index"])
        aggregations = [("frame_index", "min"), ("frame_index", "max"), ("frame_index", "count")]
        rows = keys.group_by("track_id").aggregate(aggregations)
        present = keys.filter(present_mask(self.table)).group_by("track_id").aggregate(aggregations)
        return _spans_from_groups(rows, present)

    def frames(self) -> Iterator[FrameRows]:
        """One FrameRows per frame that has rows, in frame order."""
        if self.table.num_rows == 0:
            return
        height, width = self.size
        frames = self.table.column("frame_index").to_numpy()
        starts = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]])
        ends = np.r_[starts[1:], len(frames)]
        present = present_mask(self.table).to_pylist()
        columns = {name: self.table.column(name).to_pylist() for name in ("track_id", "rle", "score", "area", "bbox")}
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            yield FrameRows(
                video_id=self.video_id,
                frame_index=int(frames[start]),
                height=height,
                width=width,
                track_ids=[int(t) for t in columns["track_id"][start:end]],
                rles=columns["rle"][start:end],
                scores=columns["score"][start:end],
                areas=columns["area"][start:end],
                bboxes=columns["bbox"][start:end],
                present=present[start:end],
            )


@dataclass(frozen=True)
class VideoSummary:
    """One video of the output, from its clips/ rows."""

    video_id: str
    video_uri: str
    num_frames: int  # end of its last ok clip: frames [0, num_frames) were tracked (or sampled)
    clips_ok: int
    clips_failed: int
    clips_skipped: int
    unit_ids: tuple[str, ...]
    sample_fps: float | None = None  # the run tracked only frames nearest this rate's grid
    tracked_frames: tuple[int, ...] | None = None  # with sample_fps: the tracked frames of its ok clips

    def annotated_frames(self, num_frames: int | None = None) -> Sequence[int]:
        """The frames an export or evaluation covers: the sampled ones, else every frame below `num_frames`
        (default: the end of the last ok clip)."""
        if self.tracked_frames is not None:
            return self.tracked_frames
        return range(self.num_frames if num_frames is None else num_frames)
