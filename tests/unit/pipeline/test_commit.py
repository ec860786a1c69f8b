"""The unit commit protocol: clips/ last, failure markers, attempts records, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from batchtrack.pipeline.commit import (
    Attempts,
    ClipStatus,
    OutputState,
    clear_attempts,
    commit_unit,
    read_attempts,
    scan_output,
    write_attempts,
    write_manifest,
)


def _row(unit_id: str, status: str = "ok") -> ClipStatus:
    return ClipStatus(
        video_id="v", video_uri="/v.mp4", clip_id=f"{unit_id}-c", unit_id=unit_id, start_frame=0, end_frame=4,
        status=status, model_name="m", checkpoint_hash="h",
    )


def test_no_output_yet_means_nothing_committed(tmp_path: Path) -> None:
    assert scan_output(str(tmp_path / "nothing")) == OutputState()


def test_a_unit_is_committed_by_its_clips_file_and_failures_are_marked(tmp_path: Path) -> None:
    commit_unit(str(tmp_path), "good", [_row("good")])
    commit_unit(str(tmp_path), "bad", [_row("bad"), _row("bad", "failed")])
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "killed.parquet").write_bytes(b"partial")  # a unit killed before its commit
    state = scan_output(str(tmp_path))
    assert state.committed == {"good", "bad"} and state.failed == {"bad"}
    assert pq.read_table(tmp_path / "clips" / "bad.parquet").column("status").to_pylist() == ["ok", "failed"]
    assert not state.needs_tracking("good", retry_failed=True)
    assert not state.needs_tracking("bad", retry_failed=False)
    assert state.needs_tracking("bad", retry_failed=True)
    assert state.needs_tracking("killed", retry_failed=False)


def test_a_marker_without_its_clips_file_does_not_count(tmp_path: Path) -> None:
    (tmp_path / "_failed").mkdir()
    (tmp_path / "_failed" / "crashed").write_bytes(b"")  # written, then the commit never came
    assert scan_output(str(tmp_path)).failed == frozenset()


def test_a_successful_retry_overwrites_the_rows_and_drops_the_marker(tmp_path: Path) -> None:
    commit_unit(str(tmp_path), "u", [_row("u", "failed")])
    commit_unit(str(tmp_path), "u", [_row("u")], was_failed=True)
    assert scan_output(str(tmp_path)).failed == frozenset()
    assert pq.read_table(tmp_path / "clips" / "u.parquet").column("status").to_pylist() == ["ok"]


def test_attempts_count_deaths_and_strike_the_video_being_tracked(tmp_path: Path) -> None:
    assert read_attempts(str(tmp_path), "u") == Attempts()
    write_attempts(str(tmp_path), "u", Attempts(started=2, current=3, strikes={3: 1}))
    record = read_attempts(str(tmp_path), "u")
    assert record == Attempts(started=2, current=3, strikes={3: 1})
    assert record.after_death() == Attempts(started=3, current=None, strikes={3: 2})
    assert Attempts(started=1).after_death() == Attempts(started=2)  # a first attempt names no video
    clear_attempts(str(tmp_path), "u")
    assert read_attempts(str(tmp_path), "u") == Attempts()


def test_an_unreadable_attempts_record_counts_from_zero(tmp_path: Path) -> None:
    (tmp_path / "_attempts").mkdir()
    (tmp_path / "_attempts" / "u.json").write_text("{not json")
    assert read_attempts(str(tmp_path), "u") == Attempts()


def test_manifest_is_json_with_what_it_was_given(tmp_path: Path) -> None:
    uri = write_manifest(str(tmp_path), {"counts": {"ok": 3}, "config": {"seed": 0}})
    assert json.loads(Path(uri).read_text()) == {"config": {"seed": 0}, "counts": {"ok": 3}}
