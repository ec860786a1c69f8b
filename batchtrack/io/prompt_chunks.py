"""A prompt manifest at archive scale: its shards, cut into chunks that tasks read and validate independently.

A manifest is one JSONL or Parquet file, a glob of them, or a folder of them (sharded, as a detector run
writes it). `manifest_chunks` lists it once and cuts every JSONL shard into byte ranges, so no reader holds
more than a chunk; a line belongs to the chunk its first byte lies in. Parquet shards are read whole, one
row group at a time. Every line is validated where it is read (`read_chunk`), with the file, the line and
the field in the error; a line's number is counted only when an error needs it (`line_number_at`).

Each line comes out as a `PromptLine`: the video's normalised URI, the record as canonical JSON (what
clip ids hash) and where it was, so that the job can partition lines by video (`partition_of`) and join
them with the corpus on the cluster.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow.parquet as pq

from batchtrack.errors import PromptError
from batchtrack.io.corpus import MANIFEST_EXTENSIONS, normalize_uri, parent_uri, resolve_uri, stable_hash
from batchtrack.io.prompts import ConceptRecord, PromptRecord, parse_prompt

_GLOB_CHARS = "*?["
READ_BUFFER_BYTES = 2**20
CHUNK_BYTES = 8 * 2**20  # a reader holds one chunk's lines: ~75k lines of a typical box manifest


@dataclass(frozen=True)
class ManifestChunk:
    """Lines of one shard that one task reads: those starting in bytes [start, end), or a whole Parquet file."""

    uri: str
    start: int = 0
    end: int = -1  # -1: to the end of the shard

    @property
    def parquet(self) -> bool:
        return self.uri.lower().endswith(".parquet")


@dataclass(frozen=True)
class PromptLine:
    """One validated manifest line, ready to be partitioned by its video."""

    video: str  # normalised absolute URI
    record: str  # canonical JSON of the PromptRecord or ConceptRecord, `video` resolved
    concept: bool  # a text line (ConceptRecord)
    position: int  # JSONL: byte offset of the line; Parquet: row number (from 1)


def partition_of(video: str, partitions: int) -> int:
    """The partition a video's prompts and its listing entry meet in: a stable hash of its URI.

    >>> partition_of("s3://b/v.mp4", 8) == partition_of("s3://b/v.mp4", 8)
    True
    """
    return int(stable_hash(video), 16) % partitions


def manifest_shards(uri: str, storage_options: Mapping[str, Any] | None = None) -> list[tuple[str, int]]:
    """(URI, size) of every shard of a manifest (a file, a glob, or a folder of .jsonl/.parquet), sorted; one listing.

    Raises PromptError when the manifest does not exist or has no shard.
    """
    options = dict(storage_options or {})
    uri = normalize_uri(uri)
    fs, path = fsspec.core.url_to_fs(uri, **options)
    if any(ch in path for ch in _GLOB_CHARS):
        found = fs.glob(path, detail=True)
    elif fs.isdir(path):
        found = fs.find(path, detail=True)
    elif fs.exists(path):
        found = {path: fs.info(path)}
    else:
        raise PromptError(f"{uri}: prompt manifest does not exist")
    shards = sorted(
        (normalize_uri(fs.unstrip_protocol(name)), int(info.get("size") or 0))
        for name, info in found.items()
        if info.get("type") != "directory" and name.lower().endswith(MANIFEST_EXTENSIONS)
    )
    if not shards:
        raise PromptError(f"{uri}: no prompt manifest shard (.jsonl or .parquet) there")
    return shards


def chunk_shards(shards: list[tuple[str, int]], chunk_bytes: int = CHUNK_BYTES) -> list[ManifestChunk]:
    """Byte ranges of at most `chunk_bytes` over each JSONL shard; each Parquet shard whole.

    >>> [(c.start, c.end) for c in chunk_shards([("/m/a.jsonl", 25)], chunk_bytes=10)]
    [(0, 10), (10, 20), (20, 25)]
    """
    chunks: list[ManifestChunk] = []
    for uri, size in shards:
        if uri.lower().endswith(".parquet") or size <= chunk_bytes:
            chunks.append(ManifestChunk(uri))
            continue
        chunks += [ManifestChunk(uri, start, min(start + chunk_bytes, size)) for start in range(0, size, chunk_bytes)]
    return chunks


def line_number_at(uri: str, offset: int, storage_options: Mapping[str, Any] | None = None) -> int:
    """The 1-based number of the line starting at byte `offset` (newlines before it are counted: errors only)."""
    count = 0
    with fsspec.open(uri, "rb", **dict(storage_options or {})) as handle:
        remaining = offset
        while remaining > 0:
            block = handle.read(min(remaining, 2**22))
            if not block:
                break
            count += block.count(b"\n")
            remaining -= len(block)
    return count + 1


def where(uri: str, position: int, storage_options: Mapping[str, Any] | None = None) -> str:
    """`line N` or `row N` of a PromptLine's position, as errors name it."""
    if uri.lower().endswith(".parquet"):
        return f"row {position}"
    return f"line {line_number_at(uri, position, storage_options)}"


