"""A small job output written by hand to the work-unit contract, with the truth it encodes.

    masks/<unit>.parquet, pointers/<unit>.parquet   one row per (video, frame, object)
    clips/<unit>.parquet                            written last: the unit's commit

Units:
  u-one    video A: 2 ok clips [0, 6) and [6, 12); track 1 on every frame; track 2 from frame 3, absent on
           frames 7-8 (score 0.2, empty mask) and hidden on frame 9 (score 0.4, non-empty mask);
           tracks 1 and 2 overlap on frames 3-5 with track 2 the more confident.
  u-batch  videos B (1 ok clip [0, 5), track 7, empty on frame 4 with score 0.8) and
           C (1 ok clip [0, 4), no objects: no rows).
  u-failed video D: a failed clip, no masks/pointers files.
  u-open   masks/pointers rows for video A (track 99) without a clips/ file: uncommitted, never read.
Embeddings: track t's pointers are its own random direction plus small noise (float16).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchtrack.io.rle import encode_mask, mask_area, mask_bbox
from batchtrack.io.schema import CLIPS_SCHEMA, MASKS_SCHEMA, POINTER_DIM, pointers_schema

HEIGHT, WIDTH = 32, 40
FPS = 10.0
VIDEO_A, VIDEO_B, VIDEO_C, VIDEO_D = "a" * 16, "b" * 16, "c" * 16, "d" * 16
UNCOMMITTED_TRACK = 99


@dataclass
class Truth:
    """What the fake output holds: per (video, frame, track) the mask, score and presence."""

    masks: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict)
    scores: dict[tuple[str, int, int], float] = field(default_factory=dict)
    directions: dict[int, np.ndarray] = field(default_factory=dict)
    num_frames: dict[str, int] = field(default_factory=dict)
    uris: dict[str, str] = field(default_factory=dict)

    def present(self, key: tuple[str, int, int]) -> bool:
        return self.scores[key] > 0.5 and bool(self.masks[key].any())

    def frame(self, video_id: str, frame: int, present_only: bool = True) -> dict[int, np.ndarray]:
        return {
            track: mask
            for (video, index, track), mask in self.masks.items()
            if video == video_id and index == frame and (self.present((video, index, track)) or not present_only)
        }


def _box(x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y : y + h, x : x + w] = True
    return mask


def _track_frames(track: int, frame: int) -> tuple[np.ndarray, float] | None:
    """The (mask, score) of a track on a frame, or None where the track has no row."""
    if track == 1:
        return _box(2 + frame, 4, 10, 8), 0.95
    if track == 2 and frame >= 3:
        if frame in (7, 8):
            return np.zeros((HEIGHT, WIDTH), dtype=bool), 0.2
        return _box(8 + frame, 6, 9, 12), 0.4 if frame == 9 else 0.99
    if track == 7:  # confident but empty on its last frame: rows, not present
        return (np.zeros((HEIGHT, WIDTH), dtype=bool) if frame == 4 else _box(20 - 2 * frame, 14, 6, 6)), 0.8
    if track == UNCOMMITTED_TRACK:
        return _box(0, 0, 5, 5), 0.9
    return None


def _clip_id(video_id: str, start: int) -> str:
    return f"{video_id[:12]}{start:04d}"


def _rows(video_id: str, uri: str, tracks: list[int], start: int, end: int, truth: Truth | None,
          rng: np.random.Generator, directions: dict[int, np.ndarray]) -> list[dict[str, Any]]:
    rows = []
    for frame in range(start, end):
        for track in tracks:
            found = _track_frames(track, frame)
            if found is None:
                continue
            mask, score = found
            embedding = directions[track] + 0.05 * rng.standard_normal(POINTER_DIM)
            rows.append({
                "video_id": video_id, "video_uri": uri, "clip_id": _clip_id(video_id, start),
                "frame_index": frame, "timestamp_s": frame / FPS, "object_id": track, "track_id": track,
                "score": score, "iou_pred": 0.9, "area": mask_area(mask), "bbox": list(mask_bbox(mask)),
                "height": HEIGHT, "width": WIDTH, "rle": encode_mask(mask), "embedding": embedding.tolist(),
            })
            if truth is not None:
                truth.masks[(video_id, frame, track)] = mask
                truth.scores[(video_id, frame, track)] = score
    return rows


def _clip_row(unit: str, video_id: str, uri: str, start: int, end: int, status: str, rows: int) -> dict[str, Any]:
    failed = status == "failed"
    return {
        "unit_id": unit, "video_id": video_id, "video_uri": uri, "clip_id": _clip_id(video_id, start),
        "start_frame": start, "end_frame": end, "status": status, "frames": 0 if failed else end - start,
        "objects": 0, "mask_rows": rows, "seconds": 0.1, "decode_seconds": 0.0, "track_seconds": 0.0,
        "write_seconds": 0.0, "error_stage": "decode" if failed else None,
        "error_class": "DecodeError" if failed else None, "error_message": "truncated" if failed else None,
        "model_name": "tiny-synthetic", "checkpoint_hash": "builtin", "masks_file": None, "pointers_file": None,
        "device": "cpu", "node_id": "n",
    }


def _write(fs: fsspec.AbstractFileSystem, path: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    fs.pipe_file(path, buffer.getvalue())


def _write_unit(fs: fsspec.AbstractFileSystem, root: str, unit: str, rows: list[dict[str, Any]],
                clips: list[dict[str, Any]] | None) -> None:
    if rows:
        masks = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "embedding"} for r in rows],
                                     schema=MASKS_SCHEMA)
        pointer_fields = [f.name for f in pointers_schema()]
        pointers = pa.Table.from_pylist([{k: r.get(k) for k in pointer_fields} for r in rows], schema=pointers_schema())
        _write(fs, f"{root}/masks/{unit}.parquet", masks)
        _write(fs, f"{root}/pointers/{unit}.parquet", pointers)
    if clips is not None:
        has_unit = "unit_id" in CLIPS_SCHEMA.names  # the work-unit contract adds it
        schema = CLIPS_SCHEMA if has_unit else CLIPS_SCHEMA.append(pa.field("unit_id", pa.string()))
        _write(fs, f"{root}/clips/{unit}.parquet", pa.Table.from_pylist(clips, schema=schema))


def write_fake_output(output: str, storage_options: Mapping[str, Any] | None = None,
                      video_uris: Mapping[str, str] | None = None) -> Truth:
    """Write the fake output under `output` (folder or fsspec URI); return what it holds (committed only)."""
    fs, root = fsspec.core.url_to_fs(output, **dict(storage_options or {}))
    root = root.rstrip("/")
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "file" in protocols:
        for folder in ("masks", "pointers", "clips"):
            fs.makedirs(f"{root}/{folder}", exist_ok=True)
    rng = np.random.default_rng(0)
    directions = {t: rng.standard_normal(POINTER_DIM) for t in (1, 2, 7, UNCOMMITTED_TRACK)}
    truth = Truth(directions=directions, num_frames={VIDEO_A: 12, VIDEO_B: 5, VIDEO_C: 4, VIDEO_D: 0})
    uris = {v: f"/videos/{v}.mp4" for v in (VIDEO_A, VIDEO_B, VIDEO_C, VIDEO_D)} | dict(video_uris or {})
    truth.uris = uris

    first = _rows(VIDEO_A, uris[VIDEO_A], [1, 2], 0, 6, truth, rng, directions)
    second = _rows(VIDEO_A, uris[VIDEO_A], [1, 2], 6, 12, truth, rng, directions)
    _write_unit(fs, root, "u-one", first + second, [
        _clip_row("u-one", VIDEO_A, uris[VIDEO_A], 0, 6, "ok", len(first)),
        _clip_row("u-one", VIDEO_A, uris[VIDEO_A], 6, 12, "ok", len(second)),
    ])
    batch = _rows(VIDEO_B, uris[VIDEO_B], [7], 0, 5, truth, rng, directions)
    _write_unit(fs, root, "u-batch", batch, [
        _clip_row("u-batch", VIDEO_B, uris[VIDEO_B], 0, 5, "ok", len(batch)),
        _clip_row("u-batch", VIDEO_C, uris[VIDEO_C], 0, 4, "ok", 0),
    ])
    _write_unit(fs, root, "u-failed", [], [_clip_row("u-failed", VIDEO_D, uris[VIDEO_D], 0, 8, "failed", 0)])
    uncommitted = _rows(VIDEO_A, uris[VIDEO_A], [UNCOMMITTED_TRACK], 0, 12, None, rng, directions)
    _write_unit(fs, root, "u-open", uncommitted, None)
    return truth
