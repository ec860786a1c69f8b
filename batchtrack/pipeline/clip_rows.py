"""ClipRows: one clip's masks/ and pointers/ rows, filled frame by frame from the tracker's results.

Each tracked object on a frame is one row: its mask as RLE with area and box, its scores, and its object pointer
(the tracker's 256-d summary of the object) in the pointers/ table. A concept-mode row also names its track's
concept. The columns follow io/schema.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from batchtrack.io.rle import encode_mask, mask_area, mask_bbox
from batchtrack.io.schema import MASKS_SCHEMA, POINTER_DIM, pointers_schema
from batchtrack.model.modes.concept import ConceptFrameResult
from batchtrack.model.types import FrameResult


@dataclass(frozen=True)
class ClipKeys:
    """What every row of one clip shares: its video, its id, and the video's frame times."""

    video_id: str
    video_uri: str
    clip_id: str
    timestamps: np.ndarray  # (num_frames,) each frame's presentation time from the stream's first, seconds


class ClipRows:
    """Column buffers of one clip's masks/ and pointers/ rows, filled frame by frame."""

    def __init__(self, keys: ClipKeys) -> None:
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
