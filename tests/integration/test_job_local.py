"""The batch job end to end on an embedded local Ray (num_cpus=2): broken inputs, resume, a killed actor."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import ray

from batchtrack.config import load_config
from batchtrack.io.rle import decode_mask
from batchtrack.pipeline.job import run_job

from .conftest import CLIP_FRAMES, OVERLAP, ActorKiller, Corpus, assert_complete_dataset, make_corpus, read_table

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_ray")]


def _config(corpus: Corpus, output: Path, model: str = "baseline-flow", actors: int = 2, **extra: object) -> object:
    return load_config(
        None,
        corpus=str(corpus.folder),
        output=str(output),
        prompts=str(corpus.prompts),
        model={"name": model},
        clip={"length_frames": CLIP_FRAMES, "overlap_frames": OVERLAP},
        actors={"num_actors": actors, "num_cpus": 1},
        **extra,
    )


def _uri_of(corpus: Corpus) -> Callable[[str], str]:
    return lambda name: str(corpus.folder / name)


@pytest.fixture(scope="module")
def first_run(mixed_corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    output = tmp_path_factory.mktemp("local") / "out"
    return output, run_job(_config(mixed_corpus, output, max_failed_fraction=0.5))


def test_mixed_corpus_tracks_good_videos_and_records_broken_files_as_failures(
    mixed_corpus: Corpus, first_run: tuple[Path, object]
) -> None:
    output, summary = first_run
    clips = read_table(output, "clips").to_pylist()
    failed = {Path(c["video_uri"]).name: c for c in clips if c["status"] == "failed"}
    assert set(failed) == {"zero.mp4", "garbage.mp4", "truncated.mp4"}
    assert all(c["error_class"] == "DecodeError" and c["error_message"] for c in failed.values())
    assert "empty" in failed["zero.mp4"]["error_message"]
    # 20, 22, 24 frames in clips of 8 with overlap 2 → 3 + 4 + 4 clips, each with prompts at its start.
    ok = [c for c in clips if c["status"] == "ok"]
    assert len(ok) == 3 + 4 + 4
    assert (summary.ok, summary.failed, summary.videos) == (11, 3, 6)
    assert summary.exit_code(0.5) == 0 and summary.exit_code(0.0) == 1
    assert_complete_dataset(output, mixed_corpus.prompts, _uri_of(mixed_corpus))


def test_masks_are_valid_rle_at_video_resolution_and_readable_by_duckdb(first_run: tuple[Path, object]) -> None:
    output, _ = first_run
    masks = read_table(output, "masks")
    row = masks.slice(0, 1).to_pylist()[0]
    assert (row["height"], row["width"]) == (64, 96)
    assert decode_mask(row["rle"], 64, 96).sum() == row["area"]
    con = duckdb.connect()
    count = con.execute(f"SELECT count(*) FROM read_parquet('{output}/masks/**/*.parquet')").fetchone()[0]
    assert count == masks.num_rows
    dims = con.execute(f"SELECT DISTINCT len(embedding) FROM read_parquet('{output}/pointers/*.parquet')").fetchall()
    assert dims == [(256,)]
    query = f"SELECT status, count(*) FROM read_parquet('{output}/clips/*.parquet') GROUP BY 1"
    status = dict(con.execute(query).fetchall())
    assert status == {"ok": 11, "failed": 3}


def test_manifest_is_written_last_with_redacted_config_versions_and_counts(first_run: tuple[Path, object]) -> None:
    output, summary = first_run
    manifest = json.loads((output / "_manifest.json").read_text())
    assert manifest["counts"]["ok"] == summary.ok
    assert manifest["config"]["model"]["name"] == "baseline-flow"
    assert manifest["versions"]["ray"] == ray.__version__
    newest_data = max(p.stat().st_mtime for p in output.rglob("*.parquet"))
    assert (output / "_manifest.json").stat().st_mtime >= newest_data


def test_rerun_after_losing_commit_records_tracks_only_those_clips(
    mixed_corpus: Corpus, first_run: tuple[Path, object], tmp_path: Path
) -> None:
    source, _ = first_run
    output = tmp_path / "out"
    shutil.copytree(source, output)
    commits = sorted((output / "_commits").glob("*.json"))
    lost = commits[::3]
    for record in lost:
        record.unlink()
    (output / "masks" / f"{commits[1].stem}.parquet").unlink()  # committed, but its data file is gone
    before = {p.name: p.stat().st_mtime_ns for p in (output / "masks").glob("*.parquet")}

    summary = run_job(_config(mixed_corpus, output, max_failed_fraction=0.5))
    assert summary.ok == 11 and summary.resumed == 11 - len(lost) - 1
    rewritten = {p.name for p in (output / "masks").glob("*.parquet") if before.get(p.name) != p.stat().st_mtime_ns}
    assert rewritten == {f"{r.stem}.parquet" for r in [*lost, commits[1]]}
    assert_complete_dataset(output, mixed_corpus.prompts, _uri_of(mixed_corpus))
    assert pq.read_table(output / "clips").num_rows == 14


def test_actor_killed_mid_clip_is_restarted_and_every_clip_lands_once(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", num_videos=2, num_frames=14, seed=7, broken=False)
    output = tmp_path / "out"
    with ActorKiller() as killer:
        summary = run_job(_config(corpus, output, model="test-tiny", actors=1))
    assert killer.killed_pid is not None, "no ClipTracker was caught mid-batch"
    # 14 and 16 frames in clips of 8 with overlap 2 → 2 + 3 clips.
    assert (summary.failed, summary.ok) == (0, 2 + 3)
    assert_complete_dataset(output, corpus.prompts, _uri_of(corpus))
