"""The batch job end to end on an embedded local Ray (num_cpus=2): whole-video tracks, broken inputs, resume,
a killed actor, and the J&F of a video cut into clips against the same video tracked as one clip."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import av
import duckdb
import pyarrow.parquet as pq
import pytest
import ray

from batchtrack.config import load_config
from batchtrack.eval.evaluate import evaluate_output
from batchtrack.io.rle import decode_mask
from batchtrack.pipeline.job import JobSummary, run_job
from batchtrack.synthetic.codecs import ARCHIVE_ENCODINGS, write_encoding

from .conftest import CLIP_FRAMES, ActorKiller, Corpus, assert_complete_dataset, make_corpus, read_table

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_ray")]


def _config(
    corpus: Corpus, output: Path, model: str = "baseline-flow", actors: int = 2, clip_frames: int = CLIP_FRAMES,
    prompts: Path | None = None, **extra: object,
) -> object:
    return load_config(
        None,
        corpus=str(corpus.folder),
        output=str(output),
        prompts=str(prompts or corpus.prompts),
        model={"name": model},
        clip={"length_frames": clip_frames},
        actors={"num_actors": actors, "num_cpus": 1},
        unit={"max_videos": 2},
        **extra,
    )


def _uri_of(corpus: Corpus) -> Callable[[str], str]:
    return lambda name: str(corpus.folder / name)


@pytest.fixture(scope="module")
def sharded_prompts(mixed_corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus's prompts split over two shards of a folder (a video's lines may be in both), and a third shard
    of 3 lines for 2 videos outside the corpus: the manifest of an archive, run over a part of it."""
    folder = tmp_path_factory.mktemp("prompts")
    lines = [json.loads(line) for line in mixed_corpus.prompts.read_text().splitlines()]
    absolute = [json.dumps({**line, "video": str(mixed_corpus.folder / line["video"])}) for line in lines]
    (folder / "part-0.jsonl").write_text("".join(f"{line}\n" for line in absolute[1::2]))
    (folder / "part-1.jsonl").write_text("".join(f"{line}\n" for line in absolute[0::2]))
    outside = [("elsewhere/a.mp4", 1), ("elsewhere/a.mp4", 2), ("elsewhere/b.mp4", 1)]
    (folder / "part-2.jsonl").write_text(
        "".join(json.dumps({"video": v, "frame": 0, "object_id": o, "box": [1, 1, 9, 9]}) + "\n" for v, o in outside)
    )
    return folder


@pytest.fixture(scope="module")
def first_run(
    mixed_corpus: Corpus, sharded_prompts: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, JobSummary]:
    output = tmp_path_factory.mktemp("local") / "out"
    return output, run_job(_config(mixed_corpus, output, prompts=sharded_prompts, max_failed_fraction=0.5))


def test_prompts_on_frame_0_are_tracked_through_every_clip_and_broken_files_are_failures(
    mixed_corpus: Corpus, first_run: tuple[Path, JobSummary]
) -> None:
    output, summary = first_run
    clips = read_table(output, "clips").to_pylist()
    failed = {Path(c["video_uri"]).name: c for c in clips if c["status"] == "failed"}
    assert set(failed) == {"zero.mp4", "garbage.mp4", "truncated.mp4"}
    assert all(c["error_class"] == "DecodeError" and c["error_message"] for c in failed.values())
    assert "empty" in failed["zero.mp4"]["error_message"]
    # 20, 22, 24 frames in clips of 8 → 3 clips each; prompts only on frame 0.
    ok = [c for c in clips if c["status"] == "ok"]
    assert len(ok) == 3 + 3 + 3
    assert (summary.ok, summary.failed, summary.videos, summary.units) == (9, 3, 6, 3)
    assert summary.exit_code(0.5) == 0 and summary.exit_code(0.0) == 1
    # The manifest's lines for videos outside the corpus are counted, not tracked.
    assert (summary.prompt_lines, summary.unmatched_videos, summary.unmatched_lines) == (
        len(mixed_corpus.prompts.read_text().splitlines()) + 3, 2, 3
    )
    masks = assert_complete_dataset(output, mixed_corpus.prompts, _uri_of(mixed_corpus))
    later = [f for f in masks.column("frame_index").to_pylist() if f >= CLIP_FRAMES]
    assert len(later) > masks.num_rows // 2, "rows stop at the first clip"


