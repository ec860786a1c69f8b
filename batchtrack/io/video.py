"""Video decoding: probe a video and stream a range of its frames, from any fsspec URI.

Two backends decode. decord is tried first: it indexes every packet when it opens a file and seeks
to the keyframe before a frame, so a clip never decodes from the start of its video. PyAV takes
over where decord cannot open a file; it builds the same packet index by demuxing (no decoding),
seeks to the keyframe before the clip and decodes forward. Both give frame i as the i-th frame in
presentation order, as (H, W, 3) uint8 RGB, with identical pixels on H.264.

Frames come out as a player shows them: the stream's display matrix (read from the first decoded
frame's side data) is applied (`orientation.py`); decord 0.6 mis-draws quarter turns and ignores
mirrors, so a file with a display matrix is decoded by PyAV. Each frame's own presentation time,
relative to the stream's first frame, comes from the packet index (`timestamps`), which is exact for
variable frame rates; a file is judged cut when its packets end well before the duration its header
declares (not by duration x average rate, which a variable-rate file would fail).

Before either decoder sees a file it is checked cheaply: existence and size through fsspec, the
top-level box layout of MP4/MOV files (a cut file declares boxes that run past its end) and a PyAV
probe of the container. decord logs to stderr and can crash on garbage, so nothing reaches it
that FFmpeg could not at least parse. Every failure is a DecodeError whose kind says why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import struct
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import IO, Any, Literal, Protocol

import av
import av.error
import fsspec
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from fsspec.implementations.local import LocalFileSystem

from batchtrack.errors import ConfigError, DecodeError, DecodeErrorKind, TransientIOError
from batchtrack.io.orientation import IDENTITY, Orientation

try:
    import decord
except ImportError:  # decord ships x86_64 wheels only; PyAV then decodes everything
    decord = None

__all__ = ["Backend", "VideoInfo", "VideoStream", "iter_frames", "open_video", "probe_video"]

logger = logging.getLogger(__name__)

Backend = Literal["auto", "decord", "pyav"]
_BACKENDS: tuple[str, ...] = ("auto", "decord", "pyav")

# decord reads a remote file whole into memory; past this size PyAV streams it with range reads.
DECORD_REMOTE_MAX_BYTES = 1 << 30
# A video whose packets end before this fraction of its declared duration is reported as cut.
_LENGTH_TOLERANCE = 0.95
# The decode thread re-checks for a stopped consumer this often while the queue is full.
_PUT_POLL_S = 0.05
# A consumer that stops early waits this long for the decode thread to finish its current frame.
_JOIN_TIMEOUT_S = 30.0

_VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".flv", ".wmv", ".mpg", ".mpeg"}
    | {".3gp", ".3g2", ".ogv", ".h264", ".264", ".hevc", ".mxf"}
)
# Top-level box types that can open an ISO-BMFF (MP4/MOV) file.
_ISOBMFF_BOXES = frozenset(
    {b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"moof", b"mfra", b"meta"}
    | {b"sidx", b"pdin", b"prft", b"emsg", b"junk"}
)
_NON_VIDEO_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
)
# Demuxers FFmpeg uses for still images and text: they "open" but hold no video.
_STILL_FORMATS = frozenset({"image2", "tty", "ansi", "lavfi", "bin", "txt"})
# Containers where decord's frame numbering was checked against PyAV's (tests/unit/io/test_video.py).
_DECORD_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})
_STILL_CODECS = frozenset({"ansi", "png", "bmp", "tiff", "webp", "apng", "text", "bintext", "xbin", "idf"})


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds: frame count (exact, from its packets), average rate, displayed size, where its
    last frame ends (seconds from its first), and the display orientation applied to its frames
    (counter-clockwise degrees, then a left-right mirror when `mirrored`)."""

    uri: str
    num_frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    rotation: int = 0
    mirrored: bool = False


# --------------------------------------------------------------------------------------------
# Locating the bytes


@dataclass(frozen=True)
class _Source:
    uri: str
    fs: fsspec.AbstractFileSystem
    path: str
    size: int

    @property
    def local_path(self) -> str | None:
        return self.path if isinstance(self.fs, LocalFileSystem) else None

    def open(self, block_size: int | None = None) -> IO[bytes]:
        if self.local_path is not None:
            return open(self.local_path, "rb")
        kwargs = {} if block_size is None else {"block_size": block_size}
        return self.fs.open(self.path, "rb", **kwargs)


