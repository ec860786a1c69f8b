"""DAVIS style annotations: Annotations/<video_id>/<frame:05d>.png, palette PNGs of object indices.

Pixel value k (1..255) is the video's k-th track in track_id order, 0 is background; where masks
overlap the most confident object (highest score) is drawn on top. Every frame of the video gets a
PNG, empty ones included; `objects.json` maps each video's indices back to track ids and
`ImageSets/batchtrack.txt` lists the videos, as DAVIS's ImageSets do.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import numpy as np
from PIL import Image

from batchtrack.dataset.exports.destination import Destination
from batchtrack.dataset.exports.frames import frame_name
from batchtrack.dataset.video_rows import FrameRows, VideoRows, VideoSummary
from batchtrack.errors import BatchtrackError

ANNOTATIONS_DIR = "Annotations"
OBJECTS_FILE = "objects.json"
IMAGE_SET_FILE = "ImageSets/batchtrack.txt"
MAX_OBJECTS = 255


def davis_palette() -> list[int]:
    """The 256-colour palette DAVIS and PASCAL VOC use: index bits spread over the high bits of R, G, B."""
    palette = []
    for index in range(256):
        red = green = blue = 0
        code = index
        for shift in range(7, -1, -1):
            red |= (code & 1) << shift
            green |= ((code >> 1) & 1) << shift
            blue |= ((code >> 2) & 1) << shift
            code >>= 3
        palette.extend((red, green, blue))
    return palette


PALETTE = davis_palette()


def palette_png(indices: np.ndarray) -> bytes:
    height, width = indices.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(indices, dtype=np.uint8).tobytes())
    image.putpalette(PALETTE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def index_map(frame: FrameRows, object_index: dict[int, int]) -> np.ndarray:
    """(H, W) uint8 object indices of one frame; higher-scoring objects are drawn last (on top)."""
    canvas = np.zeros((frame.height, frame.width), dtype=np.uint8)
    masks = frame.decode(present_only=True)
    scores = dict(zip(frame.track_ids, frame.scores, strict=True))
    for track in sorted(masks, key=lambda t: (scores[t], -t)):
        canvas[masks[track]] = object_index[track]
    return canvas


class DavisWriter:
    """Writes palette PNGs frame by frame; the object maps and the video list on close."""

    def __init__(self, dest: Destination) -> None:
        self.dest = dest
        self.objects: dict[str, dict[str, int]] = {}

    def add_video(self, video: VideoSummary, rows: VideoRows, frames: Sequence[int]) -> None:
        if len(rows.track_ids) > MAX_OBJECTS:
            raise BatchtrackError(
                f"video {video.video_id} has {len(rows.track_ids)} tracks; DAVIS PNGs hold at most {MAX_OBJECTS}"
            )
        object_index = {track: index for index, track in enumerate(rows.track_ids, start=1)}
        height, width = rows.size
        tracked = rows.frames()
        pending = next(tracked, None)
        for frame_index in frames:
            if pending is not None and pending.frame_index == frame_index:
                canvas = index_map(pending, object_index)
                pending = next(tracked, None)
            else:
                canvas = np.zeros((height, width), dtype=np.uint8)
            name = frame_name(video.video_id, frame_index, "png")
            self.dest.write_bytes(f"{ANNOTATIONS_DIR}/{name}", palette_png(canvas))
        self.objects[video.video_id] = {str(index): track for track, index in object_index.items()}

    def close(self) -> None:
        self.dest.write_bytes(OBJECTS_FILE, json.dumps(self.objects, indent=1).encode("utf-8"))
        self.dest.write_bytes(IMAGE_SET_FILE, "".join(f"{video}\n" for video in self.objects).encode("utf-8"))
