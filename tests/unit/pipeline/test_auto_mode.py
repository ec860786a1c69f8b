"""Automatic mode in the job: which clips are tracked how, clip ids that follow the mode, actor routing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from batchtrack.config import AutoConfig, JobConfig, ModelConfig, load_config
from batchtrack.errors import ConfigError
from batchtrack.io.corpus import VideoRef
from batchtrack.io.prompts import PromptRecord
from batchtrack.io.video import VideoInfo, probe_video
from batchtrack.model.association import AssociationHead, save_association_head
from batchtrack.model.auto import AutoTracker
from batchtrack.model.build import build_tracker
from batchtrack.model.types import FrameResult, Prompt
from batchtrack.pipeline.actor import ActorSettings, ClipProcessor
from batchtrack.pipeline.commit import ClipStatus
from batchtrack.pipeline.job import ProbeOutcome, plan_corpus, plan_stitching
from batchtrack.pipeline.models import (
    association_head_uri,
    auto_unavailable_reason,
    build_auto_tracker,
    check_auto_config,
    shipped_association_head,
)
from batchtrack.pipeline.plan import ClipSpec, ModelKey, auto_mode_key, make_clip_id, plan_video
from batchtrack.synthetic.corpus import write_synthetic_video
from batchtrack.synthetic.render import render_frames
from batchtrack.synthetic.scene import Scene, SceneSpec

NEURAL = ModelKey("test-tiny", "builtin-test")
BASELINE = ModelKey("baseline-flow", "builtin-test")
PROMPTED = VideoRef(video_id="aaaaaaaaaaaaaaaa", uri="/data/prompted.mp4", size=10, etag="1")
BARE = VideoRef(video_id="bbbbbbbbbbbbbbbb", uri="/data/bare.mp4", size=10, etag="1")


def _info(uri: str, num_frames: int = 25) -> VideoInfo:
    return VideoInfo(uri=uri, num_frames=num_frames, fps=10.0, width=64, height=48, duration_s=num_frames / 10)


def _prompt(frame: int, object_id: int = 1, uri: str = PROMPTED.uri) -> PromptRecord:
    return PromptRecord(video=uri, frame=frame, object_id=object_id, box=(1, 2, 10, 12))


def _cfg(**extra: object) -> JobConfig:
    return load_config(None, corpus="/data", output="/out", clip={"length_frames": 10, "overlap_frames": 2}, **extra)


def _plan(cfg: JobConfig, model: ModelKey) -> tuple[list[ClipSpec], list[ClipStatus]]:
    refs = [PROMPTED, BARE]
    probes = [ProbeOutcome(_info(r.uri)) for r in refs]
    return plan_corpus(refs, probes, {PROMPTED.uri: [_prompt(0), _prompt(0, 2)]}, cfg, model)


def test_unprompted_videos_and_clips_are_planned_in_automatic_mode_by_default() -> None:
    to_track, decided = _plan(_cfg(), NEURAL)
    assert decided == []
    modes = {(s.video_uri, s.start): s.mode for s in to_track}
    # 25 frames in clips of 10 sharing 2 → starts 0, 8, 16; only the first clip of the prompted video has prompts.
    assert modes == {
        (PROMPTED.uri, 0): "prompted", (PROMPTED.uri, 8): "auto", (PROMPTED.uri, 16): "auto",
        (BARE.uri, 0): "auto", (BARE.uri, 8): "auto", (BARE.uri, 16): "auto",
    }
    assert all(not s.prompts for s in to_track if s.mode == "auto")


def test_disabled_automatic_mode_skips_unprompted_clips_and_videos_with_the_reason() -> None:
    to_track, decided = _plan(_cfg(auto={"enabled": False}), NEURAL)
    assert [(s.video_uri, s.start, s.mode) for s in to_track] == [(PROMPTED.uri, 0, "prompted")]
    assert {(r.video_uri, r.start_frame, r.status) for r in decided} == {
        (PROMPTED.uri, 8, "skipped"), (PROMPTED.uri, 16, "skipped"), (BARE.uri, 0, "skipped"),
    }
    assert all("auto.enabled=false" in (r.error_message or "") for r in decided)


def test_classical_baselines_cannot_run_automatic_mode_and_skip_with_a_clear_reason() -> None:
    to_track, decided = _plan(_cfg(), BASELINE)
    assert [s.mode for s in to_track] == ["prompted"]
    assert len(decided) == 3 and {r.status for r in decided} == {"skipped"}
    bare = next(r for r in decided if r.video_uri == BARE.uri)
    assert (bare.start_frame, bare.end_frame) == (0, 25)
    assert "classical baseline" in (bare.error_message or "") and "baseline-flow" in (bare.error_message or "")
    assert auto_unavailable_reason("sam2.1_hiera_tiny", AutoConfig()) is None


def test_clip_id_changes_with_the_mode_and_the_auto_settings_but_prompted_ids_do_not() -> None:
    plan_cfg = _cfg().clip
    key = auto_mode_key(AutoConfig())
    auto = plan_video(PROMPTED, _info(PROMPTED.uri), [_prompt(0)], plan_cfg, NEURAL, key)
    no_auto = plan_video(PROMPTED, _info(PROMPTED.uri), [_prompt(0)], plan_cfg, NEURAL, None)
    other = plan_video(PROMPTED, _info(PROMPTED.uri), [_prompt(0)], plan_cfg, NEURAL, auto_mode_key(
        AutoConfig(keyframe_every=5)))
    # The prompted first clip keeps the id it had before automatic mode existed.
    assert auto[0].clip_id == no_auto[0].clip_id == other[0].clip_id
    assert auto[0].clip_id == make_clip_id(PROMPTED.video_id, 0, 10, NEURAL, [_prompt(0)])
    for a, b, c in zip(auto[1:], no_auto[1:], other[1:], strict=True):
        assert a.mode == c.mode == "auto" and b.mode == "prompted"
        assert len({a.clip_id, b.clip_id, c.clip_id}) == 3
    # The switch itself (enabled) is not part of the key: only what changes the output is.
    assert key == auto_mode_key(AutoConfig(enabled=False))


def test_clip_spec_keeps_its_mode_through_json() -> None:
    spec = plan_video(BARE, _info(BARE.uri), [], _cfg().clip, NEURAL, auto_mode_key(AutoConfig()))[1]
    assert spec.mode == "auto"
    assert ClipSpec.from_json(spec.to_json()) == spec


def test_learned_association_without_a_head_file_is_refused_up_front(tmp_path: Path) -> None:
    # test-tiny ships no association head, and a named head file must exist.
    with pytest.raises(ConfigError, match=r"auto\.association='learned'.*'test-tiny' ships none"):
        check_auto_config(AutoConfig(association="learned"), "test-tiny")
    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(ConfigError, match=r"auto\.association_head .*nope\.safetensors does not exist"):
        check_auto_config(AutoConfig(association="learned", association_head=missing), "tiny-synthetic")
    check_auto_config(AutoConfig(association="iou"), "test-tiny")  # the IoU rules need no head


def test_learned_association_uses_the_head_shipped_for_the_model() -> None:
    assert shipped_association_head("tiny-synthetic") is not None
    assert association_head_uri("tiny-synthetic", AutoConfig(association="learned")) == str(
        shipped_association_head("tiny-synthetic")
    )
    check_auto_config(AutoConfig(association="learned"), "tiny-synthetic")


def test_learned_association_loads_the_named_head_and_tracks(tmp_path: Path) -> None:
    tracker = build_tracker("test-tiny", device="cpu")
    torch.manual_seed(4)
    saved = AssociationHead(tracker.config.d_model)
    path = tmp_path / "head.safetensors"
    save_association_head(saved, path)
    auto_cfg = AutoConfig(association="learned", association_head=str(path), keyframe_every=2, points_per_side=4)
    check_auto_config(auto_cfg, "test-tiny")
    auto = build_auto_tracker(tracker, auto_cfg, "test-tiny")
    assert isinstance(auto, AutoTracker) and auto.config.rule == "learned" and auto.head is not None
    for name, value in saved.state_dict().items():
        assert torch.equal(auto.head.state_dict()[name], value), name
    spec = SceneSpec(seed=2, width=64, height=48, num_frames=4, num_objects=2)
    frames = [(f.frame_index, f.image) for f in render_frames(Scene.from_spec(spec))]
    results = list(auto.track(frames))
    assert [r.frame_index for r in results] == [0, 1, 2, 3]


def test_automatic_tracker_wraps_a_neural_tracker_only() -> None:
    tracker = build_tracker("test-tiny", device="cpu")
    auto = build_auto_tracker(tracker, AutoConfig(keyframe_every=3, points_per_side=4, max_objects=5))
    assert isinstance(auto, AutoTracker)
    assert (auto.config.keyframe_every, auto.config.proposal.points_per_side, auto.config.max_objects) == (3, 4, 5)
    with pytest.raises(ConfigError, match=r"SAM 2\.1-style tracker"):
        build_auto_tracker(Recorder("x"), AutoConfig())


class Recorder:
    """Emits one full-frame object per frame and remembers the prompts it was given."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[list[Prompt]] = []

    def track(
        self, frames: Iterable[tuple[int, np.ndarray]], prompts: Sequence[Prompt], *, reverse: bool = False
    ) -> Iterator[FrameResult]:
        self.calls.append(list(prompts))
        for index, frame in frames:
            h, w = frame.shape[:2]
            yield FrameResult(
                frame_index=index, object_ids=[0], mask_logits=torch.ones(1, h, w),
                object_score_logits=torch.zeros(1), iou_predictions=torch.ones(1),
                object_pointers=torch.zeros(1, 256),
            )


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = SceneSpec(seed=5, width=64, height=48, num_frames=10, num_objects=2)
    return write_synthetic_video(spec, tmp_path_factory.mktemp("videos"), "auto").video_path


