"""Automatic mode in the batch job, on an embedded local Ray (num_cpus=2): tracks keep their ids over clips.

One corpus, two synthetic videos: `prompted` (20 frames, prompts on frame 0 only → 3 clips, all tracking
the prompted objects) and `bare` (14 frames, no prompts → 2 clips in automatic mode, one pass).
The model is test-tiny with seeded random weights (a checkpoint, so every actor loads the same
ones) whose object-score head is biased to call everything an object: its masks are poor, so the
checks are structural, with proposal thresholds low enough that automatic mode finds objects.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import torch

from batchtrack.config import JobConfig, load_config
from batchtrack.model.loading.build import build_tracker
from batchtrack.model.loading.checkpoint import save_safetensors
from batchtrack.pipeline.job import JobSummary, run_job
from batchtrack.synthetic.corpus import write_synthetic_video
from batchtrack.synthetic.scene import SceneSpec

from .conftest import read_table, write_first_frame_prompts

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_ray")]

CLIP_FRAMES = 8
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
    write_first_frame_prompts([prompted], folder / "prompts.jsonl")
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


def _config(corpus: Path, output: Path, checkpoint: Path, clip_frames: int = CLIP_FRAMES) -> JobConfig:
    return load_config(
        None,
        corpus=str(corpus),
        output=str(output),
        prompts=str(corpus / "prompts.jsonl"),
        model={"name": "test-tiny", "checkpoint": str(checkpoint)},
        clip={"length_frames": clip_frames},
        actors={"num_actors": 2, "num_cpus": 1},
        unit={"max_videos": 1},
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


def _rows(output: Path, name: str) -> list[tuple[int, int, int, str]]:
    masks = read_table(output, "masks").to_pylist()
    return sorted(
        (r["frame_index"], r["object_id"], r["track_id"], r["rle"]) for r in masks if Path(r["video_uri"]).stem == name
    )


def test_every_clip_is_tracked_and_covers_its_frames(first_run: tuple[Path, JobSummary]) -> None:
    output, summary = first_run
    clips = _by_video(output)
    assert [(c["start_frame"], c["end_frame"], c["status"]) for c in clips["prompted"]] == [
        (0, 8, "ok"), (8, 16, "ok"), (16, 20, "ok")
    ]
    assert [(c["start_frame"], c["end_frame"], c["status"]) for c in clips["bare"]] == [(0, 8, "ok"), (8, 14, "ok")]
    assert (summary.ok, summary.failed, summary.units) == (5, 0, 2)


def test_automatic_tracks_keep_their_ids_over_clip_boundaries(first_run: tuple[Path, JobSummary]) -> None:
    output, _ = first_run
    rows = _rows(output, "bare")
    assert rows, "automatic mode found nothing"
    ids_before = {obj for frame, obj, _, _ in rows if frame < CLIP_FRAMES}
    ids_after = {obj for frame, obj, _, _ in rows if frame >= CLIP_FRAMES}
    assert ids_before and ids_before <= ids_after, (ids_before, ids_after)  # tracks continue into the next clip
    assert all(obj == track for _, obj, track, _ in rows)
    for obj in ids_before:  # and are tracked on every frame from where they started
        frames = sorted(frame for frame, o, _, _ in rows if o == obj)
        assert frames == list(range(frames[0], 14)), obj


def test_a_prompted_video_tracks_its_prompted_objects_through_every_clip(
    corpus: Path, first_run: tuple[Path, JobSummary]
) -> None:
    output, _ = first_run
    prompted = (corpus / "prompts.jsonl").read_text().splitlines()
    assert prompted
    rows = _rows(output, "prompted")
    objects = {obj for _, obj, _, _ in rows}
    assert len(objects) == len(prompted)
    assert {frame for frame, _, _, _ in rows} == set(range(20))


def test_cutting_a_video_into_clips_changes_none_of_its_automatic_rows(
    corpus: Path, checkpoint: Path, first_run: tuple[Path, JobSummary], tmp_path: Path
) -> None:
    output, _ = first_run
    whole = tmp_path / "whole"
    summary = run_job(_config(corpus, whole, checkpoint, clip_frames=64))
    assert summary.ok == 2
    assert _rows(whole, "bare") == _rows(output, "bare")
    assert _rows(whole, "prompted") == _rows(output, "prompted")


def test_rerun_resumes_every_unit_and_rewrites_nothing(
    corpus: Path, checkpoint: Path, first_run: tuple[Path, JobSummary]
) -> None:
    output, _ = first_run
    data = [p for p in output.rglob("*.parquet")]
    before = {p: p.stat().st_mtime_ns for p in data}
    summary = run_job(_config(corpus, output, checkpoint))
    assert (summary.units, summary.resumed_units, summary.frames) == (2, 2, 0)
    assert {p: p.stat().st_mtime_ns for p in data} == before