def _resolve(uri: str, storage_options: Mapping[str, Any] | None) -> _Source:
    try:
        fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"cannot open {uri}: no filesystem for this URI ({exc})") from exc
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        raise DecodeError(uri, DecodeErrorKind.MISSING, "no such file") from exc
    except PermissionError:
        raise
    except OSError as exc:
        raise TransientIOError(f"cannot stat {uri}: {exc}") from exc
    if info.get("type") == "directory":
        raise DecodeError(uri, DecodeErrorKind.NOT_VIDEO, "it is a directory, not a file")
    size = int(info.get("size") or 0)
    if size == 0:
        raise DecodeError(uri, DecodeErrorKind.EMPTY, "the file has zero bytes")
    return _Source(uri=uri, fs=fs, path=path, size=size)


@contextlib.contextmanager
def _storage_errors(uri: str, doing: str) -> Iterator[None]:
    """Reads can fail half-way on object storage: a vanished object is MISSING, a dropped or
    throttled connection is transient (the caller retries), FFmpeg's own errors pass through."""
    try:
        yield
    except av.error.FFmpegError:
        raise
    except FileNotFoundError as exc:
        raise DecodeError(uri, DecodeErrorKind.MISSING, f"the file disappeared while {doing}") from exc
    except PermissionError:
        raise
    except OSError as exc:
        raise TransientIOError(f"{doing} {uri} failed: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Cheap checks before any decoder sees the file


def _is_isobmff(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] in _ISOBMFF_BOXES


def _check_isobmff_layout(source: _Source) -> None:
    """Walk the top-level boxes of an MP4/MOV file: a box running past the end means a cut file.

    Only reads box headers (a few bytes each), so it is cheap on object storage too.
    """
    saw_moov = False
    offset = 0
    with source.open(block_size=1 << 16) as file:
        while source.size - offset >= 8:
            file.seek(offset)
            header = file.read(16)
            if len(header) < 8:
                break
            size, kind = struct.unpack(">I4s", header[:8])
            if not all(0x20 <= byte < 0x7F for byte in kind):
                return  # trailing garbage: leave the verdict to FFmpeg
            if size == 1:
                if len(header) < 16:
                    break
                size = struct.unpack(">Q", header[8:16])[0]
            elif size == 0:
                size = source.size - offset  # "extends to the end of the file"
            name = kind.decode("ascii")
            if size < 8:
                raise DecodeError(
                    source.uri, DecodeErrorKind.CORRUPT, f"MP4 box {name!r} at byte {offset} has invalid size {size}"
                )
            if offset + size > source.size:
                raise DecodeError(
                    source.uri,
                    DecodeErrorKind.TRUNCATED,
                    f"MP4 box {name!r} at byte {offset} declares {size} bytes but the file ends after "
                    f"{source.size - offset} (the file was cut short)",
                )
            saw_moov = saw_moov or kind == b"moov"
            offset += size
    if not saw_moov:
        raise DecodeError(
            source.uri,
            DecodeErrorKind.TRUNCATED,
            "MP4 file has no 'moov' index box (the file was cut short or never finalised)",
        )


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    text = head.decode("utf-8", errors="replace")
    printable = sum(ch.isprintable() or ch in "\r\n\t\f" for ch in text)
    return printable >= 0.95 * len(text)


def _container_signature(head: bytes) -> str | None:
    if _is_isobmff(head):
        return "MP4/MOV"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "Matroska/WebM"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "AVI"
    if head.startswith(b"FLV"):
        return "FLV"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "MPEG-PS"
    if head.startswith(b"OggS"):
        return "Ogg"
    return None


def _unreadable(source: _Source, head: bytes, cause: str) -> DecodeError:
    """Classify a file FFmpeg could not make sense of: not a video at all, or a broken one."""
    for signature, what in _NON_VIDEO_SIGNATURES:
        if head.startswith(signature):
            return DecodeError(source.uri, DecodeErrorKind.NOT_VIDEO, f"the file is {what}, not a video")
    if _looks_like_text(head):
        return DecodeError(source.uri, DecodeErrorKind.NOT_VIDEO, "the file is text, not a video")
    container = _container_signature(head)
    if container is not None:
        return DecodeError(source.uri, DecodeErrorKind.CORRUPT, f"broken {container} container: {cause}")
    extension = os.path.splitext(source.path)[1].lower()
    if extension in _VIDEO_EXTENSIONS:
        return DecodeError(source.uri, DecodeErrorKind.CORRUPT, f"unrecognisable data in a {extension} file: {cause}")
    return DecodeError(source.uri, DecodeErrorKind.NOT_VIDEO, f"no known video format: {cause}")


@dataclass
class _Probe:
    """A container FFmpeg opened and whose first real video stream passed the checks."""

    source: _Source
    container: av.container.InputContainer
    file: IO[bytes] | None
    stream: av.video.stream.VideoStream
    fps: Fraction
    width: int  # as decoded
    height: int
    orientation: Orientation = IDENTITY
    interlaced: bool = False  # the first frame is coded as two fields

    def close(self) -> None:
        self.container.close()
        if self.file is not None:
            self.file.close()


def _probe_container(source: _Source, threads: int = 0) -> _Probe:
    with _storage_errors(source.uri, "probing"):
        return _probe_opened(source, threads)


def _probe_opened(source: _Source, threads: int) -> _Probe:
    with source.open(block_size=1 << 16) as file:
        head = file.read(512)
    if _is_isobmff(head):
        _check_isobmff_layout(source)
    remote = None if source.local_path is not None else source.open()
    try:
        container = av.open(source.local_path if remote is None else remote, mode="r")
    except av.error.FFmpegError as exc:
        if remote is not None:
            remote.close()
        raise _unreadable(source, head, str(exc)) from exc
    try:
        probe = _select_stream(source, head, container, remote)
        # Set before the first decode opens the codec (reading the orientation does).
        probe.stream.thread_type = "AUTO"
        probe.stream.thread_count = threads  # 0: FFmpeg picks (every core of the node)
        probe.orientation, probe.interlaced = _read_first_frame(probe)
        return probe
    except BaseException:
        container.close()
        if remote is not None:
            remote.close()
        raise


def _select_stream(
    source: _Source, head: bytes, container: av.container.InputContainer, file: IO[bytes] | None
) -> _Probe:
    format_name = container.format.name
    videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not videos:
        kinds = ", ".join(f"{s.type} ({s.codec_context.name if s.codec_context else '?'})" for s in container.streams)
        if kinds:
            raise DecodeError(source.uri, DecodeErrorKind.NO_VIDEO_STREAM, f"no video stream; the file holds {kinds}")
        raise _unreadable(source, head, f"the {format_name} container holds no streams")
    stream = videos[0]
    codec = stream.codec_context.name if stream.codec_context else ""
    if format_name in _STILL_FORMATS or format_name.endswith("_pipe") or codec in _STILL_CODECS:
        what = "text" if codec in {"ansi", "text", "bintext"} else f"a still image ({codec})"
        raise DecodeError(source.uri, DecodeErrorKind.NOT_VIDEO, f"the file is {what}, not a video")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise DecodeError(source.uri, DecodeErrorKind.CORRUPT, f"video stream has no frame size ({width}x{height})")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise DecodeError(source.uri, DecodeErrorKind.CORRUPT, "video stream has no frame rate")
    return _Probe(source, container, file, stream, Fraction(rate), width, height)


def _read_first_frame(probe: _Probe) -> tuple[Orientation, bool]:
    """What only a decoded frame tells: the display matrix FFmpeg attaches to it (from the container's
    track header), as an Orientation, and whether it is coded as interlaced fields; the container is left
    at its start. A first frame that cannot be decoded says nothing: the readers report that file as they
    would any other."""
    container, stream = probe.container, probe.stream
    matrix = None
    interlaced = False
    try:
        for frame in container.decode(stream):
            side = frame.side_data.get(SideDataType.DISPLAYMATRIX)
            matrix = struct.unpack("<9i", bytes(side)) if side is not None else None
            interlaced = bool(frame.interlaced_frame)
            break
    except av.error.FFmpegError:
        pass
    try:
        container.seek(0, backward=True)
    except av.error.FFmpegError as exc:
        raise DecodeError(
            probe.source.uri, DecodeErrorKind.CORRUPT, f"cannot seek back to the start after the first frame: {exc}"
        ) from exc
    return (IDENTITY if matrix is None else Orientation.from_display_matrix(matrix)), interlaced


# --------------------------------------------------------------------------------------------
# Readers: one per backend, same surface


class _Reader(Protocol):
    info: VideoInfo
    timestamps: np.ndarray  # (num_frames,) float64 seconds from the first frame, in presentation order
    end_s: float  # where the stream's last frame ends, from the same origin

    def frames(self, start: int, end: int, keep: Keep = None) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...


# Which frames of a range to deliver (absolute indices); None: all of them.
Keep = frozenset[int] | None


def _info(probe: _Probe, num_frames: int) -> VideoInfo:
    fps = float(probe.fps)
    width, height = probe.orientation.displayed_size(probe.width, probe.height)
    return VideoInfo(
        uri=probe.source.uri,
        num_frames=num_frames,
        fps=fps,
        width=width,
        height=height,
        duration_s=num_frames / fps,
        rotation=probe.orientation.rotation,
        mirrored=probe.orientation.mirrored,
    )


def _ran_out(uri: str, produced: int, expected: int) -> DecodeError:
    return DecodeError(
        uri, DecodeErrorKind.TRUNCATED, f"the video ended after frame {produced - 1}; its index lists {expected}"
    )


class _DecordReader:
    def __init__(self, probe: _Probe, *, trust_count: bool, threads: int = 0) -> None:
        source = probe.source
        if source.local_path is not None:
            reader = decord.VideoReader(source.local_path, num_threads=threads)
        else:
            with _storage_errors(source.uri, "reading"), source.open() as file:
                reader = decord.VideoReader(file, num_threads=threads)
        # len() comes from the container header, or is estimated from duration x rate where the header
        # has no count (Matroska, MPEG-TS); the packet index decord builds on open is exact.
        reader.get_frame_timestamp(0)
        indexed = len(reader._frame_pts)
        if indexed != len(reader):
            message = f"decord counts {len(reader)} frames but indexes {indexed} packets"
            if not trust_count:
                raise RuntimeError(message)
            logger.warning("%s: %s; using %d", source.uri, message, min(indexed, len(reader)))
        self._reader: decord.VideoReader | None = reader
        self._uri = source.uri
        num_frames = min(indexed, len(reader))
        spans = reader.get_frame_timestamp(np.arange(num_frames)) if num_frames else np.zeros((0, 2))  # (N, 2) s
        # decord keeps seconds as float32: round its error (~1e-7 s at a minute) away, to the microsecond.
        spans = np.round(spans.astype(np.float64), 6)
        origin = float(spans[0, 0]) if num_frames else 0.0
        self.timestamps = spans[:, 0].astype(np.float64) - origin
        self.end_s = float(spans[:, 1].max()) - origin if num_frames else 0.0
        self.info = replace(_info(probe, num_frames), duration_s=self.end_s)

    def frames(self, start: int, end: int, keep: Keep = None) -> Iterator[np.ndarray]:
        reader = self._reader
        assert reader is not None, "frames() after close()"
        if start >= end:
            return
        try:
            reader.seek_accurate(start)  # decodes forward from the keyframe before `start`
        except (decord.DECORDError, RuntimeError) as exc:
            raise DecodeError(
                self._uri, DecodeErrorKind.CORRUPT, f"seeking to frame {start} failed: {_first_line(exc)}"
            ) from exc
        for index in range(start, end):
            try:
                if keep is not None and index not in keep:
                    reader.skip_frames(1)  # decoded (the next frame needs it) but never converted to RGB
                    continue
                frame = reader.next()
            except StopIteration:
                raise _ran_out(self._uri, index, self.info.num_frames) from None
            except decord.DECORDError as exc:
                raise DecodeError(
                    self._uri, DecodeErrorKind.CORRUPT, f"decoding frame {index} failed: {_first_line(exc)}"
                ) from exc
            yield frame.asnumpy()

    def close(self) -> None:
        self._reader = None


@dataclass(frozen=True)
class _PacketIndex:
    """Presentation order of a stream's frames, from its packets alone (no decoding)."""

    pts: list[int]  # sorted; frame i has presentation timestamp pts[i]
    keyframes: list[int]  # frame indices of keyframes, ascending
    seek_ts: list[int]  # per keyframe: the timestamp that makes FFmpeg land on it (min of pts, dts)
    end_pts: int  # where the last frame ends: the latest pts + duration of any packet

    def frame_of(self, pts: int | None) -> int | None:
        if pts is None:
            return None
        position = bisect_left(self.pts, pts)
        return position if position < len(self.pts) and self.pts[position] == pts else None


class _PyAVReader:
    def __init__(self, probe: _Probe) -> None:
        self._probe = probe
        self._uri = probe.source.uri
        self._index = self._build_index()
        if self._index is not None:
            num_frames = len(self._index.pts)
            declared = probe.stream.frames
            if 0 < num_frames < declared:
                raise DecodeError(
                    self._uri,
                    DecodeErrorKind.TRUNCATED,
                    f"the container declares {declared} frames but only {num_frames} are present",
                )
        else:
            num_frames = probe.stream.frames or self._count_by_decoding()
        if num_frames <= 0:
            raise DecodeError(self._uri, DecodeErrorKind.EMPTY, "the video stream holds no frames")
        self.timestamps, self.end_s = self._times(num_frames)
        self.info = replace(_info(probe, num_frames), duration_s=self.end_s)

    def _times(self, num_frames: int) -> tuple[np.ndarray, float]:
        """Per-frame presentation times and the stream's end, in seconds from its first frame."""
        if self._index is None:  # raw streams without timestamps: the nominal rate is all there is
            fps = float(self._probe.fps)
            return np.arange(num_frames, dtype=np.float64) / fps, num_frames / fps
        time_base = float(self._probe.stream.time_base or Fraction(1, 90000))
        pts = np.asarray(self._index.pts, dtype=np.int64)
        stamps = (pts - pts[0]).astype(np.float64) * time_base
        end = (self._index.end_pts - pts[0]) * time_base
        if end <= stamps[-1]:  # packets without durations: the last frame lasts one average frame
            end = float(stamps[-1]) + 1.0 / float(self._probe.fps)
        return stamps, float(end)

    def _build_index(self) -> _PacketIndex | None:
        """Demux every video packet; None when timestamps are missing or repeat (raw streams)."""
        with _storage_errors(self._uri, "indexing"):
            return self._index_packets()

    def _index_packets(self) -> _PacketIndex | None:
        stream = self._probe.stream
        entries: list[tuple[int, int, bool]] = []  # (pts, dts, keyframe) in decode order
        end_pts = None
        try:
            for packet in self._probe.container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue  # flush packets, and frames an edit list drops before presentation
                if packet.pts is None:
                    return None
                dts = packet.pts if packet.dts is None else packet.dts
                entries.append((packet.pts, dts, packet.is_keyframe))
                ends = packet.pts + max(packet.duration or 0, 0)
                end_pts = ends if end_pts is None else max(end_pts, ends)
        except av.error.FFmpegError as exc:
            raise DecodeError(self._uri, DecodeErrorKind.CORRUPT, f"reading packets failed: {exc}") from exc
        entries.sort()
        pts = [entry[0] for entry in entries]
        if len(set(pts)) != len(pts) or end_pts is None:
            return None
        keyframes = [i for i, entry in enumerate(entries) if entry[2]]
        seek_ts = [min(entries[i][0], entries[i][1]) for i in keyframes]
        return _PacketIndex(pts=pts, keyframes=keyframes, seek_ts=seek_ts, end_pts=end_pts)

    def _count_by_decoding(self) -> int:
        container = self._probe.container
        container.seek(0, backward=True)
        try:
            return sum(1 for _ in container.decode(self._probe.stream))
        except av.error.FFmpegError as exc:
            raise DecodeError(self._uri, DecodeErrorKind.CORRUPT, f"decoding failed: {exc}") from exc

    def frames(self, start: int, end: int, keep: Keep = None) -> Iterator[np.ndarray]:
        orientation = self._probe.orientation
        with _storage_errors(self._uri, "decoding"):
            for frame in self._frames(start, end, keep):
                yield orientation.apply(frame.to_ndarray(format="rgb24"))

    def _frames(self, start: int, end: int, keep: Keep) -> Iterator[av.VideoFrame]:
        if start >= end:
            return
        if self._index is None:
            yield from self._frames_sequential(start, end, keep)
            return
        keyframe = max(bisect_right(self._index.keyframes, start) - 1, 0)
        while True:
            produced = yield from self._frames_from_keyframe(keyframe, start, end, keep)
            if produced is not None:
                return
            # FFmpeg landed after `start` (its seek index and the presentation order disagree):
            # back off one keyframe and decode further.
            if keyframe == 0:
                raise DecodeError(self._uri, DecodeErrorKind.CORRUPT, f"cannot seek to frame {start}")
            keyframe -= 1

    def _frames_from_keyframe(self, keyframe: int, start: int, end: int, keep: Keep) -> Iterator[av.VideoFrame]:
        """Yield frames [start, end) decoding from a keyframe; returns None if it starts too late."""
        index = self._index
        assert index is not None
        container, stream = self._probe.container, self._probe.stream
        container.seek(index.seek_ts[keyframe], backward=True, any_frame=False, stream=stream)
        wanted = start
        try:
            for frame in container.decode(stream):
                position = index.frame_of(frame.pts)
                if position is None:
                    raise DecodeError(
                        self._uri, DecodeErrorKind.CORRUPT, f"decoded a frame with unknown timestamp {frame.pts}"
                    )
                if position < wanted:
                    continue
                if position > wanted:
                    if wanted == start:
                        return None
                    raise DecodeError(
                        self._uri, DecodeErrorKind.CORRUPT, f"frame {wanted} could not be decoded (next was {position})"
                    )
                if keep is None or position in keep:
                    yield frame
                wanted += 1
                if wanted == end:
                    return wanted
        except av.error.FFmpegError as exc:
            raise DecodeError(
                self._uri, DecodeErrorKind.CORRUPT, f"decoding near frame {wanted} failed: {exc}"
            ) from exc
        raise _ran_out(self._uri, wanted, self.info.num_frames)

    def _frames_sequential(self, start: int, end: int, keep: Keep) -> Iterator[av.VideoFrame]:
        container = self._probe.container
        container.seek(0, backward=True)
        position = 0
        try:
            for frame in container.decode(self._probe.stream):
                if position >= start and (keep is None or position in keep):
                    yield frame
                position += 1
                if position == end:
                    return
        except av.error.FFmpegError as exc:
            raise DecodeError(
                self._uri, DecodeErrorKind.CORRUPT, f"decoding near frame {position} failed: {exc}"
            ) from exc
        raise _ran_out(self._uri, position, self.info.num_frames)

    def close(self) -> None:
        self._probe.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_declared_length(probe: _Probe, reader: _Reader) -> None:
    """Containers without a frame count (Matroska, MPEG-TS) still declare a duration in their
    header; the packets of a cut file end well before it. The stream's own end (its last packet's
    time plus duration) is compared, so a variable frame rate, whose count is not duration x average
    rate, is no reason to fail."""
    stream, container = probe.stream, probe.container
    if stream.duration and stream.time_base:
        declared_s = float(stream.duration * stream.time_base)
    elif container.duration and len(container.streams) == 1:
        declared_s = container.duration / av.time_base
    else:
        return
    slack_s = 2.0 / float(probe.fps)  # a frame or two of rounding between header and packets
    if reader.end_s + slack_s < _LENGTH_TOLERANCE * declared_s:
        raise DecodeError(
            probe.source.uri,
            DecodeErrorKind.TRUNCATED,
            f"the container declares {declared_s:.2f} s but its video packets end at {reader.end_s:.2f} s "
            f"({reader.info.num_frames} frames): the file was cut short",
        )


def _decord_converts_exactly(probe: _Probe) -> bool:
    """decord's bundled FFmpeg turns samples of more than 8 bits (10-bit HEVC) into RGB differently
    from FFmpeg's own conversion (up to 32 levels off on the codec matrix), and interlaced frames too
    (its chroma differs at colour edges, up to 150 levels on the matrix), so those go to PyAV."""
    video_format = probe.stream.codec_context.format
    eight_bit = video_format is not None and all(component.bits <= 8 for component in video_format.components)
    return eight_bit and not probe.interlaced


def _decord_seeks_correctly(probe: _Probe) -> bool:
    """decord 0.6 numbers frames from timestamp 0: a stream that starts later (MPEG-TS starts at
    0.08 s, edit lists shift MP4s) makes its seeks land on the wrong frame, silently. PyAV's
    index has no such assumption, so those files go to PyAV."""
    return probe.container.format.name in _DECORD_FORMATS and not probe.stream.start_time


def _open_reader(uri: str, storage_options: Mapping[str, Any] | None, backend: Backend, threads: int = 0) -> _Reader:
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "decord" and decord is None:
        raise ConfigError("backend='decord' was asked for but decord is not installed")
    source = _resolve(uri, storage_options)
    probe = _probe_container(source, threads)
    try:
        if backend == "decord" and not probe.orientation.is_identity:
            raise ConfigError(
                f"{uri}: backend='decord' cannot show this video as a player does (its display matrix says "
                f"{probe.orientation.describe()}; decord 0.6 draws quarter turns wrongly and ignores mirrors): "
                "use backend 'auto' or 'pyav'"
            )
        use_decord = backend == "decord" or (
            backend == "auto"
            and decord is not None
            and _decord_seeks_correctly(probe)
            and probe.orientation.is_identity
            and _decord_converts_exactly(probe)
            and (source.local_path is not None or source.size <= DECORD_REMOTE_MAX_BYTES)
        )
        if backend == "decord" and not _decord_seeks_correctly(probe):
            logger.warning("%s: decord may number the frames of this %s file wrongly", uri, probe.container.format.name)
        if use_decord:
            try:
                reader = _DecordReader(probe, trust_count=backend == "decord", threads=threads)
            except (decord.DECORDError, RuntimeError, AssertionError) as exc:
                if backend == "decord":
                    raise DecodeError(
                        uri, DecodeErrorKind.CORRUPT, f"decord cannot open it: {_first_line(exc)}"
                    ) from exc
                logger.info("decord cannot open %s (%s); decoding with PyAV", uri, _first_line(exc))
            else:
                _check_declared_length(probe, reader)
                probe.close()
                return reader
        reader = _PyAVReader(probe)
        _check_declared_length(probe, reader)
        return reader
    except BaseException:
        probe.close()
        raise


# --------------------------------------------------------------------------------------------
# Public functions


def probe_video(uri: str, storage_options: Mapping[str, Any] | None = None, *, backend: Backend = "auto") -> VideoInfo:
    """Frame count, frame rate and size of a video; raises DecodeError when it cannot be decoded."""
    reader = _open_reader(uri, storage_options, backend)
    try:
        return reader.info
    finally:
        reader.close()


def iter_frames(
    uri: str,
    start: int = 0,
    end: int | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    prefetch: int = 8,
    backend: Backend = "auto",
) -> Iterator[np.ndarray]:
    """Stream frames [start, end) of a video as (H, W, 3) uint8 RGB arrays.

    The file is opened and the range checked here, so a bad file or range raises at the call.
    Decoding runs in a background thread that stays at most `prefetch` frames ahead; closing the
    returned generator (or dropping it) stops that thread. A file that ends early raises
    DecodeError(TRUNCATED) when its frames run out.
    """
    if prefetch < 1:
        raise ValueError(f"prefetch must be at least 1, got {prefetch}")
    reader = _open_reader(uri, storage_options, backend)
    num_frames = reader.info.num_frames
    stop = num_frames if end is None else end
    if not 0 <= start <= stop <= num_frames:
        reader.close()
        raise DecodeError(
            uri, DecodeErrorKind.OUT_OF_RANGE, f"frames [{start}, {stop}) are outside the video's [0, {num_frames})"
        )
    return _prefetched(lambda: reader.frames(start, stop), reader.close, prefetch, _thread_name(uri))


@dataclass
class VideoStream:
    """An opened video: its `info`, and `frames(start, end)` decoded ahead by a prefetch thread.

    One decoder serves consecutive ranges in order (a work unit's clips), so a video is opened once.
    """

    info: VideoInfo
    _reader: _Reader
    _prefetch: int
    _prefetch_bytes: int | None = None

    @property
    def backend(self) -> str:
        """The decoder that opened the video: decord or pyav."""
        return "decord" if isinstance(self._reader, _DecordReader) else "pyav"

    @property
    def timestamps(self) -> np.ndarray:
        """(num_frames,) float64: each frame's presentation time in seconds from the stream's first frame."""
        return self._reader.timestamps

    def frames(self, start: int = 0, end: int | None = None, keep: Keep = None) -> Iterator[np.ndarray]:
        """Frames [start, end), or only those of them in `keep` (the others are decoded, not converted)."""
        stop = self.info.num_frames if end is None else end
        if not 0 <= start <= stop <= self.info.num_frames:
            raise DecodeError(
                self.info.uri,
                DecodeErrorKind.OUT_OF_RANGE,
                f"frames [{start}, {stop}) are outside the video's [0, {self.info.num_frames})",
            )
        frames = lambda: self._reader.frames(start, stop, keep)  # noqa: E731
        return _prefetched(frames, _nothing, self._prefetch, _thread_name(self.info.uri), self._prefetch_bytes)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _nothing() -> None:
    return None


def open_video(
    uri: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    prefetch: int = 8,
    threads: int = 0,
    backend: Backend = "auto",
    prefetch_bytes: int | None = None,
) -> VideoStream:
    """Open a video once for several frame ranges; `threads` bounds the decoder's threads (0: FFmpeg's choice);
    the frames decoded ahead are at most `prefetch` and, when given, at most `prefetch_bytes`."""
    if prefetch < 1:
        raise ValueError(f"prefetch must be at least 1, got {prefetch}")
    reader = _open_reader(uri, storage_options, backend, threads)
    return VideoStream(reader.info, reader, prefetch, prefetch_bytes)


def _thread_name(uri: str) -> str:
    return f"batchtrack-decode:{os.path.basename(uri.rstrip('/'))}"


# --------------------------------------------------------------------------------------------
# Prefetch thread


_END = object()


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class _ByteBudget:
    """Bytes of frames waiting in a prefetch queue: a producer waits while a new frame would pass the
    budget, except into an empty queue, so one frame larger than the budget still flows."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queued = 0
        self._changed = threading.Condition()

    def reserve(self, size: int, stopped: threading.Event) -> bool:
        with self._changed:
            while self.queued and self.queued + size > self.limit:
                if stopped.is_set():
                    return False
                self._changed.wait(_PUT_POLL_S)
            self.queued += size
            return True

    def release(self, size: int) -> None:
        with self._changed:
            self.queued -= size
            self._changed.notify_all()


def _size_of(item: object) -> int:
    return item.nbytes if isinstance(item, np.ndarray) else 0


def _prefetched(
    produce: Callable[[], Iterator[np.ndarray]],
    cleanup: Callable[[], None],
    prefetch: int,
    name: str,
    prefetch_bytes: int | None = None,
) -> Iterator[np.ndarray]:
    """Run `produce` in a thread, handing its items over through a queue of `prefetch` slots holding at
    most `prefetch_bytes` of frames (None: no byte bound), so 4K frames do not pile up as 480p ones may."""
    slots: queue.Queue[object] = queue.Queue(maxsize=prefetch)
    stopped = threading.Event()
    budget = _ByteBudget(prefetch_bytes if prefetch_bytes is not None else 1 << 62)

    def hand_over(item: object) -> bool:
        if not budget.reserve(_size_of(item), stopped):
            return False
        while not stopped.is_set():
            try:
                slots.put(item, timeout=_PUT_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            with contextlib.closing(produce()) as frames:
                for frame in frames:
                    if not hand_over(frame):
                        return
            hand_over(_END)
        except BaseException as exc:  # handed to the consumer, which re-raises it in its own thread
            hand_over(_Failure(exc))
        finally:
            cleanup()

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            budget.release(_size_of(item))
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stopped.set()
        thread.join(_JOIN_TIMEOUT_S)
        if thread.is_alive():
            logger.warning("decode thread %s did not stop within %.0f s", name, _JOIN_TIMEOUT_S)
