"""The codec matrix as a table: each encoding of batchtrack.synthetic.codecs, written here with PyAV's encoders,
decoded by each backend and compared with a plain FFmpeg decode (PyAV av.open → decode → rgb24, turned as
`set_display_rotation` documents): frames, displayed size, largest pixel difference, largest timestamp error.

    python bench/codec_matrix.py [--workdir DIR]

tests/unit/io/test_codec_matrix.py asserts what this prints for `auto` and `pyav` (exact) and for decord where
`auto` chooses it; this script reports every backend, decord's refusals and differences included.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import av
import numpy as np

from batchtrack.errors import ConfigError, DecodeError
from batchtrack.io.video import open_video
from batchtrack.synthetic.codecs import ARCHIVE_ENCODINGS, Encoding, write_encoding

BACKENDS = ("decord", "pyav", "auto")


def reference(path: Path, encoding: Encoding) -> tuple[list[np.ndarray], np.ndarray]:
    frames, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            shown = np.rot90(frame.to_ndarray(format="rgb24"), encoding.rotation // 90)
            frames.append(np.fliplr(shown) if encoding.mirror else shown)
            times.append(float(frame.time))
    return frames, np.asarray(times) - times[0]


def cell(path: Path, backend: str, frames: list[np.ndarray], times: np.ndarray) -> str:
    try:
        with open_video(str(path), backend=backend) as video:  # type: ignore[arg-type]
            got = list(video.frames())
            info, stamps, chosen = video.info, video.timestamps, video.backend
    except ConfigError:
        return "refused (display matrix)"
    except DecodeError as exc:
        return f"fails: {exc.kind.value}"
    if len(got) != len(frames) or got[0].shape != frames[0].shape:
        return f"{len(got)} f {info.width}x{info.height} MISMATCH"
    diff = max(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(got, frames, strict=True))
    time_error = float(np.abs(stamps - times).max())
    via = f" ({chosen})" if backend == "auto" else ""
    return f"{len(got)} f {info.width}x{info.height} diff {diff} dt {time_error:.0e}{via}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="bt-codecs-"))
    folder.mkdir(parents=True, exist_ok=True)
    print("| file | " + " | ".join(BACKENDS) + " |")
    print("| --- |" + " --- |" * len(BACKENDS))
    for encoding in ARCHIVE_ENCODINGS:
        path = write_encoding(encoding, folder / f"{encoding.name}{encoding.suffix}")
        frames, times = reference(path, encoding)
        cells = [cell(path, backend, frames, times) for backend in BACKENDS]
        print(f"| {encoding.name}{encoding.suffix} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
