"""ClipProcessor (the body of the ClipTracker actor), run without Ray on a real small H.264 clip.

The tracker here is a stand-in for the model (a box painter), so these tests pin the actor's own
work: decoding the clip range, turning results into rows, writing files whole, committing last,
and turning bad input into failed rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from batchtrack.config import ModelConfig
from batchtrack.io.corpus import list_videos
from batchtrack.io.prompts import PromptRecord, RleMask
from batchtrack.io.rle import decode_mask, encode_mask
from batchtrack.io.sink import clip_file
from batchtrack.io.video import probe_video
from batchtrack.model.types import FrameResult, Prompt
from batchtrack.pipeline.actor import ActorSettings, ClipProcessor, choose_device
from batchtrack.pipeline.commit import CommitRecord, commit_path
from batchtrack.pipeline.plan import ClipSpec, ModelKey, make_clip_id
from batchtrack.synthetic.corpus import write_synthetic_video
from batchtrack.synthetic.scene import SceneSpec

MODEL = ModelKey("box-painter", "none")


class BoxPainter:
    """Paints each prompted box from its prompt frame on; fails on request."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.fail_with = fail_with
        self.seen: list[int] = []

    def track(
        self, frames: Iterable[tuple[int, np.ndarray]], prompts: Sequence[Prompt], *, reverse: bool = False
    ) -> Iterator[FrameResult]:
        for index, frame in frames:
            self.seen.append(index)
            if self.fail_with is not None and len(self.seen) == 2:
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


def _spec(uri: str, start: int, end: int, prompts: list[PromptRecord], width: int = 64, height: int = 48) -> ClipSpec:
    video_id = "0011223344556677"
    return ClipSpec(
        video_id=video_id, video_uri=uri, clip_id=make_clip_id(video_id, start, end, MODEL, prompts),
        start=start, end=end, fps=30.0, width=width, height=height, model=MODEL, prompts=tuple(prompts),
    )


def _processor(out: Path, tracker: BoxPainter | None = None, dtype: str = "float16") -> ClipProcessor:
    settings = ActorSettings(model=ModelConfig(name="box-painter"), output=str(out), pointer_dtype=dtype)
    return ClipProcessor(tracker or BoxPainter(), settings, device="cpu", node_id=None)


def _box(frame: int, object_id: int, box: tuple[float, float, float, float]) -> PromptRecord:
    return PromptRecord(video="v", frame=frame, object_id=object_id, box=box)


def test_clip_rows_cover_frames_times_objects_from_each_prompt_on(video: Path, tmp_path: Path) -> None:
    spec = _spec(str(video), 2, 10, [_box(2, 1, (2, 3, 20, 30)), _box(5, 7, (30, 10, 60, 40))])
    status = _processor(tmp_path).process(spec)
    assert status.status == "ok", status.error_message
    assert (status.frames, status.objects, status.mask_rows) == (8, 2, 8 + 5)
    masks = pq.read_table(tmp_path / clip_file("masks", spec.clip_id)).to_pylist()
    keys = [(r["frame_index"], r["object_id"]) for r in masks]
    assert keys == sorted(keys) and len(set(keys)) == 13
    assert {k[0] for k in keys} == set(range(2, 10))
    assert {k[0] for k in keys if k[1] == 7} == set(range(5, 10))
    first = masks[0]
    expected = np.zeros((48, 64), dtype=bool)
    expected[3:30, 2:20] = True
    assert np.array_equal(decode_mask(first["rle"], first["height"], first["width"]), expected)
    assert first["area"] == expected.sum()
    assert first["bbox"] == [2.0, 3.0, 18.0, 27.0]
    assert first["score"] == pytest.approx(0.5) and first["iou_pred"] == pytest.approx(0.75)
    assert first["timestamp_s"] == pytest.approx(2 / 30.0)
    assert first["video_id"] == spec.video_id and first["clip_id"] == spec.clip_id


