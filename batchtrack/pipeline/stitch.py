"""Video-level track ids: stitch each clip's objects to the previous clip's through their overlap frames.

Clips are tracked independently, so object ids are per clip. Consecutive clips share a few frames
(`clip.overlap_frames`); on those frames an object tracked by both clips has nearly the same mask.
For each pair of consecutive clips, objects are matched one-to-one by the Hungarian algorithm on
their mean mask IoU over the shared frames, with the cosine similarity of their object pointers as
a small tie-breaker. A pair links only when its mean IoU reaches `min_iou`; a linked object inherits
the previous clip's track id, any other object starts a new track. Track ids are dense from 0 in the
order objects first appear in the video, and the result does not depend on the clips' object ids.

When prompts give video-level object ids the ids already agree across clips and no stitching is
needed (`keep_object_ids=True`); `prompted_disagreements` then checks the overlaps agree with them.

`count_id_switches` measures the result against ground truth (the closing measurement).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
from scipy.optimize import linear_sum_assignment

from batchtrack.io.rle import decode_mask

MaskLike = np.ndarray | str  # (H, W) bool, or a COCO counts string of size `ClipOverlapData.size`
FrameMasks = Mapping[int, Mapping[int, np.ndarray]]  # frame_index -> {id: (H, W) bool}


@dataclass(frozen=True)
class ClipOverlapData:
    """What stitching needs of one clip: its frame range and its objects on the frames it shares.

    `masks[object_id][frame_index]` holds the object's mask on the frames shared with the previous
    and the next clip (other frames may be present and are ignored); a missing frame means an empty
    mask. `pointers[object_id][frame_index]` optionally holds the 256-d object pointer there.
    `first_frames[object_id]` is the first frame the object appears in the clip; it orders new
    tracks and lists objects that never appear in an overlap (defaults: derived from `masks`).
    """

    clip_id: str
    start_frame: int  # first frame of the clip (absolute index in the video)
    end_frame: int  # one past the clip's last frame
    masks: Mapping[int, Mapping[int, MaskLike]]
    pointers: Mapping[int, Mapping[int, np.ndarray]] = field(default_factory=dict)
    first_frames: Mapping[int, int] = field(default_factory=dict)
    size: tuple[int, int] | None = None  # (height, width); needed only when masks are RLE strings
    # Optional per-object appearance summary (mean object pointer over the clip), for re-identification.
    signatures: Mapping[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.end_frame <= self.start_frame:
            raise ValueError(f"clip {self.clip_id}: end_frame {self.end_frame} <= start_frame {self.start_frame}")

    @classmethod
    def from_columns(
        cls,
        clip_id: str,
        start_frame: int,
        end_frame: int,
        overlap_frames: int,
        frame_index: Sequence[int],
        object_id: Sequence[int],
        rle: Sequence[str],
        size: tuple[int, int],
        area: Sequence[int] | None = None,
        embedding: Sequence[np.ndarray] | None = None,
    ) -> ClipOverlapData:
        """Build from one clip's `masks/` columns (and optionally `pointers/` embeddings in the same row order).

        Only the first and last `overlap_frames` frames are kept (as RLE, decoded when compared).
        With `area`, an object's first frame is its first non-empty row; otherwise its first row.
        With `embedding`, an object's signature is its mean pointer over its non-empty rows.
        """
        shared = set(range(start_frame, min(start_frame + overlap_frames, end_frame)))
        shared |= set(range(max(end_frame - overlap_frames, start_frame), end_frame))
        masks: dict[int, dict[int, str]] = {}
        pointers: dict[int, dict[int, np.ndarray]] = {}
        firsts: dict[int, int] = {}
        sums: dict[int, np.ndarray] = {}
        counts: dict[int, int] = {}
        for row, (frame, obj) in enumerate(zip(frame_index, object_id, strict=True)):
            frame, obj = int(frame), int(obj)
            firsts.setdefault(obj, end_frame)
            if area is None or area[row] > 0:
                firsts[obj] = min(firsts[obj], frame)
                if embedding is not None:
                    sums[obj] = sums.get(obj, 0.0) + np.asarray(embedding[row], dtype=np.float64)
                    counts[obj] = counts.get(obj, 0) + 1
            if frame in shared:
                masks.setdefault(obj, {})[frame] = rle[row]
                if embedding is not None:
                    pointers.setdefault(obj, {})[frame] = np.asarray(embedding[row], dtype=np.float32)
        signatures = {obj: (total / counts[obj]).astype(np.float32) for obj, total in sums.items()}
        return cls(clip_id, start_frame, end_frame, masks, pointers, firsts, size, signatures)

    def object_order(self) -> list[int]:
        """The clip's objects in order of first appearance.

        Objects appearing on the same frame are ordered by their mask's first pixel in raster order
        when that mask is here, so the order depends on the content, not on the clip's object ids;
        the object id breaks any remaining tie.
        """
        firsts: dict[int, int] = {}
        for obj, frames in self.masks.items():
            visible = [f for f, m in frames.items() if _mask(self, m).any()]
            firsts[obj] = min(visible) if visible else self.end_frame
        firsts.update(self.first_frames)

        def key(obj: int) -> tuple[int, int, int]:
            mask = self.mask(obj, firsts[obj])
            anchor = int(np.argmax(mask.reshape(-1))) if mask is not None and mask.any() else -1
            return (firsts[obj], anchor, obj)

        return sorted(firsts, key=key)

    def mask(self, object_id: int, frame_index: int) -> np.ndarray | None:
        """The object's bool mask on that frame, or None when it has none there (empty)."""
        value = self.masks.get(object_id, {}).get(frame_index)
        return None if value is None else _mask(self, value)


