"""The commit protocol: per-clip commit records written last, resume, clips/ rows and `_manifest.json`.

A clip is done when `_commits/<clip_id>.json` exists and the files it names exist. The record is
written only after the clip's masks/ and pointers/ files are complete, so a crash at any point leaves
either a committed clip or one that a rerun tracks again, overwriting the same keys. Failed clips are
not committed: a rerun retries them (a transient failure may pass; a corrupt file fails again cheaply).
"""

from __future__ import annotations

import json
import logging
import platform
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from batchtrack.io.corpus import stable_hash

if TYPE_CHECKING:
    from batchtrack.pipeline.plan import ClipSpec
from batchtrack.io.schema import CLIPS_SCHEMA
from batchtrack.io.sink import (
    CLIPS_DIR,
    COMMITS_DIR,
    MANIFEST_NAME,
    MASKS_DIR,
    POINTERS_DIR,
    join,
    list_names,
    read_bytes,
    write_bytes,
    write_table,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipStatus:
    """One clips/ row: what happened to one clip. Field names and order follow CLIPS_SCHEMA."""

    video_id: str
    video_uri: str
    clip_id: str
    start_frame: int
    end_frame: int
    status: str  # ok | failed | skipped
    model_name: str
    checkpoint_hash: str
    frames: int = 0
    objects: int = 0
    mask_rows: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0
    track_seconds: float = 0.0
    write_seconds: float = 0.0
    error_stage: str | None = None
    error_class: str | None = None
    error_message: str | None = None
    masks_file: str | None = None
    pointers_file: str | None = None
    device: str | None = None
    node_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClipStatus:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> ClipStatus:
        return cls.from_dict(json.loads(text))

    @classmethod
    def for_clip(cls, spec: ClipSpec, status: str, **values: Any) -> ClipStatus:
        """The clips/ row of `spec` with its keys and model filled in; `values` are the outcome."""
        return cls(
            video_id=spec.video_id,
            video_uri=spec.video_uri,
            clip_id=spec.clip_id,
            start_frame=spec.start,
            end_frame=spec.end,
            status=status,
            model_name=spec.model.name,
            checkpoint_hash=spec.model.checkpoint_hash,
            **values,
        )


@dataclass(frozen=True)
class CommitRecord:
    """`_commits/<clip_id>.json`: the clip's row and the files it wrote, with their row counts."""

    clip: ClipStatus
    files: dict[str, str]  # kind (masks, pointers) -> path relative to the output
    rows: dict[str, int]  # kind -> rows written

    def to_json(self) -> str:
        return json.dumps({"clip": asdict(self.clip), "files": self.files, "rows": self.rows}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> CommitRecord:
        data = json.loads(text)
        return cls(clip=ClipStatus.from_dict(data["clip"]), files=dict(data["files"]), rows=dict(data["rows"]))


def commit_path(output: str, clip_id: str) -> str:
    return join(output, f"{COMMITS_DIR}/{clip_id}.json")


def write_commit(output: str, record: CommitRecord, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write a clip's commit record. Call only after every file it names is completely written."""
    write_bytes(commit_path(output, record.clip.clip_id), record.to_json().encode(), storage_options)


def load_committed(
    output: str, clip_ids: Iterable[str], storage_options: Mapping[str, Any] | None = None
) -> dict[str, CommitRecord]:
    """The commit records of `clip_ids` that exist and whose files all exist (one listing per folder)."""
    wanted = set(clip_ids)
    commit_names = list_names(join(output, COMMITS_DIR), storage_options)
    candidates = sorted(name[: -len(".json")] for name in commit_names if name.endswith(".json"))
    candidates = [clip_id for clip_id in candidates if clip_id in wanted]
    if not candidates:
        return {}
    present = {
        f"{folder}/{name}"
        for folder in (MASKS_DIR, POINTERS_DIR)
        for name in list_names(join(output, folder), storage_options)
    }
    committed: dict[str, CommitRecord] = {}
    for clip_id in candidates:
        try:
            record = CommitRecord.from_json(read_bytes(commit_path(output, clip_id), storage_options).decode())
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("commit record of clip %s is unreadable (%r); the clip will be tracked again", clip_id, exc)
            continue
        missing = [path for path in record.files.values() if path not in present]
        if missing:
            log.warning("clip %s is committed but %s is missing; the clip will be tracked again", clip_id, missing)
            continue
        committed[clip_id] = record
    return committed


def clips_table(statuses: Sequence[ClipStatus]) -> pa.Table:
    """clips/ rows as a table in CLIPS_SCHEMA."""
    columns = {name: [getattr(s, name) for s in statuses] for name in CLIPS_SCHEMA.names}
    return pa.table(columns, schema=CLIPS_SCHEMA)


def clips_file(video_id: str, clip_ids: Iterable[str]) -> str:
    """clips/ file of one video: named by the set of its clip ids, so a rerun of the same plan overwrites it."""
    return f"{CLIPS_DIR}/{video_id}-{stable_hash(*sorted(clip_ids))}.parquet"


def write_clip_rows(
    output: str,
    statuses: Sequence[ClipStatus],
    storage_options: Mapping[str, Any] | None = None,
    compression: str = "zstd",
) -> list[str]:
    """Write clips/ one file per video (every clip of the video once); returns the relative paths."""
    by_video: dict[str, list[ClipStatus]] = defaultdict(list)
    for status in statuses:
        by_video[status.video_id].append(status)
    written = []
    for video_id, rows in sorted(by_video.items()):
        rows.sort(key=lambda s: (s.start_frame, s.clip_id))
        relative = clips_file(video_id, (s.clip_id for s in rows))
        write_table(clips_table(rows), join(output, relative), storage_options, compression)
        written.append(relative)
    return written


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("batchtrack", "ray", "torch", "pyarrow", "fsspec", "s3fs", "decord", "av", "pydantic"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_manifest(output: str, manifest: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> str:
    """Write `_manifest.json` (the job's redacted config, versions, counts): the job's last write."""
    uri = join(output, MANIFEST_NAME)
    write_bytes(uri, json.dumps(manifest, indent=2, sort_keys=True, default=str).encode(), storage_options)
    return uri
