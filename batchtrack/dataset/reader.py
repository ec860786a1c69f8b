"""`open_dataset(OUTPUT)`: a job's output as a dataset of tracked masks, committed units only.

    data = open_dataset("s3://bucket/out", storage_options={...})
    data.masks / data.pointers         pyarrow datasets over the committed masks/ and pointers/ files
    data.clips                         the clips/ table (one row per clip, with its unit_id)
    data.paths("masks")                URIs of the committed files, for DuckDB, Polars or HF datasets
    data.videos()                      one VideoSummary per video
    data.tracks(video_id)              per-track frame ranges
    data.frame_masks(video_id, frame)  track_id -> (H, W) bool mask
    data.nearest(embedding, k)         the k most similar object pointers
    data.to_torch()                    a torch IterableDataset of (video_id, frame_index, masks, track_ids)

A video's rows are read from its own units' files only (the clips/ table says which), so asking
about one video never scans the whole output.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from batchtrack.dataset.layout import OutputFiles, list_output
from batchtrack.dataset.video_rows import ROW_COLUMNS, FrameRows, TrackSpan, VideoRows, VideoSummary
from batchtrack.errors import UnknownVideoError
from batchtrack.io.schema import MASKS_SCHEMA, pointers_schema

if TYPE_CHECKING:
    from batchtrack.dataset.torch_frames import TorchFrameDataset


def _arrow_filesystem(files: OutputFiles) -> pafs.FileSystem | Any:
    protocols = (files.fs.protocol,) if isinstance(files.fs.protocol, str) else tuple(files.fs.protocol)
    return pafs.LocalFileSystem() if "file" in protocols else files.fs


def _unit_id_column(dataset: ds.Dataset) -> pa.Table:
    """The clips table with a unit_id column taken from each file's name (for outputs written before it)."""
    tables = []
    for fragment in dataset.get_fragments():
        table = fragment.to_table()
        unit = posixpath.basename(fragment.path).removesuffix(".parquet")
        tables.append(table.append_column("unit_id", pa.array([unit] * table.num_rows, pa.string())))
    return pa.concat_tables(tables, promote_options="default")


def _sampled_frames(clips: pa.Table) -> dict[str, tuple[float, tuple[int, ...]]]:
    """video_id -> (sample fps, tracked frames of its ok clips) for the videos a --sample-fps run tracked."""
    if "sample_fps" not in clips.column_names or "tracked_frames" not in clips.column_names:
        return {}  # written before sampling existed: every frame was tracked
    sampled = clips.filter(pc.and_(pc.equal(clips.column("status"), "ok"), pc.is_valid(clips.column("sample_fps"))))
    frames: dict[str, set[int]] = {}
    rates: dict[str, float] = {}
    for row in sampled.select(["video_id", "sample_fps", "tracked_frames"]).to_pylist():
        frames.setdefault(row["video_id"], set()).update(row["tracked_frames"] or ())
        rates[row["video_id"]] = float(row["sample_fps"])
    return {video: (rates[video], tuple(sorted(found))) for video, found in frames.items()}


