"""Automatic mode and cross-clip stitching in the batch job, on an embedded local Ray (num_cpus=2).

One corpus, two synthetic videos: `prompted` (20 frames, prompts on frame 0 only → 3 clips, the first
prompted, the other two in automatic mode) and `bare` (14 frames, no prompts → 2 automatic clips).
The model is test-tiny with seeded random weights (a checkpoint, so every actor loads the same
ones) whose object-score head is biased to call everything an object: its masks are poor, so the
checks are structural, with proposal thresholds low enough that automatic mode finds objects.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
import torch

from batchtrack.config import JobConfig, load_config
from batchtrack.model.build import build_tracker
from batchtrack.model.checkpoint import save_safetensors
from batchtrack.pipeline.job import JobSummary, run_job
from batchtrack.pipeline.track_ids import StitchClip, stitch_video_output
from batchtrack.synthetic.corpus import write_synthetic_video
from batchtrack.synthetic.scene import SceneSpec

from .conftest import read_table, write_prompts_every

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_ray")]

CLIP_FRAMES = 8
OVERLAP = 2
OBJECT_SCORE_BIAS = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"
PERMISSIVE_AUTO = {
    "keyframe_every": 4,
    "points_per_side": 4,
    "min_pred_iou": 0.0,
    "min_stability": 0.0,
    "new_object_min_score": 0.0,
    "max_objects": 4,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("auto") / "corpus"
    prompted = write_synthetic_video(SceneSpec(seed=11, width=96, height=64, num_frames=20, num_objects=2),
                                     folder, "prompted").video_path
    write_synthetic_video(SceneSpec(seed=12, width=96, height=64, num_frames=14, num_objects=2), folder, "bare")
    write_prompts_every([prompted], folder / "prompts.jsonl", every=1000)  # frame 0 only
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    tracker = build_tracker("test-tiny", device="cpu")
    with torch.no_grad():
        # Untrained, the object-score logit's sign is a coin toss per seed; make every proposal an object.
        dict(tracker.named_parameters())[OBJECT_SCORE_BIAS].fill_(5.0)
    path = tmp_path_factory.mktemp("weights") / "test-tiny-seed0.safetensors"
    save_safetensors(tracker, path)
    return path


def _config(corpus: Path, output: Path, checkpoint: Path) -> JobConfig:
    return load_config(
        None,
        corpus=str(corpus),
        output=str(output),
        prompts=str(corpus / "prompts.jsonl"),
        model={"name": "test-tiny", "checkpoint": str(checkpoint)},
        clip={"length_frames": CLIP_FRAMES, "overlap_frames": OVERLAP},
        actors={"num_actors": 2, "num_cpus": 1},
        auto=PERMISSIVE_AUTO,
    )


@pytest.fixture(scope="module")
def first_run(corpus: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, JobSummary]:
    output = tmp_path_factory.mktemp("auto-out") / "out"
    return output, run_job(_config(corpus, output, checkpoint))


def _by_video(output: Path) -> dict[str, list[dict[str, object]]]:
    clips: dict[str, list[dict[str, object]]] = defaultdict(list)
    for clip in read_table(output, "clips").to_pylist():
        clips[Path(str(clip["video_uri"])).stem].append(clip)
    return {name: sorted(rows, key=lambda c: int(c["start_frame"])) for name, rows in clips.items()}


def test_every_clip_is_tracked_prompted_or_automatic_and_covers_all_frames(
    first_run: tuple[Path, JobSummary],
) -> None:
    output, summary = first_run
    clips = _by_video(output)
    assert [(c["start_frame"], c["end_frame"], c["status"]) for c in clips["prompted"]] == [
        (0, 8, "ok"), (6, 14, "ok"), (12, 20, "ok")
    ]
    assert [(c["start_frame"], c["end_frame"], c["status"]) for c in clips["bare"]] == [(0, 8, "ok"), (6, 14, "ok")]
    assert (summary.ok, summary.failed, summary.skipped, summary.auto_clips) == (5, 0, 0, 4)
    assert summary.stitched_videos == 2
    # Automatic clips of the prompted video number their objects from 0, which is no prompted id: rewritten.
    assert summary.stitch_rewrites >= 2
    masks = read_table(output, "masks").to_pylist()
    frames: dict[str, set[int]] = defaultdict(set)
    for row in masks:
        frames[str(row["clip_id"])].add(int(row["frame_index"]))
    for rows in clips.values():
        for clip in rows:
            assert frames[str(clip["clip_id"])] == set(range(int(clip["start_frame"]), int(clip["end_frame"]))), clip


def test_track_ids_are_video_level_unique_per_clip_and_prompted_ids_are_kept(
    corpus: Path, first_run: tuple[Path, JobSummary]
) -> None:
    output, _ = first_run
    masks = read_table(output, "masks").to_pylist()
    pointers = read_table(output, "pointers").to_pylist()
    key = ("clip_id", "frame_index", "object_id", "track_id")
    assert sorted(tuple(r[k] for k in key) for r in masks) == sorted(tuple(r[k] for k in key) for r in pointers)
    per_clip = [(r["clip_id"], r["frame_index"], r["track_id"]) for r in masks]
    assert len(per_clip) == len(set(per_clip)), "two objects of one clip share a (frame, track) key"

    clips = _by_video(output)
    prompted_ids = {json.loads(line)["object_id"] for line in (corpus / "prompts.jsonl").read_text().splitlines()}
    first = clips["prompted"][0]["clip_id"]
    first_rows = [r for r in masks if r["clip_id"] == first]
    assert {r["object_id"] for r in first_rows} == prompted_ids
    assert all(r["track_id"] == r["object_id"] for r in first_rows)
    for clip in clips["prompted"][1:]:
        tracks = {r["track_id"] for r in masks if r["clip_id"] == clip["clip_id"]}
        assert tracks, clip
        # Automatic objects either continue a prompted object or start after every prompted id.
        assert all(t in prompted_ids or t > max(prompted_ids) for t in tracks)

    for name, rows in clips.items():
        record = json.loads((output / "_stitch" / f"{rows[0]['video_id']}.json").read_text())
        assert [c["clip_id"] for c in record["clips"]] == [c["clip_id"] for c in rows], name
        stitched = {(c, o): t for c, o, t in record["track_ids"]}
        written = {(r["clip_id"], r["object_id"]): r["track_id"] for r in masks if r["video_id"] == rows[0]["video_id"]}
        assert stitched == written, name
    bare_tracks = {r["track_id"] for r in masks if r["clip_id"] in {c["clip_id"] for c in clips["bare"]}}
    assert min(bare_tracks) == 0 and bare_tracks == set(range(len(bare_tracks)))  # dense from 0


def test_rerun_resumes_every_clip_and_rewrites_nothing(
    corpus: Path, checkpoint: Path, first_run: tuple[Path, JobSummary]
) -> None:
    output, _ = first_run
    data = [p for p in output.rglob("*") if p.is_file() and p.parts[-2] in ("masks", "pointers", "_stitch", "_commits")]
    before = {p: p.stat().st_mtime_ns for p in data}
    masks_before = pq.read_table(output / "masks").sort_by([("clip_id", "ascending"), ("frame_index", "ascending"),
                                                            ("object_id", "ascending")])
    summary = run_job(_config(corpus, output, checkpoint))
    assert (summary.ok, summary.resumed, summary.stitched_videos, summary.stitch_rewrites) == (5, 5, 2, 0)
    assert {p: p.stat().st_mtime_ns for p in data} == before
    masks_after = pq.read_table(output / "masks").sort_by([("clip_id", "ascending"), ("frame_index", "ascending"),
                                                          ("object_id", "ascending")])
    assert masks_after.equals(masks_before)


def test_stitching_pass_rewrites_and_records_on_s3_like_on_a_local_disk(
    corpus: Path, first_run: tuple[Path, JobSummary], s3_server: Any
) -> None:
    """The prompted video's files as the actors wrote them (track_id = object_id), stitched on an S3 server."""
    output, _ = first_run
    clips = _by_video(output)["prompted"]
    video_id = str(clips[0]["video_id"])
    local = json.loads((output / "_stitch" / f"{video_id}.json").read_text())
    bucket = s3_server.create_bucket("stitch")
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    for clip in clips:
        for kind in ("masks", "pointers"):
            table = pq.read_table(output / kind / f"{clip['clip_id']}.parquet")
            index = table.schema.get_field_index("track_id")
            fresh = table.set_column(index, table.schema.field(index), table.column("object_id").cast(pa.int64()))
            with fs.open(f"stitch/out/{kind}/{clip['clip_id']}.parquet", "wb") as handle:
                pq.write_table(fresh, handle)
    stitch_clips = [
        StitchClip(str(c["clip_id"]), int(c["start_frame"]), int(c["end_frame"]), 64, 96, prompted=k == 0,
                   masks_file=str(c["masks_file"]), pointers_file=str(c["pointers_file"]))
        for k, c in enumerate(clips)
    ]
    options = s3_server.storage_options
    free = 1 + max(json.loads(line)["object_id"] for line in (corpus / "prompts.jsonl").read_text().splitlines())
    first = stitch_video_output(f"{bucket}/out", video_id, stitch_clips, first_new_id=free, storage_options=options)
    assert {(c, o): t for c, o, t in local["track_ids"]} == first.track_ids
    assert len(first.rewritten) >= 2 and first.record_written
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(f"stitch/out/_stitch/{video_id}.json")) == local
    again = stitch_video_output(f"{bucket}/out", video_id, stitch_clips, first_new_id=free, storage_options=options)
    assert (again.rewritten, again.record_written) == ([], False)
