"""UnitTracker: the Ray Data actor that tracks work units. One model per actor, loaded once.

A call gets work units (a JSON `unit` column). For each video of a unit the actor opens the video
once (downloading it first when it is remote), decodes it in a prefetch thread whose decoder
threads are bounded by the actor's CPUs, and tracks it in one pass: the memory bank is handed from
clip to clip, so objects prompted on frame 0 (or found in automatic or concept mode) keep their ids
through the whole video; a concept-mode row also names its track's concept. Rows are grouped by
clip; a clip whose decoding or tracking fails becomes a `failed` clips/ row with its reason, and so
does every later clip of that video (their frames cannot be reached in order). The unit's masks/ and
pointers/ files are written whole, then its clips/ file: the commit.

Resource and Ray system errors propagate so Ray restarts the actor and retries the unit; a unit that
keeps killing its actor is bounded by its attempts record (`commit.Attempts`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
import pyarrow as pa
import ray
import torch

from batchtrack.config import UnitConfig
from batchtrack.errors import ConfigError, DecodeError, DecodeErrorKind, PromptError, TransientIOError
from batchtrack.io.corpus import stable_hash
from batchtrack.io.prompts import PromptRecord
from batchtrack.io.rle import decode_mask, encode_mask, mask_area, mask_bbox
from batchtrack.io.schema import MASKS_SCHEMA, POINTER_DIM, pointers_schema
from batchtrack.io.sink import join, unit_file, write_table
from batchtrack.io.video import VideoInfo, open_video
from batchtrack.model.modes.concept import ConceptFrameResult, ConceptLoop
from batchtrack.model.types import FrameResult, Prompt
from batchtrack.pipeline.commit import (
    Attempts,
    ClipStatus,
    clear_attempts,
    commit_unit,
    read_attempts,
    write_attempts,
)
from batchtrack.pipeline.plan import VideoTask, WorkUnit, clip_length, clip_spans, make_clip_id, video_clip_id
from batchtrack.pipeline.sampling import FrameSample
from batchtrack.trackers import FrameTracker, ResolvedModel, build_concept_loop, build_trackers

if TYPE_CHECKING:
    from batchtrack.pipeline.metrics import TrackerMetrics

log = logging.getLogger(__name__)

# Test hook: a video whose URI contains this text kills its actor process, as a decoder crash would.
CRASH_ENV = "TRACKER_TEST_CRASH_ON"  # not BATCHTRACK_*: those are config keys


@dataclass(frozen=True)
class ActorSettings:
    """What every UnitTracker of a job shares (picklable; passed as a constructor argument)."""

    model: ResolvedModel  # decided on the driver (`trackers.resolve_model`): the actor builds exactly this
    output: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    pointer_dtype: str = "float16"
    compression: str = "zstd"
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    prefetch_frames: int = 8
    prefetch_bytes: int | None = None  # bound on the bytes of frames decoded ahead (4K frames are 24 MiB)
    unit: UnitConfig = field(default_factory=UnitConfig)


@dataclass
class UnitSummary:
    """What one unit did, returned to the driver (small: counts and the first failures)."""

    unit_id: str
    videos: int = 0
    resumed: bool = False
    clips: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    frames: int = 0
    objects: int = 0
    mask_rows: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0
    track_seconds: float = 0.0
    failures: list[tuple[str, str, str, str]] = field(default_factory=list)  # uri, stage, class, message

    MAX_FAILURES = 10

    @classmethod
    def of(cls, unit_id: str, statuses: list[ClipStatus], seconds: float) -> UnitSummary:
        summary = cls(unit_id, videos=len({s.video_id for s in statuses}), clips=len(statuses), seconds=seconds)
        for s in statuses:
            setattr(summary, s.status, getattr(summary, s.status) + 1)
            summary.frames += s.frames
            summary.objects += s.objects
            summary.mask_rows += s.mask_rows
            summary.decode_seconds += s.decode_seconds
            summary.track_seconds += s.track_seconds
            if s.status == "failed" and len(summary.failures) < cls.MAX_FAILURES:
                summary.failures.append((s.video_uri, s.error_stage or "", s.error_class or "", s.error_message or ""))
        return summary


def choose_device(num_gpus: float) -> str:
    """cuda when the actor was given a GPU and CUDA works; CPU (with a warning) when it was not there."""
    if num_gpus <= 0:
        return "cpu"
    if not torch.cuda.is_available():
        log.warning("actor requested num_gpus=%s but CUDA is not available; tracking on CPU", num_gpus)
        return "cpu"
    return "cuda"


def to_model_prompt(record: PromptRecord, height: int, width: int) -> Prompt:
    """A manifest prompt as the tracker's Prompt; a mask must be at the video's resolution."""
    points = labels = box = mask = None
    if record.points is not None:
        table = np.asarray(record.points, dtype=np.float32)  # (P, 3): x, y, label
        points = np.ascontiguousarray(table[:, :2])  # (P, 2)
        labels = table[:, 2].astype(np.int32)  # (P,)
    if record.box is not None:
        box = np.asarray(record.box, dtype=np.float32)
    if record.mask is not None:
        if tuple(record.mask.size) != (height, width):
            raise PromptError(
                f"{record.video}: mask prompt of object {record.object_id} on frame {record.frame} has size "
                f"{list(record.mask.size)} but the video is {height}x{width}"
            )
        mask = decode_mask(record.mask.counts, height, width)
    return Prompt(
        frame_index=record.frame, object_id=record.object_id, points=points, point_labels=labels, box=box, mask=mask
    )


def video_seed(seed: int, video_id: str) -> int:
    """The seed of one video's random choices: the job's seed and the video, not the actor or the order."""
    return int(stable_hash(seed, video_id), 16) % (2**31)


def seed_everything(seed: int) -> None:
    """Seed the global RNGs a tracker may use (torch; OpenCV's, which GrabCut and RANSAC read)."""
    import cv2

    torch.manual_seed(seed)
    cv2.setRNGSeed(seed)


class _TimedFrames:
    """(frame index, frame) pairs of a whole video, with the time spent waiting on the decoder.

    Its length is the video's: the tracker reads it as the sequence length (SAM 2 scales pointer
    distances by it), exactly as it would for a list of frames.
    """

    def __init__(self, frames: Iterator[np.ndarray], num_frames: int) -> None:
        self._frames = frames
        self._num_frames = num_frames
        self.seconds = 0.0
        self.count = 0

    def __len__(self) -> int:
        return self._num_frames

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        while True:
            began = time.perf_counter()
            try:
                frame = next(self._frames)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - began
            yield self.count, frame
            self.count += 1


@dataclass(frozen=True)
class _ClipKeys:
    video_id: str
    video_uri: str
    clip_id: str
    timestamps: np.ndarray  # (num_frames,) each frame's presentation time from the stream's first, seconds


class _ClipRows:
    """Column buffers of one clip's masks/ and pointers/ rows, filled frame by frame."""

    def __init__(self, keys: _ClipKeys) -> None:
        self.keys = keys
        self.frame_index: list[int] = []
        self.object_id: list[int] = []
        self.score: list[float] = []
        self.iou: list[float] = []
        self.area: list[int] = []
        self.bbox: list[tuple[float, float, float, float]] = []
        self.height: list[int] = []
        self.width: list[int] = []
        self.rle: list[str] = []
        self.pointers: list[np.ndarray] = []
        self.concept: list[str | None] = []

    def add(self, result: FrameResult, frame_index: int) -> None:
        """Rows of one tracked frame; `frame_index` is its index in the video (the tracker numbers sampled frames)."""
        if not result.object_ids:
            return
        concepts = result.concepts if isinstance(result, ConceptFrameResult) else [None] * len(result.object_ids)
        self.concept += concepts
        masks = (result.mask_logits > 0).cpu().numpy()  # (N, H, W) bool
        scores = torch.sigmoid(result.object_score_logits.float()).cpu().numpy()  # (N,)
        ious = result.iou_predictions.float().cpu().numpy()  # (N,)
        pointers = result.object_pointers.float().cpu().numpy()  # (N, 256)
        for row, object_id in enumerate(result.object_ids):
            mask = masks[row]
            self.frame_index.append(frame_index)
            self.object_id.append(int(object_id))
            self.score.append(float(scores[row]))
            self.iou.append(float(ious[row]))
            self.area.append(int(mask_area(mask)))
            self.bbox.append(tuple(float(v) for v in mask_bbox(mask)))
            self.height.append(int(mask.shape[0]))
            self.width.append(int(mask.shape[1]))
            self.rle.append(encode_mask(mask))
            self.pointers.append(pointers[row])

    def __len__(self) -> int:
        return len(self.rle)

    @property
    def num_objects(self) -> int:
        return len(set(self.object_id))

    def _key_columns(self) -> dict[str, pa.Array]:
        n = len(self)
        keys = self.keys
        frame = np.asarray(self.frame_index, dtype=np.int32)
        object_id = np.asarray(self.object_id, dtype=np.int32)
        return {
            "video_id": pa.array([keys.video_id] * n, pa.string()),
            "video_uri": pa.array([keys.video_uri] * n, pa.string()),
            "clip_id": pa.array([keys.clip_id] * n, pa.string()),
            "frame_index": pa.array(frame, pa.int32()),
            "timestamp_s": pa.array(keys.timestamps[frame] if n else np.zeros(0), pa.float64()),
            "object_id": pa.array(object_id, pa.int32()),
            # A video is tracked in one pass, so an object's id is its track's id through the whole video.
            "track_id": pa.array(object_id.astype(np.int64), pa.int64()),
            "concept": pa.array(self.concept, pa.string()),
        }

    def masks_table(self) -> pa.Table:
        boxes = np.asarray(self.bbox, dtype=np.float32).reshape(-1)  # (n * 4,)
        columns = {
            **self._key_columns(),
            "score": pa.array(np.asarray(self.score, dtype=np.float32), pa.float32()),
            "iou_pred": pa.array(np.asarray(self.iou, dtype=np.float32), pa.float32()),
            "area": pa.array(np.asarray(self.area, dtype=np.int64), pa.int64()),
            "bbox": pa.FixedSizeListArray.from_arrays(pa.array(boxes, pa.float32()), 4),
            "height": pa.array(np.asarray(self.height, dtype=np.int32), pa.int32()),
            "width": pa.array(np.asarray(self.width, dtype=np.int32), pa.int32()),
            "rle": pa.array(self.rle, pa.string()),
        }
        return pa.table(columns, schema=MASKS_SCHEMA)

    def pointers_table(self, dtype: str) -> pa.Table:
        schema = pointers_schema(dtype)  # type: ignore[arg-type]
        values = np.asarray(self.pointers, dtype=np.float32).reshape(len(self), POINTER_DIM)  # (n, 256)
        flat = values.astype(np.float16 if dtype == "float16" else np.float32).reshape(-1)  # (n * 256,)
        value_type = schema.field("embedding").type.value_type
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(flat, value_type), POINTER_DIM)
        return pa.table({**self._key_columns(), "embedding": embedding}, schema=schema)


