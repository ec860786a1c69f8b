"""Prompt manifests: what to track, per video, validated line by line.

A manifest is JSONL (one object per line) or Parquet with the same columns:
`{"video": URI, "frame": int, "object_id": int, "box": [x0, y0, x1, y1]}`, or `"points": [[x, y, label], …]`
(label 1 foreground, 0 background), or `"mask": {"size": [h, w], "counts": "<COCO RLE>"}`; a box and points
may be combined, as in SAM 2. A concept prompt (SAM 3) is `{"video": URI, "text": "person"}`: every instance
of the noun phrase in that video becomes a track. Relative video paths are resolved against the manifest's
folder. A bad line raises `PromptError` naming the file, the line and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batchtrack.errors import PromptError
from batchtrack.io.corpus import normalize_uri, parent_uri, resolve_uri, stable_hash


class RleMask(BaseModel):
    """A COCO run-length encoded mask at video resolution."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: tuple[int, int] = Field(description="[height, width] of the mask in pixels.")
    counts: str = Field(min_length=1, description="COCO compressed RLE counts string.")

    @field_validator("size")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] <= 0 or value[1] <= 0:
            raise ValueError(f"size must be positive [height, width], got {list(value)}")
        return value


class PromptRecord(BaseModel):
    """One prompt line: one object on one frame of one video."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    video: str = Field(min_length=1, description="Video URI (absolute, or relative to the manifest's folder).")
    frame: int = Field(ge=0, description="Absolute frame index in the video.")
    object_id: int = Field(ge=0, description="Object id, unique per video.")
    box: tuple[float, float, float, float] | None = Field(None, description="[x0, y0, x1, y1] in pixels.")
    points: tuple[tuple[float, float, int], ...] | None = Field(
        None, description="[[x, y, label], …] with label 1 (foreground) or 0 (background)."
    )
    mask: RleMask | None = Field(None, description="COCO RLE mask {size: [h, w], counts: str}.")

    @field_validator("box")
    @classmethod
    def _box_ordered(cls, value: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        if value is not None:
            x0, y0, x1, y1 = value
            if not (x0 < x1 and y0 < y1):
                raise ValueError(f"box must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got {list(value)}")
        return value

    @field_validator("points")
    @classmethod
    def _labels_binary(
        cls, value: tuple[tuple[float, float, int], ...] | None
    ) -> tuple[tuple[float, float, int], ...] | None:
        if value is not None:
            if not value:
                raise ValueError("points must hold at least one [x, y, label]")
            for index, (_, _, label) in enumerate(value):
                if label not in (0, 1):
                    raise ValueError(f"points[{index}] label must be 0 or 1, got {label}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> PromptRecord:
        if self.mask is not None and (self.box is not None or self.points is not None):
            raise ValueError("a mask prompt cannot be combined with box or points")
        if self.mask is None and self.box is None and self.points is None:
            raise ValueError("one of box, points or mask is required")
        return self

    def canonical(self) -> dict[str, Any]:
        """Plain JSON-able form (no nulls): what is hashed into clip ids and shipped to actors."""
        return self.model_dump(mode="json", exclude_none=True)


MAX_CONCEPT_CHARS = 200


def clean_concept(text: str) -> str:
    """A noun phrase as it is hashed and written: surrounding space stripped, inner runs of space made one.

    >>> clean_concept("  red   car ")
    'red car'
    """
    cleaned = " ".join(str(text).split())
    if not cleaned:
        raise ValueError("must be a non-empty noun phrase")
    if len(cleaned) > MAX_CONCEPT_CHARS:
        raise ValueError(f"must be at most {MAX_CONCEPT_CHARS} characters, got {len(cleaned)}")
    return cleaned


class ConceptRecord(BaseModel):
    """One concept line: track every instance of a noun phrase in one video (needs a model with a detector)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    video: str = Field(min_length=1, description="Video URI (absolute, or relative to the manifest's folder).")
    text: str = Field(description="Noun phrase, e.g. 'person' or 'red car'.")

    @field_validator("text")
    @classmethod
    def _phrase(cls, value: str) -> str:
        return clean_concept(value)


def canonical_concepts(concepts: Iterable[str]) -> tuple[str, ...]:
    """A set of noun phrases as a sorted tuple without duplicates: what clip ids hash and actors receive.

    >>> canonical_concepts(["person", " red car", "person"])
    ('person', 'red car')
    """
    return tuple(sorted({clean_concept(c) for c in concepts}))


