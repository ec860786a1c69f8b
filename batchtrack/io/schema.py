"""The Parquet schemas of a job's output: the single source of truth for masks/, pointers/ and clips/.

masks/    one row per (frame, object): a COCO-RLE mask with its scores and box; `concept` names the noun
          phrase a concept-mode track answers (null for an object given by a visual prompt or found in
          automatic mode).
pointers/ one row per (frame, object): the same keys plus the 256-d object-pointer embedding.
clips/    one row per clip: status (ok / failed / skipped), counts, timings, the error and the model;
          one file per work unit, written last: it is the unit's commit.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa

POINTER_DIM = 256
CLIP_STATUSES = ("ok", "failed", "skipped")


def _field(name: str, dtype: pa.DataType, doc: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, dtype, nullable=nullable, metadata={"description": doc})


_KEY_FIELDS = [
    _field("video_id", pa.string(), "Stable 16-hex id of the video (hash of URI, size, ETag/mtime)."),
    _field("video_uri", pa.string(), "URI of the source video."),
    _field(
        "clip_id",
        pa.string(),
        "Deterministic 16-hex id of the clip (video, span, model, the video's prompts and concepts).",
    ),
    _field("frame_index", pa.int32(), "Frame index, absolute in the video."),
    _field(
        "timestamp_s",
        pa.float64(),
        "The frame's own presentation time in seconds, from the stream's first frame (exact for variable rates).",
    ),
    _field("object_id", pa.int32(), "Object id in the video (the prompt's object_id, or automatic mode's)."),
    _field("track_id", pa.int64(), "Video-level track id, final when written (= object_id: tracks span clips)."),
    _field(
        "concept",
        pa.string(),
        "Noun phrase of a concept-mode track (--text / a manifest's text line); null for visual prompts and "
        "automatic mode.",
        nullable=True,
    ),
]

MASKS_SCHEMA = pa.schema(
    [
        *_KEY_FIELDS,
        _field("score", pa.float32(), "Object presence probability: sigmoid of the object-score logit."),
        _field("iou_pred", pa.float32(), "The decoder's predicted IoU of the mask."),
        _field("area", pa.int64(), "Mask area in pixels."),
        _field("bbox", pa.list_(pa.float32(), 4), "Mask bounding box [x, y, w, h] in pixels; zeros if empty."),
        _field("height", pa.int32(), "Mask height (video resolution)."),
        _field("width", pa.int32(), "Mask width (video resolution)."),
        _field("rle", pa.string(), "COCO compressed RLE counts (pycocotools-compatible)."),
    ],
    metadata={"batchtrack.table": "masks"},
)


def pointers_schema(dtype: Literal["float32", "float16"] = "float16") -> pa.Schema:
    """Schema of pointers/: the mask keys plus the object-pointer embedding stored as `dtype`."""
    value_type = pa.float16() if dtype == "float16" else pa.float32()
    return pa.schema(
        [
            *_KEY_FIELDS,
            _field("embedding", pa.list_(value_type, POINTER_DIM), f"Object pointer ({POINTER_DIM}-d)."),
        ],
        metadata={"batchtrack.table": "pointers"},
    )


CLIPS_SCHEMA = pa.schema(
    [
        _field("video_id", pa.string(), "Stable id of the video."),
        _field("video_uri", pa.string(), "URI of the source video."),
        _field("clip_id", pa.string(), "Deterministic id of the clip."),
        _field("unit_id", pa.string(), "Work unit that tracked the clip (clips/<unit_id>.parquet)."),
        _field("start_frame", pa.int32(), "First frame of the clip (inclusive)."),
        _field("end_frame", pa.int32(), "End frame of the clip (exclusive)."),
        _field("status", pa.string(), "ok, failed or skipped."),
        _field("frames", pa.int32(), "Frames tracked (the sampled ones with --sample-fps)."),
        _field("objects", pa.int32(), "Objects tracked."),
        _field("mask_rows", pa.int64(), "Rows written to masks/ (= pointers/)."),
        _field("seconds", pa.float64(), "Wall time of the clip in its actor."),
        _field("decode_seconds", pa.float64(), "Time spent opening (downloading) the video and waiting for frames."),
        _field("track_seconds", pa.float64(), "Time spent in the tracker and RLE encoding."),
        _field("write_seconds", pa.float64(), "The clip's share of its unit's file writes."),
        _field("error_stage", pa.string(), "Where a failed or skipped clip stopped (probe, decode, ...).", True),
        _field("error_class", pa.string(), "Exception class of a failure.", True),
        _field("error_message", pa.string(), "Exception message of a failure, or why a clip was skipped.", True),
        _field("model_name", pa.string(), "Tracker model name."),
        _field("checkpoint_hash", pa.string(), "Hash of the checkpoint's bytes, or the builtin weights' tag."),
        _field("masks_file", pa.string(), "masks/ file holding the clip's rows, relative to the output.", True),
        _field("pointers_file", pa.string(), "pointers/ file holding the clip's rows, relative to the output.", True),
        _field("device", pa.string(), "Device the clip was tracked on (cpu, cuda).", True),
        _field("node_id", pa.string(), "Ray node that tracked the clip.", True),
        _field(
            "rotation",
            pa.int16(),
            "Counter-clockwise degrees (0, 90, 180, 270) the video's display matrix turned its frames before "
            "tracking; prompts and masks are in these displayed coordinates. Null when the video was not opened.",
            True,
        ),
        _field("mirrored", pa.bool_(), "The display matrix also mirrored the frames left-right (after turning).", True),
        _field(
            "sample_fps",
            pa.float64(),
            "--sample-fps of the run: only the frames nearest to this rate's grid were tracked (`frames` counts "
            "them); null: every frame.",
            True,
        ),
        _field(
            "tracked_frames",
            pa.list_(pa.int32()),
            "With --sample-fps: the absolute indices of the clip's frames that were tracked (the only ones with "
            "rows); null: every frame of [start_frame, end_frame).",
            True,
        ),
    ],
    metadata={"batchtrack.table": "clips"},
)
