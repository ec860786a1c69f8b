"""The video frames beside an export: JPEGImages/<video>/<frame:05d>.jpg, decoded from the video's URI."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from batchtrack.dataset.exports.destination import Destination
from batchtrack.io.video import iter_frames

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
    num_frames: int,
    storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Decode frames [0, num_frames) of `video_uri` and write them as JPEGs; returns how many were written."""
    written = 0
    for index, frame in enumerate(iter_frames(video_uri, 0, num_frames, storage_options=storage_options)):
        dest.write_bytes(f"{FRAMES_DIR}/{frame_name(video_id, index, 'jpg')}", jpeg_bytes(frame))
        written += 1
    return written
