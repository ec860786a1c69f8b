"""YouTube-VIS style annotations: one `instances.json` with videos, per-track annotations and categories.

Each track is one annotation whose `segmentations`, `areas` and `bboxes` hold one entry per frame of
its video (COCO compressed RLE `{"size": [h, w], "counts": str}`, or null where the object is absent),
the format SAM 3's video evaluation reads. The output has no class labels: every track is category 1,
"object". Each video's `file_names` name `<video_id>/<frame:05d>.jpg`, the files `--frames` writes under
JPEGImages/. The file is streamed: each video's entries are spooled to local temporary files as it is
read, then joined, so memory holds one video at a time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from typing import IO, Any

from batchtrack.dataset.exports.destination import Destination
from batchtrack.dataset.exports.frames import frame_name
from batchtrack.dataset.video_rows import VideoRows, VideoSummary

YTVIS_FILE = "instances.json"
CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


class _JsonArraySpool:
    """Items of a JSON array, written one by one to a local temporary file."""

    def __init__(self) -> None:
        self.file: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.count = 0

    def add(self, item: dict[str, Any]) -> None:
        if self.count:
            self.file.write(",")
        json.dump(item, self.file)
        self.count += 1

    def copy_to(self, handle: IO[str]) -> None:
        self.file.seek(0)
        shutil.copyfileobj(self.file, handle)

    def close(self) -> None:
        self.file.close()


def video_entry(number: int, video: VideoSummary, rows: VideoRows, frames: Sequence[int]) -> dict[str, Any]:
    height, width = rows.size
    return {
        "id": number,
        "name": video.video_id,
        "video_uri": video.video_uri,
        "height": height,
        "width": width,
        "length": len(frames),
        "file_names": [frame_name(video.video_id, index, "jpg") for index in frames],
    }


def track_annotations(first_id: int, video_number: int, rows: VideoRows, frames: Sequence[int]) -> list[dict[str, Any]]:
    """One annotation per track of the video, ids counting up from `first_id`; list position i is frames[i]."""
    height, width = rows.size
    num_frames = len(frames)
    position = {frame: i for i, frame in enumerate(frames)}
    per_track: dict[int, dict[str, Any]] = {}
    for offset, track in enumerate(rows.track_ids):
        per_track[track] = {
            "id": first_id + offset,
            "video_id": video_number,
            "category_id": CATEGORY["id"],
            "track_id": track,
            "iscrowd": 0,
            "height": height,
            "width": width,
            "length": num_frames,
            "segmentations": [None] * num_frames,
            "areas": [None] * num_frames,
            "bboxes": [None] * num_frames,
        }
    for frame in rows.frames():
        for track, rle, here, area, bbox in zip(
            frame.track_ids, frame.rles, frame.present, frame.areas, frame.bboxes, strict=True
        ):
            if here and frame.frame_index in position:
                entry, at = per_track[track], position[frame.frame_index]
                entry["segmentations"][at] = {"size": [height, width], "counts": rle}
                entry["areas"][at] = int(area)
                entry["bboxes"][at] = [float(v) for v in bbox]
    return list(per_track.values())


class YtvisWriter:
    """Collects videos and annotations into one YouTube-VIS JSON, written on close."""

    def __init__(self, dest: Destination) -> None:
        self.dest = dest
        self.videos = _JsonArraySpool()
        self.annotations = _JsonArraySpool()

    def add_video(self, video: VideoSummary, rows: VideoRows, frames: Sequence[int]) -> None:
        number = self.videos.count + 1
        self.videos.add(video_entry(number, video, rows, frames))
        for annotation in track_annotations(self.annotations.count + 1, number, rows, frames):
            self.annotations.add(annotation)

    def close(self) -> None:
        info = {"description": "batchtrack tracked-mask dataset", "format": "youtube-vis"}
        try:
            with self.dest.open_text(YTVIS_FILE) as handle:
                handle.write(f'{{"info": {json.dumps(info)}, "categories": {json.dumps([CATEGORY])}, "videos": [')
                self.videos.copy_to(handle)
                handle.write('], "annotations": [')
                self.annotations.copy_to(handle)
                handle.write("]}")
        finally:
            self.videos.close()
            self.annotations.close()