def _is_ray_system_error(exc: BaseException) -> bool:
    return isinstance(exc, ray.exceptions.RayError) and not isinstance(exc, ray.exceptions.RayTaskError)


def _error_fields(stage: str, exc: BaseException) -> dict[str, Any]:
    return {"error_stage": stage, "error_class": type(exc).__name__, "error_message": str(exc)[:2000]}


class _VideoRun:
    """One video of a unit being tracked: its clips, their rows and statuses."""

    def __init__(self, processor: UnitProcessor, unit: WorkUnit, video: VideoTask) -> None:
        self.processor = processor
        self.unit = unit
        self.video = video
        self.statuses: list[ClipStatus] = []
        self.rows: list[_ClipRows] = []  # rows of the ok clips, in order

    def status(self, clip_id: str, start: int, end: int, status: str, **values: Any) -> ClipStatus:
        return ClipStatus(
            video_id=self.video.video_id,
            video_uri=self.video.ref.uri,
            clip_id=clip_id,
            unit_id=self.unit.unit_id,
            start_frame=start,
            end_frame=end,
            status=status,
            model_name=self.unit.model.name,
            checkpoint_hash=self.unit.model.checkpoint_hash,
            device=self.processor.device,
            node_id=self.processor.node_id,
            **values,
        )

    def whole_video(self, status: str, reason: str, seconds: float = 0.0, end: int = 0, **values: Any) -> None:
        """One row for a video that was not cut into clips (skipped, unreadable, killed its actor)."""
        clip_id = video_clip_id(self.video.key, reason)
        self.statuses.append(self.status(clip_id, 0, end, status, seconds=seconds, **values))

    def run(self, local_copy: Callable[[], str]) -> None:
        began = time.perf_counter()
        video = self.video
        if video.mode == "skipped":
            self.whole_video("skipped", "skipped", error_stage="plan", error_message=video.reason)
            return
        try:
            local = local_copy()
            settings = self.processor.settings
            stream = open_video(
                local,
                prefetch=settings.prefetch_frames,
                prefetch_bytes=settings.prefetch_bytes,
                threads=self.processor.decoder_threads,
            )
        except (MemoryError, TransientIOError):
            raise
        except (DecodeError, ConfigError, OSError) as exc:
            self.whole_video("failed", "open", time.perf_counter() - began, **_error_fields("decode", exc))
            return
        with stream:
            sample = FrameSample.of(stream.timestamps, self.unit.sample_fps)
            self.track(stream.info, stream.frames(keep=sample.keep), began, sample, stream.timestamps)

    def track(
        self,
        info: VideoInfo,
        frames: Iterator[np.ndarray],
        began: float,
        sample: FrameSample,
        timestamps: np.ndarray,
    ) -> None:
        """Track the whole video in one pass, closing a clip's rows and status whenever its last frame is done.

        `frames` are the sampled ones (`sample`), which the tracker numbers 0, 1, 2, ...; rows get their
        absolute index and `timestamps`."""
        spans = clip_spans(info.num_frames, clip_length(self.unit.clip, info.fps))
        if not spans:
            error = DecodeError(self.video.ref.uri, DecodeErrorKind.EMPTY, "the video has no frames")
            self.whole_video("failed", "open", time.perf_counter() - began, **_error_fields("decode", error))
            return
        clip_ids = [make_clip_id(self.video.key, start, end) for start, end in spans]
        stage = "prompts"
        current = 0
        timed = _TimedFrames(frames, len(sample))
        clip_began, decode_before = began, 0.0
        display = {"rotation": info.rotation, "mirrored": info.mirrored, "sample_fps": sample.fps}
        rows = _ClipRows(_ClipKeys(self.video.video_id, self.video.ref.uri, clip_ids[0], timestamps))

        def close_clip() -> None:
            nonlocal current, clip_began, decode_before, rows
            now = time.perf_counter()
            decode = timed.seconds - decode_before + (clip_began - began if current == 0 else 0.0)
            start, end = spans[current]
            self.statuses.append(
                self.status(
                    clip_ids[current],
                    start,
                    end,
                    "ok",
                    frames=sample.count_in(start, end),
                    tracked_frames=sample.listed_in(start, end),
                    objects=rows.num_objects,
                    mask_rows=len(rows),
                    seconds=now - clip_began,
                    decode_seconds=decode,
                    track_seconds=now - clip_began - decode,
                    **display,
                )
            )
            if len(rows):
                self.rows.append(rows)
            current += 1
            clip_began, decode_before = now, timed.seconds
            if current < len(spans):
                rows = _ClipRows(_ClipKeys(self.video.video_id, self.video.ref.uri, clip_ids[current], timestamps))

        try:
            prompts = self.processor.prompts_of(self.video, info, sample)
            stage = "track"
            tracker = self.processor.tracker_for(self.video)
            seed_everything(video_seed(self.unit.seed, self.video.video_id))
            results = (
                self.processor.concept_loop().track(timed, prompts, concepts=self.video.concepts)
                if self.video.mode == "concept"
                else tracker.track(timed, prompts)
            )
            with torch.inference_mode():
                for result in results:
                    frame_index = sample.absolute(result.frame_index)
                    while frame_index >= spans[current][1]:
                        close_clip()
                    rows.add(result, frame_index)
            while current < len(spans):
                close_clip()
        except (MemoryError, torch.OutOfMemoryError):
            raise  # a resource problem, not the video's fault: let Ray restart the actor and retry
        except Exception as exc:
            if _is_ray_system_error(exc) or isinstance(exc, TransientIOError):
                raise
            stage = "decode" if isinstance(exc, DecodeError) else stage
            if stage == "track":
                log.error("video %s failed in clip %d:\n%s", self.video.ref.uri, current, traceback.format_exc())
            failed = _error_fields(stage, exc)
            for (start, end), clip_id in list(zip(spans, clip_ids, strict=True))[current:]:
                self.statuses.append(self.status(clip_id, start, end, "failed", **failed, **display))


