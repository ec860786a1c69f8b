"""Small videos in the encodings real archives hold, written with PyAV's own encoders.

Each `Encoding` names a codec, pixel format and container, and what real files add: display
rotation (a phone's portrait video), variable frame rates (phones, screen recordings), a start
offset (MPEG-TS, edited MP4s), interlaced fields, audio as the first stream, odd and tiny sizes. `write_encoding`
writes one of them from a deterministic moving pattern, so tests and benchmarks (4K) decode the
same scene in every encoding. The catalogue `ARCHIVE_ENCODINGS` is the codec matrix the test suite
checks every decoding backend against.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["ARCHIVE_ENCODINGS", "Encoding", "pattern_frames", "write_encoding"]

# A variable frame rate: frame durations in milliseconds, cycled (30, 20, 60 and 10 fps mixed).
VFR_DURATIONS_MS = (33, 50, 17, 100)


@dataclass(frozen=True)
class Encoding:
    """One kind of video file: how it is encoded and what its container says about it."""

    name: str
    codec: str  # a PyAV/FFmpeg encoder name
    suffix: str  # the container, by file extension
    pix_fmt: str = "yuv420p"
    width: int = 64
    height: int = 48
    frames: int = 6
    rate: Fraction = Fraction(25)
    options: dict[str, str] = field(default_factory=dict)
    rotation: int = 0  # counter-clockwise degrees a player turns the picture
    mirror: bool = False  # a player then mirrors the turned picture left-right (PyAV's set_display_rotation)
    vfr: bool = False  # frame durations cycle through VFR_DURATIONS_MS
    start_s: float = 0.0  # the first frame's presentation time
    audio_first: bool = False  # an audio stream comes before the video stream

    @property
    def displayed_size(self) -> tuple[int, int]:
        """(width, height) a player shows."""
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)


def _x264(gop: int) -> dict[str, str]:
    # One thread keeps the bytes identical from run to run and the cost small next to other jobs.
    return {"g": str(gop), "keyint_min": str(gop), "threads": "1"}


ARCHIVE_ENCODINGS: tuple[Encoding, ...] = (
    Encoding("h264-short-gop", "libx264", ".mp4", options=_x264(2)),
    Encoding("h264-single-gop", "libx264", ".mp4", options=_x264(250)),
    Encoding("hevc-8bit", "libx265", ".mp4", options={"x265-params": "log-level=error:pools=1:frame-threads=1"}),
    Encoding(
        "hevc-10bit",
        "libx265",
        ".mkv",
        pix_fmt="yuv420p10le",
        options={"x265-params": "log-level=error:pools=1:frame-threads=1"},
    ),
    Encoding("vp8", "libvpx", ".webm", options={"threads": "1"}),
    Encoding("vp9", "libvpx-vp9", ".webm", options={"threads": "1"}),
    Encoding("av1", "libsvtav1", ".mp4", options={"preset": "12"}),
    Encoding("mpeg4-avi", "mpeg4", ".avi"),
    Encoding("mjpeg", "mjpeg", ".avi", pix_fmt="yuvj420p"),
    Encoding("prores-10bit", "prores_ks", ".mov", pix_fmt="yuv422p10le"),
    Encoding("ffv1-grey", "ffv1", ".mkv", pix_fmt="gray"),
    Encoding("odd-size", "libx264", ".mp4", pix_fmt="yuv444p", width=63, height=47, options=_x264(3)),
    Encoding("tiny-32", "libx264", ".mp4", width=32, height=32, options=_x264(3)),
    Encoding("one-frame", "libx264", ".mp4", frames=1, options=_x264(3)),
    Encoding("ntsc-30000-1001", "libx264", ".mp4", rate=Fraction(30000, 1001), options=_x264(3)),
    Encoding("mpeg-ts", "libx264", ".ts", options=_x264(3)),
    Encoding("interlaced", "libx264", ".mp4", options={**_x264(3), "x264-params": "interlaced=1:tff=1"}),
    Encoding("start-offset", "libx264", ".mp4", start_s=1.0, options=_x264(3)),
    Encoding("rotate-90", "libx264", ".mp4", rotation=90, options=_x264(3)),
    Encoding("rotate-180", "libx264", ".mp4", rotation=180, options=_x264(3)),
    Encoding("rotate-270-mirror", "libx264", ".mp4", rotation=270, mirror=True, options=_x264(3)),
    Encoding("vfr-mp4", "libx264", ".mp4", frames=24, vfr=True, options=_x264(4)),
    Encoding("vfr-mkv", "libx264", ".mkv", frames=24, vfr=True, options=_x264(4)),
    Encoding("audio-first", "libx264", ".mp4", audio_first=True, options=_x264(3)),
)


def pattern_frames(width: int, height: int, count: int) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 frames: a colour gradient with a bright square moving right and down, and an
    asymmetric corner mark, so every rotation, mirror and frame order is visible in the pixels."""
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]  # (H, 1)
    cols = np.linspace(0, 255, width, dtype=np.float32)[None, :]  # (1, W)
    base = np.stack(
        [
            np.broadcast_to(cols, (height, width)),
            np.broadcast_to(rows, (height, width)),
            np.full((height, width), 96, np.float32),
        ],
        axis=-1,
    ).astype(np.uint8)  # (H, W, 3)
    side = max(2, min(width, height) // 4)
    for index in range(count):
        frame = base.copy()
        top = (index * 3) % max(1, height - side)
        left = (index * 5) % max(1, width - side)
        frame[top : top + side, left : left + side] = 255
        frame[: max(1, height // 8), : max(1, width // 3)] = (255, 0, 0)  # top-left, wider than tall
        yield frame


def _timestamps_ms(encoding: Encoding) -> list[int]:
    start = round(encoding.start_s * 1000)
    if not encoding.vfr:
        return [start + round(1000 * i / encoding.rate) for i in range(encoding.frames)]
    stamps = [start]
    for i in range(1, encoding.frames):
        stamps.append(stamps[-1] + VFR_DURATIONS_MS[(i - 1) % len(VFR_DURATIONS_MS)])
    return stamps


def write_encoding(encoding: Encoding, path: Path) -> Path:
    """Write `encoding`'s pattern video to `path` (its suffix chooses the container); returns `path`."""
    with av.open(str(path), mode="w") as container:
        audio = _add_audio(container) if encoding.audio_first else None
        stream = container.add_stream(encoding.codec, rate=encoding.rate)
        stream.width, stream.height, stream.pix_fmt = encoding.width, encoding.height, encoding.pix_fmt
        stream.options = dict(encoding.options)
        millis = encoding.vfr or encoding.start_s
        if millis:
            stream.codec_context.time_base = Fraction(1, 1000)
        if encoding.rotation or encoding.mirror:
            stream.set_display_rotation(encoding.rotation, hflip=encoding.mirror)
        frames = pattern_frames(encoding.width, encoding.height, encoding.frames)
        for index, (image, stamp) in enumerate(zip(frames, _timestamps_ms(encoding), strict=True)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if millis:
                frame.pts, frame.time_base = stamp, Fraction(1, 1000)
            else:
                frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if audio is not None:
            _write_tone(container, audio, seconds=float(encoding.frames / encoding.rate))
    return path


def _add_audio(container: av.container.OutputContainer) -> av.audio.stream.AudioStream:
    return container.add_stream("aac", rate=22050)


def _write_tone(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    rate = 22050
    samples = (0.1 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds) + 1024) / rate)).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")  # (1, S)
    frame.sample_rate = rate
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