def test_one_file_per_unit_in_each_table(first_run: tuple[Path, JobSummary]) -> None:
    output, summary = first_run
    for table in ("masks", "pointers", "clips"):
        names = {p.name for p in (output / table).glob("*.parquet")}
        assert len(names) <= summary.units, table
    assert len(list((output / "clips").glob("*.parquet"))) == summary.units == 3
    assert not list((output / "_attempts").glob("*"))


def test_masks_are_valid_rle_at_video_resolution_and_readable_by_duckdb(first_run: tuple[Path, JobSummary]) -> None:
    output, _ = first_run
    masks = read_table(output, "masks")
    row = masks.slice(0, 1).to_pylist()[0]
    assert (row["height"], row["width"]) == (64, 96)
    assert decode_mask(row["rle"], 64, 96).sum() == row["area"] > 0
    con = duckdb.connect()
    count = con.execute(f"SELECT count(*) FROM read_parquet('{output}/masks/**/*.parquet')").fetchone()[0]
    assert count == masks.num_rows
    dims = con.execute(f"SELECT DISTINCT len(embedding) FROM read_parquet('{output}/pointers/*.parquet')").fetchall()
    assert dims == [(256,)]
    query = f"SELECT status, count(*) FROM read_parquet('{output}/clips/*.parquet') GROUP BY 1"
    assert dict(con.execute(query).fetchall()) == {"ok": 9, "failed": 3}


def test_manifest_is_written_last_with_redacted_config_versions_and_counts(first_run: tuple[Path, JobSummary]) -> None:
    output, summary = first_run
    manifest = json.loads((output / "_manifest.json").read_text())
    assert manifest["counts"]["ok"] == summary.ok
    assert manifest["config"]["model"]["name"] == "baseline-flow"
    assert manifest["versions"]["ray"] == ray.__version__
    assert manifest["counts"]["unmatched_lines"] == 3
    examples = manifest["prompts"]["unmatched_examples"]
    assert [Path(e).name for e in examples] == ["a.mp4", "b.mp4"] and all("/elsewhere/" in e for e in examples)
    newest_data = max(p.stat().st_mtime for p in output.rglob("*.parquet"))
    assert (output / "_manifest.json").stat().st_mtime >= newest_data


def test_rerun_tracks_only_uncommitted_units_and_rewrites_no_committed_file(
    mixed_corpus: Corpus, first_run: tuple[Path, JobSummary], tmp_path: Path
) -> None:
    source, _ = first_run
    output = tmp_path / "out"
    shutil.copytree(source, output)
    commits = sorted((output / "clips").glob("*.parquet"))
    lost = commits[0]
    lost.unlink()  # a unit killed after its data files, before its commit
    before = {p: p.stat().st_mtime_ns for p in output.rglob("*.parquet")}

    summary = run_job(_config(mixed_corpus, output, max_failed_fraction=0.5))
    assert (summary.units, summary.resumed_units) == (3, 2)
    changed = {p for p in output.rglob("*.parquet") if before.get(p) != p.stat().st_mtime_ns}
    assert changed <= {output / t / lost.name for t in ("masks", "pointers", "clips")}
    assert output / "clips" / lost.name in changed
    assert_complete_dataset(output, mixed_corpus.prompts, _uri_of(mixed_corpus))
    assert pq.read_table(output / "clips").num_rows == 12


def test_failed_units_are_kept_unless_a_rerun_asks_to_retry_them(
    mixed_corpus: Corpus, first_run: tuple[Path, JobSummary], tmp_path: Path
) -> None:
    source, _ = first_run
    output = tmp_path / "out"
    shutil.copytree(source, output)
    failed_units = {p.name for p in (output / "_failed").iterdir()}
    assert failed_units, "the broken files' units are marked failed"
    kept = run_job(_config(mixed_corpus, output, max_failed_fraction=0.5))
    assert kept.resumed_units == 3 and kept.failed == 0
    retried = run_job(_config(mixed_corpus, output, max_failed_fraction=0.5, retry_failed=True))
    assert retried.resumed_units == 3 - len(failed_units) and retried.failed == 3
    assert pq.read_table(output / "clips").num_rows == 12