def _error_message(source: str, where: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "box/points/mask"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parts.append(f"{source}, {where}: unknown field '{loc}'")
        else:
            parts.append(f"{source}, {where}: field '{loc}': {msg}")
    return "; ".join(parts)


def parse_prompt(data: Any, source: str, where: str) -> PromptRecord | ConceptRecord:
    """Validate one manifest entry (a concept line when it has `text`); `source`/`where` name the file and
    line (or row) in errors."""
    if not isinstance(data, dict):
        raise PromptError(f"{source}, {where}: expected a JSON object, got {type(data).__name__}")
    try:
        if "text" in data:
            return ConceptRecord.model_validate(data)
        return PromptRecord.model_validate(data)
    except ValidationError as exc:
        raise PromptError(_error_message(source, where, exc)) from exc


def _jsonl_entries(uri: str, storage_options: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    with fsspec.open(uri, "rt", encoding="utf-8", **storage_options) as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptError(f"{uri}, line {number}: invalid JSON: {exc.msg} (column {exc.colno})") from exc


def _parquet_entries(uri: str, storage_options: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    with fsspec.open(uri, "rb", **storage_options) as handle:
        rows = pq.read_table(handle).to_pylist()
    for number, row in enumerate(rows, start=1):
        entry = {key: value for key, value in row.items() if value is not None}
        if isinstance(entry.get("mask"), str):
            try:
                entry["mask"] = json.loads(entry["mask"])
            except json.JSONDecodeError as exc:
                raise PromptError(f"{uri}, row {number}: field 'mask': not a JSON RLE object: {exc.msg}") from exc
        yield f"row {number}", entry


def read_prompt_manifest(
    uri: str, storage_options: Mapping[str, Any] | None = None
) -> list[PromptRecord | ConceptRecord]:
    """Every prompt of a manifest in file order, with `video` resolved to a normalised absolute URI."""
    options = dict(storage_options or {})
    uri = normalize_uri(uri)
    base = parent_uri(uri)
    entries = _parquet_entries(uri, options) if uri.lower().endswith(".parquet") else _jsonl_entries(uri, options)
    records: list[PromptRecord | ConceptRecord] = []
    first_seen: dict[tuple[str, int, int], str] = {}
    try:
        for where, data in entries:
            record = parse_prompt(data, uri, where)
            record = record.model_copy(update={"video": resolve_uri(record.video, base)})
            if isinstance(record, ConceptRecord):
                records.append(record)
                continue
            key = (record.video, record.frame, record.object_id)
            if key in first_seen:
                raise PromptError(
                    f"{uri}, {where}: field 'object_id': object {record.object_id} already has a prompt on frame "
                    f"{record.frame} of {record.video} ({first_seen[key]}); combine box and points in one line"
                )
            first_seen[key] = where
            records.append(record)
    except FileNotFoundError as exc:
        raise PromptError(f"{uri}: prompt manifest does not exist") from exc
    return records


@dataclass(frozen=True)
class PromptManifest:
    """A manifest's prompts by normalised video URI: visual prompts sorted by (frame, object_id), concepts canonical."""

    visual: dict[str, list[PromptRecord]] = field(default_factory=dict)
    concepts: dict[str, tuple[str, ...]] = field(default_factory=dict)


def load_manifest(uri: str, storage_options: Mapping[str, Any] | None = None) -> PromptManifest:
    """Read a prompt manifest once: its visual prompts and its concept lines, grouped by video."""
    grouped: dict[str, list[PromptRecord]] = {}
    phrases: dict[str, list[str]] = {}
    for record in read_prompt_manifest(uri, storage_options):
        if isinstance(record, ConceptRecord):
            phrases.setdefault(record.video, []).append(record.text)
        else:
            grouped.setdefault(record.video, []).append(record)
    visual = {video: sorted(items, key=lambda r: (r.frame, r.object_id)) for video, items in grouped.items()}
    return PromptManifest(visual, {video: canonical_concepts(texts) for video, texts in phrases.items()})


def load_prompts(uri: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, list[PromptRecord]]:
    """Visual prompts grouped by normalised video URI, each list sorted by (frame, object_id)."""
    return load_manifest(uri, storage_options).visual


def prompts_in_range(prompts: Sequence[PromptRecord], start: int, end: int) -> list[PromptRecord]:
    """The prompts whose frame lies in the clip [start, end)."""
    return [p for p in prompts if start <= p.frame < end]


def prompt_set_hash(prompts: Sequence[PromptRecord]) -> str:
    """A stable hash of a set of prompts (order-independent), part of every clip id."""
    canon = sorted(
        json.dumps({k: v for k, v in p.canonical().items() if k != "video"}, sort_keys=True) for p in prompts
    )
    return stable_hash(*canon) if canon else "none"