def _jsonl_lines(handle: Any, chunk: ManifestChunk) -> Iterator[tuple[int, bytes]]:
    """(byte offset, raw line) of the lines starting in [start, end)."""
    if chunk.start > 0:
        handle.seek(chunk.start - 1)
        if handle.read(1) != b"\n":
            handle.readline()  # a line straddling `start` belongs to the chunk before
    offset = handle.tell()
    while chunk.end < 0 or offset < chunk.end:
        raw = handle.readline()
        if not raw:
            return
        yield offset, raw
        offset += len(raw)


def _jsonl_entries(chunk: ManifestChunk, options: Mapping[str, Any]) -> Iterator[tuple[int, Any]]:
    # s3fs reads ahead 50 MiB blocks by default, more than a chunk: fetch 1 MiB at a time instead.
    fs, path = fsspec.core.url_to_fs(chunk.uri, **options)
    with fs.open(path, "rb", block_size=READ_BUFFER_BYTES) as raw_handle:
        # fsspec's own readline reads a whole block per line on object stores (seconds per thousand lines);
        # a buffered reader over it finds lines in memory and fetches the range in large reads.
        handle = io.BufferedReader(raw_handle, buffer_size=READ_BUFFER_BYTES)
        for offset, raw in _jsonl_lines(handle, chunk):
            try:
                text = raw.decode("utf-8").strip()
                if text:
                    yield offset, json.loads(text)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                detail = (
                    f"invalid JSON: {exc.msg} (column {exc.colno})"
                    if isinstance(exc, json.JSONDecodeError)
                    else f"not UTF-8 text: {exc.reason}"
                )
                raise PromptError(f"{chunk.uri}, {where(chunk.uri, offset, options)}: {detail}") from exc


def _parquet_entries(chunk: ManifestChunk, options: Mapping[str, Any]) -> Iterator[tuple[int, Any]]:
    number = 0
    with fsspec.open(chunk.uri, "rb", **options) as handle:
        reader = pq.ParquetFile(handle)
        for group in range(reader.num_row_groups):
            for row in reader.read_row_group(group).to_pylist():
                number += 1
                entry = {key: value for key, value in row.items() if value is not None}
                if isinstance(entry.get("mask"), str):
                    try:
                        entry["mask"] = json.loads(entry["mask"])
                    except json.JSONDecodeError as exc:
                        raise PromptError(
                            f"{chunk.uri}, row {number}: field 'mask': not a JSON RLE object: {exc.msg}"
                        ) from exc
                yield number, entry


def _parse(
    data: Any, chunk: ManifestChunk, parquet: bool, position: int, options: Mapping[str, Any]
) -> PromptRecord | ConceptRecord:
    if parquet:
        return parse_prompt(data, chunk.uri, f"row {position}")
    try:
        return parse_prompt(data, chunk.uri, "line")
    except PromptError:
        # Validated again only to name the line: a chunk does not know how many lines precede it.
        return parse_prompt(data, chunk.uri, where(chunk.uri, position, options))


def read_chunk(chunk: ManifestChunk, storage_options: Mapping[str, Any] | None = None) -> Iterator[PromptLine]:
    """Every line of a chunk, validated, its video resolved against the shard's folder, in file order.

    Raises PromptError at the first bad line, naming the file, the line (or row) and the field.
    """
    options = dict(storage_options or {})
    base = parent_uri(chunk.uri)
    parquet = chunk.parquet
    entries = _parquet_entries(chunk, options) if parquet else _jsonl_entries(chunk, options)
    try:
        for position, data in entries:
            record = _parse(data, chunk, parquet, position, options)
            video = resolve_uri(record.video, base)
            record = record.model_copy(update={"video": video})
            yield PromptLine(
                video=video,
                record=record.model_dump_json(exclude_none=True),
                concept=isinstance(record, ConceptRecord),
                position=position,
            )
    except FileNotFoundError as exc:
        raise PromptError(f"{chunk.uri}: prompt manifest does not exist") from exc
