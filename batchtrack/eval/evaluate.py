"""J&F of tracked masks against synthetic ground truth: of a finished job's output, or of a tracker run directly.

Videos are matched by file stem: the prediction rows of `…/NAME.mp4` are scored against
`NAME.gt.parquet`. Every ground-truth object is scored on every frame, a missing prediction row
counting as an empty mask. When the ground-truth folder has a `prompts.jsonl`, as synthetic corpora
do, only prompted objects are scored, and only on frames after their first prompt, as DAVIS leaves out
the frame whose mask is given. An output tracked with --sample-fps is scored on the frames it tracked
(its clips/ rows list them), as SA-V is evaluated on its 6 fps annotated frames.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import fsspec
import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from batchtrack.eval.metrics import BOUND_TH, MeanJF, SequenceScore, score_sequence
from batchtrack.io.rle import decode_mask
from batchtrack.io.video import iter_frames
from batchtrack.model.types import FrameResult, Prompt
from batchtrack.synthetic.ground_truth import GT_SCHEMA, GT_SUFFIX, GroundTruth, table_to_ground_truth

PROMPTS_FILE = "prompts.jsonl"


@dataclass(frozen=True)
class ObjectEval(MeanJF):
    video: str
    object_id: int
    j: float
    f: float
    num_frames: int


@dataclass(frozen=True)
class VideoEval(MeanJF):
    video: str
    j: float
    f: float
    num_objects: int


@dataclass(frozen=True)
class EvalReport:
    """Scores per object and per video; overall J and F are means over all objects, as DAVIS reports them."""

    objects: list[ObjectEval]
    videos: list[VideoEval]
    j: float
    f: float
    missing_videos: list[str] = field(default_factory=list)  # ground truth without any prediction row
    unmatched_videos: list[str] = field(default_factory=list)  # predictions without ground truth
    frames_per_second: float | None = None  # tracking speed, when the tracker was run here

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2.0

    def to_table(self) -> str:
        lines = [f"{'video':<28} {'object':>6} {'frames':>6} {'J':>6} {'F':>6} {'J&F':>6}"]
        by_video: dict[str, list[ObjectEval]] = defaultdict(list)
        for obj in self.objects:
            by_video[obj.video].append(obj)
        for video in self.videos:
            for obj in by_video[video.video]:
                lines.append(
                    f"{video.video:<28} {obj.object_id:>6} {obj.num_frames:>6} {obj.j:6.3f} {obj.f:6.3f} {obj.jf:6.3f}"
                )
            lines.append(f"{video.video:<28} {'all':>6} {'':>6} {video.j:6.3f} {video.f:6.3f} {video.jf:6.3f}")
        lines.append(
            f"{'overall (' + str(len(self.objects)) + ' objects)':<28} {'':>6} {'':>6} "
            f"{self.j:6.3f} {self.f:6.3f} {self.jf:6.3f}"
        )
        if self.frames_per_second is not None:
            lines.append(f"tracking speed: {self.frames_per_second:.1f} frames/s")
        if self.missing_videos:
            lines.append(f"no predictions for: {', '.join(self.missing_videos)} (scored as empty masks)")
        if self.unmatched_videos:
            lines.append(f"no ground truth for: {', '.join(self.unmatched_videos)} (not scored)")
        return "\n".join(lines)


PredictedMasks = Mapping[tuple[int, int], np.ndarray]  # (frame_index, object_id) -> (H, W) bool


def video_stem(uri: str) -> str:
    """`s3://bucket/dir/NAME.mp4` -> `NAME`."""
    return PurePosixPath(uri.split("?", 1)[0]).stem


def score_video(
    video: str,
    gt: GroundTruth,
    predicted: PredictedMasks,
    first_frames: Mapping[int, int] | None = None,
    bound_th: float = BOUND_TH,
    frames: Collection[int] | None = None,
) -> list[ObjectEval]:
    """Score every ground-truth object (or, with `first_frames`, every prompted one after its prompt frame),
    on every frame or only on `frames` (those a sampled run tracked)."""
    empty = np.zeros((gt.height, gt.width), dtype=bool)
    results = []
    object_ids = gt.object_ids if first_frames is None else sorted(i for i in first_frames if i in gt.object_ids)
    for object_id in object_ids:
        start = 0 if first_frames is None else first_frames[object_id] + 1
        pairs = (
            (gt.mask(t, object_id), predicted.get((t, object_id), empty))
            for t in range(start, gt.num_frames)
            if frames is None or t in frames
        )
        score: SequenceScore = score_sequence(pairs, bound_th)
        if score.num_frames:
            results.append(ObjectEval(video, object_id, score.j, score.f, score.num_frames))
    return results


def build_report(
    objects: list[ObjectEval],
    missing: Sequence[str] = (),
    unmatched: Sequence[str] = (),
    frames_per_second: float | None = None,
) -> EvalReport:
    by_video: dict[str, list[ObjectEval]] = defaultdict(list)
    for obj in objects:
        by_video[obj.video].append(obj)
    videos = [
        VideoEval(name, float(np.mean([o.j for o in objs])), float(np.mean([o.f for o in objs])), len(objs))
        for name, objs in sorted(by_video.items())
    ]
    j = float(np.mean([o.j for o in objects])) if objects else math.nan
    f = float(np.mean([o.f for o in objects])) if objects else math.nan
    return EvalReport(
        objects=sorted(objects, key=lambda o: (o.video, o.object_id)),
        videos=videos,
        j=j,
        f=f,
        missing_videos=sorted(missing),
        unmatched_videos=sorted(unmatched),
        frames_per_second=frames_per_second,
    )


def _read_first_prompt_frames(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, dict[int, int]] | None:
    """stem -> object_id -> first prompt frame, from `prompts.jsonl` in the ground-truth folder, if any."""
    path = f"{root}/{PROMPTS_FILE}"
    if not fs.exists(path):
        return None
    first: dict[str, dict[int, int]] = defaultdict(dict)
    with fs.open(path, "r") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                stem, frame, object_id = video_stem(str(entry["video"])), int(entry["frame"]), int(entry["object_id"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path} line {number}: not a prompt with video, frame and object_id ({exc})") from exc
            first[stem][object_id] = min(frame, first[stem].get(object_id, frame))
    return dict(first)


def _read_ground_truths(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, GroundTruth]:
    paths = sorted(fs.glob(f"{root}/*{GT_SUFFIX}"))
    if not paths:
        raise FileNotFoundError(f"no *{GT_SUFFIX} files in the ground-truth folder {root}")
    truths = {}
    for path in paths:
        table = pq.read_table(path, filesystem=fs, schema=GT_SCHEMA)
        truths[PurePosixPath(path).name[: -len(GT_SUFFIX)]] = table_to_ground_truth(table)
    return truths


def _read_predictions(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, dict[tuple[int, int], np.ndarray]]:
    """stem -> (frame_index, object_id) -> mask, from `masks/`; of duplicate rows the highest score wins."""
    if not fs.exists(f"{root}/masks"):
        raise FileNotFoundError(f"no masks/ dataset under the job output {root}")
    dataset = ds.dataset(f"{root}/masks", filesystem=fs, format="parquet")
    if not dataset.files:
        return {}
    columns = ["video_uri", "frame_index", "object_id", "height", "width", "rle"]
    has_score = "score" in dataset.schema.names
    table = dataset.to_table(columns=[*columns, "score"] if has_score else columns)
    best: dict[str, dict[tuple[int, int], tuple[float, str, int, int]]] = defaultdict(dict)
    for row in table.to_pylist():
        key = (int(row["frame_index"]), int(row["object_id"]))
        score = float(row["score"]) if has_score and row["score"] is not None else 0.0
        per_video = best[video_stem(row["video_uri"])]
        if key not in per_video or score > per_video[key][0]:
            per_video[key] = (score, row["rle"], int(row["height"]), int(row["width"]))
    return {
        stem: {key: decode_mask(rle, h, w) for key, (_, rle, h, w) in rows.items()} for stem, rows in best.items()
    }


def _read_tracked_frames(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, frozenset[int]]:
    """stem -> the frames a --sample-fps run tracked, from clips/; videos tracked at full rate are absent."""
    if not fs.exists(f"{root}/clips"):
        return {}
    dataset = ds.dataset(f"{root}/clips", filesystem=fs, format="parquet")
    if not dataset.files or "tracked_frames" not in dataset.schema.names:
        return {}
    table = dataset.to_table(columns=["video_uri", "status", "tracked_frames"])
    tracked: dict[str, set[int]] = defaultdict(set)
    for row in table.to_pylist():
        if row["status"] == "ok" and row["tracked_frames"] is not None:
            tracked[video_stem(row["video_uri"])].update(row["tracked_frames"])
    return {stem: frozenset(found) for stem, found in tracked.items()}


def evaluate_output(
    output_uri: str,
    ground_truth_dir: str,
    storage_options: Mapping[str, Any] | None = None,
    bound_th: float = BOUND_TH,
) -> EvalReport:
    """J, F and J&F of a finished job's `masks/` against the `*.gt.parquet` files of `ground_truth_dir`."""
    options = dict(storage_options or {})
    out_fs, out_root = fsspec.core.url_to_fs(output_uri, **options)
    gt_fs, gt_root = fsspec.core.url_to_fs(ground_truth_dir, **options)
    out_root, gt_root = out_root.rstrip("/"), gt_root.rstrip("/")
    truths = _read_ground_truths(gt_fs, gt_root)
    first_frames = _read_first_prompt_frames(gt_fs, gt_root)
    predictions = _read_predictions(out_fs, out_root)
    sampled = _read_tracked_frames(out_fs, out_root)
    objects: list[ObjectEval] = []
    for stem, gt in truths.items():
        video_first = None if first_frames is None else first_frames.get(stem, {})
        objects.extend(score_video(stem, gt, predictions.get(stem, {}), video_first, bound_th, sampled.get(stem)))
    missing = [stem for stem in truths if stem not in predictions]
    unmatched = [stem for stem in predictions if stem not in truths]
    return build_report(objects, missing, unmatched)


