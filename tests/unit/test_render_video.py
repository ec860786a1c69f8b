"""`batchtrack render ... --video-out`: a whole video with each track's mask and id, as a GIF or an MP4."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from batchtrack.cli import main
from batchtrack.eval.visualize import object_color
from batchtrack.synthetic.encode import write_mp4

from .dataset.output_fixture import HEIGHT, VIDEO_A, WIDTH, write_fake_output


def _output_with_a_real_video(tmp_path: Path) -> Path:
    video = tmp_path / "a.mp4"
    write_mp4(video, (np.full((HEIGHT, WIDTH, 3), 40, np.uint8) for _ in range(12)), fps=10)
    output = tmp_path / "out"
    write_fake_output(str(output), video_uris={VIDEO_A: str(video)})
    return output


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_video_out_writes_every_tracked_frame_with_the_tracks_drawn(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output = _output_with_a_real_video(tmp_path)
    target = tmp_path / f"tracks{suffix}"
    assert main(["render", str(output), VIDEO_A, "--video-out", str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    frames = _decoded(target)
    assert len(frames) == 12
    assert frames[0].shape == (HEIGHT, WIDTH, 3)
    # Track 1 or 2 tints some pixels towards its colour; the bare frame is a flat grey 40.
    tinted = [np.abs(f.astype(int) - 40).max(axis=2) > 30 for f in frames]
    assert all(t.any() for t in tinted)
    assert main(["render", str(output), VIDEO_A, "--video-out", str(target), "--max-frames", "3"]) == 0
    assert len(_decoded(target)) == 3


def test_gif_colours_survive_the_palette(tmp_path: Path) -> None:
    from batchtrack.eval.visualize import write_animation

    colour = np.array(object_color(1), dtype=np.uint8)
    path = tmp_path / "c.gif"
    write_animation(path, [np.broadcast_to(colour, (8, 10, 3)).copy()] * 2)
    decoded = _decoded(path)
    assert len(decoded) == 2
    assert np.abs(decoded[0].astype(int) - colour.astype(int)).max() <= 26  # half a step of the 6-level cube


def test_render_user_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = _output_with_a_real_video(tmp_path)
    cases = [
        (["--video-out", str(tmp_path / "t.avi")], "give a .gif or .mp4"),
        (["0", str(tmp_path / "f.png"), "--video-out", str(tmp_path / "t.gif")], "not both"),
        ([], "give FRAME PICTURE"),
        (["zero", str(tmp_path / "f.png")], "FRAME must be a frame number"),
        (["--video-out", str(tmp_path / "t.gif"), "--max-frames", "0"], "--max-frames must be at least 1"),
    ]
    for extra, message in cases:
        assert main(["render", str(output), VIDEO_A, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
    assert main(["render", str(output), "f" * 16, "--video-out", str(tmp_path / "t.gif")]) == 2
    assert "is not in" in capsys.readouterr().err
    assert not (tmp_path / "t.gif").exists()
    # The one-frame PNG form still works.
    assert main(["render", str(output), VIDEO_A, "3", str(tmp_path / "f.png")]) == 0
    assert (tmp_path / "f.png").is_file()


def test_demo_shows_test_protocol_numbers_only_for_models_with_a_matching_record() -> None:
    from batchtrack.demo import shipped_protocol_summary

    assert shipped_protocol_summary("test-tiny") is None  # ships no weights, so no record
    # The shipped weights' record (bench/quality.py --write-record) names their SHA-256; it must be current.
    summary = shipped_protocol_summary(None)
    assert summary is not None, "tiny-synthetic.test.json is missing or was measured on other weights"
    assert "occlusion" in summary and "(10 videos" in summary and "re-acquired" in summary
