"""Corpus listing: a folder, a glob, an object-store prefix or a manifest → stable `VideoRef`s.

Every video gets a `video_id` that is a hash of its URI, size and modification stamp (ETag on
object stores, mtime on local disks), so output keys never contain raw paths and a changed file
gets a new id. Listing goes through fsspec, so any filesystem it knows (local, s3, gs) works.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import fsspec
import pyarrow.parquet as pq
from fsspec.utils import glob_translate

from batchtrack.errors import ConfigError

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp"}
)
MANIFEST_EXTENSIONS = (".jsonl", ".parquet")
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class VideoRef:
    """One video of the corpus. `size` is -1 and `etag` empty when the file could not be stat'ed."""

    video_id: str  # 16 hex chars: stable_hash(uri, size, etag)
    uri: str  # normalised: absolute local path or scheme://bucket/key
    size: int
    etag: str


def stable_hash(*parts: object) -> str:
    """16 hex chars of SHA-256 over the parts' reprs joined by NUL: stable across processes and runs.

    >>> stable_hash("a", 1) == stable_hash("a", 1) != stable_hash("a", 2)
    True
    """
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode())
    return digest.hexdigest()[:16]


def normalize_uri(uri: str) -> str:
    """Canonical form used for matching corpus entries with prompt manifests.

    >>> normalize_uri("file:///data/a.mp4")
    '/data/a.mp4'
    >>> normalize_uri("s3://bucket/x.mp4")
    's3://bucket/x.mp4'
    """
    if uri.startswith("file://"):
        return os.path.abspath(uri[len("file://") :])
    if "://" in uri:
        return uri
    return os.path.abspath(os.path.expanduser(uri))


def parent_uri(uri: str) -> str:
    """The folder containing a (normalised) URI.

    >>> parent_uri("s3://bucket/videos/a.mp4")
    's3://bucket/videos'
    """
    uri = normalize_uri(uri)
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{posixpath.dirname(rest)}"
    return os.path.dirname(uri)


def resolve_uri(entry: str, base_folder: str) -> str:
    """An entry of a manifest: absolute URIs/paths stay; relative ones are joined to `base_folder`.

    >>> resolve_uri("clips/a.mp4", "s3://bucket/corpus")
    's3://bucket/corpus/clips/a.mp4'
    >>> resolve_uri("/abs/a.mp4", "s3://bucket/corpus")
    '/abs/a.mp4'
    """
    if "://" in entry or os.path.isabs(entry):
        return normalize_uri(entry)
    if "://" in base_folder:
        scheme, rest = base_folder.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, entry))}"
    return os.path.normpath(os.path.join(base_folder, entry))


def has_video_extension(uri: str) -> bool:
    return posixpath.splitext(uri.lower())[1] in VIDEO_EXTENSIONS


def _etag(info: Mapping[str, Any]) -> str:
    for key in ("ETag", "etag", "md5Hash", "mtime", "LastModified", "last_modified", "updated"):
        value = info.get(key)
        if value not in (None, ""):
            return str(value).strip('"')
    return ""


def make_ref(uri: str, info: Mapping[str, Any] | None) -> VideoRef:
    """A VideoRef from a normalised URI and its fsspec `info` (None when the file could not be stat'ed)."""
    size = int(info.get("size") or 0) if info is not None else -1
    etag = _etag(info) if info is not None else ""
    return VideoRef(video_id=stable_hash(uri, size, etag), uri=uri, size=size, etag=etag)


def _full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return normalize_uri(fs.unstrip_protocol(path))


def _read_manifest_entries(uri: str, storage_options: Mapping[str, Any]) -> list[str]:
    """Video entries of a JSONL (`{"video": URI}` or a bare URI per line) or Parquet (column `video`) manifest."""
    if uri.lower().endswith(".parquet"):
        with fsspec.open(uri, "rb", **storage_options) as handle:
            table = pq.read_table(handle)
        if "video" not in table.column_names:
            raise ConfigError(f"{uri}: manifest has no 'video' column (columns: {table.column_names})")
        return [str(v) for v in table.column("video").to_pylist() if v]
    entries: list[str] = []
    with fsspec.open(uri, "rt", encoding="utf-8", **storage_options) as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line[0] in '{"':
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{uri}, line {number}: invalid JSON: {exc.msg}") from exc
                if isinstance(value, dict):
                    if not isinstance(value.get("video"), str):
                        raise ConfigError(f"{uri}, line {number}: field 'video' must be a string URI")
                    value = value["video"]
                if not isinstance(value, str):
                    raise ConfigError(f'{uri}, line {number}: expected a URI or {{"video": URI}}')
                entries.append(value)
            else:
                entries.append(line)
    return entries


def stat_videos(uris: Iterable[str], storage_options: Mapping[str, Any]) -> list[VideoRef]:
    """A VideoRef per URI, one `info` request each; a missing file gets size -1 (a failed clip row when probed)."""
    refs = []
    for uri in uris:
        fs, path = fsspec.core.url_to_fs(uri, **storage_options)
        try:
            info = fs.info(path)
        except (FileNotFoundError, PermissionError):
            info = None  # becomes a failed clip row (missing) when probed
        refs.append(make_ref(uri, info))
    return refs


