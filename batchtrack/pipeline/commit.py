"""The commit protocol of work units: clips/ written last, failure markers, attempts, and `_manifest.json`.

A unit is done when `clips/<unit_id>.parquet` exists. That file is written only after the unit's
masks/ and pointers/ files are complete, so a crash at any point leaves either a committed unit or
one that a rerun tracks again, overwriting the same keys: exactly one row per (video, frame, object)
and no committed file ever rewritten by a later step.

Failures are durable: a unit with failed clips is committed like any other (its clips/ rows say
why) and marked by `_failed/<unit_id>`, written before its clips/ file; `--retry-failed` tracks such
units again. A unit whose actor dies is retried by Ray; `_attempts/<unit_id>.json` counts the
attempts and, from the second on, which video was being tracked, so an input that kills its actor
every time (a decoder crash) ends as a failed row after a bounded number of attempts.
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import metadata
from typing import Any

import pyarrow as pa

from batchtrack.io.schema import CLIPS_SCHEMA
from batchtrack.io.sink import (
    ATTEMPTS_DIR,
    CLIPS_DIR,
    FAILED_DIR,
    MANIFEST_NAME,
    join,
    list_names,
    read_bytes,
    remove,
    unit_file,
    write_bytes,
    write_table,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipStatus:
    """One clips/ row: what happened to one clip. Field names follow CLIPS_SCHEMA."""

    video_id: str
    video_uri: str
    clip_id: str
    unit_id: str
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
    rotation: int | None = None
    mirrored: bool | None = None
    sample_fps: float | None = None
    tracked_frames: list[int] | None = None  # with sampling: the clip's tracked frames

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClipStatus:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def clips_table(statuses: Sequence[ClipStatus]) -> pa.Table:
    """clips/ rows as a table in CLIPS_SCHEMA."""
    columns = {name: [getattr(s, name) for s in statuses] for name in CLIPS_SCHEMA.names}
    return pa.table(columns, schema=CLIPS_SCHEMA)


@dataclass(frozen=True)
class OutputState:
    """What earlier runs left under the output: committed units, and those of them with failed clips."""

    committed: frozenset[str] = frozenset()
    failed: frozenset[str] = frozenset()

    def needs_tracking(self, unit_id: str, retry_failed: bool) -> bool:
        if unit_id not in self.committed:
            return True
        return retry_failed and unit_id in self.failed


def scan_output(output: str, storage_options: Mapping[str, Any] | None = None) -> OutputState:
    """Committed and failed unit ids from two listings (clips/ and _failed/), no per-unit request."""
    names = list_names(join(output, CLIPS_DIR), storage_options)
    committed = {name.removesuffix(".parquet") for name in names if name.endswith(".parquet")}
    failed = list_names(join(output, FAILED_DIR), storage_options)
    return OutputState(frozenset(committed), frozenset(failed & committed))


def commit_unit(
    output: str,
    unit_id: str,
    statuses: Sequence[ClipStatus],
    storage_options: Mapping[str, Any] | None = None,
    compression: str = "zstd",
    *,
    was_failed: bool = False,
) -> str:
    """Commit a unit whose masks/ and pointers/ files are complete: its clips/ file, last.

    A unit with failed clips is marked in `_failed/` first, so the marker exists whenever the failed
    rows do; a retry that succeeds removes the marker of the earlier attempt after its commit.
    """
    failed = any(s.status == "failed" for s in statuses)
    marker = join(output, f"{FAILED_DIR}/{unit_id}")
    if failed:
        write_bytes(marker, b"", storage_options)
    relative = unit_file("clips", unit_id)
    write_table(clips_table(statuses), join(output, relative), storage_options, compression)
    if was_failed and not failed:
        remove(marker, storage_options)
    return relative


@dataclass
class Attempts:
    """`_attempts/<unit_id>.json`: how often a unit was started, and which video each careful attempt was on."""

    started: int = 0
    current: int | None = None  # video index being tracked when the record was last written
    strikes: dict[int, int] = field(default_factory=dict)  # video index -> attempts that died on it

    def after_death(self) -> Attempts:
        """The record for the next attempt: the previous one died, on `current` if it was recorded."""
        strikes = dict(self.strikes)
        if self.current is not None:
            strikes[self.current] = strikes.get(self.current, 0) + 1
        return Attempts(self.started + 1, None, strikes)

    def to_json(self) -> bytes:
        return json.dumps({"started": self.started, "current": self.current, "strikes": self.strikes}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Attempts:
        value = json.loads(data)
        strikes = {int(k): int(v) for k, v in value.get("strikes", {}).items()}
        return cls(int(value["started"]), value.get("current"), strikes)


def attempts_path(output: str, unit_id: str) -> str:
    return join(output, f"{ATTEMPTS_DIR}/{unit_id}.json")


def read_attempts(output: str, unit_id: str, storage_options: Mapping[str, Any] | None = None) -> Attempts:
    try:
        return Attempts.from_json(read_bytes(attempts_path(output, unit_id), storage_options))
    except FileNotFoundError:
        return Attempts()
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("attempts record of unit %s is unreadable (%r); counting from zero", unit_id, exc)
        return Attempts()


def write_attempts(
    output: str, unit_id: str, attempts: Attempts, storage_options: Mapping[str, Any] | None = None
) -> None:
    write_bytes(attempts_path(output, unit_id), attempts.to_json(), storage_options)


def clear_attempts(output: str, unit_id: str, storage_options: Mapping[str, Any] | None = None) -> None:
    remove(attempts_path(output, unit_id), storage_options)


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
