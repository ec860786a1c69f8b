"""The console script lists its commands and reports config errors without a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from batchtrack.cli import main

from .dataset.output_fixture import VIDEO_A, write_fake_output


def test_help_lists_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "batchtrack.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("run", "demo-corpus", "demo", "eval", "render", "inspect"):
        assert re.search(rf"^\s+{command}\b", result.stdout, re.MULTILINE), command


def test_run_with_bad_config_exits_2_and_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("corpus: a\noutput: b\nactors:\n  num_actorz: 2\n")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'actors.num_actorz'" in err
    assert "line 4" in err


def test_storage_options_and_actor_flags_reach_the_config(tmp_path: Path) -> None:
    from batchtrack.cli import _job_overrides, build_parser
    from batchtrack.config import load_config

    args = build_parser().parse_args(
        [
            "run", "corpus", "out", "--storage-option", "endpoint_url=http://127.0.0.1:9",
            "--storage-option", "client_kwargs.region_name=eu", "--max-actors", "3", "--cpus-per-actor", "2",
            "--no-auto",
        ]
    )  # fmt: skip
    cfg = load_config(None, **_job_overrides(args))
    assert cfg.storage_options == {"endpoint_url": "http://127.0.0.1:9", "client_kwargs": {"region_name": "eu"}}
    assert cfg.actors.max_actors == 3
    assert cfg.actors.num_cpus == 2.0
    assert cfg.auto.enabled is False


def test_malformed_storage_option_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "a", "b", "--storage-option", "endpoint_url"]) == 2
    assert "--storage-option expects KEY=VALUE" in capsys.readouterr().err


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("batchtrack: error: "), err
    assert "Traceback" not in err
    return err


def test_run_on_a_missing_corpus_exits_2_before_ray_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # ray.init is refused in unit tests (conftest): reaching it would raise UnitTestGuardError, not return 2.
    assert main(["run", str(tmp_path / "nonexistent"), str(tmp_path / "out")]) == 2
    assert "does not exist" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_inspect_of_a_missing_output_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "no committed units" in _one_error_line(capsys)


def test_eval_of_a_missing_output_or_ground_truth_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path / "missing"), str(tmp_path)]) == 2
    assert "no committed units" in _one_error_line(capsys)
    output = tmp_path / "out"
    write_fake_output(str(output))
    assert main(["eval", str(output), str(tmp_path / "no-gt")]) == 2
    assert "ground-truth folder" in _one_error_line(capsys)
    assert main(["eval", str(output), str(tmp_path)]) == 2  # a folder without *.gt.parquet
    assert ".gt.parquet" in _one_error_line(capsys)


def test_render_of_an_unknown_video_or_frame_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out"
    write_fake_output(str(output))
    picture = tmp_path / "frame.png"
    assert main(["render", str(output), "f" * 16, "0", str(picture)]) == 2
    assert "'ffffffffffffffff' is not in" in _one_error_line(capsys)
    assert main(["render", str(output), VIDEO_A, "12", str(picture)]) == 2  # VIDEO_A has frames 0-11
    assert "frame 12 is not a tracked frame" in _one_error_line(capsys)
    assert main(["render", str(output), VIDEO_A, "0", str(tmp_path / "frame.txt")]) == 2
    assert "give a .png" in _one_error_line(capsys)
    assert main(["render", str(tmp_path / "missing"), VIDEO_A, "0", str(picture)]) == 2
    assert "no committed units" in _one_error_line(capsys)
    assert not picture.exists()


def test_inspect_lists_counts_and_video_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out"
    write_fake_output(str(output))
    assert main(["inspect", str(output)]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^  {VIDEO_A} 12 /videos/{VIDEO_A}\.mp4$", out, re.MULTILINE), out
    assert re.search(r"^clips: \d+$", out, re.MULTILINE)


def test_debug_adds_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--debug", "inspect", str(tmp_path)], ["inspect", "--debug", str(tmp_path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "OutputNotFoundError" in err
        assert err.splitlines()[-1].startswith("batchtrack: error: ")


def test_a_multi_line_message_is_printed_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("corpus: a\noutput: b\nactors:\n  num_actorz: 2\nclip:\n  length_framez: 3\n")
    assert main(["run", "--config", str(config)]) == 2
    _one_error_line(capsys)


def test_text_flags_reach_the_config_as_a_canonical_concept_set() -> None:
    from batchtrack.cli import _job_overrides, build_parser
    from batchtrack.config import load_config

    args = build_parser().parse_args(["run", "c", "o", "--text", "red  car", "--text", "person", "--text", "person"])
    assert load_config(None, **_job_overrides(args)).text == ("person", "red car")


def test_text_without_a_detector_exits_2_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(tmp_path), str(tmp_path / "out"), "--text", "person"])  # tiny-synthetic: no detector
    assert code == 2
    line = _one_error_line(capsys)
    assert "--text needs a model with a concept detector" in line and "'tiny-synthetic'" in line
    assert not (tmp_path / "out").exists(), "decided before the job starts"


def test_empty_text_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "a", "b", "--text", " "]) == 2
    assert "key 'text'" in _one_error_line(capsys)


def test_demo_corpus_frames_sets_the_video_length(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    assert main(["demo-corpus", str(tmp_path), "--videos", "1", "--frames", "5"]) == 0
    truth = pq.read_table(tmp_path / "synthetic_000.gt.parquet")
    assert sorted(set(truth.column("frame_index").to_pylist())) == list(range(5))


def test_sample_fps_flag_env_and_yaml_reach_sample_fps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from batchtrack.cli import _job_overrides, build_parser
    from batchtrack.config import load_config

    assert load_config(None, corpus="c", output="o").sample.fps is None  # every frame by default
    args = build_parser().parse_args(["run", "corpus", "out", "--sample-fps", "6"])
    assert load_config(None, **_job_overrides(args)).sample.fps == 6.0
    monkeypatch.setenv("BATCHTRACK_SAMPLE__FPS", "2.5")
    assert load_config(None, corpus="c", output="o").sample.fps == 2.5


def test_a_non_positive_sample_rate_is_a_config_error_naming_the_key() -> None:
    from batchtrack.config import load_config
    from batchtrack.errors import ConfigError

    with pytest.raises(ConfigError, match=r"key 'sample\.fps'"):
        load_config(None, corpus="c", output="o", sample={"fps": 0})


def test_inspect_of_a_running_job_shows_its_progress_from_committed_units(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import pyarrow.parquet as pq

    output = tmp_path / "out"
    write_fake_output(str(output))
    units = len(list((output / "clips").glob("*.parquet")))
    clips = pq.read_table(output / "clips").to_pylist()
    frames = sum(c["frames"] for c in clips)
    failed = sum(c["status"] == "failed" for c in clips)
    assert units >= 2 and frames > 0 and failed >= 1
    done = f"{units} units committed, {frames} frames tracked, {failed} failed clip(s)"

    assert main(["inspect", str(output)]) == 0
    status = capsys.readouterr().out.splitlines()[1]
    assert status.startswith(f"status: running, or stopped before its end (no _manifest.json yet): {done} so far")
    assert re.search(r"last commit \d+ s ago$", status), status

    (output / "_manifest.json").write_text(json.dumps({"finished_at": "2026-12-02T18:00:00+00:00"}))
    assert main(["inspect", str(output)]) == 0
    assert capsys.readouterr().out.splitlines()[1] == f"status: finished at 2026-12-02T18:00:00+00:00: {done}"