def _specs(uri: str) -> tuple[ClipSpec, ClipSpec]:
    info = probe_video(uri)
    ref = VideoRef(video_id="cccccccccccccccc", uri=uri, size=1, etag="1")
    plan_cfg = load_config(None, corpus="/d", output="/o", clip={"length_frames": 6, "overlap_frames": 2}).clip
    first, second = plan_video(ref, info, [_prompt(0, uri=uri)], plan_cfg, NEURAL, auto_mode_key(AutoConfig()))
    return first, second


def test_actor_tracks_auto_clips_with_the_automatic_tracker_and_prompted_ones_without(
    video: Path, tmp_path: Path
) -> None:
    prompted, auto = Recorder("prompted"), Recorder("auto")
    settings = ActorSettings(model=ModelConfig(name="test-tiny"), output=str(tmp_path), auto=AutoConfig())
    processor = ClipProcessor(prompted, settings, "cpu", None, auto)
    first, second = _specs(str(video))
    assert (first.mode, second.mode) == ("prompted", "auto")
    rows = [processor.process(first), processor.process(second)]
    assert [r.status for r in rows] == ["ok", "ok"]
    assert len(prompted.calls) == 1 and [p.object_id for p in prompted.calls[0]] == [1]
    assert auto.calls == [[]]
    masks = pq.read_table(tmp_path / "masks" / f"{second.clip_id}.parquet")
    assert masks.column("frame_index").to_pylist() == list(range(second.start, second.end))