def test_pointers_match_masks_row_for_row_in_the_configured_dtype(video: Path, tmp_path: Path) -> None:
    spec = _spec(str(video), 0, 4, [_box(0, 3, (2, 3, 20, 30))])
    _processor(tmp_path, dtype="float32").process(spec)
    pointers = pq.read_table(tmp_path / clip_file("pointers", spec.clip_id))
    embedding = pointers.schema.field("embedding").type
    assert (embedding.value_type, embedding.list_size) == (pa.float32(), 256)
    rows = pointers.to_pylist()
    assert [r["frame_index"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["embedding"] == [3.0] * 256


def test_commit_record_names_the_files_and_their_row_counts(video: Path, tmp_path: Path) -> None:
    spec = _spec(str(video), 0, 6, [_box(1, 1, (2, 3, 20, 30))])
    _processor(tmp_path).process(spec)
    record = CommitRecord.from_json(Path(commit_path(str(tmp_path), spec.clip_id)).read_text())
    assert record.rows == {"masks": 5, "pointers": 5}
    for relative in record.files.values():
        assert pq.read_metadata(tmp_path / relative).num_rows == 5


def test_a_mask_prompt_is_decoded_at_video_resolution(video: Path, tmp_path: Path) -> None:
    mask = np.zeros((48, 64), dtype=bool)
    mask[10:20, 10:30] = True
    record = PromptRecord(
        video="v", frame=0, object_id=1, mask=RleMask(size=(48, 64), counts=encode_mask(mask))
    )
    seen: list[Prompt] = []

    class Recorder(BoxPainter):
        def track(
            self, frames: Iterable[tuple[int, np.ndarray]], prompts: Sequence[Prompt], *, reverse: bool = False
        ) -> Iterator[FrameResult]:
            seen.extend(prompts)
            return iter(())

    _processor(tmp_path, Recorder()).process(_spec(str(video), 0, 3, [record]))
    assert seen[0].mask is not None and np.array_equal(seen[0].mask, mask)


def test_mask_prompt_of_the_wrong_size_fails_the_clip_in_prompts(video: Path, tmp_path: Path) -> None:
    bad = PromptRecord(video="v", frame=0, object_id=1, mask=RleMask(size=(4, 4), counts=encode_mask(np.ones((4, 4)))))
    status = _processor(tmp_path).process(_spec(str(video), 0, 3, [bad]))
    assert (status.status, status.error_stage, status.error_class) == ("failed", "prompts", "PromptError")
    assert "48x64" in (status.error_message or "")


@pytest.mark.parametrize(("content", "kind"), [(b"", "empty"), (b"garbage" * 100, "")])
def test_undecodable_files_become_failed_rows_without_output(tmp_path: Path, content: bytes, kind: str) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    spec = _spec(str(bad), 0, 5, [_box(0, 1, (1, 1, 5, 5))])
    status = _processor(tmp_path / "out").process(spec)
    assert (status.status, status.error_stage, status.error_class) == ("failed", "decode", "DecodeError")
    assert kind in (status.error_message or "")
    assert not (tmp_path / "out").exists()


def test_a_truncated_video_fails_its_clip_and_commits_nothing(video: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    data = video.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    status = _processor(tmp_path / "out").process(_spec(str(cut), 0, 12, [_box(0, 1, (1, 1, 5, 5))]))
    assert status.status == "failed" and status.error_class == "DecodeError"
    assert not Path(commit_path(str(tmp_path / "out"), status.clip_id)).exists()


def test_a_tracker_error_is_a_failed_row_naming_its_class(video: Path, tmp_path: Path) -> None:
    tracker = BoxPainter(fail_with=ValueError("bad shapes in frame"))
    status = _processor(tmp_path, tracker).process(_spec(str(video), 0, 6, [_box(0, 1, (1, 1, 5, 5))]))
    assert (status.status, status.error_stage, status.error_class) == ("failed", "track", "ValueError")
    assert status.error_message == "bad shapes in frame"
    assert list(tmp_path.iterdir()) == []


def test_out_of_memory_propagates_so_ray_retries_the_clip(video: Path, tmp_path: Path) -> None:
    with pytest.raises(MemoryError):
        _processor(tmp_path, BoxPainter(fail_with=MemoryError())).process(
            _spec(str(video), 0, 6, [_box(0, 1, (1, 1, 5, 5))])
        )


def test_gpu_request_without_cuda_falls_back_to_cpu(caplog: pytest.LogCaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; the fallback is for machines without it")
    assert choose_device(0) == "cpu"
    assert choose_device(1) == "cpu"
    assert "CUDA is not available" in caplog.text


def test_listed_video_probes_to_the_clip_geometry(video: Path) -> None:
    [ref] = list_videos(str(video.parent))
    info = probe_video(ref.uri)
    assert (info.num_frames, info.width, info.height) == (12, 64, 48)