def _mask(clip: ClipOverlapData, value: MaskLike) -> np.ndarray:
    if isinstance(value, str):
        if clip.size is None:
            raise ValueError(f"clip {clip.clip_id}: RLE masks need ClipOverlapData.size")
        return decode_mask(value, *clip.size)
    return np.asarray(value, dtype=bool)


@dataclass(frozen=True)
class OverlapLink:
    """A candidate link between an object of the previous clip and one of the next clip."""

    previous_object: int
    next_object: int
    mean_iou: float
    pointer_cosine: float


def _pair_matrices(prev: ClipOverlapData, cur: ClipOverlapData) -> tuple[list[int], list[int], np.ndarray, np.ndarray]:
    """Mean IoU and mean pointer cosine over the shared frames, for all (prev object, cur object) pairs."""
    prev_ids, cur_ids = prev.object_order(), cur.object_order()
    a, b = len(prev_ids), len(cur_ids)
    iou_sum = np.zeros((a, b))
    iou_frames = np.zeros((a, b))
    cos_sum = np.zeros((a, b))
    cos_frames = np.zeros((a, b))
    for frame in range(max(prev.start_frame, cur.start_frame), min(prev.end_frame, cur.end_frame)):
        pm = [prev.mask(o, frame) for o in prev_ids]
        cm = [cur.mask(o, frame) for o in cur_ids]
        shape = next((m.shape for m in pm + cm if m is not None), None)
        if shape is not None:
            empty = np.zeros(shape, dtype=bool)
            pa_ = np.stack([(m if m is not None else empty).reshape(-1) for m in pm]).astype(np.float32) if a else None
            cb_ = np.stack([(m if m is not None else empty).reshape(-1) for m in cm]).astype(np.float32) if b else None
            if pa_ is not None and cb_ is not None:
                inter = pa_ @ cb_.T  # (A, B)
                union = pa_.sum(1)[:, None] + cb_.sum(1)[None, :] - inter  # (A, B)
                # Frames where neither object is visible say nothing about the link.
                seen = union > 0
                iou_sum += np.where(seen, inter / np.maximum(union, 1.0), 0.0)
                iou_frames += seen
        for i, po in enumerate(prev_ids):
            p = prev.pointers.get(po, {}).get(frame)
            if p is None:
                continue
            for j, co in enumerate(cur_ids):
                q = cur.pointers.get(co, {}).get(frame)
                if q is None:
                    continue
                norm = float(np.linalg.norm(p) * np.linalg.norm(q))
                if norm > 0:
                    cos_sum[i, j] += float(np.dot(p, q)) / norm
                    cos_frames[i, j] += 1
    mean_iou = np.where(iou_frames > 0, iou_sum / np.maximum(iou_frames, 1), 0.0)
    mean_cos = np.where(cos_frames > 0, cos_sum / np.maximum(cos_frames, 1), 0.0)
    return prev_ids, cur_ids, mean_iou, mean_cos


