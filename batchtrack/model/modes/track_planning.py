"""SAM 3's track planning: from one frame's detections and propagated tracks to the tracker's changes.

The detect-and-track loop of SAM 3 (`sam3_video_base.py::_det_track_one_frame`) runs, on every
frame, the detector and the tracker's propagation, then *plans* (this module), then *executes*
(concept.py adds new objects as mask prompts, removes, suppresses, re-conditions). Planning is
stateful across frames: hot-start counts how often a young track was unmatched or duplicated,
keep-alive counts matches and misses, occlusion suppression needs each track's last occluded frame.
That state is a small value (`PlanningState`) and `plan_frame` is a pure function of it, so every
rule is tested with hand-made masks. The per-frame matching itself is `association.match_detections`.

This is a module of its own rather than more of association.py: association.py is the stateless
matching of one frame (shared with automatic mode) and the learned head; the rules here carry
state from frame to frame.

Rules, with SAM 3's defaults (`TrackPlanningConfig`):
- detections: score > 0.5, mask NMS at IoU 0.1;
- matching: a track is matched by a detection with IoU >= 0.5; a detection overlapping no track at
  IoU >= 0.1 with score >= 0.7 starts a new track (on a frame without tracks, every detection does), ids in
  detection order (capped at `max_objects` live tracks, best scores kept);
- hot-start: a track born within the last 15 frames is removed once it was unmatched on 8 frames, or
  once it overlapped an older track through one detection on 8 frames; its rows are held back for
  15 frames (concept.py) so a removed track never reaches the output;
- keep-alive: +1 per frame matched (at most 30), -1 per frame unmatched (at least -1), 30 at birth;
  with `suppress_unmatched_only_within_hotstart` off, a track at <= 0 is hidden on that frame
  (SAM 3 keeps the switch on, so by default it only counts);
- occlusion suppression: of two tracks with mask IoU >= 0.7, the more recently occluded one is
  suppressed (its mask cleared before memory is written);
- re-conditioning: every 16th frame, a track whose best detection has score >= 0.8 and IoU >= 0.8,
  and whose own object score logit is > 0.8, takes that detection's mask as a new conditioning frame.

Concepts: SAM 3 runs one session per text prompt, so rules apply within a concept: a detection of
one concept never matches, duplicates or suppresses a track of another. Object ids are shared.

Visually prompted tracks (box/point/mask prompts of the manifest, tracked in the same clip) are
live tracks the planner did not start: ids the tracker propagates that `PlanningState` does not
hold. SAM 3's add-prompt path (`Sam3VideoInferenceWithInstanceInteractivity.add_tracker_new_points`)
puts such an object into the same masklet metadata as detected ones, so the next frames' association
sees it: a detection over it matches it and starts no new track. We do the same, for every concept
(a prompted object has none, and a "person" detected over a box-prompted person is that object),
and count it as older than any concept track, so a young concept track sharing a detection with it
is a hot-start duplicate. The removal rules are the planner's for its own tracks only: a visual
prompt is the user's object, and it is never removed, hidden, suppressed or re-conditioned here
(SAM 3 would keep-alive-count it too, but with `suppress_unmatched_only_within_hotstart` on, the
count changes nothing for a track that was never on probation).

Letters: D detections, M tracks, H x W mask resolution (any: masks are compared at the smaller one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import torch

from batchtrack.errors import ConfigError
from batchtrack.model.modes.association import (
    DetectionMatch,
    match_detections,
    occlusion_suppression,
    select_detections,
)

NEVER_OCCLUDED = -1
# SAM 3's ALWAYS_OCCLUDED: the last-occluded frame a track removed by hot-start counts with on its last frame.
REMOVED_OCCLUDED = 100000
# Where a visually prompted track sorts among concept tracks by birth: before every frame (after, in reverse).
VISUAL_FIRST_FRAME = -(2**62)
VISUAL_FIRST_FRAME_REVERSE = 2**62


@dataclass(frozen=True)
class TrackPlanningConfig:
    """Thresholds of SAM 3's video loop; defaults are SAM 3's (`model_builder.build_sam3_video_model`)."""

    detection_min_score: float = 0.5  # score_threshold_detection: detections kept at all
    detection_nms_iou: float = 0.1  # det_nms_thresh: mask NMS among a concept's detections (0 = off)
    assoc_iou: float = 0.1  # assoc_iou_thresh: a detection overlaps a track (not new; duplicates; keep-alive)
    track_assoc_iou: float = 0.5  # trk_assoc_iou_thresh: a track counts as matched
    new_detection_min_score: float = 0.7  # new_det_thresh: score of a detection that starts a track
    hotstart_delay: int = 15  # frames a new track is on probation; its rows are held back as long
    hotstart_unmatched: int = 8  # unmatched frames that remove a track on probation
    hotstart_duplicate: int = 8  # frames sharing a detection with an older track that remove it
    keep_alive_init: int = 30  # init_trk_keep_alive
    keep_alive_max: int = 30  # max_trk_keep_alive
    keep_alive_min: int = -1  # min_trk_keep_alive
    suppress_unmatched_only_within_hotstart: bool = True  # off: hide tracks whose keep-alive fell to <= 0
    occlusion_iou: float = 0.7  # suppress_overlapping_based_on_recent_occlusion_threshold (0 = off)
    recondition_every: int = 16  # recondition_every_nth_frame (0 = never)
    recondition_min_score: float = 0.8  # HIGH_CONF_THRESH of a re-conditioning detection
    recondition_min_iou: float = 0.8  # HIGH_IOU_THRESH between that detection and the track
    recondition_min_track_logit: float = 0.8  # the track's own object-score logit must exceed this
    max_objects: int = 64  # live tracks per video; extra new detections are dropped, lowest score first
    # Each output pixel belongs to one object at most, the most probable one there (SAM 3's
    # _apply_object_wise_non_overlapping_constraints on every frame's outputs).
    non_overlapping_outputs: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and f.name != "recondition_min_track_logit" and not 0.0 <= value <= 1.0:
                raise ConfigError(f"concept.{f.name} must be in [0, 1], got {value}")
        if self.hotstart_delay < 0 or self.recondition_every < 0 or self.max_objects < 1:
            raise ConfigError(
                f"concept.hotstart_delay ({self.hotstart_delay}) and concept.recondition_every "
                f"({self.recondition_every}) must be >= 0, concept.max_objects ({self.max_objects}) >= 1"
            )
        if self.hotstart_delay > 0 and max(self.hotstart_unmatched, self.hotstart_duplicate) > self.hotstart_delay:
            raise ConfigError(
                f"concept.hotstart_unmatched ({self.hotstart_unmatched}) and concept.hotstart_duplicate "
                f"({self.hotstart_duplicate}) must not exceed concept.hotstart_delay ({self.hotstart_delay})"
            )
        if not self.keep_alive_min <= self.keep_alive_init <= self.keep_alive_max:
            raise ConfigError(
                f"concept keep-alive must satisfy min <= init <= max, got {self.keep_alive_min}, "
                f"{self.keep_alive_init}, {self.keep_alive_max}"
            )


@dataclass(frozen=True)
class TrackRecord:
    """What planning remembers of one live track."""

    concept: int  # index into the video's concepts
    first_frame: int  # frame it was born on
    keep_alive: int
    unmatched_frames: int = 0  # frames it was unmatched (counted while on probation)
    last_occluded: int = NEVER_OCCLUDED  # last frame it was empty or suppressed


@dataclass(frozen=True)
class PlanningState:
    """Planning's memory of a video: live tracks, duplicate counts, the next id. O(live tracks) in size."""

    tracks: dict[int, TrackRecord] = field(default_factory=dict)
    # (older track, younger track) -> frames on which one detection overlapped both (younger on probation)
    duplicate_frames: dict[tuple[int, int], int] = field(default_factory=dict)
    next_id: int = 0