class TrackedMaskDataset:
    """The committed part of one job output. Build it with `open_dataset`."""

    def __init__(self, files: OutputFiles) -> None:
        self.files = files

    def __repr__(self) -> str:
        return f"TrackedMaskDataset({self.files.output!r}, units={len(self.files.clips)})"

    def __getstate__(self) -> dict[str, Any]:
        return {"files": self.files}  # cached pyarrow objects are rebuilt in the worker that unpickles

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.files = state["files"]

    @property
    def output(self) -> str:
        return self.files.output

    def paths(self, kind: Literal["masks", "pointers", "clips"]) -> list[str]:
        """URIs of one folder's committed files, for engines that read Parquet themselves (DuckDB, HF datasets)."""
        chosen = {"masks": self.files.masks, "pointers": self.files.pointers, "clips": self.files.clips}[kind]
        local = isinstance(_arrow_filesystem(self.files), pafs.LocalFileSystem)
        return [path if local else self.files.fs.unstrip_protocol(path) for path in sorted(chosen.values())]

    def _dataset(self, paths: Iterable[str], empty_schema: pa.Schema) -> ds.Dataset:
        paths = sorted(paths)
        if not paths:
            return ds.dataset([], schema=empty_schema, format="parquet")
        return ds.dataset(paths, filesystem=_arrow_filesystem(self.files), format="parquet")

    @cached_property
    def masks(self) -> ds.Dataset:
        """pyarrow dataset over the committed masks/ files (schema: batchtrack.io.schema.MASKS_SCHEMA)."""
        return self._dataset(self.files.masks.values(), MASKS_SCHEMA)

    @cached_property
    def pointers(self) -> ds.Dataset:
        """pyarrow dataset over the committed pointers/ files (keys + 256-d `embedding`)."""
        return self._dataset(self.files.pointers.values(), pointers_schema())

    @cached_property
    def clips(self) -> pa.Table:
        """The clips/ table of the committed units: one row per clip, status ok / failed / skipped."""
        dataset = ds.dataset(
            sorted(self.files.clips.values()), filesystem=_arrow_filesystem(self.files), format="parquet"
        )
        if "unit_id" in dataset.schema.names:
            return dataset.to_table()
        return _unit_id_column(dataset)

    @cached_property
    def _videos(self) -> dict[str, VideoSummary]:
        clips = self.clips
        status = clips.column("status")
        is_ok = pc.equal(status, "ok")
        per_clip = pa.table({
            "video_id": clips.column("video_id"),
            "video_uri": clips.column("video_uri"),
            "unit_id": clips.column("unit_id"),
            "ok": pc.cast(is_ok, pa.int64()),
            "failed": pc.cast(pc.equal(status, "failed"), pa.int64()),
            "skipped": pc.cast(pc.equal(status, "skipped"), pa.int64()),
            "ok_end": pc.if_else(is_ok, clips.column("end_frame"), 0),
        })
        grouped = per_clip.group_by("video_id").aggregate(
            [("video_uri", "min"), ("unit_id", "distinct"), ("ok", "sum"), ("failed", "sum"), ("skipped", "sum"),
             ("ok_end", "max")]
        )
        sampled = _sampled_frames(clips)
        summaries = [
            VideoSummary(
                video_id=row["video_id"],
                video_uri=row["video_uri_min"],
                num_frames=int(row["ok_end_max"]),
                clips_ok=int(row["ok_sum"]),
                clips_failed=int(row["failed_sum"]),
                clips_skipped=int(row["skipped_sum"]),
                unit_ids=tuple(sorted(row["unit_id_distinct"])),
                sample_fps=sampled.get(row["video_id"], (None, None))[0],
                tracked_frames=sampled.get(row["video_id"], (None, None))[1],
            )
            for row in grouped.to_pylist()
        ]
        return {summary.video_id: summary for summary in sorted(summaries, key=lambda v: v.video_id)}

    def videos(self) -> list[VideoSummary]:
        """Every video of the committed clips/, ordered by video_id."""
        return list(self._videos.values())

    def video(self, video_id: str) -> VideoSummary:
        """The summary of one video; UnknownVideoError when the output has no committed clip of it."""
        try:
            return self._videos[video_id]
        except KeyError:
            raise UnknownVideoError(f"video {video_id!r} is not in {self.output} (no committed clips/ row)") from None

    def _read_rows(self, unit_ids: Iterable[str], where: pc.Expression) -> pa.Table:
        paths = [self.files.masks[unit] for unit in unit_ids if unit in self.files.masks]
        if not paths:
            return MASKS_SCHEMA.empty_table().select(ROW_COLUMNS)
        return self._dataset(paths, MASKS_SCHEMA).to_table(columns=ROW_COLUMNS, filter=where)

    def video_rows(self, video_id: str, frame_index: int | None = None) -> VideoRows:
        """Mask rows of one video (RLE, not decoded), or of one of its frames, read from its own units' files."""
        where = pc.field("video_id") == video_id
        if frame_index is not None:
            where = where & (pc.field("frame_index") == frame_index)
        return VideoRows.from_table(video_id, self._read_rows(self.video(video_id).unit_ids, where))

    def iter_video_rows(self, video_ids: Iterable[str] | None = None) -> Iterator[VideoRows]:
        """The rows of each video, reading each unit once: videos of the same units come from one read.

        Memory holds one unit's rows (compressed RLE) at a time. Videos come grouped by unit.
        """
        chosen = self.videos() if video_ids is None else [self.video(video_id) for video_id in video_ids]
        by_units: dict[tuple[str, ...], list[str]] = {}
        for summary in chosen:
            by_units.setdefault(summary.unit_ids, []).append(summary.video_id)
        for unit_ids, ids in by_units.items():
            table = self._read_rows(unit_ids, pc.field("video_id").isin(ids))
            for video_id in ids:
                yield VideoRows.from_table(video_id, table.filter(pc.equal(table.column("video_id"), video_id)))

    def tracks(self, video_id: str) -> list[TrackSpan]:
        """Per-track frame ranges of one video (first/last frame with a row, frames present), by track_id."""
        return self.video_rows(video_id).tracks()

    def frame_masks(self, video_id: str, frame_index: int, present_only: bool = True) -> dict[int, np.ndarray]:
        """track_id -> (H, W) bool mask on one frame; only present objects unless `present_only` is False."""
        rows = next(self.video_rows(video_id, frame_index).frames(), None)
        return {} if rows is None else rows.decode(present_only)

    def iter_frames(self, video_ids: Iterable[str] | None = None) -> Iterator[FrameRows]:
        """FrameRows of every frame with rows, video by video (one unit's rows in memory at a time)."""
        for rows in self.iter_video_rows(video_ids):
            yield from rows.frames()

    def nearest(self, query: np.ndarray, k: int = 10) -> pa.Table:
        """The k pointer rows most cosine-similar to `query` (256-d), best first, with a `similarity` column."""
        from batchtrack.dataset.search import nearest_pointers

        return nearest_pointers(self.pointers, query, k)

    def to_torch(self, present_only: bool = True) -> TorchFrameDataset:
        """A torch IterableDataset of FrameSample(video_id, frame_index, masks (N, H, W) bool, track_ids (N,))."""
        from batchtrack.dataset.torch_frames import TorchFrameDataset

        ok_videos = [video.video_id for video in self.videos() if video.clips_ok]
        return TorchFrameDataset(ok_videos, self.iter_frames, present_only=present_only)


def open_dataset(output: str, storage_options: Mapping[str, Any] | None = None) -> TrackedMaskDataset:
    """Open a job's output (local folder or fsspec URI, e.g. s3://bucket/out) over its committed units only.

    Raises OutputNotFoundError when `output` holds no committed unit.
    """
    return TrackedMaskDataset(list_output(str(output), storage_options))