def link_clips(
    prev: ClipOverlapData, cur: ClipOverlapData, *, min_iou: float = 0.3, pointer_weight: float = 0.05
) -> list[OverlapLink]:
    """One-to-one links between `prev`'s and `cur`'s objects through their shared frames.

    Hungarian assignment maximising mean IoU + `pointer_weight` x mean pointer cosine; links whose
    mean IoU is below `min_iou` are dropped. Sorted by `next_object`'s first appearance.
    """
    prev_ids, cur_ids, mean_iou, mean_cos = _pair_matrices(prev, cur)
    if not prev_ids or not cur_ids:
        return []
    score = mean_iou + pointer_weight * mean_cos  # (A, B)
    rows, cols = linear_sum_assignment(score, maximize=True)
    links = [
        OverlapLink(prev_ids[i], cur_ids[j], float(mean_iou[i, j]), float(mean_cos[i, j]))
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True)
        if mean_iou[i, j] >= min_iou
    ]
    order = {o: k for k, o in enumerate(cur_ids)}
    return sorted(links, key=lambda link: order[link.next_object])


def stitch_video(
    clips: Sequence[ClipOverlapData],
    *,
    min_iou: float = 0.3,
    pointer_weight: float = 0.05,
    keep_object_ids: bool = False,
    reid_min_cosine: float | None = None,
) -> dict[tuple[str, int], int]:
    """Video-level track ids for every (clip_id, object_id), clips given in temporal order.

    With `keep_object_ids` (prompted mode: object ids are already video-level) every object keeps
    its id as track id. Otherwise ids are dense from 0 in order of first appearance.

    `reid_min_cosine` turns on re-identification: an object no overlap links (it was out of view
    across a clip boundary) takes the id of a track that is not in its clip when their signatures
    (`ClipOverlapData.signatures`) have cosine similarity at least this (Hungarian, best first).
    """
    ordered = sorted(clips, key=lambda c: (c.start_frame, c.end_frame))
    if keep_object_ids:
        return {(c.clip_id, obj): obj for c in ordered for obj in c.object_order()}
    track_ids: dict[tuple[str, int], int] = {}
    last_signature: dict[int, np.ndarray] = {}  # track id -> signature in its latest clip
    next_id = 0
    previous: ClipOverlapData | None = None
    for clip in ordered:
        inherited = inherited_track_ids(previous, clip, track_ids, min_iou=min_iou, pointer_weight=pointer_weight)
        if reid_min_cosine is not None:
            inherited.update(_reidentify(clip, inherited, last_signature, reid_min_cosine))
        next_id = assign_track_ids(clip, inherited, track_ids, next_id)
        for obj in clip.object_order():
            if obj in clip.signatures:
                last_signature[track_ids[(clip.clip_id, obj)]] = np.asarray(clip.signatures[obj], dtype=np.float64)
        previous = clip
    return track_ids


def inherited_track_ids(
    previous: ClipOverlapData | None,
    clip: ClipOverlapData,
    track_ids: Mapping[tuple[str, int], int],
    *,
    min_iou: float,
    pointer_weight: float = 0.0,
) -> dict[int, int]:
    """object_id of `clip` → the track id of the `previous` clip's object it links to through the overlap."""
    if previous is None:
        return {}
    return {
        link.next_object: track_ids[(previous.clip_id, link.previous_object)]
        for link in link_clips(previous, clip, min_iou=min_iou, pointer_weight=pointer_weight)
    }