@dataclass(frozen=True)
class NewTrack:
    object_id: int
    detection: int  # index into the frame's detections
    concept: int


@dataclass
class FrameDecision:
    """What the tracker does on one frame, in SAM 3's terms."""

    new_tracks: list[NewTrack] = field(default_factory=list)  # add: the detection's mask as a prompt
    removed: list[int] = field(default_factory=list)  # hot-start: stop tracking, never output
    suppressed: list[int] = field(default_factory=list)  # occlusion: mask cleared (output and memory)
    hidden: list[int] = field(default_factory=list)  # keep-alive ran out: no row on this frame
    recondition: dict[int, int] = field(default_factory=dict)  # track id -> detection whose mask re-conditions it
    matches: dict[int, DetectionMatch] = field(default_factory=dict)  # per concept, for logs and tests
    detections: list[int] = field(default_factory=list)  # detections kept by score and NMS


def plan_frame(
    state: PlanningState,
    frame_index: int,
    det_masks: torch.Tensor,
    det_scores: torch.Tensor,
    det_concepts: torch.Tensor,
    track_ids: Sequence[int],
    track_masks: torch.Tensor,
    track_score_logits: torch.Tensor,
    config: TrackPlanningConfig,
    *,
    reverse: bool = False,
) -> tuple[FrameDecision, PlanningState]:
    """Plan one frame (SAM 3's `run_tracker_update_planning_phase`); returns the decision and the next state.

    det_masks (D, H, W) logits, det_scores (D,) probabilities, det_concepts (D,) concept indices: the
    detector's raw output. track_ids / track_masks (M, H', W') logits / track_score_logits (M,): the
    tracks propagated onto this frame, before memory. Tracks not in `state` (visual prompts) are matched by
    detections of every concept, so none of them starts a duplicate track, but they are never removed,
    hidden, suppressed or re-conditioned by these rules (module docstring).
    """
    cfg = config
    decision = FrameDecision()
    ids = [int(t) for t in track_ids]
    tracks = dict(state.tracks)
    duplicates = dict(state.duplicate_frames)
    next_id = state.next_id
    kept = select_detections(det_masks, det_scores, cfg.detection_min_score, 0.0)
    concepts = det_concepts.long()
    by_concept: dict[int, list[int]] = {}
    for k in kept:
        by_concept.setdefault(int(concepts[k]), []).append(k)
    if cfg.detection_nms_iou > 0:
        for c, members in by_concept.items():
            index = torch.tensor(members, dtype=torch.long)
            by_concept[c] = [
                members[i] for i in select_detections(det_masks[index], det_scores[index], 0.0, cfg.detection_nms_iou)
            ]
    # Detection order from here on (SAM 3 numbers new objects in it), whatever order selection kept them in.
    by_concept = {c: sorted(members) for c, members in by_concept.items()}
    decision.detections = sorted(k for members in by_concept.values() for k in members)

    row_of = {t: j for j, t in enumerate(ids)}
    visual = [t for t in ids if t not in tracks]
    born: list[NewTrack] = []
    probation_start = frame_index + cfg.hotstart_delay if reverse else frame_index - cfg.hotstart_delay
    for c in sorted(set(by_concept) | {r.concept for t, r in tracks.items() if t in row_of}):
        dets = by_concept.get(c, [])
        own = [t for t in ids if t in visual or tracks[t].concept == c]
        det_index = torch.tensor(dets, dtype=torch.long)
        trk_index = torch.tensor([row_of[t] for t in own], dtype=torch.long)
        match = match_detections(
            det_masks[det_index],
            det_scores[det_index],
            track_masks[trk_index],
            own,
            assoc_iou=cfg.assoc_iou,
            track_assoc_iou=cfg.track_assoc_iou,
            new_min_score=cfg.new_detection_min_score,
            recondition_min_score=cfg.recondition_min_score,
            recondition_min_iou=cfg.recondition_min_iou,
        )
        # Back to the frame's detection indices.
        match = replace(
            match,
            new_detections=[dets[k] for k in match.new_detections],
            det_to_tracks={dets[k]: v for k, v in match.det_to_tracks.items()},
            recondition={t: dets[k] for t, k in match.recondition.items()},
        )
        decision.matches[c] = match
        born += [NewTrack(-1, k, c) for k in match.new_detections]

        # Keep-alive and hot-start counts (of the planner's own tracks).
        matched = {t for members in match.det_to_tracks.values() for t in members if t in tracks}
        for t in matched:
            tracks[t] = replace(tracks[t], keep_alive=min(cfg.keep_alive_max, tracks[t].keep_alive + 1))
        for t in match.unmatched_tracks:
            if t not in tracks:
                continue
            r = tracks[t]
            tracks[t] = replace(
                r, keep_alive=max(cfg.keep_alive_min, r.keep_alive - 1), unmatched_frames=r.unmatched_frames + 1
            )
        for members in match.det_to_tracks.values():
            if len(members) < 2:
                continue
            pick = max if reverse else min
            # A visual prompt counts as born before the video (after it, in reverse): it is always the first.
            before_all = VISUAL_FIRST_FRAME_REVERSE if reverse else VISUAL_FIRST_FRAME
            first = pick(members, key=lambda t: (tracks[t].first_frame if t in tracks else before_all, t))
            for t in members:
                if t != first and t in tracks:
                    duplicates[(first, t)] = duplicates.get((first, t), 0) + 1

        # Re-conditioning: periodic, on confident near-duplicates of confident tracks.
        if cfg.recondition_every > 0 and frame_index % cfg.recondition_every == 0:
            for t, k in match.recondition.items():
                if t in tracks and float(track_score_logits[row_of[t]]) > cfg.recondition_min_track_logit:
                    decision.recondition[t] = k

    def on_probation(t: int) -> bool:
        first = tracks[t].first_frame
        return first < probation_start if reverse else first > probation_start

    removed: set[int] = set()
    for t in sorted(tracks):
        if t not in row_of:
            continue
        r = tracks[t]
        if r.unmatched_frames >= cfg.hotstart_unmatched and on_probation(t):
            removed.add(t)
        elif r.keep_alive <= 0 and not cfg.suppress_unmatched_only_within_hotstart:
            decision.hidden.append(t)
    for (_, t), count in sorted(duplicates.items()):
        if t in row_of and t not in removed and count >= cfg.hotstart_duplicate and on_probation(t):
            removed.add(t)
    decision.removed = sorted(removed)
    decision.hidden = [t for t in decision.hidden if t not in removed]
    gone = {t: tracks.pop(t) for t in removed}
    for t in removed:
        decision.recondition.pop(t, None)

    # Occlusion suppression among the tracks of each concept; a track removed on this frame takes part as the
    # most recently occluded of all (SAM 3: its mask still enters this frame's memory encoding of the others).
    if cfg.occlusion_iou > 0:
        for c in sorted({r.concept for t, r in {**tracks, **gone}.items() if t in row_of}):
            own = [t for t in ids if (t in tracks and tracks[t].concept == c) or (t in gone and gone[t].concept == c)]
            index = torch.tensor([row_of[t] for t in own], dtype=torch.long)
            masks = track_masks[index]  # (m, H, W)
            last = torch.tensor(
                [tracks[t].last_occluded if t in tracks else REMOVED_OCCLUDED for t in own], dtype=torch.long
            )
            suppress = occlusion_suppression(masks, last, cfg.occlusion_iou, reverse).tolist()
            empty = (~(masks > 0).flatten(1).any(1)).tolist() if len(own) else []
            for t, hit, is_empty in zip(own, suppress, empty, strict=True):
                if hit:
                    decision.suppressed.append(t)
                    decision.recondition.pop(t, None)
                if (hit or is_empty) and t in tracks:
                    tracks[t] = replace(tracks[t], last_occluded=frame_index)

    # New tracks, numbered in detection order (SAM 3); past the cap of live tracks, the best scores, best first.
    live = len([t for t in ids if t not in removed])
    room = max(0, cfg.max_objects - live)
    if len(born) > room:
        born = sorted(born, key=lambda n: (-float(det_scores[n.detection]), n.detection))[:room]
    for n in born:
        decision.new_tracks.append(NewTrack(next_id, n.detection, n.concept))
        tracks[next_id] = TrackRecord(concept=n.concept, first_frame=frame_index, keep_alive=cfg.keep_alive_init)
        next_id += 1

    # Forget what can no longer matter: counts of tracks past probation, pairs with a gone track.
    for t, r in list(tracks.items()):
        if not on_probation(t) and r.unmatched_frames:
            tracks[t] = replace(r, unmatched_frames=0)
    duplicates = {
        pair: n
        for pair, n in duplicates.items()
        if (pair[0] in tracks or pair[0] in visual) and pair[1] in tracks and on_probation(pair[1])
    }
    return decision, PlanningState(tracks=tracks, duplicate_frames=duplicates, next_id=next_id)


__all__ = ["FrameDecision", "NewTrack", "PlanningState", "TrackPlanningConfig", "TrackRecord", "plan_frame"]
