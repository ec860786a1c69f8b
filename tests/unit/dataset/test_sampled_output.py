"""A --sample-fps output end to end without Ray: the actor's files, read back, exported and evaluated.

The actor (UnitProcessor) tracks a 12-frame 30 fps synthetic video at 10 fps with a stand-in tracker
that paints each prompted box, so the frames tracked are 0, 3, 6 and 9; the reader, the three exports
and `evaluate_output` must cover those frames and no other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from batchtrack.config import ClipPlanConfig, ModelConfig
from batchtrack.dataset import open_dataset
from batchtrack.dataset.exports import export_dataset
from batchtrack.dataset.exports.ytvis import YTVIS_FILE
from batchtrack.eval.evaluate import evaluate_output
from batchtrack.io.corpus import list_videos
from batchtrack.io.prompts import PromptRecord
from batchtrack.model.types import FrameResult, Prompt
from batchtrack.pipeline.actor_settings import ActorSettings
from batchtrack.pipeline.plan import ModelKey, PlanSettings, make_unit, plan_video
from batchtrack.pipeline.unit_processor import UnitProcessor
from batchtrack.synthetic.corpus import write_prompts, write_synthetic_video
from batchtrack.synthetic.scene import SceneSpec
from batchtrack.trackers import ResolvedModel

SAMPLED = [0, 3, 6, 9]


class BoxPainter:
    def track(
        self, frames: Iterable[tuple[int, np.ndarray]], prompts: Sequence[Prompt], *, reverse: bool = False
    ) -> Iterator[FrameResult]:
        for index, frame in frames:
            live = [p for p in prompts if p.frame_index <= index]
            if not live:
                continue
            logits = -torch.ones(len(live), *frame.shape[:2])  # (N, H, W)
            for row, prompt in enumerate(live):
                x0, y0, x1, y1 = (int(v) for v in prompt.box)
                logits[row, y0:y1, x0:x1] = 1.0
            yield FrameResult(
                frame_index=index,
                object_ids=[p.object_id for p in live],
                mask_logits=logits,
                object_score_logits=torch.ones(len(live)),
                iou_predictions=torch.ones(len(live)),
                object_pointers=torch.zeros(len(live), 256),
            )


@pytest.fixture(scope="module")
def sampled_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sampled")
    corpus, out = root / "corpus", root / "out"
    video = write_synthetic_video(SceneSpec(seed=5, width=64, height=48, num_frames=12, num_objects=1), corpus, "v")
    write_prompts(corpus / "prompts.jsonl", [video])
    [prompt] = video.prompts
    assert prompt.frame_index == 0  # the object is prompted on a sampled frame
    record = PromptRecord(video=str(video.video_path), frame=0, object_id=prompt.object_id, box=prompt.box)
    settings = PlanSettings(
        ModelKey("box-painter", "none"), ClipPlanConfig(length_frames=6), None, "off", sample_fps=10.0
    )
    [ref] = list_videos(str(video.video_path))
    unit = make_unit([plan_video(ref, [record], settings)], settings)
    actor = ActorSettings(model=ResolvedModel(ModelConfig(name="box-painter"), "none"), output=str(out))
    summary = UnitProcessor(BoxPainter(), actor, device="cpu", node_id=None).process(unit)
    assert (summary.ok, summary.frames, summary.mask_rows) == (2, 4, 4)
    return out, corpus


def test_the_reader_knows_the_rate_and_the_tracked_frames(sampled_output: tuple[Path, Path]) -> None:
    out, _ = sampled_output
    [video] = open_dataset(str(out)).videos()
    assert (video.sample_fps, video.tracked_frames, video.num_frames) == (10.0, tuple(SAMPLED), 12)
    assert list(video.annotated_frames()) == SAMPLED


@pytest.mark.parametrize("fmt", ["sav", "ytvis", "davis"])
def test_exports_list_the_sampled_frames_only(sampled_output: tuple[Path, Path], tmp_path: Path, fmt: str) -> None:
    out, _ = sampled_output
    summary = export_dataset(str(out), str(tmp_path), fmt, frames=True)  # type: ignore[arg-type]
    [video] = open_dataset(str(out)).videos()

    assert (summary.videos, summary.frames, summary.images) == (1, 4, 4)
    jpegs = sorted(p.name for p in (tmp_path / "JPEGImages" / video.video_id).iterdir())
    assert jpegs == [f"{f:05d}.jpg" for f in SAMPLED]
    if fmt == "sav":
        record = json.loads((tmp_path / f"{video.video_id}_auto.json").read_text())
        assert (record["annotated_frames"], record["annotation_fps"]) == (SAMPLED, 10.0)
        assert len(record["masklet"]) == 4 and record["video_frame_count"] == 12
        assert record["masklet_frame_count"] == [4]
        assert record["video_duration"] == pytest.approx(12 / 30)
    if fmt == "ytvis":
        data = json.loads((tmp_path / YTVIS_FILE).read_text())
        [entry] = data["videos"]
        assert entry["file_names"] == [f"{video.video_id}/{f:05d}.jpg" for f in SAMPLED]
        assert all(s is not None for s in data["annotations"][0]["segmentations"])  # every listed frame has a mask
    if fmt == "davis":
        pngs = sorted(p.name for p in next((tmp_path / "Annotations").iterdir()).iterdir())
        assert pngs == [f"{f:05d}.png" for f in SAMPLED]


def test_eval_scores_only_the_tracked_frames(sampled_output: tuple[Path, Path]) -> None:
    out, corpus = sampled_output
    report = evaluate_output(str(out), str(corpus))
    [scored] = report.objects
    assert scored.num_frames == 3  # frames 3, 6 and 9: after the prompt frame, and tracked
    assert scored.j > 0.3  # the painted box overlaps the object: unsampled frames are not counted as misses