def test_actor_killed_mid_unit_is_restarted_and_every_row_lands_once(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", num_videos=2, num_frames=14, seed=7, broken=False)
    output = tmp_path / "out"
    with ActorKiller() as killer:
        summary = run_job(_config(corpus, output, model="test-tiny", actors=1))
    assert killer.killed_pid is not None, "no UnitTracker was caught mid-unit"
    # 14 and 16 frames in clips of 8 → 2 + 2 clips.
    assert (summary.failed, summary.ok) == (0, 2 + 2)
    assert_complete_dataset(output, corpus.prompts, _uri_of(corpus))


def test_a_video_cut_into_clips_scores_like_the_same_video_tracked_as_one_clip(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", num_videos=2, num_frames=30, seed=11, broken=False)
    scores = {}
    for clip_frames in (8, 64):
        output = tmp_path / f"out-{clip_frames}"
        summary = run_job(_config(corpus, output, model="tiny-synthetic", actors=1, clip_frames=clip_frames))
        assert summary.ok == (4 + 4 if clip_frames == 8 else 2)
        report = evaluate_output(str(output), str(corpus.folder))
        assert report.objects and all(o.num_frames > 0 for o in report.objects), "nothing was compared"
        scores[clip_frames] = report.jf
    assert scores[64] > 0.2, scores  # the model tracks something: the comparison is not of two empty outputs
    assert abs(scores[8] - scores[64]) <= 0.03, scores


def test_every_encoding_of_the_codec_matrix_ends_ok_with_one_row_per_frame(tmp_path: Path) -> None:
    """The files of the codec matrix (batchtrack.synthetic.codecs) in one job: every file is tracked whole,
    rotated ones in displayed coordinates, each row with its frame's own presentation time."""
    folder = tmp_path / "matrix"
    folder.mkdir()
    encodings = {f"{e.name}{e.suffix}": e for e in ARCHIVE_ENCODINGS}
    lines = []
    for name, encoding in encodings.items():
        write_encoding(encoding, folder / name)
        width, height = encoding.displayed_size
        box = [1, 1, width // 2, height // 2]  # displayed pixels: inside every displayed frame
        lines.append(json.dumps({"video": name, "frame": 0, "object_id": 1, "box": box}) + "\n")
    (folder / "prompts.jsonl").write_text("".join(lines))
    corpus = Corpus(folder, [folder / n for n in encodings], [], folder / "prompts.jsonl")
    output = tmp_path / "out"
    cfg = load_config(
        None, corpus=str(folder), output=str(output), prompts=str(corpus.prompts), model={"name": "baseline-flow"},
        actors={"num_actors": 1, "num_cpus": 1}, unit={"max_videos": 32},
    )  # fmt: skip

    summary = run_job(cfg)

    clips = read_table(output, "clips").to_pylist()
    by_name = {Path(c["video_uri"]).name: c for c in clips}
    assert set(by_name) == set(encodings) and summary.failed == 0, [c for c in clips if c["status"] != "ok"]
    masks = read_table(output, "masks").to_pylist()
    for name, encoding in encodings.items():
        clip = by_name[name]
        rows = sorted((r for r in masks if Path(r["video_uri"]).name == name), key=lambda r: r["frame_index"])
        assert (clip["status"], clip["frames"], clip["rotation"], clip["mirrored"]) == (
            "ok", encoding.frames, encoding.rotation, encoding.mirror,
        ), name  # fmt: skip
        assert [r["frame_index"] for r in rows] == list(range(encoding.frames)), name
        width, height = encoding.displayed_size
        assert {(r["height"], r["width"]) for r in rows} == {(height, width)}, name
        with av.open(str(folder / name)) as container:
            times = [float(frame.time) for frame in container.decode(video=0)]
        assert [r["timestamp_s"] for r in rows] == pytest.approx([t - times[0] for t in times], abs=1e-6), name
    assert_complete_dataset(output, corpus.prompts, _uri_of(corpus))
