"""The codec matrix: a small file of each encoding real archives hold (batchtrack.synthetic.codecs, written
here with PyAV's encoders), decoded by every backend that opens it and compared with a reference.

The reference is a plain PyAV decode of the whole file (av.open → decode → rgb24), turned as PyAV documents
`set_display_rotation` (counter-clockwise, then the mirror), with each frame's own time: independent of
batchtrack's index, seeking, orientation and timestamp code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from batchtrack.errors import ConfigError, DecodeError, DecodeErrorKind
from batchtrack.io.video import open_video, probe_video
from batchtrack.synthetic.codecs import ARCHIVE_ENCODINGS, VFR_DURATIONS_MS, Encoding, write_encoding

ENCODINGS = {encoding.name: encoding for encoding in ARCHIVE_ENCODINGS}


@dataclass(frozen=True)
class Reference:
    frames: list[np.ndarray]
    times: np.ndarray  # seconds from the first frame


def _reference(path: Path, encoding: Encoding) -> Reference:
    frames, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            shown = np.rot90(frame.to_ndarray(format="rgb24"), encoding.rotation // 90)
            frames.append(np.ascontiguousarray(np.fliplr(shown) if encoding.mirror else shown))
            times.append(float(frame.time))
    return Reference(frames, np.asarray(times) - times[0])


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Reference]]:
    folder = tmp_path_factory.mktemp("codec-matrix")
    written = {}
    for encoding in ARCHIVE_ENCODINGS:
        path = write_encoding(encoding, folder / f"{encoding.name}{encoding.suffix}")
        written[encoding.name] = (path, _reference(path, encoding))
    return written


def _max_difference(frames: list[np.ndarray], reference: list[np.ndarray]) -> int:
    pairs = zip(frames, reference, strict=True)
    return max(int(np.abs(got.astype(np.int16) - want.astype(np.int16)).max()) for got, want in pairs)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_every_encoding_decodes_as_the_reference_shows_it(
    matrix: dict[str, tuple[Path, Reference]], name: str, backend: str
) -> None:
    encoding = ENCODINGS[name]
    path, reference = matrix[name]
    assert len(reference.frames) == encoding.frames  # the file really holds what was written

    with open_video(str(path), backend=backend) as video:  # type: ignore[arg-type]
        frames = list(video.frames())
        stamps = video.timestamps
        info = video.info

    assert len(frames) == info.num_frames == encoding.frames
    assert (info.width, info.height) == encoding.displayed_size
    assert all(frame.shape == (encoding.displayed_size[1], encoding.displayed_size[0], 3) for frame in frames)
    assert _max_difference(frames, reference.frames) == 0
    assert (info.rotation, info.mirrored) == (encoding.rotation, encoding.mirror)
    np.testing.assert_allclose(stamps, reference.times, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_decord_matches_the_reference_on_every_file_auto_gives_it(
    matrix: dict[str, tuple[Path, Reference]], name: str
) -> None:
    encoding = ENCODINGS[name]
    path, reference = matrix[name]
    with open_video(str(path)) as video:
        auto_backend = video.backend
    if encoding.rotation or encoding.mirror:
        with pytest.raises(ConfigError, match="cannot show this video as a player does"):
            open_video(str(path), backend="decord")
        assert auto_backend == "pyav"
        return
    try:
        video = open_video(str(path), backend="decord")
    except Exception:  # decord cannot open it (AV1): auto must not have given it decord
        assert auto_backend == "pyav"
        return
    with video:
        frames = list(video.frames())
        stamps = video.timestamps

    assert len(frames) == encoding.frames
    assert frames[0].shape[:2] == (encoding.height, encoding.width)
    if auto_backend == "decord":  # where auto trusts decord, decord is exact
        assert _max_difference(frames, reference.frames) == 0
        np.testing.assert_allclose(stamps, reference.times, atol=1e-6)


def test_variable_frame_rate_keeps_every_frame_and_its_own_time(matrix: dict[str, tuple[Path, Reference]]) -> None:
    """A VFR file is not cut, though its frames are fewer than duration x average rate would say."""
    with av.open(str(matrix["vfr-mkv"][0])) as container:
        nominal = float(container.duration / av.time_base * container.streams.video[0].average_rate)
    assert ENCODINGS["vfr-mkv"].frames + 2 < 0.95 * nominal  # what the old rule took for a cut file
    for name in ("vfr-mkv", "vfr-mp4"):
        path, _ = matrix[name]
        with open_video(str(path)) as video:
            stamps = video.timestamps
            info = video.info
        expected = np.cumsum([0, *[VFR_DURATIONS_MS[i % 4] for i in range(ENCODINGS[name].frames - 1)]]) / 1000
        np.testing.assert_allclose(stamps, expected, atol=1e-6)
        assert info.num_frames == ENCODINGS[name].frames
        assert len(np.unique(np.round(np.diff(stamps), 3))) == len(VFR_DURATIONS_MS)  # really variable


def test_a_stream_that_starts_late_counts_time_from_its_first_frame(
    matrix: dict[str, tuple[Path, Reference]],
) -> None:
    for name in ("start-offset", "mpeg-ts"):
        path, _ = matrix[name]
        with av.open(str(path)) as container:
            assert container.streams.video[0].start_time  # the stream really starts after zero
        with open_video(str(path)) as video:
            np.testing.assert_allclose(video.timestamps, np.arange(6) / 25, atol=1e-6)


def test_rotated_frames_put_the_top_left_mark_where_a_player_shows_it(
    matrix: dict[str, tuple[Path, Reference]],
) -> None:
    """The pattern's red mark sits top-left in the stored frame; after a 90° counter-clockwise turn a
    player shows it bottom-left, after 180° bottom-right, after 270° and a mirror top-left again."""
    corners = {"rotate-90": (-1, 0), "rotate-180": (-1, -1), "rotate-270-mirror": (0, 0)}
    for name, (row, col) in corners.items():
        path, _ = matrix[name]
        with open_video(str(path)) as video:
            first = next(iter(video.frames(0, 1)))
        red, green = int(first[row, col, 0]), int(first[row, col, 1])
        assert red > 200 and green < 60, (name, first[row, col])


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_a_cut_variable_rate_file_is_still_truncated(
    matrix: dict[str, tuple[Path, Reference]], tmp_path: Path, backend: str
) -> None:
    data = matrix["vfr-mkv"][0].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])

    with pytest.raises(DecodeError, match=r"declares 1\.14 s but its video packets end at 0\.\d+ s") as failure:
        probe_video(str(cut), backend=backend)  # type: ignore[arg-type]
    assert failure.value.kind is DecodeErrorKind.TRUNCATED
