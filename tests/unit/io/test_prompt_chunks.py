"""A prompt manifest cut into chunks: every line read once by exactly one chunk, errors still name file/line/field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchtrack.errors import PromptError
from batchtrack.io.prompt_chunks import chunk_shards, manifest_shards, read_chunk
from batchtrack.io.prompts import read_prompt_manifest


def _line(video: str, frame: int, object_id: int) -> dict[str, Any]:
    return {"video": video, "frame": frame, "object_id": object_id, "box": [1, 2, 3 + frame, 4 + object_id]}


def _write(path: Path, lines: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _read_all(uri: str, chunk_bytes: int) -> list[dict[str, Any]]:
    chunks = chunk_shards(manifest_shards(uri), chunk_bytes)
    return [json.loads(line.record) for chunk in chunks for line in read_chunk(chunk)]


@pytest.mark.parametrize("chunk_bytes", [5, 61, 62, 63, 500, 10**6])
def test_chunks_of_any_size_read_every_line_once_in_file_order(tmp_path: Path, chunk_bytes: int) -> None:
    lines = [_line(f"v{i % 3}.mp4", i, i % 4) for i in range(40)]
    lines.insert(5, "")  # a blank line is skipped, as before
    manifest = _write(tmp_path / "p.jsonl", lines)
    whole = [r.model_dump(mode="json", exclude_none=True) for r in read_prompt_manifest(str(manifest))]
    chunked = _read_all(str(manifest), chunk_bytes)
    assert len(whole) == 40
    assert chunked == whole
    assert len(chunk_shards(manifest_shards(str(manifest)), chunk_bytes)) > (1 if chunk_bytes < 2000 else 0)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"video": "a.mp4", "frame": -1, "object_id": 1, "box": [1, 2, 3, 4]}, r"line 31: field 'frame'"),
        ("{not json", r"line 31: invalid JSON"),
        ({"video": "a.mp4", "frame": 0, "object_id": 1}, r"line 31: field 'box/points/mask'"),
    ],
)
def test_a_bad_line_in_a_later_chunk_names_its_line_in_the_whole_file(tmp_path: Path, bad: Any, message: str) -> None:
    lines: list[Any] = [_line("a.mp4", i, 1) for i in range(30)]
    manifest = _write(tmp_path / "p.jsonl", [*lines, bad, _line("a.mp4", 99, 1)])
    chunks = chunk_shards(manifest_shards(str(manifest)), 100)
    assert len(chunks) > 10
    with pytest.raises(PromptError, match=f"p.jsonl, {message}"):
        for chunk in chunks:
            list(read_chunk(chunk))


def test_a_folder_of_shards_and_a_glob_list_their_shards_and_resolve_videos_against_each_shard(tmp_path: Path) -> None:
    _write(tmp_path / "m" / "part-0.jsonl", [_line("a.mp4", 0, 1)])
    _write(tmp_path / "m" / "sub" / "part-1.jsonl", [_line("b.mp4", 0, 1), {"video": "b.mp4", "text": " cat "}])
    pq.write_table(pa.Table.from_pylist([_line("/abs/c.mp4", 2, 3)]), tmp_path / "m" / "part-2.parquet")
    (tmp_path / "m" / "README.txt").write_text("not a shard")
    folder = _read_all(str(tmp_path / "m"), 10**6)
    assert [(r["video"], r.get("text")) for r in folder] == [
        (str(tmp_path / "m" / "a.mp4"), None),
        ("/abs/c.mp4", None),
        (str(tmp_path / "m" / "sub" / "b.mp4"), None),
        (str(tmp_path / "m" / "sub" / "b.mp4"), "cat"),
    ]
    globbed = manifest_shards(str(tmp_path / "m" / "part-*.jsonl"))
    assert [Path(uri).name for uri, _ in globbed] == ["part-0.jsonl"]


def test_a_missing_manifest_or_a_folder_without_shards_is_a_prompt_error(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="does not exist"):
        manifest_shards(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PromptError, match=r"no prompt manifest shard \(.jsonl or .parquet\)"):
        manifest_shards(str(tmp_path / "empty"))


def test_a_parquet_shard_names_the_row_of_a_bad_entry(tmp_path: Path) -> None:
    rows = [_line("a.mp4", 0, 1), {**_line("a.mp4", 1, 1), "frame": -2}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet", row_group_size=1)
    (chunk,) = chunk_shards(manifest_shards(str(tmp_path / "p.parquet")))
    with pytest.raises(PromptError, match=r"p.parquet, row 2: field 'frame'"):
        list(read_chunk(chunk))
