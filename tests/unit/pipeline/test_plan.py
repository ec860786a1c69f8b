"""Work-unit planning: spans tile every frame once; video, clip and unit ids are deterministic; units group by size."""

from __future__ import annotations

import pytest

from batchtrack.config import AutoConfig, ClipPlanConfig, ConceptConfig, UnitConfig
from batchtrack.io.corpus import VideoRef
from batchtrack.io.prompts import PromptRecord
from batchtrack.pipeline.plan import (
    ModelKey,
    PlanSettings,
    WorkUnit,
    auto_mode_key,
    clip_length,
    clip_spans,
    concept_mode_key,
    group_units,
    make_clip_id,
    make_unit,
    plan_video,
)

MODEL = ModelKey("test-tiny", "builtin-0.1.0")
AUTO = PlanSettings(MODEL, ClipPlanConfig(length_frames=30), auto_mode_key(AutoConfig()), None)
NO_AUTO = PlanSettings(MODEL, ClipPlanConfig(length_frames=30), None, "automatic mode is disabled")


def _ref(n: int = 0, size: int = 10) -> VideoRef:
    return VideoRef(video_id=f"{n:016x}", uri=f"/data/v{n}.mp4", size=size, etag="1")


def _prompt(frame: int, object_id: int = 1) -> PromptRecord:
    return PromptRecord(video="/data/v0.mp4", frame=frame, object_id=object_id, box=(1, 2, 10, 12))


@pytest.mark.parametrize(("n", "length"), [(1, 4), (10, 4), (100, 30), (31, 30), (50, 7), (60, 30)])
def test_spans_tile_every_frame_exactly_once(n: int, length: int) -> None:
    spans = clip_spans(n, length)
    frames = [f for start, end in spans for f in range(start, end)]
    assert frames == list(range(n))
    assert all(0 < end - start <= length for start, end in spans)


def test_empty_video_has_no_clips() -> None:
    assert clip_spans(0, 10) == []


def test_length_in_seconds_uses_the_video_frame_rate_and_frames_override_it() -> None:
    assert clip_length(ClipPlanConfig(length_s=3.0), fps=10.0) == 30
    assert clip_length(ClipPlanConfig(length_s=3.0, length_frames=7), fps=10.0) == 7
    assert clip_length(ClipPlanConfig(length_s=0.01), fps=10.0) == 2


def test_a_video_with_prompts_is_prompted_and_keeps_all_of_them_in_frame_order() -> None:
    task = plan_video(_ref(), [_prompt(70, 2), _prompt(0, 1), _prompt(31, 1)], AUTO)
    assert task.mode == "prompted"
    assert [(p.frame, p.object_id) for p in task.prompts] == [(0, 1), (31, 1), (70, 2)]


def test_a_video_without_prompts_is_automatic_or_skipped_with_the_reason() -> None:
    assert plan_video(_ref(), [], AUTO).mode == "auto"
    skipped = plan_video(_ref(), [], NO_AUTO)
    assert skipped.mode == "skipped" and "automatic mode is disabled" in (skipped.reason or "")


@pytest.mark.parametrize("change", ["model", "checkpoint", "prompts", "video", "clip", "seed", "auto"])
def test_video_key_changes_with_whatever_changes_the_rows(change: str) -> None:
    base = plan_video(_ref(), [], AUTO).key
    settings, ref, prompts = AUTO, _ref(), []
    if change == "model":
        settings = PlanSettings(ModelKey("other", MODEL.checkpoint_hash), AUTO.clip, AUTO.auto_key, None)
    elif change == "checkpoint":
        settings = PlanSettings(ModelKey(MODEL.name, "abc"), AUTO.clip, AUTO.auto_key, None)
    elif change == "prompts":
        prompts = [_prompt(3)]
    elif change == "video":
        ref = _ref(1)
    elif change == "clip":
        settings = PlanSettings(MODEL, ClipPlanConfig(length_frames=31), AUTO.auto_key, None)
    elif change == "seed":
        settings = PlanSettings(MODEL, AUTO.clip, AUTO.auto_key, None, seed=1)
    else:
        settings = PlanSettings(MODEL, AUTO.clip, auto_mode_key(AutoConfig(keyframe_every=3)), None)
    assert plan_video(ref, prompts, settings).key != base
    assert plan_video(_ref(), [], AUTO).key == base  # and is deterministic


def test_prompted_keys_do_not_depend_on_the_automatic_settings() -> None:
    other = PlanSettings(MODEL, AUTO.clip, auto_mode_key(AutoConfig(keyframe_every=3)), None)
    assert plan_video(_ref(), [_prompt(0)], AUTO).key == plan_video(_ref(), [_prompt(0)], other).key