class UnitProcessor:
    """Tracks work units with a given tracker and commits them. Used by UnitTracker; testable without Ray."""

    def __init__(
        self,
        tracker: FrameTracker,
        settings: ActorSettings,
        device: str,
        node_id: str | None,
        auto_tracker: FrameTracker | None = None,
        concept_loop: ConceptLoop | None = None,
    ) -> None:
        self.tracker = tracker
        self.auto_tracker = auto_tracker  # tracks videos planned in mode `auto`; None: such videos fail
        self.settings = settings
        self.device = device
        self.node_id = node_id
        self.decoder_threads = max(1, int(settings.num_cpus))
        self._concept_loop = concept_loop  # None: made from `tracker` at the first concept video

    def concept_loop(self) -> ConceptLoop:
        """The concept-mode loop over this actor's tracker (its detector), made at the first concept video."""
        if self._concept_loop is None:
            self._concept_loop = build_concept_loop(self.tracker)
        return self._concept_loop

    def tracker_for(self, video: VideoTask) -> FrameTracker:
        """The prompted tracker, or the automatic one for a video planned in mode `auto` (concept mode wraps
        the prompted one: `concept_loop`)."""
        if video.mode != "auto":
            return self.tracker
        if self.auto_tracker is None:
            raise ConfigError(
                f"video {video.ref.uri} is planned in automatic mode but this actor has no automatic tracker "
                f"(auto settings given: {self.settings.model.auto is not None})"
            )
        return self.auto_tracker

    def prompts_of(self, video: VideoTask, info: VideoInfo, sample: FrameSample | None = None) -> list[Prompt]:
        """The video's prompts as the tracker's, numbered as the tracker sees the frames (`sample`); a prompt on
        a frame sampling skips is a PromptError naming the nearest tracked frames."""
        if sample is None:
            sample = FrameSample.every_frame(info.num_frames)
        beyond = [p for p in video.prompts if p.frame >= info.num_frames]
        if beyond:
            log.warning(
                "%s: %d prompt(s) on frames >= %d (the video's length) are ignored, e.g. object %d on frame %d",
                video.ref.uri,
                len(beyond),
                info.num_frames,
                beyond[0].object_id,
                beyond[0].frame,
            )
        prompts = []
        for record in video.prompts:
            if record.frame >= info.num_frames:
                continue
            prompt = to_model_prompt(record, info.height, info.width)
            what = f"{video.ref.uri}: the prompt of object {record.object_id}"
            prompts.append(replace(prompt, frame_index=sample.position(record.frame, what)))
        return prompts

    def fetch(self, uri: str, workdir: str) -> str:
        """A local path of the video: itself on a local disk, else downloaded once (one GET) into `workdir`."""
        fs, path = fsspec.core.url_to_fs(uri, **self.settings.storage_options)
        protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
        if "file" in protocols:
            return path
        local = os.path.join(workdir, stable_hash(uri) + os.path.splitext(path)[1])
        try:
            fs.get_file(path, local)
        except FileNotFoundError as exc:
            raise DecodeError(uri, DecodeErrorKind.MISSING, "no such file") from exc
        return local

    def process(self, unit: WorkUnit, *, was_failed: bool = False) -> UnitSummary:
        """Track every video of `unit` in order, write its files whole, then commit it."""
        began = time.perf_counter()
        output, options, limits = self.settings.output, self.settings.storage_options, self.settings.unit
        previous = read_attempts(output, unit.unit_id, options)
        attempts = previous.after_death() if previous.started else Attempts(started=1)
        if previous.started:
            log.warning("unit %s: attempt %d after an earlier one died (%s)", unit.unit_id, attempts.started, previous)
        write_attempts(output, unit.unit_id, attempts, options)
        careful = attempts.started > 1  # record each video before it starts, to find one that kills the actor
        given_up = {
            index
            for index in range(len(unit.videos))
            if attempts.strikes.get(index, 0) >= limits.poison_strikes or attempts.started > limits.max_attempts
        }
        wanted = [None if i in given_up or v.mode == "skipped" else v.ref.uri for i, v in enumerate(unit.videos)]
        runs: list[_VideoRun] = []
        with _Downloads(self, wanted) as downloads:
            for index, video in enumerate(unit.videos):
                run = _VideoRun(self, unit, video)
                runs.append(run)
                if index in given_up:
                    strikes = attempts.strikes.get(index, 0)
                    run.whole_video(
                        "failed",
                        "actor-died",
                        error_stage="actor",
                        error_class="ActorDied",
                        error_message=_death_message(attempts, strikes, limits),
                    )
                    continue
                if careful:
                    write_attempts(output, unit.unit_id, replace(attempts, current=index), options)
                _crash_if_asked(video.ref.uri)
                run.run(lambda index=index: downloads.get(index))
                downloads.done(index)
        statuses = self._write(unit, runs)
        commit_unit(output, unit.unit_id, statuses, options, self.settings.compression, was_failed=was_failed)
        clear_attempts(output, unit.unit_id, options)
        return UnitSummary.of(unit.unit_id, statuses, time.perf_counter() - began)

    def _write(self, unit: WorkUnit, runs: list[_VideoRun]) -> list[ClipStatus]:
        """Write the unit's masks/ and pointers/ files (when it has rows); the statuses with their write share."""
        settings = self.settings
        clips = [rows for run in runs for rows in run.rows]
        statuses = [status for run in runs for status in run.statuses]
        total = sum(len(rows) for rows in clips)
        if not total:
            return statuses
        began = time.perf_counter()
        files = {"masks_file": unit_file("masks", unit.unit_id), "pointers_file": unit_file("pointers", unit.unit_id)}
        masks = pa.concat_tables([rows.masks_table() for rows in clips])
        write_table(masks, join(settings.output, files["masks_file"]), settings.storage_options, settings.compression)
        pointers = pa.concat_tables([rows.pointers_table(settings.pointer_dtype) for rows in clips])
        write_table(
            pointers, join(settings.output, files["pointers_file"]), settings.storage_options, settings.compression
        )
        seconds = time.perf_counter() - began
        return [
            replace(s, write_seconds=seconds * s.mask_rows / total, **files) if s.status == "ok" and s.mask_rows else s
            for s in statuses
        ]


