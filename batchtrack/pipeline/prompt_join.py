"""Prompts joined to their videos on the cluster: a partitioned hash join of the manifest with the corpus.

The driver never reads the manifest. It lists the manifest's shards once, before Ray starts (a missing
manifest is an error then), cuts them into chunks, and starts Ray tasks:

1. one reader per chunk (`bucket_lines` over `read_chunk`): validates every line (a bad line is a PromptError
   naming file, line and field) and splits the lines by `partition_of(video)` into one Arrow table per
   partition;
2. when the corpus must be listed (automatic mode on, `--text`, or a corpus that is a manifest of
   videos), one lister per listing part (`list_partitioned`) splits the videos the same way: the
   partition is the key the listing and the manifest share;
3. one joiner per partition (`join_partition`): gathers that partition's pieces, and only those, groups
   prompts by video, finds duplicate (video, frame, object) prompts, and joins: with a listing, every
   listed video with its prompts (maybe none); without one, the manifest drives the job and only its
   videos inside the corpus's scope are kept. Videos outside the corpus are counted, with examples.

The joined partitions stay in the object store; each is planned into work units by one task of the job's
streaming pipeline (`job.plan_partition`). The driver holds object refs and a few counts: nothing per video or
per prompt. Every line is read and checked before any unit is tracked, since a video's prompt set (part of
its clip ids) is complete only when the last line naming it has been read.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from batchtrack.errors import PromptError
from batchtrack.io.corpus import CorpusScope, ListingPart, VideoRef, list_part, stat_videos
from batchtrack.io.prompt_chunks import (
    CHUNK_BYTES,
    ManifestChunk,
    PromptLine,
    chunk_shards,
    partition_of,
    read_chunk,
    where,
)
from batchtrack.io.prompts import PromptRecord, canonical_concepts

PARTITION_BYTES = 4 * 2**20  # manifest bytes per partition: a joiner holds ~1/P of the manifest
MAX_PARTITIONS = 256
# A task's small return values live in the memory of the process that owns them, the driver; pieces above
# Ray's inline limit (100 KiB) go to the object store, so chunks grow with the partition count.
MIN_PIECE_BYTES = 128 * 2**10
MAX_EXAMPLES = 5

LINE_SCHEMA = pa.schema(
    [
        ("video", pa.string()),
        ("record", pa.string()),
        ("concept", pa.bool_()),
        ("position", pa.int64()),
        ("source", pa.dictionary(pa.int32(), pa.string())),  # one value per chunk
    ]
)
LISTING_SCHEMA = pa.schema(
    [("uri", pa.string()), ("video_id", pa.string()), ("size", pa.int64()), ("etag", pa.string())]
)
JOINED_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("video_id", pa.string()),
        ("size", pa.int64()),
        ("etag", pa.string()),
        ("prompts", pa.list_(pa.string())),
        ("concepts", pa.list_(pa.string())),
    ]
)


def partition_count(manifest_bytes: int, listing_parts: int = 0) -> int:
    """Partitions for a manifest of this size, and at least one per listing part when the corpus is listed (a
    large archive has many folders; the manifest alone does not say how large it is). A power of two, so a
    manifest that grows regroups units rarely.

    >>> partition_count(1000), partition_count(5 * 2**20), partition_count(110 * 2**20), partition_count(10, 3)
    (1, 2, 32, 4)
    """
    wanted = max(1, math.ceil(manifest_bytes / PARTITION_BYTES), listing_parts)
    return min(MAX_PARTITIONS, 1 << (wanted - 1).bit_length())


def chunk_bytes_for(partitions: int, base: int) -> int:
    """Chunk size so that a chunk's piece per partition is, on average, above Ray's inline limit."""
    return max(base, partitions * MIN_PIECE_BYTES)


@dataclass
class ReadStats:
    """What one reader saw: its lines, its text lines, or the first bad line."""

    lines: int = 0
    concept_lines: int = 0
    error: str | None = None


BLOCK_LINES = 16_384  # lines held as Python objects at once by a reader; the rest is already Arrow


def _split_block(block: dict[str, list[Any]], source: str, partitions: int) -> list[pa.Table]:
    """One block of lines as a table per partition (a stable sort by partition, then slices)."""
    part = np.fromiter((partition_of(v, partitions) for v in block["video"]), dtype=np.int64, count=len(block["video"]))
    order = np.argsort(part, kind="stable")
    sources = pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(part), dtype=np.int32)), pa.array([source]))
    table = pa.table({**block, "source": sources}, schema=LINE_SCHEMA).take(order)
    bounds = np.searchsorted(part[order], np.arange(partitions + 1))
    return [table.slice(int(a), int(b - a)) for a, b in itertools.pairwise(bounds)]


def bucket_lines(
    lines: Iterable[PromptLine], source: str, partitions: int, block_lines: int = BLOCK_LINES
) -> tuple[list[pa.Table], ReadStats]:
    """Lines split by partition, one table each (LINE_SCHEMA); a PromptError ends up in the stats, not raised.

    Lines are turned into Arrow a block at a time, so a reader holds its chunk as compact columns, not as
    Python strings.
    """
    pieces: list[list[pa.Table]] = [[] for _ in range(partitions)]
    block: dict[str, list[Any]] = {"video": [], "record": [], "concept": [], "position": []}
    stats = ReadStats()
    try:
        for line in lines:
            block["video"].append(line.video)
            block["record"].append(line.record)
            block["concept"].append(line.concept)
            block["position"].append(line.position)
            stats.lines += 1
            stats.concept_lines += line.concept
            if len(block["video"]) >= block_lines:
                for p, table in enumerate(_split_block(block, source, partitions)):
                    pieces[p].append(table)
                block = {name: [] for name in block}
        for p, table in enumerate(_split_block(block, source, partitions)):
            pieces[p].append(table)
    except PromptError as exc:
        stats.error = str(exc)
        pieces = [[] for _ in range(partitions)]
    tables = [pa.concat_tables(p) if p else LINE_SCHEMA.empty_table() for p in pieces]
    return tables, stats


def list_partitioned(part: ListingPart, partitions: int, options: Mapping[str, Any]) -> list[pa.Table]:
    """One listing part's videos split by partition, one table each (LISTING_SCHEMA)."""
    columns: list[dict[str, list[Any]]] = [
        {"uri": [], "video_id": [], "size": [], "etag": []} for _ in range(partitions)
    ]
    for ref in list_part(part, options):
        bucket = columns[partition_of(ref.uri, partitions)]
        bucket["uri"].append(ref.uri)
        bucket["video_id"].append(ref.video_id)
        bucket["size"].append(ref.size)
        bucket["etag"].append(ref.etag)
    return [pa.table(bucket, schema=LISTING_SCHEMA) for bucket in columns]


