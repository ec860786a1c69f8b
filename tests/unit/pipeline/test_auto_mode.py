"""Automatic mode in the job: which videos are tracked how, ids that follow the mode, actor routing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from batchtrack.config import AutoConfig, ModelConfig, load_config
from batchtrack.errors import ConfigError
from batchtrack.io.corpus import VideoRef, list_videos
from batchtrack.io.prompts import PromptRecord
from batchtrack.model.loading.build import build_tracker
from batchtrack.model.modes.association import AssociationHead, save_association_head
from batchtrack.model.modes.auto import AutoTracker
from batchtrack.model.types import FrameResult, Prompt
from batchtrack.pipeline.actor_settings import ActorSettings
from batchtrack.pipeline.job import plan_settings
from batchtrack.pipeline.plan import PlanSettings, WorkUnit, make_unit, plan_video
from batchtrack.pipeline.unit_processor import UnitProcessor
from batchtrack.synthetic.corpus import write_synthetic_video
from batchtrack.synthetic.render import render_frames
from batchtrack.synthetic.scene import Scene, SceneSpec
from batchtrack.trackers import (
    ResolvedModel,
    association_head_uri,
    auto_unavailable_reason,
    build_auto_tracker,
    check_auto_config,
    resolve_model,
    shipped_association_head,
)

PROMPTED = VideoRef(video_id="aaaaaaaaaaaaaaaa", uri="/data/prompted.mp4", size=10, etag="1")
BARE = VideoRef(video_id="bbbbbbbbbbbbbbbb", uri="/data/bare.mp4", size=10, etag="1")


def _prompt(frame: int, object_id: int = 1, uri: str = PROMPTED.uri) -> PromptRecord:
    return PromptRecord(video=uri, frame=frame, object_id=object_id, box=(1, 2, 10, 12))


def _settings(model: str = "test-tiny", **auto: object) -> PlanSettings:
    cfg = load_config(None, corpus="/data", output="/out", model={"name": model}, auto=auto or None)
    return plan_settings(cfg, resolve_model(cfg))


def test_unprompted_videos_are_automatic_and_prompted_ones_keep_their_prompts_by_default() -> None:
    settings = _settings()
    assert plan_video(PROMPTED, [_prompt(0)], settings).mode == "prompted"
    assert plan_video(BARE, [], settings).mode == "auto"


def test_disabled_automatic_mode_skips_unprompted_videos_with_the_reason() -> None:
    skipped = plan_video(BARE, [], _settings(enabled=False))
    assert skipped.mode == "skipped" and "auto.enabled=false" in (skipped.reason or "")
    assert plan_video(PROMPTED, [_prompt(0)], _settings(enabled=False)).mode == "prompted"


def test_classical_baselines_cannot_run_automatic_mode_and_skip_with_a_clear_reason() -> None:
    skipped = plan_video(BARE, [], _settings("baseline-flow"))
    assert skipped.mode == "skipped"
    assert "classical baseline" in (skipped.reason or "") and "baseline-flow" in (skipped.reason or "")
    assert auto_unavailable_reason("sam2.1_hiera_tiny", AutoConfig()) is None


def test_video_key_follows_the_auto_settings_only_in_automatic_mode() -> None:
    base, other = _settings(), _settings(keyframe_every=5)
    assert plan_video(BARE, [], base).key != plan_video(BARE, [], other).key
    assert plan_video(PROMPTED, [_prompt(0)], base).key == plan_video(PROMPTED, [_prompt(0)], other).key
    # The switch itself (enabled) is not part of the key: only what changes the output is.
    assert plan_video(PROMPTED, [_prompt(0)], _settings(enabled=False)).key == plan_video(
        PROMPTED, [_prompt(0)], base
    ).key


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
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    for name, seed in (("a", 5), ("b", 6)):
        write_synthetic_video(SceneSpec(seed=seed, width=64, height=48, num_frames=10, num_objects=2), folder, name)
    return folder


def _unit(corpus: Path, settings: PlanSettings) -> WorkUnit:
    prompted, bare = list_videos(str(corpus))
    tasks = [plan_video(prompted, [_prompt(0, uri=prompted.uri)], settings), plan_video(bare, [], settings)]
    return make_unit(tasks, settings)


def test_actor_tracks_auto_videos_with_the_automatic_tracker_and_prompted_ones_without(
    corpus: Path, tmp_path: Path
) -> None:
    prompted, auto = Recorder("prompted"), Recorder("auto")
    model = ResolvedModel(ModelConfig(name="test-tiny"), "none", auto=AutoConfig())
    settings = ActorSettings(model=model, output=str(tmp_path))
    processor = UnitProcessor(prompted, settings, "cpu", None, auto)
    unit = _unit(corpus, _settings())
    assert [v.mode for v in unit.videos] == ["prompted", "auto"]
    summary = processor.process(unit)
    assert (summary.ok, summary.failed) == (2, 0)
    assert len(prompted.calls) == 1 and [p.object_id for p in prompted.calls[0]] == [1]
    assert auto.calls == [[]]
    masks = pq.read_table(tmp_path / "masks" / f"{unit.unit_id}.parquet")
    rows = zip(masks.column("frame_index").to_pylist(), masks.column("video_id").to_pylist(), strict=True)
    assert [frame for frame, video_id in rows if video_id == unit.videos[1].video_id] == list(range(10))


def test_actor_without_an_automatic_tracker_fails_auto_videos_with_the_reason(corpus: Path, tmp_path: Path) -> None:
    settings = ActorSettings(model=ResolvedModel(ModelConfig(name="test-tiny"), "none"), output=str(tmp_path))
    processor = UnitProcessor(Recorder("prompted"), settings, "cpu", None)
    unit = _unit(corpus, _settings())
    processor.process(unit)
    rows = pq.read_table(tmp_path / "clips" / f"{unit.unit_id}.parquet").to_pylist()
    [row] = [r for r in rows if r["video_id"] == unit.videos[1].video_id]
    assert (row["status"], row["error_class"], row["error_stage"]) == ("failed", "ConfigError", "track")
    assert "automatic mode" in (row["error_message"] or "")