class _Downloads:
    """Local copies of a unit's videos: the next one is downloaded while the current one is tracked.

    `uris[i]` is None for a video that is not tracked (skipped, given up), which is never fetched.
    Each copy is deleted once its video is done, so a unit holds at most two on disk.
    """

    def __init__(self, processor: UnitProcessor, uris: list[str | None]) -> None:
        self._processor = processor
        self._uris = uris
        self._workdir = tempfile.mkdtemp(prefix="batchtrack-unit-")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchtrack-download")
        self._pending: dict[int, Future[str]] = {}

    def _start(self, index: int) -> Future[str] | None:
        if index >= len(self._uris) or self._uris[index] is None:
            return None
        if index not in self._pending:
            uri = self._uris[index]
            self._pending[index] = self._pool.submit(self._processor.fetch, str(uri), self._workdir)
        return self._pending[index]

    def get(self, index: int) -> str:
        """The local path of video `index` (waiting for its download), starting the next tracked one's."""
        future = self._start(index)
        assert future is not None, f"video {index} of the unit is not tracked"
        following = next((i for i in range(index + 1, len(self._uris)) if self._uris[i] is not None), None)
        if following is not None:
            self._start(following)
        return future.result()

    def done(self, index: int) -> None:
        future = self._pending.pop(index, None)
        if future is not None and future.done() and future.exception() is None:
            path = future.result()
            if path.startswith(self._workdir):
                with contextlib.suppress(OSError):
                    os.remove(path)

    def __enter__(self) -> _Downloads:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._workdir, ignore_errors=True)