@dataclass
class JoinStats:
    """What one joiner found: lines and videos joined, those outside the corpus (with examples), or an error."""

    lines: int = 0
    videos: int = 0  # videos of the joined partition (listed, or prompted inside the corpus)
    prompted_videos: int = 0
    unmatched_videos: int = 0
    unmatched_lines: int = 0
    examples: list[str] = field(default_factory=list)
    error: str | None = None

    def add(self, other: JoinStats) -> None:
        for name in ("lines", "videos", "prompted_videos", "unmatched_videos", "unmatched_lines"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.examples = sorted([*self.examples, *other.examples])[:MAX_EXAMPLES]
        self.error = self.error or other.error


@dataclass
class _VideoPrompts:
    visual: list[tuple[int, int, str]] = field(default_factory=list)  # (frame, object_id, canonical record)
    concepts: list[str] = field(default_factory=list)
    lines: int = 0


def group_by_video(pieces: Sequence[pa.Table], options: Mapping[str, Any]) -> dict[str, _VideoPrompts]:
    """A partition's lines by video, in file order; raises PromptError for a second prompt of one object on a frame.

    The duplicate's message names the later line, as a reader going through the file in order would.
    """
    videos: dict[str, _VideoPrompts] = {}
    seen: dict[tuple[str, int, int], tuple[str, int]] = {}
    for piece in pieces:
        for video, record, concept, position, source in zip(
            *(piece.column(n).to_pylist() for n in LINE_SCHEMA.names), strict=True
        ):
            entry = videos.setdefault(video, _VideoPrompts())
            entry.lines += 1
            data = json.loads(record)
            if concept:
                entry.concepts.append(data["text"])
                continue
            key = (video, int(data["frame"]), int(data["object_id"]))
            if key in seen:
                first_source, first_position = seen[key]
                raise PromptError(
                    f"{source}, {where(source, position, options)}: field 'object_id': object {key[2]} already has a "
                    f"prompt on frame {key[1]} of {video} ({where(first_source, first_position, options)}"
                    f"{'' if first_source == source else ' of ' + first_source}); combine box and points in one line"
                )
            seen[key] = (source, position)
            entry.visual.append((key[1], key[2], record))
    return videos


def _joined_row(uri: str, ref: VideoRef | None, prompts: _VideoPrompts | None) -> dict[str, Any]:
    visual = sorted(prompts.visual) if prompts else []
    return {
        "uri": uri,
        "video_id": ref.video_id if ref else None,
        "size": ref.size if ref else -1,
        "etag": ref.etag if ref else "",
        "prompts": [record for _, _, record in visual],
        "concepts": list(canonical_concepts(prompts.concepts)) if prompts else [],
    }


def join_partition(
    manifest: Sequence[pa.Table],
    listing: Sequence[pa.Table] | None,
    scope: CorpusScope | None,
    options: Mapping[str, Any],
) -> tuple[pa.Table, JoinStats]:
    """One partition's videos with their prompts (JOINED_SCHEMA, sorted by URI), and what did not match.

    With a `listing`, every listed video is kept, prompted or not; without one, each prompted video that
    `scope` contains is kept, to be stat'ed when it is planned. A duplicate prompt is reported in the stats.
    """
    stats = JoinStats()
    try:
        prompts = group_by_video(manifest, options)
    except PromptError as exc:
        stats.error = str(exc)
        return JOINED_SCHEMA.empty_table(), stats
    stats.lines = sum(entry.lines for entry in prompts.values())
    rows: list[dict[str, Any]] = []
    if listing is not None:
        listed = [
            VideoRef(video_id, uri, int(size), etag)
            for piece in listing
            for uri, video_id, size, etag in zip(
                *(piece.column(n).to_pylist() for n in LISTING_SCHEMA.names), strict=True
            )
        ]
        rows = [_joined_row(ref.uri, ref, prompts.get(ref.uri)) for ref in listed]
        inside = {ref.uri for ref in listed}
    else:
        assert scope is not None, "a job without a listing has a corpus scope"
        inside = {uri for uri in prompts if scope.contains(uri)}
        rows = [_joined_row(uri, None, prompts[uri]) for uri in inside]
    outside = sorted(uri for uri in prompts if uri not in inside)
    stats.videos = len(rows)
    stats.prompted_videos = len(prompts) - len(outside)
    stats.unmatched_videos = len(outside)
    stats.unmatched_lines = sum(prompts[uri].lines for uri in outside)
    stats.examples = outside[:MAX_EXAMPLES]
    rows.sort(key=lambda row: row["uri"])
    return pa.Table.from_pylist(rows, schema=JOINED_SCHEMA), stats


def joined_videos(
    table: pa.Table, options: Mapping[str, Any]
) -> Iterator[tuple[VideoRef, tuple[PromptRecord, ...], tuple[str, ...]]]:
    """A joined partition's videos in URI order: ref (stat'ed here when the join had no listing), prompts, concepts."""
    rows = table.to_pylist()
    unstated = [row["uri"] for row in rows if row["video_id"] is None]
    stated = iter(stat_videos(unstated, options))
    for row in rows:
        if row["video_id"] is None:
            ref = next(stated)
        else:
            ref = VideoRef(row["video_id"], row["uri"], int(row["size"]), row["etag"])
        prompts = tuple(PromptRecord.model_validate_json(text) for text in row["prompts"])
        yield ref, prompts, tuple(row["concepts"])


# -- on the cluster -----------------------------------------------------------------------------------------


@ray.remote(num_cpus=1)
def _read_task(chunk: ManifestChunk, partitions: int, options: Mapping[str, Any]) -> tuple[Any, ...]:
    tables, stats = bucket_lines(read_chunk(chunk, options), chunk.uri, partitions)
    return (*tables, stats)


@ray.remote(num_cpus=1)
def _list_task(part: ListingPart, partitions: int, options: Mapping[str, Any]) -> tuple[Any, ...]:
    tables = list_partitioned(part, partitions, options)
    return tuple(tables) if len(tables) > 1 else tables[0]


@ray.remote(num_cpus=1, num_returns=2)
def _join_task(
    scope: CorpusScope | None, options: Mapping[str, Any], chunks: int, has_listing: bool, *pieces: pa.Table
) -> tuple[pa.Table, JoinStats]:
    # Ray resolves the refs passed as arguments: this task receives its partition's pieces and nothing else.
    return join_partition(pieces[:chunks], pieces[chunks:] if has_listing else None, scope, options)


@dataclass
class JoinedPrompts:
    """The joined partitions (object refs, one per partition) and the manifest's counts."""

    partitions: list[ray.ObjectRef]
    stats: JoinStats
    concept_lines: int


def _refs_of(result: Any, count: int) -> list[ray.ObjectRef]:
    return [result] if count == 1 else list(result)


def join_prompts(
    shards: Sequence[tuple[str, int]],
    options: Mapping[str, Any],
    parts: Sequence[ListingPart] | None,
    scope: CorpusScope | None,
    chunk_bytes: int = CHUNK_BYTES,
) -> JoinedPrompts:
    """Read, check and join a prompt manifest (its `manifest_shards`) on the cluster (see the module); raises
    PromptError for a bad line.

    `parts`: the corpus's listing parts when it must be listed, else None and `scope` says what it holds.
    """
    partitions = partition_count(sum(size for _, size in shards), listing_parts=len(parts or ()))
    chunks = chunk_shards(shards, chunk_bytes_for(partitions, chunk_bytes))
    read = [
        _refs_of(_read_task.options(num_returns=partitions + 1).remote(c, partitions, options), partitions + 1)
        for c in chunks
    ]
    listed = (
        [_refs_of(_list_task.options(num_returns=partitions).remote(p, partitions, options), partitions) for p in parts]
        if parts is not None
        else []
    )
    read_stats: list[ReadStats] = ray.get([refs[-1] for refs in read])
    errors = [s.error for s in read_stats if s.error]
    if errors:
        raise PromptError(errors[0])
    joined: list[ray.ObjectRef] = []
    stats_refs: list[ray.ObjectRef] = []
    for p in range(partitions):
        pieces = [refs[p] for refs in read] + [refs[p] for refs in listed]
        table, stats = _join_task.remote(scope, options, len(read), parts is not None, *pieces)
        joined.append(table)
        stats_refs.append(stats)
    total = JoinStats()
    for stats in ray.get(stats_refs):
        total.add(stats)
    if total.error:
        raise PromptError(total.error)
    return JoinedPrompts(joined, total, sum(s.concept_lines for s in read_stats))
