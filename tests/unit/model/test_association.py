"""Association rules (SAM 3 §4.4-4.7) on hand-built masks, and the learned head."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from batchtrack.errors import CheckpointError, ConfigError
from batchtrack.model.modes.association import (
    AssociationConfig,
    AssociationHead,
    DetectionMatch,
    associate,
    association_loss,
    hidden_tracks,
    learned_assignment,
    load_association_head,
    match_detections,
    occlusion_suppression,
    save_association_head,
    select_detections,
)
from batchtrack.model.modes.track_planning import (
    FrameDecision,
    PlanningState,
    TrackPlanningConfig,
    TrackRecord,
    plan_frame,
)

from .mask_shapes import H, W, box, stack


def test_track_is_matched_to_its_best_overlapping_proposal() -> None:
    tracks = stack(box(0, 0, 10, 10), box(20, 20, 30, 30))
    proposals = stack(box(1, 0, 11, 10), box(0, 0, 10, 10), box(20, 0, 30, 8))
    result = associate(proposals, torch.tensor([0.9, 0.9, 0.9]), tracks, torch.tensor([5.0, 5.0]), track_ids=[7, 3])
    assert result.matched == {7: 1}
    assert result.unmatched_tracks == [3]
    # Proposal 2 overlaps nothing and is confident: it is a new object; 0 and 1 are not.
    assert result.new_proposals == [2]


def test_track_below_match_iou_is_unmatched() -> None:
    tracks = stack(box(0, 0, 10, 10))
    proposals = stack(box(6, 0, 16, 10))  # IoU 40 / 160 = 0.25
    result = associate(proposals, torch.tensor([0.9]), tracks, torch.tensor([5.0]))
    assert result.matched == {}
    assert result.unmatched_tracks == [0]
    # Not new either: it overlaps the track with IoU >= 0.1.
    assert result.new_proposals == []


def test_new_object_needs_a_confident_score_and_low_overlap_with_every_track() -> None:
    tracks = stack(box(0, 0, 10, 10))
    proposals = stack(box(20, 20, 30, 30), box(20, 0, 30, 10), box(9, 0, 19, 10))  # last: IoU 10/190 < 0.1
    scores = torch.tensor([0.69, 0.71, 0.95])
    result = associate(proposals, scores, tracks, torch.tensor([5.0]))
    assert result.new_proposals == [2, 1]  # best score first; 0 is below new_object_min_score


def test_thresholds_come_from_the_config() -> None:
    tracks = stack(box(0, 0, 10, 10))
    proposals = stack(box(6, 0, 16, 10))  # IoU 0.25
    cfg = AssociationConfig(match_iou=0.2)
    assert associate(proposals, torch.tensor([0.9]), tracks, torch.tensor([5.0]), config=cfg).matched == {0: 0}


def test_duplicate_new_proposals_are_suppressed_by_mask_nms() -> None:
    proposals = stack(box(0, 0, 10, 10), box(0, 0, 10, 11), box(20, 20, 30, 30))
    scores = torch.tensor([0.8, 0.9, 0.75])
    result = associate(proposals, scores, stack(), torch.zeros(0))
    assert result.new_proposals == [1, 2]


def test_mostly_hidden_track_is_suppressed() -> None:
    front = torch.full((H, W), -10.0)
    front[0:20, 0:20] = 5.0
    behind = torch.full((H, W), -10.0)
    behind[2:18, 2:22] = 1.0  # 320 px, keeps only the 2-column strip x=20..21 (32 px) = 10%
    other = torch.full((H, W), -10.0)
    other[25:30, 25:30] = 2.0
    tracks = torch.stack([front, behind, other])
    assert hidden_tracks(tracks, 0.3) == [1]
    result = associate(stack(), torch.zeros(0), tracks, torch.tensor([3.0, 3.0, 3.0]), track_ids=[4, 5, 6])
    assert result.suppressed_tracks == [5]
    assert result.unmatched_tracks == [4, 5, 6]


def test_partly_covered_track_keeping_enough_area_is_not_suppressed() -> None:
    front = torch.full((H, W), -10.0)
    front[0:10, 0:10] = 5.0
    behind = torch.full((H, W), -10.0)
    behind[0:10, 5:20] = 1.0  # keeps 100 of 150 px
    assert hidden_tracks(torch.stack([front, behind]), 0.3) == []


def test_empty_tracks_are_listed_apart() -> None:
    tracks = torch.stack([torch.full((H, W), -3.0), box(0, 0, 5, 5).float() * 2 - 1])
    result = associate(stack(), torch.zeros(0), tracks, torch.tensor([-1.0, 2.0]), track_ids=[0, 1])
    assert result.empty_tracks == [0]
    assert result.unmatched_tracks == [1]


def test_recondition_requires_high_iou_high_score_and_a_confident_track() -> None:
    tracks = stack(box(0, 0, 10, 10), box(20, 0, 30, 10), box(0, 20, 10, 30))
    proposals = stack(
        box(0, 0, 10, 11),  # IoU 100/110 = 0.91 with track 0, score 0.85 -> recondition
        box(20, 0, 30, 11),  # IoU 0.91 with track 1, but the track's object score is low
        box(0, 20, 10, 30),  # IoU 1 with track 2, score below 0.8
    )
    scores = torch.tensor([0.85, 0.95, 0.79])
    result = associate(proposals, scores, tracks, torch.tensor([2.0, 0.5, 2.0]), track_ids=[10, 11, 12])
    assert result.recondition == {10: 0}
    assert result.matched == {10: 0, 11: 1, 12: 2}


def test_recondition_is_not_triggered_below_iou_0_8() -> None:
    tracks = stack(box(0, 0, 10, 10))
    proposals = stack(box(0, 0, 10, 13))  # IoU 0.77
    result = associate(proposals, torch.tensor([0.99]), tracks, torch.tensor([5.0]))
    assert result.matched == {0: 0}
    assert result.recondition == {}


def test_association_config_reads_auto_config_and_validates() -> None:
    from batchtrack.config import AutoConfig

    cfg = AssociationConfig.from_auto(AutoConfig(match_iou=0.4, nms_iou=0.6))
    assert (cfg.match_iou, cfg.nms_iou, cfg.new_object_min_score) == (0.4, 0.6, 0.7)
    with pytest.raises(ConfigError, match="match_iou"):
        AssociationConfig(match_iou=1.5)


def test_mismatched_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="disagree"):
        associate(stack(box(0, 0, 2, 2)), torch.zeros(2), stack(), torch.zeros(0))


def test_association_head_shapes_and_padding() -> None:
    head = AssociationHead()
    logits = head(torch.randn(2, 5, 256), torch.randn(2, 3, 256), torch.tensor([[True, True, False]] * 2))
    assert logits.shape == (2, 5, 4)
    assert torch.isinf(logits[..., 2]).all()
    assert torch.isfinite(logits[..., [0, 1, 3]]).all()
    with pytest.raises(ValueError, match="256-d"):
        head(torch.randn(5, 128), torch.randn(3, 256))


def test_association_loss_ignores_minus_one_and_is_zero_without_targets() -> None:
    logits = torch.tensor([[[10.0, -10.0, -10.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    loss = association_loss(logits, torch.tensor([[0, -1]]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    wrong = association_loss(logits, torch.tensor([[2, -1]]))
    assert wrong.item() == pytest.approx(20.0, abs=1e-3)
    none = association_loss(logits, torch.tensor([[-1, -1]]))
    assert none.item() == 0.0
    none.backward()  # still differentiable


def test_association_head_learns_a_toy_problem() -> None:
    """Tracks are noisy copies of some proposals; the rest are new objects. Loss must fall."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    head = AssociationHead(dim=256, hidden=64, key_dim=32)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)

    def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        props = torch.randn(8, 6, 256, generator=gen)  # (B, N, C)
        tracks = props[:, :4] + 0.1 * torch.randn(8, 4, 256, generator=gen)  # (B, M, C)
        perm = torch.randperm(4, generator=gen)
        tracks = tracks[:, perm]
        targets = torch.full((8, 6), 4)
        targets[:, perm] = torch.arange(4)
        return props, tracks, targets

    props, tracks, targets = batch()
    first = association_loss(head(props, tracks), targets).item()
    for _ in range(60):
        p, t, y = batch()
        loss = association_loss(head(p, t), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = association_loss(head(props, tracks), targets).item()
    assert last < 0.5 * first


def test_learned_assignment_reads_rows_and_resolves_conflicts() -> None:
    logits = torch.tensor([[5.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 6.0], [0.0, 0.0, 0.0]])
    matched, new = learned_assignment(logits, min_probability=0.5)
    assert matched == {0: 0}  # proposal 1 also wants track 0 but is less sure
    assert new == [2]  # proposal 3 is uniform (p=1/3) and left out


def test_association_head_round_trips_through_its_own_safetensors_file(tmp_path: Path) -> None:
    head = AssociationHead(dim=256, hidden=32, key_dim=16)
    path = tmp_path / "assoc.safetensors"
    save_association_head(head, path)
    loaded = load_association_head(path, AssociationHead(dim=256, hidden=32, key_dim=16))
    for key, value in head.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    with pytest.raises(CheckpointError, match="mis-shaped") as info:
        load_association_head(path, AssociationHead())
    assert info.value.mismatched
    with pytest.raises(CheckpointError, match="cannot read"):
        load_association_head(tmp_path / "missing.safetensors")


# ---------------------------------------------------------------------------------------------
# SAM 3's video rules (concept mode): one-frame matching, then planning across frames


def logits(*masks: torch.Tensor) -> torch.Tensor:
    """Bool masks as sharp logits, as the tracker and detector give them."""
    return stack(*masks).float() * 20.0 - 10.0


SAM3 = TrackPlanningConfig()
A, B, C = box(0, 0, 10, 10), box(20, 0, 30, 10), box(0, 20, 10, 30)


def match(det: torch.Tensor, scores: list[float], trk: torch.Tensor, ids: list[int]) -> DetectionMatch:
    return match_detections(
        det,
        torch.tensor(scores),
        trk,
        ids,
        assoc_iou=0.1,
        track_assoc_iou=0.5,
        new_min_score=0.7,
        recondition_min_score=0.8,
        recondition_min_iou=0.8,
    )


def test_planning_defaults_are_sam3s() -> None:
    cfg = TrackPlanningConfig()
    assert (cfg.detection_min_score, cfg.detection_nms_iou, cfg.assoc_iou, cfg.track_assoc_iou) == (0.5, 0.1, 0.1, 0.5)
    assert cfg.new_detection_min_score == 0.7
    assert (cfg.hotstart_delay, cfg.hotstart_unmatched, cfg.hotstart_duplicate) == (15, 8, 8)
    assert (cfg.keep_alive_init, cfg.keep_alive_max, cfg.keep_alive_min) == (30, 30, -1)
    assert cfg.occlusion_iou == 0.7 and cfg.recondition_every == 16
    assert (cfg.recondition_min_score, cfg.recondition_min_iou) == (0.8, 0.8)


def test_planning_config_names_a_bad_threshold() -> None:
    with pytest.raises(ConfigError, match=r"concept.assoc_iou must be in \[0, 1\], got 1.5"):
        TrackPlanningConfig(assoc_iou=1.5)
    with pytest.raises(ConfigError, match="hotstart_unmatched"):
        TrackPlanningConfig(hotstart_delay=4, hotstart_unmatched=8)


def test_select_detections_drops_unconfident_and_overlapping_ones() -> None:
    masks = stack(A, box(0, 0, 10, 9), B, C)  # the second overlaps the first (IoU 0.9)
    kept = select_detections(masks, torch.tensor([0.9, 0.95, 0.5, 0.6]), min_score=0.5, nms_iou=0.1)
    assert kept == [1, 3]  # best first; 0 loses NMS to 1; 2 is not above 0.5


def test_track_is_matched_only_at_track_assoc_iou() -> None:
    # Detection 0 covers 80% of track 7 (matched); detection 1 covers 40% of track 8 (overlapping, not matched).
    m = match(stack(box(0, 0, 10, 8), box(20, 0, 30, 4)), [0.9, 0.9], stack(A, B), [7, 8])
    assert m.unmatched_tracks == [8]
    assert m.det_to_tracks == {0: [7], 1: [8]}
    assert m.new_detections == []  # both overlap a track at >= 0.1


def test_new_detection_needs_confidence_and_no_overlap() -> None:
    det = stack(C, box(20, 20, 30, 30), box(0, 0, 10, 1))  # free, free, IoU 0.1 with track 0
    m = match(det, [0.7, 0.69, 0.99], stack(A), [0])
    assert m.new_detections == [0]


def test_empty_track_is_not_unmatched() -> None:
    m = match(stack(C), [0.9], stack(A, torch.zeros(H, W, dtype=torch.bool)), [1, 2])
    assert m.empty_tracks == [2]
    assert m.unmatched_tracks == [1]


def test_one_detection_may_match_several_tracks() -> None:
    m = match(stack(A), [0.9], stack(box(0, 0, 10, 9), box(0, 0, 10, 8)), [3, 4])
    assert m.det_to_tracks == {0: [3, 4]}
    assert m.unmatched_tracks == []


def test_recondition_candidate_needs_high_score_and_high_iou() -> None:
    det = stack(box(0, 0, 10, 9), box(20, 0, 30, 7))  # IoU 0.9 with track 0; 0.7 with track 1
    m = match(det, [0.85, 0.99], stack(A, B), [0, 1])
    assert m.recondition == {0: 0}
    m = match(det, [0.75, 0.99], stack(A, B), [0, 1])
    assert m.recondition == {}


def test_occlusion_suppresses_the_more_recently_occluded_of_two_overlapping_tracks() -> None:
    masks = stack(A, box(0, 0, 10, 9), C)
    assert occlusion_suppression(masks, torch.tensor([5, 2, 9]), 0.7).tolist() == [True, False, False]
    assert occlusion_suppression(masks, torch.tensor([2, 5, 9]), 0.7).tolist() == [False, True, False]
    # Reverse tracking: "more recent" is the smaller frame index.
    assert occlusion_suppression(masks, torch.tensor([5, 2, 9]), 0.7, reverse=True).tolist() == [False, True, False]
    # A track never occluded does not let the other be suppressed.
    assert not occlusion_suppression(masks, torch.tensor([5, -1, 9]), 0.7).any()
    # Below the IoU threshold nothing happens.
    assert not occlusion_suppression(stack(A, box(0, 0, 10, 6)), torch.tensor([5, 2]), 0.7).any()


def plan(
    state: PlanningState,
    frame: int,
    det: list[torch.Tensor],
    scores: list[float],
    tracks: dict[int, torch.Tensor],
    config: TrackPlanningConfig = SAM3,
    concepts: list[int] | None = None,
    track_logits: list[float] | None = None,
) -> tuple[FrameDecision, PlanningState]:
    ids = list(tracks)
    return plan_frame(
        state,
        frame,
        logits(*det),
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor(concepts if concepts is not None else [0] * len(det), dtype=torch.long),
        ids,
        logits(*tracks.values()),
        torch.tensor(track_logits if track_logits is not None else [5.0] * len(ids), dtype=torch.float32),
        config,
    )


def test_detections_become_new_tracks_numbered_in_detection_order() -> None:
    decision, state = plan(PlanningState(next_id=4), 3, [A, C], [0.8, 0.9], {})
    assert [(n.object_id, n.detection) for n in decision.new_tracks] == [(4, 0), (5, 1)]
    assert state.next_id == 6
    assert state.tracks[4] == TrackRecord(concept=0, first_frame=3, keep_alive=30)


def test_on_a_frame_without_tracks_every_detection_starts_a_track_whatever_its_score() -> None:
    decision, _ = plan(PlanningState(), 0, [A, C], [0.55, 0.9], {})
    assert [n.detection for n in decision.new_tracks] == [0, 1]
    # With a track present, the new-detection threshold (0.7) applies again.
    decision, _ = plan(PlanningState(next_id=1), 0, [A, C], [0.55, 0.9], {0: B})
    assert [n.detection for n in decision.new_tracks] == [1]


def test_new_tracks_are_capped_by_max_objects() -> None:
    decision, _ = plan(PlanningState(next_id=1), 0, [A, C], [0.8, 0.9], {0: B}, TrackPlanningConfig(max_objects=2))
    assert [n.detection for n in decision.new_tracks] == [1]


def test_hotstart_removes_a_young_track_unmatched_on_enough_frames() -> None:
    state = PlanningState(tracks={0: TrackRecord(0, first_frame=0, keep_alive=30)}, next_id=1)
    removed_at = None
    for frame in range(1, 12):
        decision, state = plan(state, frame, [], [], {0: A})
        if decision.removed:
            removed_at = frame
            break
    assert removed_at == 8 and decision.removed == [0]
    assert 0 not in state.tracks


def test_hotstart_spares_a_track_past_its_probation() -> None:
    state = PlanningState(tracks={0: TrackRecord(0, first_frame=0, keep_alive=30)}, next_id=1)
    for frame in range(15, 40):  # born 15+ frames ago: unmatched for 25 frames, never removed
        decision, state = plan(state, frame, [], [], {0: A})
        assert decision.removed == []


def test_hotstart_removes_the_younger_of_two_tracks_sharing_a_detection() -> None:
    state = PlanningState(
        tracks={0: TrackRecord(0, first_frame=0, keep_alive=30), 1: TrackRecord(0, first_frame=2, keep_alive=30)},
        next_id=2,
    )
    tracks = {0: A, 1: box(0, 0, 10, 9)}
    removed = []
    for frame in range(3, 12):
        decision, state = plan(state, frame, [box(0, 0, 10, 8)], [0.9], tracks)
        removed += [(frame, t) for t in decision.removed]
    assert removed == [(10, 1)]  # the 8th frame of sharing


def test_keep_alive_hides_a_track_unmatched_too_long_when_switched_on() -> None:
    strict = TrackPlanningConfig(suppress_unmatched_only_within_hotstart=False, keep_alive_init=2, hotstart_delay=0)
    record = TrackRecord(0, first_frame=0, keep_alive=2)
    hidden = []
    state = PlanningState(tracks={0: record}, next_id=1)
    for frame in range(1, 5):
        decision, state = plan(state, frame, [], [], {0: A}, strict)
        hidden.append(decision.hidden)
    assert hidden == [[], [0], [0], [0]]  # 2 -> 1 -> 0 (hidden) -> -1 (floor)
    # A match brings it back.
    decision, state = plan(state, 5, [A], [0.9], {0: A}, strict)
    decision, state = plan(state, 6, [A], [0.9], {0: A}, strict)
    assert decision.hidden == []
    # SAM 3's default only counts.
    state = PlanningState(tracks={0: record}, next_id=1)
    for frame in range(1, 5):
        decision, state = plan(state, frame, [], [], {0: A}, replace(SAM3, hotstart_delay=0))
        assert decision.hidden == []


def test_occlusion_suppression_in_planning_updates_last_occluded() -> None:
    state = PlanningState(
        tracks={0: TrackRecord(0, 0, 30, last_occluded=6), 1: TrackRecord(0, 0, 30, last_occluded=2)}, next_id=2
    )
    decision, state = plan(state, 40, [], [], {0: A, 1: box(0, 0, 10, 9)})
    assert decision.suppressed == [0]
    assert state.tracks[0].last_occluded == 40 and state.tracks[1].last_occluded == 2
    # An empty track records its occlusion too.
    decision, state = plan(state, 41, [], [], {0: C, 1: torch.zeros(H, W, dtype=torch.bool)})
    assert decision.suppressed == [] and state.tracks[1].last_occluded == 41


def test_recondition_is_periodic_and_needs_a_confident_track() -> None:
    state = PlanningState(tracks={0: TrackRecord(0, 0, 30)}, next_id=1)
    near = box(0, 0, 10, 9)
    assert plan(state, 32, [near], [0.9], {0: A})[0].recondition == {0: 0}
    assert plan(state, 33, [near], [0.9], {0: A})[0].recondition == {}
    assert plan(state, 32, [near], [0.9], {0: A}, track_logits=[0.5])[0].recondition == {}
    assert plan(state, 32, [near], [0.9], {0: A}, replace(SAM3, recondition_every=0))[0].recondition == {}


def test_rules_apply_within_a_concept() -> None:
    state = PlanningState(tracks={0: TrackRecord(concept=0, first_frame=0, keep_alive=30)}, next_id=1)
    # The same pixels, detected as concept 1: a new track of concept 1; track 0 (concept 0) is unmatched.
    decision, state = plan(state, 1, [A], [0.9], {0: A}, concepts=[1])
    assert [(n.object_id, n.concept) for n in decision.new_tracks] == [(1, 1)]
    assert decision.matches[0].unmatched_tracks == [0]
    assert state.tracks[0].unmatched_frames == 1


def test_tracks_unknown_to_planning_are_left_alone() -> None:
    # Object 9 is a visual prompt: never matched, counted, removed or suppressed.
    decision, state = plan(PlanningState(next_id=10), 1, [C], [0.9], {9: A})
    assert [n.object_id for n in decision.new_tracks] == [10]
    assert 9 not in state.tracks and decision.removed == [] and decision.suppressed == []


def test_a_detection_over_a_visual_prompt_matches_it_for_every_concept_and_starts_no_track() -> None:
    # Object 9 is a visual prompt: SAM 3's add-prompt path makes it a masklet that association sees.
    for concept in (0, 1):
        decision, state = plan(PlanningState(next_id=10), 1, [A, C], [0.9, 0.9], {9: A}, concepts=[concept, concept])
        assert [n.detection for n in decision.new_tracks] == [1], "only the detection away from the prompt is new"
        assert decision.matches[concept].det_to_tracks[0] == [9]
        assert 9 not in state.tracks, "planning does not adopt the prompted object"
    # A confident near-copy on a re-conditioning frame does not re-condition a visual prompt.
    decision, _ = plan(PlanningState(next_id=10), 32, [box(0, 0, 10, 9)], [0.95], {9: A})
    assert decision.new_tracks == [] and decision.recondition == {}


def test_removal_rules_never_touch_a_visual_prompt() -> None:
    # Unmatched for 20 frames, and overlapping a concept track that is occluded less recently: never removed,
    # hidden or suppressed, and never counted.
    strict = TrackPlanningConfig(suppress_unmatched_only_within_hotstart=False, keep_alive_init=1)
    state = PlanningState(tracks={0: TrackRecord(0, first_frame=0, keep_alive=1, last_occluded=2)}, next_id=10)
    for frame in range(1, 21):
        decision, state = plan(state, frame, [], [], {9: A, 0: box(0, 0, 10, 9)}, strict)
        assert 9 not in decision.removed + decision.hidden + decision.suppressed
        assert 9 not in state.tracks


def test_a_young_concept_track_sharing_a_detection_with_a_visual_prompt_is_a_hotstart_duplicate() -> None:
    state = PlanningState(tracks={1: TrackRecord(0, first_frame=2, keep_alive=30)}, next_id=10)
    tracks = {9: A, 1: box(0, 0, 10, 9)}  # the prompt (9) and a concept track (1) on the same object
    removed = []
    for frame in range(3, 12):
        decision, state = plan(state, frame, [box(0, 0, 10, 8)], [0.9], tracks)
        removed += [(frame, t) for t in decision.removed]
        assert decision.new_tracks == []
    assert removed == [(10, 1)], "the concept track goes on the 8th frame of sharing; the prompt stays"
