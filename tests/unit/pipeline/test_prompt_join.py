"""The prompt join's parts without a cluster: lines split by video, partitions joined with a listing or a scope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from batchtrack.errors import PromptError
from batchtrack.io.corpus import CorpusScope, VideoRef
from batchtrack.io.prompt_chunks import PromptLine, chunk_shards, manifest_shards, read_chunk
from batchtrack.pipeline.prompt_join import (
    LISTING_SCHEMA,
    bucket_lines,
    join_partition,
    joined_videos,
    partition_count,
)


def _manifest(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _box(video: str, frame: int, object_id: int) -> dict[str, Any]:
    return {"video": video, "frame": frame, "object_id": object_id, "box": [1, 2, 5, 6]}


def _pieces(
    manifest: Path, partitions: int, chunk_bytes: int = 10**6, block_lines: int = 16_384
) -> list[list[pa.Table]]:
    """pieces[chunk][partition], as the readers return them."""
    out = []
    for chunk in chunk_shards(manifest_shards(str(manifest)), chunk_bytes):
        tables, stats = bucket_lines(read_chunk(chunk), chunk.uri, partitions, block_lines)
        assert stats.error is None
        out.append(tables)
    return out


@pytest.mark.parametrize("block_lines", [1, 3, 1000])
def test_every_line_lands_in_one_partition_and_a_video_in_only_one(tmp_path: Path, block_lines: int) -> None:
    lines = [_box(f"v{i % 7}.mp4", i, 1) for i in range(60)]
    pieces = _pieces(_manifest(tmp_path / "p.jsonl", lines), partitions=4, chunk_bytes=300, block_lines=block_lines)
    assert len(pieces) > 3
    frames = [json.loads(r)["frame"] for tables in pieces for t in tables for r in t.column("record").to_pylist()]
    assert sorted(frames) == list(range(60))
    for tables in pieces:  # file order within a partition, whatever the blocks
        for table in tables:
            positions = table.column("position").to_pylist()
            assert positions == sorted(positions)
    where: dict[str, set[int]] = {}
    total = 0
    for tables in pieces:
        for partition, table in enumerate(tables):
            total += table.num_rows
            for video in table.column("video").to_pylist():
                where.setdefault(video, set()).add(partition)
    assert total == 60
    assert len(where) == 7 and all(len(p) == 1 for p in where.values())
    assert len({p for ps in where.values() for p in ps}) > 1, "every video in one partition: the test shows nothing"


def test_a_bad_line_is_reported_by_its_reader_not_raised() -> None:
    def lines() -> Any:
        yield PromptLine("/v.mp4", json.dumps(_box("/v.mp4", 0, 1)), False, 0)
        raise PromptError("/m.jsonl, line 2: field 'frame': bad")

    tables, stats = bucket_lines(lines(), "/m.jsonl", 2)
    assert stats.error == "/m.jsonl, line 2: field 'frame': bad"
    assert sum(t.num_rows for t in tables) == 0


def test_without_a_listing_the_corpus_scope_keeps_its_videos_and_counts_the_others(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    lines = [
        _box("corpus/b.mp4", 9, 2),
        _box("corpus/b.mp4", 0, 1),
        {"video": "corpus/b.mp4", "text": "dog"},
        _box("elsewhere/x.mp4", 0, 1),
        _box("elsewhere/x.mp4", 1, 1),
        _box("corpus/notes.txt", 0, 1),
        _box("corpus/a.mp4", 0, 1),
    ]
    (pieces,) = _pieces(_manifest(tmp_path / "p.jsonl", lines), partitions=1)
    table, stats = join_partition(pieces, None, CorpusScope("folder", str(corpus)), {})
    rows = table.to_pylist()
    assert [Path(r["uri"]).name for r in rows] == ["a.mp4", "b.mp4"]
    assert all(r["video_id"] is None for r in rows)  # stat'ed when planned
    assert [json.loads(p)["frame"] for p in rows[1]["prompts"]] == [0, 9]
    assert rows[1]["concepts"] == ["dog"]
    assert (stats.lines, stats.videos, stats.unmatched_videos, stats.unmatched_lines) == (7, 2, 2, 3)
    assert stats.examples == sorted([str(corpus / "notes.txt"), str(tmp_path / "elsewhere" / "x.mp4")])


def test_with_a_listing_every_listed_video_is_kept_and_unlisted_prompts_are_counted(tmp_path: Path) -> None:
    lines = [_box("a.mp4", 0, 1), _box("gone.mp4", 0, 1)]
    (pieces,) = _pieces(_manifest(tmp_path / "p.jsonl", lines), partitions=1)
    listed = [VideoRef("1" * 16, str(tmp_path / "a.mp4"), 10, "e1"), VideoRef("2" * 16, str(tmp_path / "z.mp4"), 5, "")]
    listing = pa.Table.from_pylist(
        [{"uri": r.uri, "video_id": r.video_id, "size": r.size, "etag": r.etag} for r in listed], schema=LISTING_SCHEMA
    )
    table, stats = join_partition(pieces, [listing], None, {})
    joined = list(joined_videos(table, {}))
    assert [(ref, len(prompts)) for ref, prompts, _ in joined] == [(listed[0], 1), (listed[1], 0)]
    assert (stats.unmatched_videos, stats.examples) == (1, [str(tmp_path / "gone.mp4")])


def test_a_second_prompt_of_one_object_on_one_frame_names_both_lines_across_chunks(tmp_path: Path) -> None:
    lines = [_box("a.mp4", 3, 1), *[_box("b.mp4", i, 1) for i in range(20)], _box("a.mp4", 3, 1)]
    manifest = _manifest(tmp_path / "p.jsonl", lines)
    pieces = _pieces(manifest, partitions=1, chunk_bytes=200)
    assert len(pieces) > 2
    _, stats = join_partition([p[0] for p in pieces], None, CorpusScope("folder", str(tmp_path)), {})
    assert stats.error is not None
    with pytest.raises(PromptError, match=r"p.jsonl, line 22: field 'object_id': object 1 already has a prompt on "
                                          r"frame 3 of .*a.mp4 \(line 1\)"):
        raise PromptError(stats.error)


def test_a_prompted_video_that_does_not_exist_is_planned_with_size_minus_one(tmp_path: Path) -> None:
    (tmp_path / "here.mp4").write_bytes(b"12345")
    lines = [_box("here.mp4", 0, 1), _box("missing.mp4", 0, 1)]
    (pieces,) = _pieces(_manifest(tmp_path / "p.jsonl", lines), partitions=1)
    table, _ = join_partition(pieces, None, CorpusScope("folder", str(tmp_path)), {})
    sizes = {Path(ref.uri).name: ref.size for ref, _, _ in joined_videos(table, {})}
    assert sizes == {"here.mp4": 5, "missing.mp4": -1}


def test_partition_count_grows_in_powers_of_two_with_the_manifest() -> None:
    counts = [partition_count(n * 2**20) for n in (0, 1, 4, 5, 9, 100, 10_000)]
    assert counts == [1, 1, 1, 2, 4, 32, 256]


def test_a_missing_prompt_manifest_stops_the_job_before_ray_starts(tmp_path: Path) -> None:
    from batchtrack.config import load_config
    from batchtrack.pipeline.job import run_job

    (tmp_path / "corpus").mkdir()
    cfg = load_config(
        None,
        corpus=str(tmp_path / "corpus"),
        output=str(tmp_path / "out"),
        prompts=str(tmp_path / "prompts.jsonl"),
        model={"name": "baseline-flow"},
    )
    # The unit-test guard refuses ray.init: reaching it would fail with another error.
    with pytest.raises(PromptError, match=r"prompts.jsonl: prompt manifest does not exist"):
        run_job(cfg)
