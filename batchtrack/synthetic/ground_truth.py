"""Ground-truth mask files: `NAME.gt.parquet` beside `NAME.mp4`.

One row per (frame, object), including frames where the object is not visible (empty mask):
frame_index int32, object_id int32, height int32, width int32, rle string (COCO compressed counts).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchtrack.io.rle import decode_mask, encode_mask

GT_SUFFIX = ".gt.parquet"

GT_SCHEMA = pa.schema(
    [
        pa.field("frame_index", pa.int32()),
        pa.field("object_id", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("rle", pa.string()),
    ]
)


@dataclass(frozen=True)
class GroundTruth:
    """A video's ground truth, as compressed masks keyed by (frame_index, object_id)."""

    height: int
    width: int
    num_frames: int
    object_ids: list[int]  # ascending
    rles: dict[tuple[int, int], str]

    def mask(self, frame_index: int, object_id: int) -> np.ndarray:
        """(H, W) bool mask; empty if there is no row for this frame and object."""
        counts = self.rles.get((frame_index, object_id))
        if counts is None:
            return np.zeros((self.height, self.width), dtype=bool)
        return decode_mask(counts, self.height, self.width)


def ground_truth_path(video_path: Path) -> Path:
    """`dir/NAME.mp4` -> `dir/NAME.gt.parquet`."""
    return video_path.with_name(video_path.stem + GT_SUFFIX)


GtRow = tuple[int, int, int, int, str]  # frame_index, object_id, height, width, rle


def frame_rows(frame_index: int, object_ids: list[int], masks: np.ndarray) -> list[GtRow]:
    """Ground-truth rows of one frame from its (N, H, W) bool masks in `object_ids` order."""
    height, width = masks.shape[1:]
    return [
        (frame_index, object_id, height, width, encode_mask(mask))
        for object_id, mask in zip(object_ids, masks, strict=True)
    ]


def write_ground_truth(path: Path, rows: Iterable[GtRow]) -> int:
    """Write ground-truth rows to a Parquet file; returns the row count."""
    columns: list[list[Any]] = [[] for _ in GT_SCHEMA.names]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    table = pa.table(dict(zip(GT_SCHEMA.names, columns, strict=True)), schema=GT_SCHEMA)
    pq.write_table(table, path)
    return table.num_rows


def table_to_ground_truth(table: pa.Table) -> GroundTruth:
    """Build a `GroundTruth` from a table with the GT columns."""
    if table.num_rows == 0:
        return GroundTruth(height=0, width=0, num_frames=0, object_ids=[], rles={})
    frames = table.column("frame_index").to_pylist()
    objects = table.column("object_id").to_pylist()
    rles = dict(zip(zip(frames, objects, strict=True), table.column("rle").to_pylist(), strict=True))
    return GroundTruth(
        height=int(table.column("height")[0].as_py()),
        width=int(table.column("width")[0].as_py()),
        num_frames=max(frames) + 1,
        object_ids=sorted(set(objects)),
        rles=rles,
    )


def read_ground_truth(path: Path | str) -> GroundTruth:
    """Read a local `NAME.gt.parquet` file."""
    return table_to_ground_truth(pq.read_table(path, schema=GT_SCHEMA))
