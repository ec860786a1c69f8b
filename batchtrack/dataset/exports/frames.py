"""The video frames beside an export: JPEGImages/<video>/<frame:05d>.jpg, decoded from the video's URI."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from batchtrack.dataset.exports.destination import Destination
from batchtrack.io.video import open_video

FRAMES_DIR = "JPEGImages"
JPEG_QUALITY = 95


def frame_name(video_id: str, frame_index: int, suffix: str) -> str:
    """`<video_id>/<frame:05d>.<suffix>`, the per-frame file name every format here uses."""
    return f"{video_id}/{frame_index:05d}.{suffix}"


def jpeg_bytes(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def write_frames(
    dest: Destination,
    video_id: str,
    video_uri: str,
    frames: Sequence[int],
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Decode `frames` (ascending absolute indices) of `video_uri`, as a player shows them, and write them as
    JPEGs named by their index; returns how many were written."""
    if not len(frames):
        return 0
    written = 0
    keep = None if list(frames) == list(range(len(frames))) else frozenset(frames)
    with open_video(video_uri, storage_options=storage_options) as video:
        for index, frame in zip(frames, video.frames(0, frames[-1] + 1, keep), strict=True):
            dest.write_bytes(f"{FRAMES_DIR}/{frame_name(video_id, index, 'jpg')}", jpeg_bytes(frame))
            written += 1
    return written