def test_actor_without_an_automatic_tracker_fails_auto_clips_with_the_reason(video: Path, tmp_path: Path) -> None:
    settings = ActorSettings(model=ModelConfig(name="test-tiny"), output=str(tmp_path))
    processor = ClipProcessor(Recorder("prompted"), settings, "cpu", None)
    _, second = _specs(str(video))
    row = processor.process(second)
    assert (row.status, row.error_class, row.error_stage) == ("failed", "ConfigError", "track")
    assert "automatic mode" in (row.error_message or "")
    assert not (tmp_path / "_commits" / f"{second.clip_id}.json").exists()


def _ok(spec: ClipSpec) -> ClipStatus:
    return ClipStatus(
        video_id=spec.video_id, video_uri=spec.video_uri, clip_id=spec.clip_id, start_frame=spec.start,
        end_frame=spec.end, status="ok", model_name=spec.model.name, checkpoint_hash=spec.model.checkpoint_hash,
        masks_file=f"masks/{spec.clip_id}.parquet", pointers_file=f"pointers/{spec.clip_id}.parquet",
    )


def test_stitching_is_planned_for_videos_with_several_ok_clips_and_an_automatic_one() -> None:
    cfg = _cfg()
    refs = [PROMPTED, BARE, VideoRef(video_id="dddddddddddddddd", uri="/data/all.mp4", size=1, etag="1")]
    probes = [ProbeOutcome(_info(PROMPTED.uri)), ProbeOutcome(_info(BARE.uri, 8)), ProbeOutcome(_info(refs[2].uri))]
    prompts = {
        PROMPTED.uri: [_prompt(0, 4), _prompt(0, 9)],
        refs[2].uri: [_prompt(f, 1, refs[2].uri) for f in (0, 8, 16)],
    }
    to_track, _ = plan_corpus(refs, probes, prompts, cfg, NEURAL)
    rows = [_ok(s) for s in to_track]
    failed = next(r for r in rows if r.video_uri == PROMPTED.uri and r.start_frame == 16)
    rows[rows.index(failed)] = ClipStatus(**{**failed.__dict__, "status": "failed", "masks_file": None})
    [task] = plan_stitching(to_track, rows, prompts)
    # The bare video has one clip, the third is prompted on every clip; the prompted one keeps 2 ok clips.
    assert task.video_id == PROMPTED.video_id
    assert [(c.start, c.prompted) for c in task.clips] == [(0, True), (8, False)]
    assert task.first_new_id == 10
