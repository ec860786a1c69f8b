"""Exports of a job's output to the formats video-segmentation tools read: SA-V, YouTube-VIS, DAVIS.

`export_dataset` walks the committed output one unit, then one video at a time (its rows, then its
frames), so memory holds one unit's compressed masks and one decoded frame whatever the output's size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from batchtrack.dataset.exports.davis import DavisWriter
from batchtrack.dataset.exports.destination import Destination
from batchtrack.dataset.exports.frames import write_frames
from batchtrack.dataset.exports.sav import SavWriter
from batchtrack.dataset.exports.ytvis import YtvisWriter
from batchtrack.dataset.reader import TrackedMaskDataset, open_dataset
from batchtrack.dataset.video_rows import VideoRows, VideoSummary

ExportFormat = Literal["sav", "ytvis", "davis"]
FORMATS: tuple[ExportFormat, ...] = ("sav", "ytvis", "davis")

__all__ = ["FORMATS", "ExportFormat", "ExportSummary", "export_dataset"]


class VideoWriter(Protocol):
    def add_video(self, video: VideoSummary, rows: VideoRows, frames: Sequence[int]) -> None:
        """Write one video's annotations on `frames` (absolute indices, ascending: every frame, or the sampled)."""
        ...

    def close(self) -> None: ...


_WRITERS: dict[str, type[SavWriter] | type[YtvisWriter] | type[DavisWriter]] = {
    "sav": SavWriter,
    "ytvis": YtvisWriter,
    "davis": DavisWriter,
}


@dataclass(frozen=True)
class ExportSummary:
    format: str
    dest: str
    videos: int  # videos written
    skipped: int  # videos with no mask rows (nothing tracked or every clip failed)
    tracks: int
    frames: int  # annotated frames over all written videos
    images: int  # JPEG frames written (with frames=True)

    def describe(self) -> str:
        return (
            f"exported {self.videos} videos ({self.tracks} tracks, {self.frames} frames, {self.images} images) "
            f"as {self.format} to {self.dest}; skipped {self.skipped} videos without masks"
        )


def _selected(dataset: TrackedMaskDataset, video_ids: Sequence[str] | None) -> list[VideoSummary]:
    if not video_ids:
        return dataset.videos()
    return [dataset.video(video_id) for video_id in video_ids]  # UnknownVideoError for a wrong id


def export_dataset(
    output: str | TrackedMaskDataset,
    dest: str,
    fmt: ExportFormat,
    *,
    frames: bool = False,
    video_ids: Sequence[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> ExportSummary:
    """Export the committed output (or `video_ids` of it) to `dest` in `fmt`; with `frames`, also the JPEGs.

    `storage_options` apply to the output, the destination and the source videos alike.
    """
    if fmt not in _WRITERS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    dataset = output if isinstance(output, TrackedMaskDataset) else open_dataset(output, storage_options)
    videos = _selected(dataset, video_ids)
    target = Destination(dest, storage_options)
    writer: VideoWriter = _WRITERS[fmt](target)
    written = skipped = tracks = annotated = images = 0
    for rows in dataset.iter_video_rows([video.video_id for video in videos]):
        video = dataset.video(rows.video_id)
        if rows.num_rows == 0:
            skipped += 1
            continue
        annotated_frames = video.annotated_frames(max(video.num_frames, rows.last_frame + 1))
        writer.add_video(video, rows, annotated_frames)
        if frames:
            images += write_frames(target, video.video_id, video.video_uri, annotated_frames, storage_options)
        written += 1
        tracks += len(rows.track_ids)
        annotated += len(annotated_frames)
    writer.close()
    return ExportSummary(fmt, dest, written, skipped, tracks, annotated, images)
