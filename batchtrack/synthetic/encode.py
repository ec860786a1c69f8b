"""Write frames as an H.264 mp4 with PyAV (libx264, yuv420p).

Frames get pts 0, 1, 2, ... in a 1/fps time base and no B-frame reordering surprises for decoders:
frame i of the file is the i-th frame given. A fixed GOP makes keyframes sparse, so a reader that
starts mid-video has to seek, as with real footage.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_mp4(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    crf: int = 18,
    gop: int = 30,
) -> int:
    """Encode (H, W, 3) uint8 RGB frames to `path`; returns the number of frames written."""
    rate = Fraction(fps).limit_denominator(1001)
    images = iter(frames)
    first = next(images, None)
    if first is None:
        raise ValueError(f"write_mp4: no frames to write to {path}")
    count = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.height, stream.width = first.shape[:2]
        # One thread keeps the output identical from run to run and cheap next to other jobs.
        stream.options = {"crf": str(crf), "g": str(gop), "keyint_min": str(gop), "threads": "1"}
        for image in itertools.chain([first], images):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = count
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        for packet in stream.encode(None):
            container.mux(packet)
    return count
