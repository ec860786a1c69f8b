"""Which files of a job's output are committed, found by listing its three data folders once.

A work unit writes `masks/<unit_id>.parquet` and `pointers/<unit_id>.parquet` whole, then
`clips/<unit_id>.parquet` last: a unit is committed iff its clips/ file exists. A masks/ or pointers/
file whose stem has no clips/ file belongs to a unit being written (or killed mid-way) and is left out.
Names starting with `.` or `_` (temporary files, internal folders) are never data.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fsspec

from batchtrack.errors import OutputNotFoundError

MASKS_DIR = "masks"
POINTERS_DIR = "pointers"
CLIPS_DIR = "clips"
_SUFFIX = ".parquet"


@dataclass(frozen=True)
class OutputFiles:
    """The committed files of one output, as paths on `fs` (bucket/key on object stores)."""

    output: str
    fs: fsspec.AbstractFileSystem
    root: str
    clips: dict[str, str]  # unit_id -> clips/ file
    masks: dict[str, str]  # unit_id -> masks/ file, committed units only
    pointers: dict[str, str]  # unit_id -> pointers/ file, committed units only

    @property
    def unit_ids(self) -> list[str]:
        return sorted(self.clips)


def _parquet_stems(fs: fsspec.AbstractFileSystem, folder: str) -> dict[str, str]:
    """stem -> path of the data files directly under `folder` (empty when it does not exist)."""
    try:
        entries = fs.ls(folder, detail=False, refresh=True)
    except FileNotFoundError:
        return {}
    found: dict[str, str] = {}
    for entry in entries:
        name = posixpath.basename(str(entry).rstrip("/"))
        if name.endswith(_SUFFIX) and not name.startswith((".", "_")):
            found[name[: -len(_SUFFIX)]] = str(entry)
    return found


def list_output(output: str, storage_options: Mapping[str, Any] | None = None) -> OutputFiles:
    """List the committed units of `output` (a local folder or any fsspec URI such as s3://bucket/prefix).

    Raises OutputNotFoundError when `output` has no clips/ folder with at least one unit.
    """
    fs, root = fsspec.core.url_to_fs(output, **dict(storage_options or {}))
    root = root.rstrip("/")
    fs.invalidate_cache(root)
    clips = _parquet_stems(fs, f"{root}/{CLIPS_DIR}")
    if not clips:
        raise OutputNotFoundError(f"{output} is not a batchtrack output: no committed units under {CLIPS_DIR}/")
    masks = {unit: path for unit, path in _parquet_stems(fs, f"{root}/{MASKS_DIR}").items() if unit in clips}
    pointers = {unit: path for unit, path in _parquet_stems(fs, f"{root}/{POINTERS_DIR}").items() if unit in clips}
    return OutputFiles(output=output, fs=fs, root=root, clips=clips, masks=masks, pointers=pointers)
