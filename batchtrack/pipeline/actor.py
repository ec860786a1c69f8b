"""ClipTracker: the Ray Data actor that tracks clips. One model per actor, loaded once.

Each call gets clip rows (a JSON `spec` column), decodes the clip's frames inside the actor (raw
frames never cross the object store), runs the tracker, writes the clip's masks/ and pointers/ files
whole, then its commit record, and returns one small status row per clip. A clip planned in mode
`auto` (no prompts on its frames) runs the same loaded model wrapped in `AutoTracker`. Bad input becomes a
`failed` row; resource and Ray system errors propagate so Ray restarts the actor and retries.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch

from batchtrack.config import AutoConfig, ModelConfig
from batchtrack.errors import ConfigError, DecodeError, PromptError, TransientIOError
from batchtrack.io.prompts import PromptRecord
from batchtrack.io.rle import decode_mask, encode_mask, mask_area, mask_bbox
from batchtrack.io.schema import MASKS_SCHEMA, POINTER_DIM, pointers_schema
from batchtrack.io.sink import clip_file, join, write_table
from batchtrack.io.video import iter_frames
from batchtrack.model.types import FrameResult, Prompt
from batchtrack.pipeline.commit import ClipStatus, CommitRecord, write_commit
from batchtrack.pipeline.models import FrameTracker, build_auto_tracker, load_tracker, supports_auto
from batchtrack.pipeline.plan import ClipSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActorSettings:
    """What every ClipTracker of a job shares (picklable; passed as a constructor argument)."""

    model: ModelConfig
    output: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    pointer_dtype: str = "float16"
    compression: str = "zstd"
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    prefetch_frames: int = 8
    auto: AutoConfig | None = None  # automatic-mode settings; None when no clip of the job is planned `auto`


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


class _TimedFrames:
    """(absolute index, frame) pairs from a decoder, with the time spent waiting on it.

    Its length is the clip's planned length: the tracker reads it as the clip length (SAM 2 scales
    pointer distances by it), exactly as it would for a list of frames.
    """

    def __init__(self, frames: Iterator[np.ndarray], start: int, num_frames: int) -> None:
        self._frames = frames
        self._start = start
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
            yield self._start + self.count, frame
            self.count += 1


class _ClipRows:
    """Column buffers of one clip's masks/ and pointers/ rows, filled frame by frame."""

    def __init__(self, spec: ClipSpec) -> None:
        self.spec = spec
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
        self.frames: set[int] = set()

    def add(self, result: FrameResult) -> None:
        masks = (result.mask_logits > 0).cpu().numpy()  # (N, H, W) bool
        scores = torch.sigmoid(result.object_score_logits.float()).cpu().numpy()  # (N,)
        ious = result.iou_predictions.float().cpu().numpy()  # (N,)
        pointers = result.object_pointers.float().cpu().numpy()  # (N, 256)
        self.frames.add(result.frame_index)
        for row, object_id in enumerate(result.object_ids):
            mask = masks[row]
            self.frame_index.append(result.frame_index)
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

    def _keys(self) -> dict[str, pa.Array]:
        n = len(self)
        spec = self.spec
        frame = np.asarray(self.frame_index, dtype=np.int32)
        return {
            "video_id": pa.array([spec.video_id] * n, pa.string()),
            "video_uri": pa.array([spec.video_uri] * n, pa.string()),
            "clip_id": pa.array([spec.clip_id] * n, pa.string()),
            "frame_index": pa.array(frame, pa.int32()),
            "timestamp_s": pa.array(frame / spec.fps if spec.fps > 0 else np.zeros(n), pa.float64()),
            "object_id": pa.array(np.asarray(self.object_id, dtype=np.int32), pa.int32()),
            # Prompted objects keep their id across clips; stitching of automatic tracks rewrites this.
            "track_id": pa.array(np.asarray(self.object_id, dtype=np.int64), pa.int64()),
        }

    def masks_table(self) -> pa.Table:
        boxes = np.asarray(self.bbox, dtype=np.float32).reshape(-1)  # (n * 4,)
        columns = {
            **self._keys(),
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
        columns = {**self._keys(), "embedding": embedding}
        return pa.table(columns, schema=schema)


def _is_ray_system_error(exc: BaseException) -> bool:
    return isinstance(exc, ray.exceptions.RayError) and not isinstance(exc, ray.exceptions.RayTaskError)


class ClipProcessor:
    """Tracks one clip with a given tracker and commits it. Used by ClipTracker; testable without Ray."""

    def __init__(
        self,
        tracker: FrameTracker,
        settings: ActorSettings,
        device: str,
        node_id: str | None,
        auto_tracker: FrameTracker | None = None,
    ) -> None:
        self.tracker = tracker
        self.auto_tracker = auto_tracker  # tracks clips planned in mode `auto`; None: such clips fail
        self.settings = settings
        self.device = device
        self.node_id = node_id

    def tracker_for(self, spec: ClipSpec) -> FrameTracker:
        """The prompted tracker, or the automatic one for a clip planned in mode `auto`."""
        if spec.mode != "auto":
            return self.tracker
        if self.auto_tracker is None:
            raise ConfigError(
                f"clip {spec.clip_id} is planned in automatic mode but this actor has no automatic tracker "
                f"(model {spec.model.name!r}, auto settings given: {self.settings.auto is not None})"
            )
        return self.auto_tracker

    def _status(self, spec: ClipSpec, status: str, **values: Any) -> ClipStatus:
        return ClipStatus.for_clip(spec, status, device=self.device, node_id=self.node_id, **values)

    def process(self, spec: ClipSpec) -> ClipStatus:
        """Track one clip and commit it; failures come back as `failed` rows, never half-written commits."""
        began = time.perf_counter()
        stage = "track"
        try:
            tracker = self.tracker_for(spec)
            stage = "prompts"
            prompts = [to_model_prompt(p, spec.height, spec.width) for p in spec.prompts]
            stage = "decode"
            frames = _TimedFrames(
                iter_frames(
                    spec.video_uri,
                    spec.start,
                    spec.end,
                    storage_options=self.settings.storage_options,
                    prefetch=self.settings.prefetch_frames,
                ),
                spec.start,
                spec.num_frames,
            )
            stage = "track"
            rows = _ClipRows(spec)
            with torch.inference_mode():
                for result in tracker.track(frames, prompts):
                    rows.add(result)
            tracked = time.perf_counter()
            stage = "write"
            status = self._write(spec, rows, frames, began, tracked)
        except (MemoryError, torch.OutOfMemoryError):
            raise  # a resource problem, not the clip's fault: let Ray restart the actor and retry
        except DecodeError as exc:
            return self._failed(spec, "decode", exc, began)
        except PromptError as exc:
            return self._failed(spec, "prompts", exc, began)
        except ConfigError as exc:
            return self._failed(spec, stage, exc, began)
        except TransientIOError as exc:
            return self._failed(spec, "write", exc, began)
        except Exception as exc:
            if _is_ray_system_error(exc):
                raise
            log.error("clip %s of %s failed in %s:\n%s", spec.clip_id, spec.video_uri, stage, traceback.format_exc())
            return self._failed(spec, stage, exc, began)
        return status

    def _failed(self, spec: ClipSpec, stage: str, exc: BaseException, began: float) -> ClipStatus:
        return self._status(
            spec,
            "failed",
            seconds=time.perf_counter() - began,
            error_stage=stage,
            error_class=type(exc).__name__,
            error_message=str(exc)[:2000],
        )

    def _write(self, spec: ClipSpec, rows: _ClipRows, frames: _TimedFrames, began: float, tracked: float) -> ClipStatus:
        settings = self.settings
        files = {"masks": clip_file("masks", spec.clip_id), "pointers": clip_file("pointers", spec.clip_id)}
        masks_uri = join(settings.output, files["masks"])
        pointers_uri = join(settings.output, files["pointers"])
        write_table(rows.masks_table(), masks_uri, settings.storage_options, settings.compression)
        write_table(rows.pointers_table(settings.pointer_dtype), pointers_uri, settings.storage_options,
                    settings.compression)
        written = time.perf_counter()
        status = self._status(
            spec,
            "ok",
            frames=frames.count,
            objects=len(set(rows.object_id)),
            mask_rows=len(rows),
            seconds=written - began,
            decode_seconds=frames.seconds,
            track_seconds=tracked - began - frames.seconds,
            write_seconds=written - tracked,
            masks_file=files["masks"],
            pointers_file=files["pointers"],
        )
        record = CommitRecord(clip=status, files=files, rows={"masks": len(rows), "pointers": len(rows)})
        write_commit(settings.output, record, settings.storage_options)  # last: the clip is now done
        return status


class ClipTracker:
    """Ray Data callable class: `__init__` loads the tracker once; `__call__` tracks a batch of clips."""

    def __init__(self, settings: ActorSettings) -> None:
        # Size torch's intra-op pool to this actor's CPUs so actors on one node do not oversubscribe it.
        torch.set_num_threads(max(1, int(settings.num_cpus)))
        device = choose_device(settings.num_gpus)
        node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        tracker = load_tracker(settings.model, device)
        auto = None
        if settings.auto is not None and supports_auto(settings.model.name):
            auto = build_auto_tracker(tracker, settings.auto, settings.model.name, settings.storage_options)
        self.processor = ClipProcessor(tracker, settings, device, node_id, auto)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [self.processor.process(ClipSpec.from_json(str(text))).to_json() for text in batch["spec"]]
        return {"clip": np.asarray(rows, dtype=object)}
