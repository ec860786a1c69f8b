"""Cross-clip stitching on ground truth cut into overlapping clips with scrambled per-clip ids."""

from __future__ import annotations

import numpy as np
import pytest

from batchtrack.io.rle import encode_mask
from batchtrack.pipeline.stitch import (
    ClipOverlapData,
    count_id_switches,
    link_clips,
    prompted_disagreements,
    stitch_video,
)
from batchtrack.synthetic.render import render_frames
from batchtrack.synthetic.scene import Scene, SceneSpec

H, W = 48, 64


def disc(cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def cut_clips(
    gt: dict[int, dict[int, np.ndarray]],
    num_frames: int,
    length: int,
    overlap: int,
    seed: int,
    pointers: dict[int, dict[int, np.ndarray]] | None = None,
) -> tuple[list[ClipOverlapData], dict[tuple[str, int], int]]:
    """Cut GT {frame: {obj: mask}} into clips whose objects get random per-clip ids.

    Returns the clips and, for checking, (clip_id, clip object id) -> GT object id. An object is
    part of a clip only if it is visible somewhere in the clip (as a tracker would report it).
    """
    rng = np.random.default_rng(seed)
    clips: list[ClipOverlapData] = []
    truth: dict[tuple[str, int], int] = {}
    start = 0
    while True:
        end = min(start + length, num_frames)
        clip_id = f"clip{start:04d}"
        present = sorted({o for f in range(start, end) for o, m in gt[f].items() if m.any()})
        new_ids = rng.permutation(100)[: len(present)].tolist()
        rename = dict(zip(present, new_ids, strict=True))
        masks: dict[int, dict[int, np.ndarray]] = {rename[o]: {} for o in present}
        ptrs: dict[int, dict[int, np.ndarray]] = {rename[o]: {} for o in present}
        firsts: dict[int, int] = {}
        for f in range(start, end):
            for o in present:
                m = gt[f].get(o)
                if m is not None and m.any():
                    firsts.setdefault(rename[o], f)
                if f < start + overlap or f >= end - overlap:
                    masks[rename[o]][f] = m if m is not None else np.zeros((H, W), bool)
                    if pointers is not None:
                        ptrs[rename[o]][f] = pointers[o][f]
        clips.append(ClipOverlapData(clip_id, start, end, masks, ptrs, firsts))
        truth.update({(clip_id, n): o for o, n in rename.items()})
        if end == num_frames:
            return clips, truth
        start = end - overlap


def assert_consistent(result: dict[tuple[str, int], int], truth: dict[tuple[str, int], int]) -> None:
    """Same GT object <-> same track id, for every clip object (a bijection)."""
    gt_of_track: dict[int, int] = {}
    track_of_gt: dict[int, int] = {}
    for key, gt_obj in truth.items():
        track = result[key]
        assert gt_of_track.setdefault(track, gt_obj) == gt_obj, f"track {track} holds two GT objects"
        assert track_of_gt.setdefault(gt_obj, track) == track, f"GT object {gt_obj} split into two tracks"


def synthetic_gt(spec: SceneSpec) -> dict[int, dict[int, np.ndarray]]:
    return {
        fr.frame_index: dict(zip(fr.object_ids, fr.masks, strict=True)) for fr in render_frames(Scene.from_spec(spec))
    }


def to_pred(
    clips: list[ClipOverlapData], result: dict[tuple[str, int], int], full: dict[str, dict[int, dict[int, np.ndarray]]]
) -> dict[int, dict[int, np.ndarray]]:
    """Per-frame predicted masks by track id; each frame taken from the first clip that covers it."""
    pred: dict[int, dict[int, np.ndarray]] = {}
    for clip in clips:
        for f, objs in full[clip.clip_id].items():
            if f in pred:
                continue
            pred[f] = {result[(clip.clip_id, o)]: m for o, m in objs.items()}
    return pred


def test_stitching_recovers_ids_across_clips_of_a_synthetic_video() -> None:
    spec = SceneSpec(seed=3, width=96, height=64, num_frames=40, num_objects=4, exit_prob=0.0)
    gt = synthetic_gt(spec)
    clips, truth = cut_clips(gt, spec.num_frames, length=12, overlap=3, seed=1)
    assert len(clips) >= 3
    result = stitch_video(clips)
    assert_consistent(result, truth)
    # Dense from 0 in order of first appearance, whatever the per-clip ids were.
    assert sorted(set(result.values())) == list(range(len({o for o in truth.values()})))
    first_clip = clips[0]
    assert [result[(first_clip.clip_id, o)] for o in first_clip.object_order()] == list(
        range(len(first_clip.object_order()))
    )

    # Measured against the GT: stitched tracks make no ID switches; unstitched per-clip ids do.
    full: dict[str, dict[int, dict[int, np.ndarray]]] = {}
    for clip in clips:
        rename = {o: n for (cid, n), o in truth.items() if cid == clip.clip_id}
        full[clip.clip_id] = {
            f: {rename[o]: m for o, m in gt[f].items() if o in rename} for f in range(clip.start_frame, clip.end_frame)
        }
    assert count_id_switches(to_pred(clips, result, full), gt) == 0
    naive = {key: key[1] for key in result}
    assert count_id_switches(to_pred(clips, naive, full), gt) > 0


def test_stitching_is_deterministic_and_independent_of_per_clip_ids() -> None:
    spec = SceneSpec(seed=5, width=96, height=64, num_frames=30, num_objects=3, exit_prob=0.0)
    gt = synthetic_gt(spec)
    clips_a, truth_a = cut_clips(gt, spec.num_frames, length=10, overlap=2, seed=1)
    clips_b, truth_b = cut_clips(gt, spec.num_frames, length=10, overlap=2, seed=2)
    res_a, res_b = stitch_video(clips_a), stitch_video(clips_b)
    by_gt_a = {truth_a[k]: v for k, v in res_a.items()}
    by_gt_b = {truth_b[k]: v for k, v in res_b.items()}
    assert by_gt_a == by_gt_b
    assert stitch_video(list(reversed(clips_a))) == res_a


def _moving_scene(num_frames: int, hide_3: bool = True) -> dict[int, dict[int, np.ndarray]]:
    """Object 1 crosses the frame all along; object 2 enters at frame 14; object 3 is gone 8..12 if hidden."""
    gt: dict[int, dict[int, np.ndarray]] = {}
    for f in range(num_frames):
        objs = {1: disc(5 + 2 * f, 20, 6)}
        objs[2] = disc(50, 10 + f, 5) if f >= 14 else np.zeros((H, W), bool)
        objs[3] = disc(20, 38, 5) if not (hide_3 and 8 <= f < 13) else np.zeros((H, W), bool)
        gt[f] = objs
    return gt


def test_object_entering_mid_video_gets_a_new_track_id() -> None:
    gt = _moving_scene(26, hide_3=False)
    clips, truth = cut_clips(gt, 26, length=10, overlap=2, seed=0)  # clips 0-10, 8-18, 16-26
    result = stitch_video(clips)
    assert_consistent(result, truth)
    track_of = {truth[k]: v for k, v in result.items()}
    assert track_of == {1: 0, 3: 1, 2: 2}  # appears last, after objects 1 and 3 from the first clip


def test_object_absent_from_the_overlap_starts_a_new_track() -> None:
    gt = _moving_scene(26)
    # Object 3 is hidden on frames 8..12, which covers the overlap 8..9 of clips 0-10 and 8-18.
    clips, truth = cut_clips(gt, 26, length=10, overlap=2, seed=0)
    result = stitch_video(clips)
    tracks_of_3 = {v for k, v in result.items() if truth[k] == 3}
    assert len(tracks_of_3) == 2
    tracks_of_1 = {v for k, v in result.items() if truth[k] == 1}
    assert len(tracks_of_1) == 1


def test_pointer_similarity_breaks_a_tie_between_identical_masks() -> None:
    """Two objects fully overlapping in the shared frames: only their pointers tell them apart."""
    same = disc(30, 24, 8)
    e0, e1 = np.eye(4)[0], np.eye(4)[1]
    prev = ClipOverlapData("a", 0, 10, {5: {8: same, 9: same}, 6: {8: same, 9: same}}, {5: {8: e0}, 6: {8: e1}})
    cur = ClipOverlapData("b", 8, 18, {0: {8: same, 9: same}, 1: {8: same, 9: same}}, {0: {8: e1}, 1: {8: e0}})
    links = {(lk.previous_object, lk.next_object) for lk in link_clips(prev, cur)}
    assert links == {(5, 1), (6, 0)}


def test_low_iou_pairs_are_not_linked() -> None:
    prev = ClipOverlapData("a", 0, 10, {0: {8: disc(20, 20, 6), 9: disc(20, 20, 6)}})
    cur = ClipOverlapData("b", 8, 18, {0: {8: disc(28, 20, 6), 9: disc(28, 20, 6)}})  # IoU ~0.1
    assert link_clips(prev, cur) == []
    assert stitch_video([prev, cur]) == {("a", 0): 0, ("b", 0): 1}
    assert link_clips(prev, cur, min_iou=0.05) != []


def test_rle_masks_are_decoded_with_the_clip_size() -> None:
    m = disc(20, 20, 6)
    prev = ClipOverlapData("a", 0, 10, {3: {9: encode_mask(m)}}, size=(H, W))
    cur = ClipOverlapData("b", 9, 18, {7: {9: m}})
    assert stitch_video([prev, cur]) == {("a", 3): 0, ("b", 7): 0}
    with pytest.raises(ValueError, match="size"):
        stitch_video([ClipOverlapData("a", 0, 10, {3: {9: encode_mask(m)}}), cur])


def test_prompted_mode_keeps_object_ids_and_checks_the_overlap() -> None:
    gt = _moving_scene(26)
    clips = [
        ClipOverlapData(f"c{s}", s, s + 10, {o: {f: gt[f][o] for f in range(s, s + 10)} for o in (1, 3)})
        for s in (0, 8, 16)
    ]
    assert set(stitch_video(clips, keep_object_ids=True).values()) == {1, 3}
    assert prompted_disagreements(clips) == []
    # Swap ids in the last clip: the overlap now contradicts them.
    swapped = ClipOverlapData("c16", 16, 26, {1: clips[2].masks[3], 3: clips[2].masks[1]})
    found = prompted_disagreements([clips[0], clips[1], swapped])
    assert {(entry[2], entry[3]) for entry in found} == {(1, 3), (3, 1)}


def test_count_id_switches_counts_changes_of_matched_track() -> None:
    a, b = disc(15, 20, 6), disc(45, 20, 6)
    gt = {f: {10: a, 20: b} for f in range(4)}
    pred = {0: {0: a, 1: b}, 1: {0: a, 1: b}, 2: {1: a, 0: b}, 3: {5: a}}
    # Frame 2: both swap (2 switches); frame 3: GT 10 -> track 5 (1), GT 20 unmatched (no switch).
    assert count_id_switches(pred, gt) == 3
    # A low-IoU prediction is no match.
    assert count_id_switches({0: {0: a}, 1: {1: disc(24, 20, 6)}}, {0: {10: a}, 1: {10: a}}) == 0


def test_clip_overlap_from_output_columns_keeps_only_the_shared_frames() -> None:
    gt = _moving_scene(26, hide_3=False)
    clips = []
    for start, end in ((0, 10), (8, 18), (16, 26)):
        rows = [(f, o, m) for f in range(start, end) for o, m in gt[f].items() if f >= 14 or o != 2]
        clips.append(
            ClipOverlapData.from_columns(
                f"c{start}",
                start,
                end,
                2,
                frame_index=[f for f, _, _ in rows],
                object_id=[o + 10 * start for _, o, _ in rows],  # per-clip ids
                rle=[encode_mask(m) for _, _, m in rows],
                size=(H, W),
                area=[int(m.sum()) for _, _, m in rows],
                embedding=[np.full(4, o, np.float32) for _, o, _ in rows],
            )
        )
    assert sorted(clips[1].masks[1 + 80]) == [8, 9, 16, 17]
    assert clips[1].first_frames[2 + 80] == 14
    result = stitch_video(clips)
    assert result[("c0", 1)] == result[("c8", 81)] == result[("c16", 161)]
    assert result[("c8", 82)] == result[("c16", 162)] != result[("c0", 3)]


def test_reidentification_links_an_object_back_after_a_gap_longer_than_the_overlap() -> None:
    gt = _moving_scene(26)  # object 3 is out of view on frames 8..12, across the first clip boundary
    # Pointers: one fixed direction per GT object, so signatures identify objects.
    directions = {o: np.eye(8)[o] for o in (1, 2, 3)}
    clips = []
    for start, end in ((0, 10), (8, 18), (16, 26)):
        rows = [(f, o, m) for f in range(start, end) for o, m in gt[f].items() if m.any()]
        clips.append(
            ClipOverlapData.from_columns(
                f"c{start}",
                start,
                end,
                2,
                frame_index=[f for f, _, _ in rows],
                object_id=[o + 10 * start for _, o, _ in rows],
                rle=[encode_mask(m) for _, _, m in rows],
                size=(H, W),
                embedding=[directions[o] for _, o, _ in rows],
            )
        )
    plain = stitch_video(clips)
    assert plain[("c0", 3)] != plain[("c8", 83)]
    reid = stitch_video(clips, reid_min_cosine=0.9)
    assert reid[("c0", 3)] == reid[("c8", 83)] == reid[("c16", 163)]
    assert reid[("c8", 82)] not in {reid[("c0", 1)], reid[("c0", 3)]}  # a new object is not forced onto a track
    assert reid[("c0", 1)] == reid[("c8", 81)] == reid[("c16", 161)]
