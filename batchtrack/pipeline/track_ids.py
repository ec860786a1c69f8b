"""The stitching post-pass: video-level `track_id`s written into a finished job's masks/ and pointers/.

Clips are tracked independently, so a clip planned in automatic mode numbers its objects from 0.
After every clip of the job is tracked, the driver reads, per video with more than one ok clip, the
overlap frames of consecutive clips from their files, links objects through the overlap
(`stitch.link_clips`) and writes the resulting `track_id` column back:

- prompted clips keep their prompts' object ids as track ids (user ids stay the same across clips);
- an object of an automatic clip linked to an object of the previous clip inherits its track id
  (a prompted id when the previous clip was prompted); an unlinked one gets a new id after every
  prompted id of the video (a video without prompts numbers its tracks from 0, `stitch.stitch_video`);
- a track so started that links into a prompted object of the next clip takes the prompted id
  (an object visible before the frame it was prompted on).

The pass is idempotent and exact-once: the map depends only on the clips' masks, pointers and
object ids, never on the `track_id` column it writes, so a rerun computes the same map. Each file
is rewritten whole (same deterministic name) only when its `track_id` column differs from the map,
masks/ and pointers/ checked separately, so a crash between two rewrites is finished by the next
run. `_stitch/<video_id>.json` records the map; it is written last, and only when it changed.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchtrack.io.schema import POINTER_DIM
from batchtrack.io.sink import join, read_bytes, write_bytes, write_table
from batchtrack.pipeline.stitch import (
    ClipOverlapData,
    assign_track_ids,
    inherited_track_ids,
    link_clips,
    stitch_video,
)

log = logging.getLogger(__name__)

STITCH_DIR = "_stitch"
TrackMap = dict[tuple[str, int], int]  # (clip_id, object_id) -> video-level track id


@dataclass(frozen=True)
class StitchClip:
    """One ok clip of a video, as the post-pass needs it."""

    clip_id: str
    start: int
    end: int
    height: int
    width: int
    prompted: bool  # object ids are the prompts' video-level ids
    masks_file: str  # relative to the output
    pointers_file: str | None = None


@dataclass(frozen=True)
class VideoStitch:
    """What the post-pass did for one video."""

    video_id: str
    track_ids: TrackMap
    rewritten: list[str] = field(default_factory=list)  # files rewritten, relative to the output
    record_written: bool = False


def stitch_path(output: str, video_id: str) -> str:
    return join(output, f"{STITCH_DIR}/{video_id}.json")


def seeded_track_ids(
    clips: Sequence[ClipOverlapData],
    prompted: AbstractSet[str],
    *,
    first_new_id: int = 0,
    min_iou: float = 0.3,
) -> TrackMap:
    """Track ids for every (clip_id, object_id); clips of `prompted` keep their object ids.

    Clips are taken in temporal order. An object of any other clip linked through the overlap to
    an object of the previous clip inherits that object's track id; an unlinked one gets the next
    id from `first_new_id` on (in the order objects first appear). A track started that way which
    runs into a prompted object of the next clip takes the prompted id, when no other object of its
    clips holds that id (prompts on a later frame than where the object appears). Without prompted
    clips this is `stitch.stitch_video` with ids from 0.
    """
    ordered = sorted(clips, key=lambda c: (c.start_frame, c.end_frame))
    if not any(c.clip_id in prompted for c in ordered) and first_new_id == 0:
        return stitch_video(ordered, min_iou=min_iou)
    # New ids never collide with a prompted one, even if the caller's first_new_id is too small.
    first_new_id = max([first_new_id, *(obj + 1 for c in ordered if c.clip_id in prompted for obj in c.object_order())])
    track_ids: TrackMap = {}
    next_id = first_new_id
    for previous, clip in zip([None, *ordered[:-1]], ordered, strict=True):
        if clip.clip_id in prompted:
            for obj in clip.object_order():
                track_ids[(clip.clip_id, obj)] = obj
            continue
        inherited = inherited_track_ids(previous, clip, track_ids, min_iou=min_iou)
        next_id = assign_track_ids(clip, inherited, track_ids, next_id)
    # Backwards: automatic tracks that end where a prompted clip begins take the prompted id they link to.
    for clip, following in reversed(list(pairwise(ordered))):
        if clip.clip_id in prompted or following.clip_id not in prompted:
            continue
        for link in link_clips(clip, following, min_iou=min_iou):
            track, prompted_id = track_ids[(clip.clip_id, link.previous_object)], link.next_object
            if track < first_new_id or track == prompted_id:
                continue  # a prompted id already (carried from an earlier prompted clip): keep it
            members = [key for key, value in track_ids.items() if value == track]
            clips_of_track = {clip_id for clip_id, _ in members}
            if any(value == prompted_id and key[0] in clips_of_track for key, value in track_ids.items()):
                continue  # the prompted id is taken in one of those clips
            for key in members:
                track_ids[key] = prompted_id
    return track_ids


def _read_table(uri: str, storage_options: Mapping[str, Any]) -> pa.Table:
    return pq.read_table(io.BytesIO(read_bytes(uri, storage_options)))


def _embeddings(masks: pa.Table, pointers: pa.Table) -> list[np.ndarray]:
    """The pointers/ embedding of each masks/ row (matched on frame and object)."""
    flat = pointers.column("embedding").combine_chunks().flatten()
    values = flat.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, POINTER_DIM)  # (n, 256)
    row_of = {
        (int(f), int(o)): row
        for row, (f, o) in enumerate(
            zip(pointers.column("frame_index").to_pylist(), pointers.column("object_id").to_pylist(), strict=True)
        )
    }
    keys = zip(masks.column("frame_index").to_pylist(), masks.column("object_id").to_pylist(), strict=True)
    return [values[row_of[(int(f), int(o))]] for f, o in keys]


def overlap_data(
    clip: StitchClip, overlap_frames: int, masks: pa.Table, pointers: pa.Table | None = None
) -> ClipOverlapData:
    """Stitching input of one clip from its masks/ table (and pointers/ table, for the pointer tie-break)."""
    return ClipOverlapData.from_columns(
        clip.clip_id,
        clip.start,
        clip.end,
        overlap_frames,
        masks.column("frame_index").to_pylist(),
        masks.column("object_id").to_pylist(),
        masks.column("rle").to_pylist(),
        (clip.height, clip.width),
        area=masks.column("area").to_pylist(),
        embedding=_embeddings(masks, pointers) if pointers is not None and pointers.num_rows else None,
    )


def _with_track_ids(table: pa.Table, track_ids: TrackMap, clip_id: str) -> pa.Table | None:
    """`table` with its track_id column set from the map, or None when it already holds exactly that."""
    wanted = np.asarray([track_ids[(clip_id, int(o))] for o in table.column("object_id").to_pylist()], np.int64)
    current = np.asarray(table.column("track_id").to_pylist(), dtype=np.int64)
    if np.array_equal(current, wanted):
        return None
    index = table.schema.get_field_index("track_id")
    return table.set_column(index, table.schema.field(index), pa.array(wanted, pa.int64()))


def _record(video_id: str, clips: Sequence[StitchClip], track_ids: TrackMap) -> bytes:
    data = {
        "video_id": video_id,
        "clips": [
            {"clip_id": c.clip_id, "start_frame": c.start, "end_frame": c.end, "prompted": c.prompted} for c in clips
        ],
        "track_ids": [[clip_id, obj, track] for (clip_id, obj), track in sorted(track_ids.items())],
    }
    return json.dumps(data, indent=1).encode()


def stitch_video_output(
    output: str,
    video_id: str,
    clips: Sequence[StitchClip],
    *,
    first_new_id: int = 0,
    storage_options: Mapping[str, Any] | None = None,
    compression: str = "zstd",
    min_iou: float = 0.3,
) -> VideoStitch:
    """Compute one video's track ids from its ok clips' files and write them where they differ.

    `first_new_id` is one past the largest prompted object id of the video (0 without prompts).
    """
    options = dict(storage_options or {})
    ordered = sorted(clips, key=lambda c: (c.start, c.end, c.clip_id))
    masks: dict[str, pa.Table] = {}
    pointers: dict[str, pa.Table | None] = {}
    data: list[ClipOverlapData] = []
    for i, clip in enumerate(ordered):
        masks[clip.clip_id] = _read_table(join(output, clip.masks_file), options)
        pointers[clip.clip_id] = (
            _read_table(join(output, clip.pointers_file), options) if clip.pointers_file is not None else None
        )
        shared = [ordered[i - 1].end - clip.start if i > 0 else 0]
        shared.append(clip.end - ordered[i + 1].start if i + 1 < len(ordered) else 0)
        data.append(overlap_data(clip, max(0, *shared), masks[clip.clip_id], pointers[clip.clip_id]))
    prompted = {c.clip_id for c in ordered if c.prompted}
    track_ids = seeded_track_ids(data, prompted, first_new_id=first_new_id, min_iou=min_iou)

    rewritten: list[str] = []
    for clip in ordered:
        for relative, table in ((clip.masks_file, masks[clip.clip_id]), (clip.pointers_file, pointers[clip.clip_id])):
            if relative is None or table is None:
                continue
            updated = _with_track_ids(table, track_ids, clip.clip_id)
            if updated is not None:
                write_table(updated, join(output, relative), options, compression)
                rewritten.append(relative)

    record = _record(video_id, ordered, track_ids)
    uri = stitch_path(output, video_id)
    try:
        unchanged = read_bytes(uri, options) == record
    except FileNotFoundError:
        unchanged = False
    if not unchanged:
        write_bytes(uri, record, options)  # last: the video's track ids are final
    if rewritten:
        log.info(
            "video %s: track ids of %d clip(s) stitched, %d file(s) rewritten", video_id, len(ordered), len(rewritten)
        )
    return VideoStitch(video_id, track_ids, rewritten, not unchanged)