@dataclass(frozen=True)
class ListingPart:
    """A piece of a corpus that one task lists: a folder's subtree, a folder's own files, a glob, a file, a manifest."""

    kind: Literal["tree", "files", "glob", "file", "manifest"]
    uri: str


def corpus_parts(corpus: str, storage_options: Mapping[str, Any] | None = None) -> list[ListingPart]:
    """Split a corpus into parts listed independently (on the cluster), with one request here.

    A folder or prefix becomes its own files plus one part per subfolder, so a large archive is
    listed in parallel and its first videos are tracked while the rest is still being listed.
    Raises ConfigError when the corpus does not exist.
    """
    options = dict(storage_options or {})
    corpus = normalize_uri(corpus)
    fs, path = fsspec.core.url_to_fs(corpus, **options)
    if corpus.lower().endswith(MANIFEST_EXTENSIONS):
        if not fs.exists(path):
            raise ConfigError(f"corpus manifest {corpus} does not exist")
        return [ListingPart("manifest", corpus)]
    if any(ch in path for ch in _GLOB_CHARS):
        return [ListingPart("glob", corpus)]
    if fs.isdir(path):
        folders = sorted(_full_uri(fs, e["name"]) for e in fs.ls(path, detail=True) if e.get("type") == "directory")
        return [ListingPart("files", corpus)] + [ListingPart("tree", folder) for folder in folders]
    if fs.exists(path):
        return [ListingPart("file", corpus)]
    raise ConfigError(f"corpus {corpus} does not exist (no such folder, file or matching objects)")


def list_part(part: ListingPart, storage_options: Mapping[str, Any] | None = None) -> list[VideoRef]:
    """The videos of one listing part, sorted by URI, each with its stable `video_id`.

    Folders and globs keep only files with a video extension; manifest entries (relative ones
    resolved against the manifest's folder) are kept as given, and unreadable ones fail later as
    data rather than here.
    """
    options = dict(storage_options or {})
    if part.kind == "manifest":
        base = parent_uri(part.uri)
        uris = sorted({resolve_uri(entry, base) for entry in _read_manifest_entries(part.uri, options)})
        return stat_videos(uris, options)
    fs, path = fsspec.core.url_to_fs(part.uri, **options)
    if part.kind == "glob":
        found = fs.glob(path, detail=True)
    elif part.kind == "tree":
        found = fs.find(path, detail=True)
    elif part.kind == "files":
        found = fs.find(path, maxdepth=1, detail=True)
    else:
        found = {path: fs.info(path)}
    refs = [
        make_ref(_full_uri(fs, name), info)
        for name, info in found.items()
        if info.get("type") != "directory" and has_video_extension(name)
    ]
    return sorted(refs, key=lambda ref: ref.uri)


def list_videos(corpus: str, storage_options: Mapping[str, Any] | None = None) -> list[VideoRef]:
    """All videos of a corpus, sorted by URI: every part of `corpus_parts` listed here, in this process.

    `corpus` is a folder (listed recursively), a glob (`s3://bucket/videos/*.mp4`), an object-store
    prefix, a single video, or a JSONL/Parquet manifest of URIs. The job lists parts on the cluster instead.
    """
    parts = corpus_parts(corpus, storage_options)
    return sorted((ref for part in parts for ref in list_part(part, storage_options)), key=lambda ref: ref.uri)


@dataclass(frozen=True)
class CorpusScope:
    """Which videos a corpus holds, decided from a URI alone, without listing: a folder's tree, a glob, a file."""

    kind: Literal["folder", "glob", "file"]
    uri: str

    def contains(self, uri: str) -> bool:
        """Whether the corpus would list `uri` (a normalised URI), were it there.

        >>> CorpusScope("folder", "s3://b/videos").contains("s3://b/videos/x/a.mp4")
        True
        >>> CorpusScope("glob", "s3://b/videos/*.mp4").contains("s3://b/videos/x/a.mp4")
        False
        """
        if not has_video_extension(uri):
            return False
        if self.kind == "folder":
            return uri.startswith(self.uri.rstrip("/") + "/")
        if self.kind == "glob":
            return _glob_pattern(self.uri).match(_path_of(uri)) is not None
        return uri == self.uri


def _path_of(uri: str) -> str:
    return uri.split("://", 1)[1] if "://" in uri else uri


def _glob_pattern(glob: str) -> re.Pattern[str]:
    return re.compile(glob_translate(_path_of(glob)))


def corpus_scope(parts: Sequence[ListingPart]) -> CorpusScope | None:
    """The scope of a corpus split by `corpus_parts`; None for a manifest of videos (only reading it says)."""
    first = parts[0]
    if first.kind == "manifest":
        return None
    if first.kind == "files":
        return CorpusScope("folder", first.uri)
    return CorpusScope("glob" if first.kind == "glob" else "file", first.uri)
