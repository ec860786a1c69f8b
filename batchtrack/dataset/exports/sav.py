"""SA-V style annotations: one `<video_id>_auto.json` per video, masklets as per-frame lists of COCO RLE.

As in SA-V, `masklet` is a list over frames of lists over objects (`masklet_id` gives each column's
track_id); an object not present on a frame has the empty mask's RLE there. Position i of `masklet` is
frame `annotated_frames[i]` of the video: every frame of a full-rate run (position = frame index), the
sampled frames of a --sample-fps run (as SA-V lists its 6 fps annotated frames).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from batchtrack.dataset.exports.destination import Destination
from batchtrack.dataset.video_rows import VideoRows, VideoSummary
from batchtrack.io.rle import encode_mask

MASKLET_TYPE = "auto"  # model output, in SA-V's words (manual = human annotated)


def sav_file_name(video_id: str) -> str:
    return f"{video_id}_{MASKLET_TYPE}.json"


def _duration(rows: VideoRows, num_frames: int) -> float | None:
    """Seconds the video's frames [0, num_frames) span, from the rows' own timestamps (exact for VFR)."""
    frames = rows.table.column("frame_index").to_numpy()
    stamps = rows.table.column("timestamp_s").to_numpy()
    usable = (frames > 0) & (stamps > 0)
    if not usable.any():
        return None
    last = int(np.argmax(frames))
    per_frame = float(stamps[last] / frames[last]) if frames[last] > 0 else 0.0  # average frame length
    return float(stamps[last]) + per_frame * (num_frames - int(frames[last]))


def _visibility_changes(present: np.ndarray) -> int:
    """How often an object appears or disappears after it first appeared."""
    seen = np.flatnonzero(present)
    if seen.size == 0:
        return 0
    return int(np.count_nonzero(np.diff(present[seen[0] :].astype(np.int8))))


def sav_record(video: VideoSummary, rows: VideoRows, frames: Sequence[int]) -> dict[str, Any]:
    """The SA-V style JSON object of one video, annotated on `frames` (ascending absolute indices)."""
    height, width = rows.size
    track_ids = rows.track_ids
    column = {track: index for index, track in enumerate(track_ids)}
    position = {frame: i for i, frame in enumerate(frames)}
    empty = {"size": [height, width], "counts": encode_mask(np.zeros((height, width), dtype=bool))}
    masklet: list[list[dict[str, Any]]] = [[empty] * len(track_ids) for _ in frames]
    present = np.zeros((len(frames), len(track_ids)), dtype=bool)
    area = np.zeros((len(frames), len(track_ids)), dtype=np.float64)
    for frame in rows.frames():
        at = position.get(frame.frame_index)
        if at is None:
            continue
        for track, rle, here, pixels in zip(frame.track_ids, frame.rles, frame.present, frame.areas, strict=True):
            if here:
                masklet[at][column[track]] = {"size": [height, width], "counts": rle}
                present[at, column[track]] = True
                area[at, column[track]] = pixels
    counts = present.sum(axis=0)
    size_abs = np.divide(area.sum(axis=0), counts, out=np.zeros(len(track_ids)), where=counts > 0)
    num_frames = max(video.num_frames, (frames[-1] + 1) if len(frames) else 0)
    return {
        "video_id": video.video_id,
        "video_uri": video.video_uri,
        "video_frame_count": num_frames,
        "video_duration": _duration(rows, num_frames),
        "annotated_frames": list(frames) if video.sample_fps is not None else None,
        "annotation_fps": video.sample_fps,
        "video_height": height,
        "video_width": width,
        "video_resolution": height * width,
        "masklet": masklet,
        "masklet_id": track_ids,
        "masklet_num": len(track_ids),
        "masklet_type": [MASKLET_TYPE] * len(track_ids),
        "masklet_frame_count": counts.astype(int).tolist(),
        "masklet_first_appeared_frame": [
            int(frames[int(np.argmax(present[:, j]))]) if counts[j] else None for j in range(len(track_ids))
        ],
        "masklet_visibility_changes": [_visibility_changes(present[:, j]) for j in range(len(track_ids))],
        "masklet_size_abs": size_abs.tolist(),
        "masklet_size_rel": (size_abs / float(height * width)).tolist(),
    }


class SavWriter:
    """Writes one SA-V style JSON file per video."""

    def __init__(self, dest: Destination) -> None:
        self.dest = dest

    def add_video(self, video: VideoSummary, rows: VideoRows, frames: Sequence[int]) -> None:
        record = sav_record(video, rows, frames)
        self.dest.write_bytes(sav_file_name(video.video_id), json.dumps(record).encode("utf-8"))

    def close(self) -> None:
        """Nothing is held across videos."""
