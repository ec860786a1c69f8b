"""The output schemas match design.md §2 column for column."""

from __future__ import annotations

import pyarrow as pa
import pytest

from batchtrack.io.schema import CLIPS_SCHEMA, MASKS_SCHEMA, POINTER_DIM, pointers_schema

KEYS = ["video_id", "video_uri", "clip_id", "frame_index", "timestamp_s", "object_id", "track_id", "concept"]


def test_masks_columns_are_the_designed_ones_in_order() -> None:
    assert MASKS_SCHEMA.names == [*KEYS, "score", "iou_pred", "area", "bbox", "height", "width", "rle"]
    assert MASKS_SCHEMA.field("rle").type == pa.string()
    assert MASKS_SCHEMA.field("bbox").type == pa.list_(pa.float32(), 4)
    assert MASKS_SCHEMA.field("frame_index").type == pa.int32()


@pytest.mark.parametrize(("dtype", "arrow"), [("float16", pa.float16()), ("float32", pa.float32())])
def test_pointer_embedding_is_a_fixed_size_list_of_the_configured_float(dtype: str, arrow: pa.DataType) -> None:
    schema = pointers_schema(dtype)  # type: ignore[arg-type]
    assert schema.names == [*KEYS, "embedding"]
    assert schema.field("embedding").type == pa.list_(arrow, POINTER_DIM)
    assert POINTER_DIM == 256


def test_concept_is_a_nullable_string_in_masks_and_pointers() -> None:
    for schema in (MASKS_SCHEMA, pointers_schema()):
        assert schema.field("concept").type == pa.string()
        assert schema.field("concept").nullable
        assert not schema.field("track_id").nullable


def test_clips_schema_holds_status_counts_errors_and_model() -> None:
    for name in (
        "status",
        "frames",
        "objects",
        "seconds",
        "error_class",
        "error_message",
        "model_name",
        "checkpoint_hash",
        "start_frame",
        "end_frame",
    ):
        assert name in CLIPS_SCHEMA.names
    assert CLIPS_SCHEMA.field("error_class").nullable
    assert not CLIPS_SCHEMA.field("clip_id").nullable


def test_every_field_is_documented() -> None:
    for schema in (MASKS_SCHEMA, pointers_schema(), CLIPS_SCHEMA):
        for field in schema:
            assert field.metadata and field.metadata[b"description"], field.name
