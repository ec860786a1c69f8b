"""Corpus listing: folders, globs, manifests; stable video ids that never contain paths."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchtrack.errors import ConfigError
from batchtrack.io.corpus import list_videos, normalize_uri, resolve_uri, stable_hash


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    _touch(root / "b.mp4", b"bbbb")
    _touch(root / "a.MOV", b"aa")
    _touch(root / "nested" / "deep" / "c.mkv", b"c")
    _touch(root / "a.gt.parquet")
    _touch(root / "prompts.jsonl")
    _touch(root / "notes.txt")
    return root


def test_folder_listing_is_recursive_sorted_and_keeps_only_video_extensions(folder: Path) -> None:
    refs = list_videos(str(folder))
    assert [r.uri for r in refs] == sorted(
        [str(folder / "a.MOV"), str(folder / "b.mp4"), str(folder / "nested" / "deep" / "c.mkv")]
    )
    assert [r.size for r in refs] == [2, 4, 1]


def test_video_id_is_16_hex_chars(folder: Path) -> None:
    for ref in list_videos(str(folder)):
        assert re.fullmatch(r"[0-9a-f]{16}", ref.video_id)


def test_video_id_is_stable_across_listings_and_changes_when_the_file_changes(folder: Path) -> None:
    first = {r.uri: r.video_id for r in list_videos(str(folder))}
    assert first == {r.uri: r.video_id for r in list_videos(str(folder))}
    target = folder / "b.mp4"
    target.write_bytes(b"different length")
    os.utime(target, (1_000_000, 1_000_000))
    second = {r.uri: r.video_id for r in list_videos(str(folder))}
    assert second[str(target)] != first[str(target)]
    assert second[str(folder / "a.MOV")] == first[str(folder / "a.MOV")]


def test_same_bytes_at_two_uris_get_two_ids(tmp_path: Path) -> None:
    _touch(tmp_path / "one" / "v.mp4", b"same")
    _touch(tmp_path / "two" / "v.mp4", b"same")
    ids = {r.video_id for r in list_videos(str(tmp_path))}
    assert len(ids) == 2


def test_glob_selects_matching_videos(folder: Path) -> None:
    refs = list_videos(str(folder / "*.mp4"))
    assert [Path(r.uri).name for r in refs] == ["b.mp4"]


def test_file_uri_and_single_video(folder: Path) -> None:
    refs = list_videos("file://" + str(folder / "b.mp4"))
    assert [r.uri for r in refs] == [str(folder / "b.mp4")]


def test_jsonl_manifest_accepts_objects_and_bare_uris_relative_to_its_folder(folder: Path) -> None:
    manifest = folder / "list.jsonl"
    lines = [json.dumps({"video": "b.mp4"}), "nested/deep/c.mkv", json.dumps(str(folder / "a.MOV")), ""]
    manifest.write_text("\n".join(lines))
    refs = list_videos(str(manifest))
    assert [r.uri for r in refs] == sorted(
        [str(folder / "b.mp4"), str(folder / "nested/deep/c.mkv"), str(folder / "a.MOV")]
    )
    assert all(r.size > 0 for r in refs)


def test_manifest_entry_that_does_not_exist_is_kept_for_a_failed_row_later(folder: Path) -> None:
    manifest = folder / "list.jsonl"
    manifest.write_text(json.dumps({"video": "gone.mp4"}) + "\n")
    [ref] = list_videos(str(manifest))
    assert ref.uri == str(folder / "gone.mp4")
    assert ref.size == -1


def test_parquet_manifest_reads_the_video_column(folder: Path) -> None:
    manifest = folder / "list.parquet"
    pq.write_table(pa.table({"video": ["b.mp4", str(folder / "a.MOV")], "other": [1, 2]}), manifest)
    assert [Path(r.uri).name for r in list_videos(str(manifest))] == ["a.MOV", "b.mp4"]


def test_parquet_manifest_without_video_column_is_a_config_error(folder: Path) -> None:
    manifest = folder / "list.parquet"
    pq.write_table(pa.table({"path": ["b.mp4"]}), manifest)
    with pytest.raises(ConfigError, match=r"list\.parquet.*no 'video' column"):
        list_videos(str(manifest))


def test_jsonl_manifest_with_bad_json_names_the_line(folder: Path) -> None:
    manifest = folder / "list.jsonl"
    manifest.write_text('{"video": "b.mp4"}\n{"video": \n')
    with pytest.raises(ConfigError, match=r"list\.jsonl, line 2: invalid JSON"):
        list_videos(str(manifest))


def test_missing_corpus_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        list_videos(str(tmp_path / "nope"))


def test_uri_helpers() -> None:
    assert resolve_uri("a/../b.mp4", "s3://bucket/x") == "s3://bucket/x/b.mp4"
    assert resolve_uri("gs://other/c.mp4", "/local") == "gs://other/c.mp4"
    assert normalize_uri("rel.mp4") == os.path.abspath("rel.mp4")
    assert stable_hash("a", "b") != stable_hash("ab")
