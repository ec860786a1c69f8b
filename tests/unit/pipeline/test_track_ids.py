"""The stitching post-pass on hand-made clip files: consistent track ids, prompted ids kept, reruns idle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchtrack.io.rle import encode_mask, mask_area, mask_bbox
from batchtrack.io.schema import MASKS_SCHEMA, pointers_schema
from batchtrack.pipeline.plan import clip_spans
from batchtrack.pipeline.stitch import stitch_video
from batchtrack.pipeline.track_ids import (
    StitchClip,
    overlap_data,
    seeded_track_ids,
    stitch_path,
    stitch_video_output,
)

H, W = 48, 64
VIDEO = "feedfacefeedface"
NUM_FRAMES = 22


def disc(cx: float, cy: float, r: float = 6.0) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def ground_truth(frame: int) -> dict[str, np.ndarray]:
    """Three objects: A moves right, B moves left, C enters on frame 15; D exists only on frames 0-4."""
    objects = {"A": disc(8 + 2 * frame, 12), "B": disc(56 - 2 * frame, 36)}
    if frame >= 15:
        objects["C"] = disc(32, 24, 5)
    if frame <= 4:
        objects["D"] = disc(10, 40, 4)
    return objects


POINTER = {name: np.random.default_rng(k).normal(size=256) for k, name in enumerate("ABCD")}


def write_clip(
    output: Path, clip_id: str, start: int, end: int, ids: dict[str, int], track_ids: dict[str, int] | None = None
) -> StitchClip:
    """masks/ and pointers/ files of one clip whose GT objects carry the clip-local `ids` (as the actor writes)."""
    present = sorted({name for f in range(start, end) for name in ground_truth(f)})
    rows: list[dict[str, object]] = []
    embeddings = []
    for frame in range(start, end):
        gt = ground_truth(frame)
        for name in sorted(present, key=lambda n: ids[n]):
            mask = gt.get(name, np.zeros((H, W), bool))
            object_id = ids[name]
            rows.append(
                {
                    "video_id": VIDEO, "video_uri": "/v.mp4", "clip_id": clip_id, "frame_index": frame,
                    "timestamp_s": frame / 10, "object_id": object_id,
                    "track_id": (track_ids or ids)[name], "score": 0.9, "iou_pred": 0.8,
                    "area": mask_area(mask), "bbox": list(mask_bbox(mask)), "height": H, "width": W,
                    "rle": encode_mask(mask),
                }
            )
            embeddings.append(POINTER[name] + 0.01 * frame)
    masks = pa.Table.from_pylist(rows, schema=MASKS_SCHEMA)
    keys = {name: masks.column(name) for name in MASKS_SCHEMA.names[:7]}
    flat = np.asarray(embeddings, dtype=np.float16).reshape(-1)
    pointers = pa.table(
        {**keys, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float16()), 256)},
        schema=pointers_schema("float16"),
    )
    for folder, table in (("masks", masks), ("pointers", pointers)):
        (output / folder).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, output / folder / f"{clip_id}.parquet")
    return StitchClip(clip_id, start, end, H, W, prompted=False, masks_file=f"masks/{clip_id}.parquet",
                      pointers_file=f"pointers/{clip_id}.parquet")


def make_video(
    output: Path, length: int, seed: int, prompted_first: dict[str, int] | None = None, prompted_clip: int = 0
) -> list[StitchClip]:
    """The GT video cut into clips of `length` sharing 3 frames; per-clip ids are a random permutation,
    except in clip number `prompted_clip` when `prompted_first` gives its (prompted) ids."""
    rng = np.random.default_rng(seed)
    clips = []
    for number, (start, end) in enumerate(clip_spans(NUM_FRAMES, length, 3)):
        clip_id = f"clip{start:03d}"
        if prompted_first is not None and number == prompted_clip:
            clip = write_clip(output, clip_id, start, end, prompted_first)
            clips.append(StitchClip(**{**clip.__dict__, "prompted": True}))
            continue
        names = sorted({n for f in range(start, end) for n in ground_truth(f)})
        clips.append(write_clip(output, clip_id, start, end, dict(zip(names, rng.permutation(len(names)).tolist(),
                                                                      strict=True))))
    return clips


def tracks_of(output: Path, clips: list[StitchClip]) -> dict[str, set[int]]:
    """GT object -> track ids found for it in masks/ and pointers/ (by mask content and by row key)."""
    found: dict[str, set[int]] = {}
    for clip in clips:
        masks = pq.read_table(output / clip.masks_file).to_pylist()
        pointers = pq.read_table(output / clip.pointers_file).to_pylist()
        assert [(r["frame_index"], r["object_id"], r["track_id"]) for r in masks] == [
            (r["frame_index"], r["object_id"], r["track_id"]) for r in pointers
        ]
        for row in masks:
            gt = ground_truth(row["frame_index"])
            name = next((n for n, m in gt.items() if encode_mask(m) == row["rle"]), None)
            if name is not None:
                found.setdefault(name, set()).add(row["track_id"])
        keys = [(r["frame_index"], r["track_id"]) for r in masks]
        assert len(keys) == len(set(keys)), "two objects of one clip share a track id"
    return found


def mtimes(output: Path) -> dict[str, int]:
    return {str(p.relative_to(output)): p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("length", "clips_expected"), [(13, 2), (10, 3), (9, 4)])
def test_automatic_clips_with_permuted_ids_get_one_track_id_per_object(
    tmp_path: Path, length: int, clips_expected: int
) -> None:
    clips = make_video(tmp_path, length, seed=length)
    assert len(clips) == clips_expected
    result = stitch_video_output(str(tmp_path), VIDEO, clips)
    found = tracks_of(tmp_path, clips)
    assert set(found) == {"A", "B", "C", "D"}
    assert all(len(ids) == 1 for ids in found.values()), found
    assert sorted(next(iter(ids)) for ids in found.values()) == [0, 1, 2, 3]  # dense from 0
    record = json.loads(Path(stitch_path(str(tmp_path), VIDEO)).read_text())
    assert [c["clip_id"] for c in record["clips"]] == [c.clip_id for c in clips]
    assert {(c, o): t for c, o, t in record["track_ids"]} == result.track_ids
    assert result.record_written


def test_rerun_recomputes_the_same_map_and_rewrites_nothing(tmp_path: Path) -> None:
    clips = make_video(tmp_path, 9, seed=1)
    first = stitch_video_output(str(tmp_path), VIDEO, clips)
    assert first.rewritten, "permuted clip-local ids must need rewriting"
    before = mtimes(tmp_path)
    again = stitch_video_output(str(tmp_path), VIDEO, list(reversed(clips)))
    assert (again.track_ids, again.rewritten, again.record_written) == (first.track_ids, [], False)
    assert mtimes(tmp_path) == before


def test_a_file_left_stale_by_a_crash_is_the_only_one_a_rerun_rewrites(tmp_path: Path) -> None:
    clips = make_video(tmp_path, 9, seed=2)
    reference = stitch_video_output(str(tmp_path), VIDEO, clips)
    # Simulate a crash after the masks/ of the last clip were rewritten but before its pointers/ and the record.
    last = clips[-1]
    stale = pq.read_table(tmp_path / last.pointers_file)
    index = stale.schema.get_field_index("track_id")
    stale = stale.set_column(index, stale.schema.field(index), stale.column("object_id").cast(pa.int64()))
    pq.write_table(stale, tmp_path / last.pointers_file)
    Path(stitch_path(str(tmp_path), VIDEO)).unlink()
    rerun = stitch_video_output(str(tmp_path), VIDEO, clips)
    assert rerun.track_ids == reference.track_ids
    assert rerun.rewritten == [last.pointers_file] and rerun.record_written
    assert all(len(ids) == 1 for ids in tracks_of(tmp_path, clips).values())


def test_prompted_ids_are_kept_and_continue_through_automatic_clips(tmp_path: Path) -> None:
    prompted_ids = {"A": 7, "B": 3, "D": 5}
    clips = make_video(tmp_path, 9, seed=3, prompted_first=prompted_ids)
    before = {c.clip_id: pq.read_table(tmp_path / c.masks_file) for c in clips}
    result = stitch_video_output(str(tmp_path), VIDEO, clips, first_new_id=8)
    found = tracks_of(tmp_path, clips)
    assert found == {"A": {7}, "B": {3}, "C": {8}, "D": {5}}
    assert clips[0].masks_file not in result.rewritten  # the prompted clip already holds its ids
    assert pq.read_table(tmp_path / clips[0].masks_file).equals(before[clips[0].clip_id])


def test_objects_seen_before_their_prompted_clip_take_the_prompted_ids(tmp_path: Path) -> None:
    # Clips [0, 10), [7, 17), [14, 22): prompts only in the middle clip, whose objects are A, B and C.
    clips = make_video(tmp_path, 10, seed=5, prompted_first={"A": 4, "B": 9, "C": 2}, prompted_clip=1)
    assert [c.prompted for c in clips] == [False, True, False]
    stitch_video_output(str(tmp_path), VIDEO, clips, first_new_id=10)
    found = tracks_of(tmp_path, clips)
    # A and B carry their prompted ids back into the first clip; D ends before the prompted clip: a new id.
    assert {name: found[name] for name in "ABC"} == {"A": {4}, "B": {9}, "C": {2}}
    [d] = found["D"]
    assert d >= 10


def test_without_prompted_clips_the_seeded_map_is_stitch_video(tmp_path: Path) -> None:
    clips = make_video(tmp_path, 9, seed=4)
    data = [overlap_data(c, 3, pq.read_table(tmp_path / c.masks_file)) for c in clips]
    assert seeded_track_ids(data, set()) == stitch_video(data)
    # Seeding with a first free id only shifts the new ids.
    shifted = seeded_track_ids(data, set(), first_new_id=10)
    assert {k: v - 10 for k, v in shifted.items()} == stitch_video(data)
