"""Prompt manifests: strict validation naming file/line/field, relative paths, routing, hashing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as coco_mask

from batchtrack.errors import PromptError
from batchtrack.io.prompts import (
    ConceptRecord,
    PromptRecord,
    canonical_concepts,
    load_manifest,
    load_prompts,
    prompt_set_hash,
    prompts_in_range,
    read_prompt_manifest,
)


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _rle(h: int, w: int) -> dict[str, Any]:
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[1:3, 2:5] = 1
    encoded = coco_mask.encode(np.asfortranarray(mask))
    return {"size": [h, w], "counts": encoded["counts"].decode()}


def test_box_points_mask_and_box_plus_points_are_accepted(tmp_path: Path) -> None:
    manifest = _write(
        tmp_path / "p.jsonl",
        [
            {"video": "a.mp4", "frame": 0, "object_id": 1, "box": [1, 2, 30, 40]},
            {"video": "a.mp4", "frame": 3, "object_id": 2, "points": [[5, 6, 1], [7, 8, 0]]},
            {"video": "a.mp4", "frame": 3, "object_id": 3, "mask": _rle(6, 8)},
            {"video": "a.mp4", "frame": 4, "object_id": 1, "box": [1, 2, 3, 4], "points": [[2, 3, 1]]},
        ],
    )
    records = read_prompt_manifest(str(manifest))
    assert [r.object_id for r in records] == [1, 2, 3, 1]
    assert records[0].box == (1.0, 2.0, 30.0, 40.0)
    assert records[1].points == ((5.0, 6.0, 1), (7.0, 8.0, 0))
    assert records[2].mask is not None and records[2].mask.size == (6, 8)


@pytest.mark.parametrize(
    ("line", "field", "why"),
    [
        ({"video": "a.mp4", "frame": 0, "object_id": 1, "box": [5, 2, 3, 4]}, "box", "x0 < x1"),
        ({"video": "a.mp4", "frame": 0, "object_id": 1, "box": [1, 9, 3, 4]}, "box", "y0 < y1"),
        ({"video": "a.mp4", "frame": 0, "object_id": 1, "box": [1, 2, 3]}, "box.3", "required"),
        ({"video": "a.mp4", "frame": -1, "object_id": 1, "box": [1, 2, 3, 4]}, "frame", "greater than or equal"),
        ({"video": "a.mp4", "frame": 0, "object_id": -2, "box": [1, 2, 3, 4]}, "object_id", "greater than"),
        ({"video": "a.mp4", "frame": 0, "object_id": 1, "points": [[1, 2, 2]]}, "points", "label must be 0 or 1"),
        ({"video": "a.mp4", "frame": 0, "object_id": 1, "points": [[1, 2]]}, "points.0.2", "required"),
        ({"video": "a.mp4", "frame": 0, "object_id": 1}, "box/points/mask", "one of box, points or mask"),
        (
            {
                "video": "a.mp4",
                "frame": 0,
                "object_id": 1,
                "box": [1, 2, 3, 4],
                "mask": {"size": [2, 2], "counts": "4"},
            },
            "box/points/mask",
            "cannot be combined",
        ),
        ({"video": "a.mp4", "frame": 0, "object_id": 1, "mask": {"size": [2, 2]}}, "mask.counts", "required"),
        ({"video": "a.mp4", "frame": 0, "object_id": 1, "mask": {"size": [0, 2], "counts": "4"}}, "mask.size", ""),
        ({"video": "a.mp4", "frame": 0, "object_id": 1, "box": [1, 2, 3, 4], "colour": "red"}, "colour", "unknown"),
        ({"frame": 0, "object_id": 1, "box": [1, 2, 3, 4]}, "video", "required"),
    ],
)
def test_a_bad_line_names_file_line_and_field(tmp_path: Path, line: dict[str, Any], field: str, why: str) -> None:
    good = {"video": "a.mp4", "frame": 0, "object_id": 9, "box": [1, 2, 3, 4]}
    manifest = _write(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(PromptError) as info:
        read_prompt_manifest(str(manifest))
    message = str(info.value)
    assert f"{manifest}, line 2" in message
    assert f"'{field}'" in message
    assert why in message


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    manifest = tmp_path / "p.jsonl"
    manifest.write_text('{"video": "a.mp4", "frame": 0, "object_id": 1, "box": [1, 2, 3, 4]}\n\n{"video": \n')
    with pytest.raises(PromptError, match=r"p\.jsonl, line 3: invalid JSON"):
        read_prompt_manifest(str(manifest))


def test_two_prompts_for_one_object_on_one_frame_are_rejected(tmp_path: Path) -> None:
    line = {"video": "a.mp4", "frame": 2, "object_id": 1, "box": [1, 2, 3, 4]}
    manifest = _write(tmp_path / "p.jsonl", [line, {**line, "box": [2, 3, 4, 5]}])
    with pytest.raises(PromptError, match=r"line 2: field 'object_id'.*already has a prompt on frame 2.*line 1"):
        read_prompt_manifest(str(manifest))


def test_missing_manifest_is_a_prompt_error(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="does not exist"):
        load_prompts(str(tmp_path / "none.jsonl"))


def test_load_prompts_groups_by_resolved_video_and_sorts_by_frame(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    manifest = _write(
        tmp_path / "sub" / "p.jsonl",
        [
            {"video": "b.mp4", "frame": 9, "object_id": 1, "box": [1, 2, 3, 4]},
            {"video": "b.mp4", "frame": 2, "object_id": 2, "box": [1, 2, 3, 4]},
            {"video": "../top.mp4", "frame": 0, "object_id": 1, "box": [1, 2, 3, 4]},
            {"video": "s3://bucket/x.mp4", "frame": 0, "object_id": 1, "box": [1, 2, 3, 4]},
        ],
    )
    grouped = load_prompts(str(manifest))
    assert set(grouped) == {str(tmp_path / "sub" / "b.mp4"), str(tmp_path / "top.mp4"), "s3://bucket/x.mp4"}
    assert [p.frame for p in grouped[str(tmp_path / "sub" / "b.mp4")]] == [2, 9]
    assert grouped["s3://bucket/x.mp4"][0].video == "s3://bucket/x.mp4"


def test_parquet_manifest_has_the_same_rules_and_names_the_row(tmp_path: Path) -> None:
    table = pa.table(
        {
            "video": ["a.mp4", "a.mp4", "a.mp4"],
            "frame": [0, 1, 2],
            "object_id": [1, 2, 3],
            "box": [[1.0, 2.0, 3.0, 4.0], None, None],
            "points": [None, [[1.0, 2.0, 1.0]], None],
            "mask": [None, None, json.dumps(_rle(4, 4))],
        }
    )
    pq.write_table(table, tmp_path / "p.parquet")
    records = read_prompt_manifest(str(tmp_path / "p.parquet"))
    assert [r.video for r in records] == [str(tmp_path / "a.mp4")] * 3
    assert records[1].points == ((1.0, 2.0, 1),)
    assert records[2].mask is not None

    bad = table.set_column(3, "box", pa.array([[3.0, 2.0, 1.0, 4.0], None, None]))
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(PromptError, match=r"bad\.parquet, row 1: field 'box'"):
        read_prompt_manifest(str(tmp_path / "bad.parquet"))


def _record(frame: int, object_id: int = 1) -> PromptRecord:
    return PromptRecord(video="v.mp4", frame=frame, object_id=object_id, box=(1, 2, 3, 4))


def test_prompts_are_routed_to_clips_that_contain_their_frame() -> None:
    prompts = [_record(0), _record(5, 2), _record(9, 3)]
    assert [p.frame for p in prompts_in_range(prompts, 0, 6)] == [0, 5]
    assert [p.frame for p in prompts_in_range(prompts, 5, 9)] == [5]
    assert prompts_in_range(prompts, 10, 20) == []


def test_prompt_set_hash_ignores_order_and_sees_every_value() -> None:
    a, b = _record(0), _record(5, 2)
    assert prompt_set_hash([a, b]) == prompt_set_hash([b, a])
    assert prompt_set_hash([a, b]) != prompt_set_hash([a, _record(6, 2)])
    assert prompt_set_hash([]) == "none"


def test_concept_lines_are_read_beside_visual_prompts(tmp_path: Path) -> None:
    manifest = _write(
        tmp_path / "p.jsonl",
        [
            {"video": "a.mp4", "text": "person"},
            {"video": "a.mp4", "frame": 0, "object_id": 1, "box": [1, 2, 30, 40]},
            {"video": "a.mp4", "text": "  red   car "},
            {"video": "b.mp4", "text": "person"},
            {"video": "a.mp4", "text": "person"},
        ],
    )
    records = read_prompt_manifest(str(manifest))
    assert isinstance(records[0], ConceptRecord) and isinstance(records[1], PromptRecord)
    loaded = load_manifest(str(manifest))
    a, b = str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")
    assert loaded.concepts == {a: ("person", "red car"), b: ("person",)}
    assert [r.object_id for r in loaded.visual[a]] == [1]
    assert load_prompts(str(manifest)) == loaded.visual


@pytest.mark.parametrize(
    ("line", "field", "why"),
    [
        ({"video": "a.mp4", "text": "   "}, "text", "non-empty noun phrase"),
        ({"video": "a.mp4", "text": 3}, "text", "valid string"),
        ({"video": "a.mp4", "text": "person", "frame": 0}, "frame", "unknown field"),
        ({"text": "person"}, "video", "required"),
    ],
)
def test_a_bad_concept_line_names_file_line_and_field(
    tmp_path: Path, line: dict[str, Any], field: str, why: str
) -> None:
    manifest = _write(tmp_path / "bad.jsonl", [{"video": "a.mp4", "text": "person"}, line])
    with pytest.raises(PromptError) as info:
        read_prompt_manifest(str(manifest))
    message = str(info.value)
    assert f"{manifest}, line 2" in message
    assert f"'{field}'" in message
    assert why in message


def test_concept_sets_are_canonical() -> None:
    assert canonical_concepts(["b", "a", " a "]) == ("a", "b")
    with pytest.raises(ValueError, match="non-empty"):
        canonical_concepts([""])
