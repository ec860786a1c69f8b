"""evaluate_output: a job's masks/ dataset scored against *.gt.parquet files, matched by video file stem."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from batchtrack.eval.evaluate import evaluate_output
from batchtrack.model.types import FrameResult, Prompt
from batchtrack.synthetic import SceneSpec, read_ground_truth, write_synthetic_video


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gt")
    spec = SceneSpec(seed=21, width=64, height=48, num_frames=8, num_objects=2, exit_prob=0.0, occlusion=0.0)
    write_synthetic_video(spec, root, "clip_a")
    return root


def _write_masks(output: Path, rows: list[dict[str, object]], name: str = "part-0.parquet") -> None:
    (output / "masks").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), output / "masks" / name)


def _prediction_rows(gt_path: Path, video_uri: str, drop_object: int | None = None) -> list[dict[str, object]]:
    rows = []
    for row in pq.read_table(gt_path).to_pylist():
        if row["object_id"] == drop_object:
            continue
        rows.append({"video_uri": video_uri, "clip_id": "c0", "score": 5.0, **row})
    return rows


def test_perfect_predictions_score_one(corpus: Path, tmp_path: Path) -> None:
    _write_masks(tmp_path, _prediction_rows(corpus / "clip_a.gt.parquet", "s3://bucket/videos/clip_a.mp4"))
    report = evaluate_output(str(tmp_path), str(corpus))
    assert [(o.video, o.object_id, o.num_frames) for o in report.objects] == [("clip_a", 1, 8), ("clip_a", 2, 8)]
    assert report.j == 1.0
    assert report.f == 1.0
    assert report.jf == 1.0
    assert report.missing_videos == []
    assert "overall" in report.to_table()


def test_missing_rows_count_as_empty_masks(corpus: Path, tmp_path: Path) -> None:
    gt = read_ground_truth(corpus / "clip_a.gt.parquet")
    _write_masks(tmp_path, _prediction_rows(corpus / "clip_a.gt.parquet", "file:///x/clip_a.mp4", drop_object=2))
    report = evaluate_output(str(tmp_path), str(corpus))
    # With no prediction, a frame scores 1 only where the object is not visible either.
    empty_frames = np.mean([not gt.mask(t, 2).any() for t in range(gt.num_frames)])
    by_id = {o.object_id: o for o in report.objects}
    assert by_id[1].jf == 1.0
    assert by_id[2].j == pytest.approx(empty_frames)
    assert by_id[2].f == pytest.approx(empty_frames)
    assert report.j == pytest.approx((1.0 + empty_frames) / 2)


def test_videos_without_predictions_or_ground_truth_are_reported(corpus: Path, tmp_path: Path) -> None:
    row = {"video_uri": "other.mp4", "frame_index": 0, "object_id": 1, "height": 48, "width": 64}
    _write_masks(tmp_path, [{**row, "rle": _empty_rle(48, 64)}])
    report = evaluate_output(str(tmp_path), str(corpus))
    assert report.missing_videos == ["clip_a"]
    assert report.unmatched_videos == ["other"]
    assert "no predictions for: clip_a" in report.to_table()


def test_duplicate_rows_keep_the_highest_score(corpus: Path, tmp_path: Path) -> None:
    good = _prediction_rows(corpus / "clip_a.gt.parquet", "clip_a.mp4")
    bad = [{**row, "score": -3.0, "rle": _empty_rle(48, 64)} for row in good]
    _write_masks(tmp_path, bad, "a.parquet")
    _write_masks(tmp_path, good, "b.parquet")
    assert evaluate_output(str(tmp_path), str(corpus)).jf == 1.0


def test_prompt_manifest_limits_scoring_to_prompted_objects_after_their_prompt(corpus: Path, tmp_path: Path) -> None:
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    (gt_dir / "clip_a.gt.parquet").write_bytes((corpus / "clip_a.gt.parquet").read_bytes())
    (gt_dir / "prompts.jsonl").write_text(
        json.dumps({"video": "clip_a.mp4", "frame": 3, "object_id": 2, "box": [0, 0, 5, 5]}) + "\n"
    )
    _write_masks(tmp_path / "out", _prediction_rows(corpus / "clip_a.gt.parquet", "clip_a.mp4"))
    report = evaluate_output(str(tmp_path / "out"), str(gt_dir))
    assert [(o.object_id, o.num_frames) for o in report.objects] == [(2, 4)]  # frames 4..7


def test_output_without_masks_dataset_is_an_error(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no masks/ dataset under the job output"):
        evaluate_output(str(tmp_path), str(corpus))


def test_ground_truth_folder_without_files_is_an_error(tmp_path: Path) -> None:
    _write_masks(tmp_path / "out", [])
    with pytest.raises(FileNotFoundError, match=r"no \*\.gt\.parquet files"):
        evaluate_output(str(tmp_path / "out"), str(tmp_path))


def _empty_rle(height: int, width: int) -> str:
    from pycocotools import mask as coco_mask

    return coco_mask.encode(np.zeros((height, width), dtype=np.uint8, order="F"))["counts"].decode()


class _GroundTruthReplay:
    """A 'tracker' that answers with the ground truth from each object's prompt frame on."""

    def __init__(self, gt_path: Path) -> None:
        self.gt = read_ground_truth(gt_path)

    def track(
        self, frames: Iterable[tuple[int, np.ndarray]], prompts: Sequence[Prompt], *, reverse: bool = False
    ) -> Iterator[FrameResult]:
        start = {p.object_id: p.frame_index for p in prompts}
        for index, _image in frames:
            ids = sorted(i for i, s in start.items() if s <= index)
            masks = np.stack([self.gt.mask(index, i) for i in ids]) if ids else np.zeros((0, 48, 64), bool)
            yield FrameResult(
                frame_index=index,
                object_ids=ids,
                mask_logits=torch.from_numpy(np.where(masks, 1.0, -1.0).astype(np.float32)),
                object_score_logits=torch.ones(len(ids)),
                iou_predictions=torch.ones(len(ids)),
                object_pointers=torch.zeros(len(ids), 256),
            )


def test_evaluate_tracker_runs_a_tracker_over_a_corpus_with_its_prompts(tmp_path: Path) -> None:
    from batchtrack.baselines import FlowTracker
    from batchtrack.eval.evaluate import evaluate_tracker
    from batchtrack.synthetic import make_demo_corpus

    make_demo_corpus(tmp_path, num_videos=1, seed=2, width=64, height=48, num_frames=6)
    prompts = [json.loads(line) for line in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    perfect = evaluate_tracker(_GroundTruthReplay(tmp_path / "synthetic_000.gt.parquet"), tmp_path)
    assert perfect.jf == 1.0
    assert sorted(o.object_id for o in perfect.objects) == sorted(p["object_id"] for p in prompts)
    assert perfect.frames_per_second is not None
    assert perfect.frames_per_second > 0
    flow = evaluate_tracker(FlowTracker(), tmp_path)
    assert 0.0 < flow.jf < 1.0