def test_clip_ids_are_deterministic_and_unique_per_span() -> None:
    key = plan_video(_ref(), [_prompt(0)], AUTO).key
    ids = [make_clip_id(key, start, end) for start, end in clip_spans(100, 30)]
    assert len(set(ids)) == len(ids) == 4
    assert ids == [make_clip_id(key, start, end) for start, end in clip_spans(100, 30)]


def test_units_group_consecutive_small_videos_and_put_a_large_one_alone() -> None:
    sizes = [10, 10, 10, 500, 10, 10, 10, 10, 10]
    tasks = [plan_video(_ref(n, size), [], AUTO) for n, size in enumerate(sizes)]
    groups = list(group_units(tasks, UnitConfig(max_videos=3, max_bytes=100)))
    assert [[int(t.video_id, 16) for t in g] for g in groups] == [[0, 1, 2], [3], [4, 5, 6], [7, 8]]
    again = list(group_units(tasks, UnitConfig(max_videos=3, max_bytes=100)))
    assert [make_unit(g, AUTO).unit_id for g in groups] == [make_unit(g, AUTO).unit_id for g in again]
    assert len({make_unit(g, AUTO).unit_id for g in groups}) == 4


def test_a_unit_survives_its_json_form() -> None:
    unit = make_unit([plan_video(_ref(0), [_prompt(4)], AUTO), plan_video(_ref(1), [], NO_AUTO)], AUTO)
    assert WorkUnit.from_json(unit.to_json()) == unit


def test_a_video_with_concepts_is_planned_in_concept_mode_and_its_ids_cover_the_concepts() -> None:
    with_text = PlanSettings(MODEL, ClipPlanConfig(length_frames=30), None, "no auto", concepts=("person",))
    task = plan_video(_ref(), [], with_text)
    assert task.mode == "concept" and task.concepts == ("person",)
    # The manifest's own concepts join the job's, canonically: order and repeats do not change the key.
    both = plan_video(_ref(), [], with_text, concepts=["red car", "person"])
    assert both.concepts == ("person", "red car")
    assert plan_video(_ref(), [], with_text, concepts=["red car", " red car"]).key == both.key
    # Other concepts, other clip ids: a rerun with another --text does not resume the old rows.
    keys = {task.key, both.key, plan_video(_ref(), [], AUTO).key, plan_video(_ref(), [_prompt(0)], AUTO).key}
    assert len(keys) == 4
    assert make_clip_id(task.key, 0, 30) != make_clip_id(both.key, 0, 30)
    # Visual prompts ride along in concept mode.
    prompted = plan_video(_ref(), [_prompt(0)], with_text)
    assert prompted.mode == "concept" and len(prompted.prompts) == 1 and prompted.key != task.key


def test_concepts_survive_the_unit_round_trip() -> None:
    with_text = PlanSettings(MODEL, ClipPlanConfig(length_frames=30), None, "no auto", concepts=("person",))
    unit = make_unit([plan_video(_ref(), [], with_text, concepts=["dog"])], with_text)
    again = WorkUnit.from_json(unit.to_json())
    assert again == unit and again.videos[0].concepts == ("dog", "person")


def test_videos_without_concepts_keep_their_keys() -> None:
    # Adding concept mode must not change the ids of prompted and automatic videos (old outputs still resume):
    # these are the keys the planner gave before concept mode existed.
    assert plan_video(_ref(), [], AUTO).key == "929377d1371cb1ef"
    assert plan_video(_ref(), [_prompt(0)], AUTO).key == "a1ddd754d930495d"
    assert plan_video(_ref(), [], AUTO).concepts == ()


def _with_text(concept: ConceptConfig) -> PlanSettings:
    key = concept_mode_key(concept)
    return PlanSettings(MODEL, ClipPlanConfig(length_frames=30), None, "no auto", concepts=("person",), concept_key=key)


def test_concept_settings_key_concept_videos_only_when_off_sam3s_defaults() -> None:
    default = plan_video(_ref(), [], _with_text(ConceptConfig())).key
    # The key a concept video had before the concept settings existed: outputs of the defaults still resume.
    assert default == "015190bf0b0f8f97"
    assert plan_video(_ref(), [], _with_text(ConceptConfig(recondition_every=16))).key == default
    keys = {plan_video(_ref(), [], _with_text(ConceptConfig(recondition_every=n))).key for n in (16, 2, 0)}
    assert len(keys) == 3, "another re-conditioning interval, other clip ids"
    # Prompted and automatic videos do not run the concept loop: their keys ignore its settings.
    auto_key = auto_mode_key(AutoConfig())
    for prompts in ([], [_prompt(0)]):
        off = PlanSettings(MODEL, ClipPlanConfig(length_frames=30), auto_key, None, concept_key='{"x":1}')
        on = PlanSettings(MODEL, ClipPlanConfig(length_frames=30), auto_key, None)
        assert plan_video(_ref(), prompts, off).key == plan_video(_ref(), prompts, on).key