class SupportsTrack(Protocol):
    def track(
        self, frames: Any, prompts: Sequence[Prompt], *, reverse: bool = False
    ) -> Iterator[FrameResult]: ...


@dataclass(frozen=True)
class TrackedVideo:
    """One synthetic video tracked from its box prompts: what scoring it needs."""

    stem: str
    gt: GroundTruth
    predicted: dict[tuple[int, int], np.ndarray]  # (frame_index, object_id) -> (H, W) bool
    first_frames: dict[int, int]  # object_id -> its first prompt frame
    num_frames: int
    seconds: float  # tracking time (decoding excluded)


def track_corpus(tracker: SupportsTrack, corpus_dir: Path | str) -> Iterator[TrackedVideo]:
    """Run `tracker` over every video of a local synthetic corpus, box prompts from its `prompts.jsonl`."""
    root = Path(corpus_dir)
    fs = fsspec.filesystem("file")
    truths = _read_ground_truths(fs, root.as_posix())
    by_video: dict[str, list[Prompt]] = defaultdict(list)
    for line in (root / PROMPTS_FILE).read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            by_video[video_stem(entry["video"])].append(
                Prompt(
                    frame_index=int(entry["frame"]),
                    object_id=int(entry["object_id"]),
                    box=np.asarray(entry["box"], dtype=np.float32),
                )
            )
    for stem, gt in truths.items():
        prompts = by_video.get(stem, [])
        frames = list(enumerate(iter_frames(str(root / f"{stem}.mp4"))))
        predicted: dict[tuple[int, int], np.ndarray] = {}
        start = time.perf_counter()
        for result in tracker.track(frames, prompts):
            masks = (result.mask_logits > 0).numpy()
            for object_id, mask in zip(result.object_ids, masks, strict=True):
                predicted[(result.frame_index, object_id)] = mask
        seconds = time.perf_counter() - start
        first = {p.object_id: p.frame_index for p in sorted(prompts, key=lambda p: -p.frame_index)}
        yield TrackedVideo(stem, gt, predicted, first, len(frames), seconds)


def evaluate_tracker(tracker: SupportsTrack, corpus_dir: Path | str, bound_th: float = BOUND_TH) -> EvalReport:
    """Run `tracker` over every video of a local synthetic corpus (box prompts from `prompts.jsonl`) and score it.

    This skips the batch job: it measures the tracker alone, frames/s included (decoding excluded).
    """
    objects: list[ObjectEval] = []
    seconds, frames_done = 0.0, 0
    for video in track_corpus(tracker, corpus_dir):
        seconds += video.seconds
        frames_done += video.num_frames
        objects.extend(score_video(video.stem, video.gt, video.predicted, video.first_frames, bound_th))
    fps = frames_done / seconds if seconds > 0 else None
    return build_report(objects, frames_per_second=fps)
