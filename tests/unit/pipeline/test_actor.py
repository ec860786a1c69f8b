"""UnitProcessor (the body of the UnitTracker actor), run without Ray on real small H.264 videos.

The tracker here is a stand-in for the model (a box painter), so these tests pin the actor's own
work: one pass over each video with rows grouped by clip, files written whole per unit, clips/
written last, bad input turned into failed rows, and the attempts record that bounds poison inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from batchtrack.config import ClipPlanConfig, ModelConfig, UnitConfig
from batchtrack.io.corpus import list_videos
from batchtrack.io.prompts import PromptRecord, RleMask
from batchtrack.io.rle import decode_mask, encode_mask
from batchtrack.io.sink import unit_file
from batchtrack.model.modes.concept import ConceptLoop, FrameDetections
from batchtrack.model.types import FrameResult, Prompt
from batchtrack.pipeline.actor import choose_device
from batchtrack.pipeline.actor_settings import ActorSettings
from batchtrack.pipeline.commit import Attempts, ClipStatus, read_attempts, scan_output, write_attempts
from batchtrack.pipeline.plan import ModelKey, PlanSettings, WorkUnit, make_clip_id, make_unit, plan_video
from batchtrack.pipeline.unit_processor import UnitProcessor
from batchtrack.synthetic.codecs import ARCHIVE_ENCODINGS, write_encoding
from batchtrack.synthetic.corpus import write_synthetic_video
from batchtrack.synthetic.scene import SceneSpec
from batchtrack.trackers import ResolvedModel

MODEL = ModelKey("box-painter", "none")


class BoxPainter:
    """Paints each prompted box from its prompt frame on; fails on request."""

    def __init__(self, fail_with: BaseException | None = None, fail_at: int = 2) -> None:
        self.fail_with = fail_with
        self.fail_at = fail_at
        self.seen: list[int] = []

    def track(
        self, frames: Iterable[tuple[int, np.ndarray]], prompts: Sequence[Prompt], *, reverse: bool = False
    ) -> Iterator[FrameResult]:
        for index, frame in frames:
            self.seen.append(index)
            if self.fail_with is not None and len(self.seen) == self.fail_at:
                raise self.fail_with
            live = sorted((p for p in prompts if p.frame_index <= index), key=lambda p: p.object_id)
            if not live:
                continue
            height, width = frame.shape[:2]
            logits = -torch.ones(len(live), height, width)
            for row, prompt in enumerate(live):
                x0, y0, x1, y1 = (int(v) for v in prompt.box)
                logits[row, y0:y1, x0:x1] = 1.0
            yield FrameResult(
                frame_index=index,
                object_ids=[p.object_id for p in live],
                mask_logits=logits,
                object_score_logits=torch.zeros(len(live)),
                iou_predictions=torch.full((len(live),), 0.75),
                object_pointers=torch.stack([torch.full((256,), float(p.object_id)) for p in live]),
            )


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = SceneSpec(seed=3, width=64, height=48, num_frames=12, num_objects=2)
    return write_synthetic_video(spec, tmp_path_factory.mktemp("videos"), "clip").video_path


def _unit(
    uris: list[str], prompts: dict[str, list[PromptRecord]], clip_frames: int = 4, sample_fps: float | None = None
) -> WorkUnit:
    settings = PlanSettings(
        MODEL, ClipPlanConfig(length_frames=clip_frames), None, "automatic mode is off", sample_fps=sample_fps
    )
    refs = [ref for uri in uris for ref in list_videos(uri)]
    return make_unit([plan_video(ref, prompts.get(ref.uri, []), settings) for ref in refs], settings)


def _one(
    uri: str | Path, prompts: list[PromptRecord], clip_frames: int = 4, sample_fps: float | None = None
) -> WorkUnit:
    [ref] = list_videos(str(uri))
    return _unit([ref.uri], {ref.uri: prompts}, clip_frames, sample_fps)


def _processor(
    out: Path, tracker: BoxPainter | None = None, dtype: str = "float16", unit: UnitConfig | None = None
) -> UnitProcessor:
    settings = ActorSettings(
        model=ResolvedModel(ModelConfig(name="box-painter"), "none"),
        output=str(out),
        pointer_dtype=dtype,
        unit=unit or UnitConfig(),
    )
    return UnitProcessor(tracker or BoxPainter(), settings, device="cpu", node_id=None)


def _box(frame: int, object_id: int, box: tuple[float, float, float, float]) -> PromptRecord:
    return PromptRecord(video="v", frame=frame, object_id=object_id, box=box)


def _clips(out: Path, unit: WorkUnit) -> list[ClipStatus]:
    rows = pq.read_table(out / unit_file("clips", unit.unit_id)).to_pylist()
    return [ClipStatus.from_dict(r) for r in sorted(rows, key=lambda r: (r["video_uri"], r["start_frame"]))]


def test_a_prompt_on_frame_0_is_tracked_through_every_clip_of_the_video(video: Path, tmp_path: Path) -> None:
    unit = _one(video, [_box(0, 1, (2, 3, 20, 30)), _box(5, 7, (30, 10, 60, 40))], clip_frames=4)
    summary = _processor(tmp_path).process(unit)
    assert (summary.clips, summary.ok, summary.mask_rows) == (3, 3, 12 + 7)
    clips = _clips(tmp_path, unit)
    assert [(c.start_frame, c.end_frame, c.status) for c in clips] == [(0, 4, "ok"), (4, 8, "ok"), (8, 12, "ok")]
    assert [c.mask_rows for c in clips] == [4, 4 + 3, 4 + 4]
    assert [c.objects for c in clips] == [1, 2, 2]
    masks = pq.read_table(tmp_path / unit_file("masks", unit.unit_id)).to_pylist()
    keys = [(r["frame_index"], r["object_id"]) for r in masks]
    assert keys == sorted(keys) and len(set(keys)) == len(keys) == 19  # one row per (frame, object)
    assert {k[0] for k in keys if k[1] == 1} == set(range(12))
    assert {k[0] for k in keys if k[1] == 7} == set(range(5, 12))
    assert all(r["track_id"] == r["object_id"] for r in masks)
    by_clip = {c.clip_id: c for c in clips}
    assert all(by_clip[r["clip_id"]].start_frame <= r["frame_index"] < by_clip[r["clip_id"]].end_frame for r in masks)
    first = masks[0]
    expected = np.zeros((48, 64), dtype=bool)
    expected[3:30, 2:20] = True
    assert np.array_equal(decode_mask(first["rle"], first["height"], first["width"]), expected)
    assert first["area"] == expected.sum()
    assert first["bbox"] == [2.0, 3.0, 18.0, 27.0]
    assert first["score"] == pytest.approx(0.5) and first["iou_pred"] == pytest.approx(0.75)
    assert first["timestamp_s"] == 0.0 and masks[-1]["timestamp_s"] == pytest.approx(11 / 30.0)


def test_the_tracker_sees_each_frame_once_in_one_pass(video: Path, tmp_path: Path) -> None:
    tracker = BoxPainter()
    _processor(tmp_path, tracker).process(_one(video, [_box(0, 1, (2, 3, 20, 30))], clip_frames=5))
    assert tracker.seen == list(range(12))


def test_sampling_tracks_the_frames_nearest_its_grid_with_absolute_indices_and_times(
    video: Path, tmp_path: Path
) -> None:
    """12 frames at 30 fps sampled at 10 fps: frames 0, 3, 6, 9, which the tracker numbers 0..3."""
    tracker = BoxPainter()
    unit = _one(video, [_box(3, 1, (2, 3, 20, 30))], clip_frames=6, sample_fps=10.0)
    summary = _processor(tmp_path, tracker).process(unit)

    assert tracker.seen == [0, 1, 2, 3]
    masks = pq.read_table(tmp_path / unit_file("masks", unit.unit_id)).to_pylist()
    assert [r["frame_index"] for r in masks] == [3, 6, 9]
    assert [r["timestamp_s"] for r in masks] == pytest.approx([0.1, 0.2, 0.3])
    clips = _clips(tmp_path, unit)
    assert [(c.start_frame, c.end_frame, c.frames, c.sample_fps) for c in clips] == [(0, 6, 2, 10.0), (6, 12, 2, 10.0)]
    assert summary.frames == 4
    full = _one(video, [_box(3, 1, (2, 3, 20, 30))], clip_frames=6)
    full_rate_ids = {make_clip_id(full.videos[0].key, c.start_frame, c.end_frame) for c in clips}
    assert {c.clip_id for c in clips}.isdisjoint(full_rate_ids)  # the rate is part of the clip ids


def test_a_prompt_on_a_frame_sampling_skips_fails_naming_the_nearest_tracked_frames(
    video: Path, tmp_path: Path
) -> None:
    unit = _one(video, [_box(4, 1, (2, 3, 20, 30))], clip_frames=6, sample_fps=10.0)
    _processor(tmp_path).process(unit)
    clips = _clips(tmp_path, unit)
    assert {(c.status, c.error_stage, c.error_class) for c in clips} == {("failed", "prompts", "PromptError")}
    assert "frame 4, which --sample-fps 10 does not track" in (clips[0].error_message or "")
    assert "nearest tracked frames are 3 and 6" in (clips[0].error_message or "")


def test_a_rotated_video_is_tracked_and_recorded_as_displayed(tmp_path: Path) -> None:
    """A 64x48 file a player shows turned 90°: prompts, masks and rows are 48 wide and 64 tall."""
    encoding = next(e for e in ARCHIVE_ENCODINGS if e.name == "rotate-90")
    path = write_encoding(encoding, tmp_path / "portrait.mp4")
    unit = _one(path, [_box(0, 1, (2, 40, 30, 60))], clip_frames=6)
    _processor(tmp_path / "out").process(unit)

    [clip] = _clips(tmp_path / "out", unit)
    assert (clip.status, clip.rotation, clip.mirrored, clip.frames) == ("ok", 90, False, 6)
    first = pq.read_table(tmp_path / "out" / unit_file("masks", unit.unit_id)).to_pylist()[0]
    assert (first["height"], first["width"]) == (64, 48)
    assert first["bbox"] == [2.0, 40.0, 28.0, 20.0]  # the box is in displayed pixels (y up to 60 > 48)


def test_rows_of_a_variable_rate_video_carry_each_frames_own_time(tmp_path: Path) -> None:
    encoding = next(e for e in ARCHIVE_ENCODINGS if e.name == "vfr-mkv")
    path = write_encoding(encoding, tmp_path / "screen.mkv")
    unit = _one(path, [_box(0, 1, (2, 3, 20, 30))], clip_frames=8)
    summary = _processor(tmp_path / "out").process(unit)

    assert (summary.ok, summary.failed, summary.mask_rows) == (3, 0, 24)
    masks = pq.read_table(tmp_path / "out" / unit_file("masks", unit.unit_id)).to_pylist()
    gaps = np.diff([r["timestamp_s"] for r in masks])
    assert gaps == pytest.approx([[0.033, 0.05, 0.017, 0.1][i % 4] for i in range(23)])


def test_pointers_match_masks_row_for_row_in_the_configured_dtype(video: Path, tmp_path: Path) -> None:
    unit = _one(video, [_box(8, 3, (2, 3, 20, 30))])
    _processor(tmp_path, dtype="float32").process(unit)
    pointers = pq.read_table(tmp_path / unit_file("pointers", unit.unit_id))
    embedding = pointers.schema.field("embedding").type
    assert (embedding.value_type, embedding.list_size) == (pa.float32(), 256)
    rows = pointers.to_pylist()
    assert [r["frame_index"] for r in rows] == [8, 9, 10, 11]
    assert rows[0]["embedding"] == [3.0] * 256


def test_several_short_videos_share_one_file_per_table(video: Path, tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (folder / name).write_bytes(video.read_bytes())
    uris = [str(folder / n) for n in ("a.mp4", "b.mp4", "c.mp4")]
    unit = _unit(uris, {uri: [_box(0, 1, (2, 3, 20, 30))] for uri in uris[:2]})
    out = tmp_path / "out"
    summary = _processor(out).process(unit)
    assert (summary.videos, summary.ok, summary.skipped) == (3, 6, 1)
    for table in ("masks", "pointers", "clips"):
        assert [p.name for p in (out / table).iterdir()] == [f"{unit.unit_id}.parquet"]
    masks = pq.read_table(out / unit_file("masks", unit.unit_id))
    assert masks.num_rows == 24 and len(set(masks.column("video_id").to_pylist())) == 2
    skipped = [c for c in _clips(out, unit) if c.status == "skipped"]
    assert skipped[0].video_uri == uris[2] and "automatic mode is off" in (skipped[0].error_message or "")
    assert scan_output(str(out)).committed == {unit.unit_id}
    assert not (out / "_attempts" / f"{unit.unit_id}.json").exists()


def test_a_mask_prompt_is_decoded_at_video_resolution(video: Path, tmp_path: Path) -> None:
    mask = np.zeros((48, 64), dtype=bool)
    mask[10:20, 10:30] = True
    record = PromptRecord(video="v", frame=0, object_id=1, mask=RleMask(size=(48, 64), counts=encode_mask(mask)))
    seen: list[Prompt] = []

    class Recorder(BoxPainter):
        def track(
            self, frames: Iterable[tuple[int, np.ndarray]], prompts: Sequence[Prompt], *, reverse: bool = False
        ) -> Iterator[FrameResult]:
            seen.extend(prompts)
            return iter(())

    _processor(tmp_path, Recorder()).process(_one(video, [record]))
    assert seen[0].mask is not None and np.array_equal(seen[0].mask, mask)


def test_mask_prompt_of_the_wrong_size_fails_every_clip_in_prompts(video: Path, tmp_path: Path) -> None:
    bad = PromptRecord(video="v", frame=0, object_id=1, mask=RleMask(size=(4, 4), counts=encode_mask(np.ones((4, 4)))))
    unit = _one(video, [bad])
    _processor(tmp_path).process(unit)
    clips = _clips(tmp_path, unit)
    assert {(c.status, c.error_stage, c.error_class) for c in clips} == {("failed", "prompts", "PromptError")}
    assert len(clips) == 3 and "48x64" in (clips[0].error_message or "")
    assert (tmp_path / "_failed" / unit.unit_id).exists()


@pytest.mark.parametrize(("content", "kind"), [(b"", "empty"), (b"garbage" * 100, "")])
def test_undecodable_files_become_one_failed_row_each(tmp_path: Path, content: bytes, kind: str) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    unit = _one(bad, [_box(0, 1, (1, 1, 5, 5))])
    _processor(tmp_path / "out").process(unit)
    [row] = _clips(tmp_path / "out", unit)
    assert (row.status, row.error_stage, row.error_class) == ("failed", "decode", "DecodeError")
    assert kind in (row.error_message or "")
    assert not (tmp_path / "out" / "masks").exists()


def test_a_truncated_video_is_one_failed_row_saying_so(video: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    data = video.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    unit = _one(cut, [_box(0, 1, (1, 1, 5, 5))], clip_frames=2)
    _processor(tmp_path / "out").process(unit)
    [row] = _clips(tmp_path / "out", unit)
    assert (row.status, row.error_class) == ("failed", "DecodeError")
    assert "truncated" in (row.error_message or "")
    assert not (tmp_path / "out" / "masks").exists()


def test_a_tracker_error_fails_the_clip_it_happened_in_and_the_later_ones(video: Path, tmp_path: Path) -> None:
    tracker = BoxPainter(fail_with=ValueError("bad shapes in frame"), fail_at=6)
    unit = _one(video, [_box(0, 1, (1, 1, 5, 5))], clip_frames=4)
    _processor(tmp_path, tracker).process(unit)
    clips = _clips(tmp_path, unit)
    assert [(c.status, c.error_stage, c.error_class) for c in clips] == [
        ("ok", None, None),
        ("failed", "track", "ValueError"),
        ("failed", "track", "ValueError"),
    ]
    assert clips[1].error_message == "bad shapes in frame"
    masks = pq.read_table(tmp_path / unit_file("masks", unit.unit_id))
    assert sorted(masks.column("frame_index").to_pylist()) == [0, 1, 2, 3]  # the failed clip's rows are dropped


def test_out_of_memory_propagates_so_ray_retries_the_unit(video: Path, tmp_path: Path) -> None:
    with pytest.raises(MemoryError):
        _processor(tmp_path, BoxPainter(fail_with=MemoryError())).process(_one(video, [_box(0, 1, (1, 1, 5, 5))]))
    assert read_attempts(str(tmp_path), _one(video, [_box(0, 1, (1, 1, 5, 5))]).unit_id).started == 1


def test_a_video_that_killed_its_actor_twice_is_a_failed_row_and_the_rest_is_tracked(
    video: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (folder / name).write_bytes(video.read_bytes())
    uris = [str(folder / "a.mp4"), str(folder / "b.mp4")]
    unit = _unit(uris, {uri: [_box(0, 1, (2, 3, 20, 30))] for uri in uris})
    out = tmp_path / "out"
    # What earlier attempts left: the first died somewhere, the next two while tracking video 1 (b.mp4).
    write_attempts(str(out), unit.unit_id, Attempts(started=3, current=1, strikes={1: 1}))
    summary = _processor(out, unit=UnitConfig(poison_strikes=2, max_attempts=4)).process(unit)
    clips = _clips(out, unit)
    assert [(c.video_uri, c.status) for c in clips] == [(uris[0], "ok")] * 3 + [(uris[1], "failed")]
    assert clips[-1].error_class == "ActorDied" and "died 2 times" in (clips[-1].error_message or "")
    assert summary.failed == 1 and (out / "_failed" / unit.unit_id).exists()
    assert not (out / "_attempts" / f"{unit.unit_id}.json").exists()


def test_a_unit_past_its_attempts_is_committed_as_failed(video: Path, tmp_path: Path) -> None:
    unit = _one(video, [_box(0, 1, (2, 3, 20, 30))])
    write_attempts(str(tmp_path), unit.unit_id, Attempts(started=2))
    _processor(tmp_path, unit=UnitConfig(max_attempts=2)).process(unit)
    [row] = _clips(tmp_path, unit)
    assert (row.status, row.error_class) == ("failed", "ActorDied")


def test_a_retry_that_succeeds_removes_the_failure_marker(video: Path, tmp_path: Path) -> None:
    unit = _one(video, [_box(0, 1, (2, 3, 20, 30))])
    _processor(tmp_path, BoxPainter(fail_with=ValueError("flaky"))).process(unit)
    assert scan_output(str(tmp_path)).failed == {unit.unit_id}
    _processor(tmp_path).process(unit, was_failed=True)
    assert scan_output(str(tmp_path)).failed == frozenset()
    assert {c.status for c in _clips(tmp_path, unit)} == {"ok"}


def test_gpu_request_without_cuda_falls_back_to_cpu(caplog: pytest.LogCaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; the fallback is for machines without it")
    assert choose_device(0) == "cpu"
    assert choose_device(1) == "cpu"
    assert "CUDA is not available" in caplog.text


def test_rows_do_not_depend_on_the_actor_or_the_order_of_videos(tmp_path: Path) -> None:
    from batchtrack.baselines import build_baseline  # GrabCut and RANSAC draw from OpenCV's global RNG

    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, seed in (("a", 4), ("b", 9)):
        spec = SceneSpec(seed=seed, width=96, height=64, num_frames=16, num_objects=2)
        write_synthetic_video(spec, folder, name)
    refs = list_videos(str(folder))
    prompts = {ref.uri: [_box(0, 1, (10, 10, 50, 40)), _box(0, 2, (40, 20, 90, 60))] for ref in refs}
    settings = PlanSettings(MODEL, ClipPlanConfig(length_frames=6), None, "off", seed=7)
    tasks = [plan_video(ref, prompts[ref.uri], settings) for ref in refs]

    def rows_of_a(order: list[int], out: Path) -> list[tuple[int, int, str]]:
        unit = make_unit([tasks[i] for i in order], settings)
        processor = _processor(out, build_baseline("baseline-homography"))  # a fresh actor each time
        processor.process(unit)
        masks = pq.read_table(out / unit_file("masks", unit.unit_id)).to_pylist()
        return sorted((r["frame_index"], r["object_id"], r["rle"]) for r in masks if r["video_uri"] == refs[0].uri)

    alone = rows_of_a([0], tmp_path / "alone")
    assert alone and any(r[2] != alone[0][2] for r in alone)  # masks that move: something was tracked
    assert rows_of_a([1, 0], tmp_path / "after-b") == alone
    assert rows_of_a([0, 1], tmp_path / "before-b") == alone


def test_committed_units_pass_through_an_actor_without_loading_the_model(video: Path, tmp_path: Path) -> None:
    from batchtrack.errors import ConfigError
    from batchtrack.pipeline.actor import UnitTracker

    # A model that cannot be built here (no checkpoint): any attempt to load it raises.
    settings = ActorSettings(model=ResolvedModel(ModelConfig(name="sam2.1_hiera_tiny"), "none"), output=str(tmp_path))
    actor = UnitTracker(settings)
    unit = _one(video, [_box(0, 1, (2, 3, 20, 30))])
    batch = {
        "unit": np.asarray([unit.to_json()], dtype=object),
        "committed": np.asarray([True]),
        "was_failed": np.asarray([False]),
    }
    [summary] = actor(batch)["summary"].tolist()
    assert '"resumed":true' in summary and unit.unit_id in summary
    batch["committed"] = np.asarray([False])
    with pytest.raises(ConfigError, match="--checkpoint"):
        actor(batch)


class _GroundTruthDetector:
    """Detections of the concept "shape": every visible object of a synthetic scene, from its ground truth."""

    def __init__(self, spec: SceneSpec) -> None:
        from batchtrack.synthetic.scene import Scene

        self.scene = Scene.from_spec(spec)
        self.frames: list[int] = []

    def detect(self, frame_index: int, frame: np.ndarray, concepts: Sequence[str]) -> FrameDetections:
        from batchtrack.synthetic.render import render_frame

        self.frames.append(frame_index)
        truth = render_frame(self.scene, frame_index)
        masks = torch.from_numpy(truth.masks).float() * 20.0 - 10.0  # (D, H, W)
        d = masks.shape[0]
        concept = torch.full((d,), list(concepts).index("shape"), dtype=torch.long)
        return FrameDetections(concept, torch.zeros(d, 4), torch.full((d,), 0.9), masks)


def test_a_concept_video_writes_rows_naming_the_concept(tmp_path: Path) -> None:
    from batchtrack.model.loading.build import build_tracker

    spec = SceneSpec(seed=3, width=64, height=48, num_frames=12, num_objects=2, occlusion=0.0, exit_prob=0.0)
    video = write_synthetic_video(spec, tmp_path / "videos", "concept").video_path
    tracker = build_tracker("tiny-synthetic")
    truth = _GroundTruthDetector(spec)
    settings = PlanSettings(MODEL, ClipPlanConfig(length_frames=4), None, "off", concepts=("shape",))
    [ref] = list_videos(str(video))
    prompt = _box(0, 0, (40, 2, 60, 12))
    unit = make_unit([plan_video(ref, [prompt], settings, concepts=["thing"])], settings)
    assert unit.videos[0].mode == "concept"
    out = tmp_path / "out"
    settings_ = ActorSettings(model=ResolvedModel(ModelConfig(name="tiny-synthetic"), "none"), output=str(out))
    processor = UnitProcessor(tracker, settings_, "cpu", None, concept_loop=ConceptLoop(tracker, truth))
    summary = processor.process(unit)
    assert (summary.clips, summary.ok) == (3, 3)
    assert truth.frames == list(range(12)), "the detector saw every frame once, in order"
    masks = pq.read_table(out / unit_file("masks", unit.unit_id))
    pointers = pq.read_table(out / unit_file("pointers", unit.unit_id))
    assert masks.column("concept").to_pylist() == pointers.column("concept").to_pylist()
    rows = masks.to_pylist()
    by_object: dict[int, set[str | None]] = {}
    for r in rows:
        by_object.setdefault(r["object_id"], set()).add(r["concept"])
    assert by_object.pop(0) == {None}, "the visual prompt keeps concept null"
    # The box prompt sits on the top-right object: its detections match the prompted track (SAM 3's add-prompt
    # path), so the bottom-left object is the one concept track.
    assert len(by_object) == 1 and all(c == {"shape"} for c in by_object.values()), "one track per object"
    assert min(by_object) > 0, "concept ids come after the prompted id"
    keys = [(r["frame_index"], r["object_id"]) for r in rows]
    assert len(set(keys)) == len(keys), "one row per (frame, object)"
    clip_ids = {c.clip_id for c in _clips(out, unit)}
    assert {r["clip_id"] for r in rows} <= clip_ids