def _death_message(attempts: Attempts, strikes: int, limits: UnitConfig) -> str:
    if strikes >= limits.poison_strikes:
        return f"its actor process died {strikes} times while tracking this video (e.g. a decoder crash)"
    return f"the unit's actor died {attempts.started - 1} times before the unit could be committed"


def _crash_if_asked(uri: str) -> None:
    marker = os.environ.get(CRASH_ENV)
    if marker and marker in uri:
        log.error("%s=%s: killing this actor process on %s", CRASH_ENV, marker, uri)
        os._exit(13)


class UnitTracker:
    """Ray Data callable class: loads the tracker once, at its first unit to track; `__call__` tracks a batch of units.

    Units an earlier run committed pass through without the model, so resuming a finished job loads no weights.
    """

    def __init__(self, settings: ActorSettings, tally: ray.actor.ActorHandle | None = None) -> None:
        # Size torch's intra-op pool to this actor's CPUs so actors on one node do not oversubscribe it.
        torch.set_num_threads(max(1, int(settings.num_cpus)))
        self.settings = settings
        self._tally = tally  # the job's JobTally: told of each unit at its commit, for the driver's progress
        self._processor: UnitProcessor | None = None
        self._metrics: TrackerMetrics | None = None

    @property
    def processor(self) -> UnitProcessor:
        if self._processor is None:
            settings = self.settings
            device = choose_device(settings.num_gpus)
            node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
            trackers = build_trackers(settings.model, device, settings.storage_options)
            self._processor = UnitProcessor(trackers.prompted, settings, device, node_id, trackers.auto)
        return self._processor

    @property
    def metrics(self) -> TrackerMetrics:
        if self._metrics is None:
            from batchtrack.pipeline.metrics import TrackerMetrics

            self._metrics = TrackerMetrics()
        return self._metrics

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        summaries = []
        for text, committed, was_failed in zip(batch["unit"], batch["committed"], batch["was_failed"], strict=True):
            unit = WorkUnit.from_json(str(text))
            if committed:
                summary = UnitSummary(unit.unit_id, videos=len(unit.videos), resumed=True)
            else:
                summary = self.processor.process(unit, was_failed=bool(was_failed))
                self.metrics.record(summary)
            if self._tally is not None:
                self._tally.committed.remote(summary)
            summaries.append(json_summary(summary))
        return {"summary": np.asarray(summaries, dtype=object)}


def json_summary(summary: UnitSummary) -> str:
    return json.dumps(asdict(summary), separators=(",", ":"))
