"""Commit protocol: records written last, resume only when files exist, clips/ one row per clip."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from batchtrack.io.schema import CLIPS_SCHEMA
from batchtrack.io.sink import clip_file
from batchtrack.pipeline.commit import (
    ClipStatus,
    CommitRecord,
    commit_path,
    load_committed,
    write_clip_rows,
    write_commit,
    write_manifest,
)


def _status(clip_id: str, video_id: str = "v1", status: str = "ok", start: int = 0) -> ClipStatus:
    return ClipStatus(
        video_id=video_id, video_uri=f"/data/{video_id}.mp4", clip_id=clip_id, start_frame=start,
        end_frame=start + 10, status=status, model_name="test-tiny", checkpoint_hash="builtin",
        frames=10, objects=2, mask_rows=20,
    )


def _commit(out: Path, clip_id: str, with_files: bool = True) -> CommitRecord:
    files = {"masks": clip_file("masks", clip_id), "pointers": clip_file("pointers", clip_id)}
    if with_files:
        for relative in files.values():
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({"x": [1]}), out / relative)
    record = CommitRecord(clip=_status(clip_id), files=files, rows={"masks": 20, "pointers": 20})
    write_commit(str(out), record)
    return record


def test_commit_record_roundtrips_through_its_json(tmp_path: Path) -> None:
    record = _commit(tmp_path, "c1")
    text = Path(commit_path(str(tmp_path), "c1")).read_text()
    assert CommitRecord.from_json(text) == record
    assert json.loads(text)["rows"] == {"masks": 20, "pointers": 20}


def test_resume_skips_only_clips_whose_record_and_files_exist(tmp_path: Path) -> None:
    _commit(tmp_path, "done")
    _commit(tmp_path, "files-lost", with_files=True)
    (tmp_path / clip_file("pointers", "files-lost")).unlink()
    _commit(tmp_path, "other-job")
    (tmp_path / clip_file("masks", "no-record")).write_bytes(b"partial")  # crashed before its commit
    committed = load_committed(str(tmp_path), ["done", "files-lost", "no-record"])
    assert set(committed) == {"done"}
    assert committed["done"].clip.mask_rows == 20


def test_unreadable_commit_record_means_track_again(tmp_path: Path) -> None:
    _commit(tmp_path, "broken")
    Path(commit_path(str(tmp_path), "broken")).write_text("{not json")
    assert load_committed(str(tmp_path), ["broken"]) == {}


def test_no_output_yet_means_nothing_committed(tmp_path: Path) -> None:
    assert load_committed(str(tmp_path / "fresh"), ["a", "b"]) == {}


def test_clip_rows_are_one_file_per_video_and_a_rerun_overwrites_them(tmp_path: Path) -> None:
    rows = [_status("a2", start=10), _status("a1"), _status("b1", video_id="v2", status="failed")]
    first = write_clip_rows(str(tmp_path), rows)
    second = write_clip_rows(str(tmp_path), list(reversed(rows)))
    assert first == second and len(first) == 2
    table = ds.dataset(str(tmp_path / "clips"), format="parquet").to_table()
    assert table.schema.equals(CLIPS_SCHEMA, check_metadata=False)
    assert sorted(table.column("clip_id").to_pylist()) == ["a1", "a2", "b1"]


def test_manifest_is_json_with_what_it_was_given(tmp_path: Path) -> None:
    uri = write_manifest(str(tmp_path), {"counts": {"ok": 3}, "config": {"storage_options": {"secret": "***"}}})
    assert json.loads(Path(uri).read_text())["counts"] == {"ok": 3}