def assign_track_ids(
    clip: ClipOverlapData, inherited: Mapping[int, int], track_ids: dict[tuple[str, int], int], next_id: int
) -> int:
    """Give each object of `clip`, in order of first appearance, its inherited track id or the next new one.

    Returns the next unused id.
    """
    for obj in clip.object_order():
        if obj in inherited:
            track_ids[(clip.clip_id, obj)] = inherited[obj]
        else:
            track_ids[(clip.clip_id, obj)] = next_id
            next_id += 1
    return next_id


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _reidentify(
    clip: ClipOverlapData, inherited: dict[int, int], last_signature: dict[int, np.ndarray], min_cosine: float
) -> dict[int, int]:
    """Unlinked objects of `clip` -> dormant tracks (not continued in this clip) with similar signatures."""
    taken = set(inherited.values())
    objects = [o for o in clip.object_order() if o not in inherited and o in clip.signatures]
    tracks = sorted(t for t in last_signature if t not in taken)
    if not objects or not tracks:
        return {}
    a = np.stack([_unit(np.asarray(clip.signatures[o], dtype=np.float64)) for o in objects])  # (O, C)
    b = np.stack([_unit(last_signature[t]) for t in tracks])  # (T, C)
    cosine = a @ b.T  # (O, T)
    rows, cols = linear_sum_assignment(cosine, maximize=True)
    return {
        objects[r]: tracks[c] for r, c in zip(rows.tolist(), cols.tolist(), strict=True) if cosine[r, c] >= min_cosine
    }


def prompted_disagreements(
    clips: Sequence[ClipOverlapData], *, min_iou: float = 0.3
) -> list[tuple[str, str, int, int | None]]:
    """Where overlap IoU contradicts video-level object ids: (prev clip, next clip, object, linked-to).

    For prompted clips each object visible in an overlap should link to the same id in the next
    clip; an entry says the next clip's object `object` was linked to `linked-to` (None: to nothing).
    """
    ordered = sorted(clips, key=lambda c: (c.start_frame, c.end_frame))
    found: list[tuple[str, str, int, int | None]] = []
    for prev, cur in pairwise(ordered):
        links = {link.next_object: link.previous_object for link in link_clips(prev, cur, min_iou=min_iou)}
        prev_ids = set(prev.object_order())
        for obj in cur.object_order():
            if obj not in prev_ids:
                continue
            visible_in_both = any(
                (m := prev.mask(obj, f)) is not None and m.any() and (n := cur.mask(obj, f)) is not None and n.any()
                for f in range(max(prev.start_frame, cur.start_frame), min(prev.end_frame, cur.end_frame))
            )
            if visible_in_both and links.get(obj) != obj:
                found.append((prev.clip_id, cur.clip_id, obj, links.get(obj)))
    return found


# ---------------------------------------------------------------------------------------------
# Measurement against ground truth


def match_frame(pred: Mapping[int, np.ndarray], gt: Mapping[int, np.ndarray], iou_threshold: float) -> dict[int, int]:
    """GT object -> predicted track on one frame: Hungarian on IoU, pairs with IoU >= threshold."""
    pred_ids = [t for t, m in pred.items() if np.asarray(m).any()]
    gt_ids = [g for g, m in gt.items() if np.asarray(m).any()]
    if not pred_ids or not gt_ids:
        return {}
    p = np.stack([np.asarray(pred[t], dtype=bool).reshape(-1) for t in pred_ids]).astype(np.float32)  # (P, HW)
    g = np.stack([np.asarray(gt[o], dtype=bool).reshape(-1) for o in gt_ids]).astype(np.float32)  # (G, HW)
    inter = g @ p.T  # (G, P)
    union = g.sum(1)[:, None] + p.sum(1)[None, :] - inter  # (G, P)
    iou = inter / np.maximum(union, 1.0)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return {
        gt_ids[r]: pred_ids[c] for r, c in zip(rows.tolist(), cols.tolist(), strict=True) if iou[r, c] >= iou_threshold
    }


def count_id_switches(pred_tracks: FrameMasks, gt_tracks: FrameMasks, *, iou_threshold: float = 0.5) -> int:
    """ID switches of predicted tracks against ground truth.

    Both arguments map frame_index -> {id: (H, W) bool mask}. On every frame, GT objects are
    matched one-to-one to predicted tracks with IoU >= `iou_threshold`; a switch is a GT object
    whose matched track id differs from the one it was last matched to (frames where it is
    unmatched do not reset it).
    """
    last: dict[int, int] = {}
    switches = 0
    for frame in sorted(gt_tracks):
        for gt_id, track in match_frame(pred_tracks.get(frame, {}), gt_tracks[frame], iou_threshold).items():
            if gt_id in last and last[gt_id] != track:
                switches += 1
            last[gt_id] = track
    return switches
