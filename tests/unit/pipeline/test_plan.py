"""Clip planning: spans cover every frame with the configured overlap; clip ids are deterministic."""

from __future__ import annotations

import itertools

import pytest

from batchtrack.config import ClipPlanConfig
from batchtrack.io.corpus import VideoRef
from batchtrack.io.prompts import PromptRecord
from batchtrack.io.video import VideoInfo
from batchtrack.pipeline.plan import ClipSpec, ModelKey, clip_length, clip_spans, plan_video

REF = VideoRef(video_id="0123456789abcdef", uri="/data/v.mp4", size=10, etag="1")
MODEL = ModelKey("test-tiny", "builtin-0.1.0")


def _info(num_frames: int, fps: float = 10.0) -> VideoInfo:
    return VideoInfo(uri=REF.uri, num_frames=num_frames, fps=fps, width=64, height=48, duration_s=num_frames / fps)


def _prompt(frame: int, object_id: int = 1) -> PromptRecord:
    return PromptRecord(video=REF.uri, frame=frame, object_id=object_id, box=(1, 2, 10, 12))


@pytest.mark.parametrize(("n", "length", "overlap"), [(1, 4, 1), (10, 4, 1), (100, 30, 4), (31, 30, 4), (50, 7, 0)])
def test_spans_cover_every_frame_with_the_overlap_and_bounded_length(n: int, length: int, overlap: int) -> None:
    spans = clip_spans(n, length, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == n
    covered = set()
    for start, end in spans:
        assert 0 < end - start <= length
        covered.update(range(start, end))
    assert covered == set(range(n))
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end - start == overlap


def test_empty_video_has_no_clips_and_huge_overlap_is_capped() -> None:
    assert clip_spans(0, 10, 2) == []
    assert clip_spans(10, 4, 100) == [(0, 4), (2, 6), (4, 8), (6, 10)]


def test_length_in_seconds_uses_the_video_frame_rate_and_frames_override_it() -> None:
    assert clip_length(ClipPlanConfig(length_s=3.0), 25.0) == 75
    assert clip_length(ClipPlanConfig(length_s=3.0, length_frames=12), 25.0) == 12
    assert clip_length(ClipPlanConfig(length_s=0.01), 25.0) == 2


def test_plan_routes_prompts_into_the_clips_containing_their_frame() -> None:
    cfg = ClipPlanConfig(length_frames=10, overlap_frames=2)
    clips = plan_video(REF, _info(25), [_prompt(0), _prompt(9, 2), _prompt(20, 3)], cfg, MODEL)
    assert [(c.start, c.end) for c in clips] == [(0, 10), (8, 18), (16, 25)]
    assert [[p.frame for p in c.prompts] for c in clips] == [[0, 9], [9], [20]]
    assert all((c.fps, c.width, c.height) == (10.0, 64, 48) for c in clips)


def test_clip_ids_are_deterministic_and_unique() -> None:
    cfg = ClipPlanConfig(length_frames=10, overlap_frames=2)
    first = plan_video(REF, _info(40), [_prompt(0)], cfg, MODEL)
    again = plan_video(REF, _info(40), [_prompt(0)], cfg, MODEL)
    assert [c.clip_id for c in first] == [c.clip_id for c in again]
    assert len({c.clip_id for c in first}) == len(first)


@pytest.mark.parametrize(
    "change",
    ["model", "checkpoint", "prompt", "video"],
)
def test_clip_id_changes_with_model_checkpoint_prompts_and_video(change: str) -> None:
    cfg = ClipPlanConfig(length_frames=10, overlap_frames=2)
    base = plan_video(REF, _info(10), [_prompt(0)], cfg, MODEL)[0].clip_id
    ref, model, prompts = REF, MODEL, [_prompt(0)]
    if change == "model":
        model = ModelKey("sam2.1_hiera_tiny", MODEL.checkpoint_hash)
    elif change == "checkpoint":
        model = ModelKey(MODEL.name, "ffffffffffffffff")
    elif change == "prompt":
        prompts = [PromptRecord(video=REF.uri, frame=0, object_id=1, box=(1, 2, 10, 13))]
    else:
        ref = VideoRef(video_id="fedcba9876543210", uri=REF.uri, size=11, etag="2")
    assert plan_video(ref, _info(10), prompts, cfg, model)[0].clip_id != base


def test_clip_spec_survives_its_json_form() -> None:
    points = PromptRecord(video=REF.uri, frame=3, object_id=4, points=((1.5, 2.0, 1), (3.0, 4.0, 0)))
    [spec] = plan_video(REF, _info(10), [_prompt(0), points], ClipPlanConfig(length_frames=10), MODEL)
    assert ClipSpec.from_json(spec.to_json()) == spec
