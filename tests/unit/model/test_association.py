"""Association rules (SAM 3 §4.4-4.7) on hand-built masks, and the learned head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from batchtrack.errors import CheckpointError, ConfigError
from batchtrack.model.association import (
    AssociationConfig,
    AssociationHead,
    associate,
    association_loss,
    hidden_tracks,
    learned_assignment,
    load_association_head,
    mask_iou_matrix,
    mask_nms,
    save_association_head,
)

H = W = 32


def box(x0: int, y0: int, x1: int, y1: int, size: tuple[int, int] = (H, W)) -> torch.Tensor:
    m = torch.zeros(size, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def stack(*masks: torch.Tensor) -> torch.Tensor:
    return torch.stack(masks) if masks else torch.zeros(0, H, W, dtype=torch.bool)


def test_mask_iou_matrix_counts_pixels() -> None:
    a = stack(box(0, 0, 10, 10), box(20, 20, 30, 30))
    b = stack(box(5, 0, 15, 10))
    iou = mask_iou_matrix(a, b)
    assert iou.shape == (2, 1)
    assert iou[0, 0].item() == pytest.approx(50 / 150)
    assert iou[1, 0].item() == 0.0


def test_mask_iou_matrix_resizes_to_the_smaller_resolution_and_thresholds_logits_at_zero() -> None:
    small = stack(box(0, 0, 8, 8, size=(16, 16)))
    big_logits = torch.full((1, 64, 64), -5.0)
    big_logits[0, :32, :32] = 3.0
    assert mask_iou_matrix(small, big_logits)[0, 0].item() == pytest.approx(1.0)
    assert mask_iou_matrix(big_logits, small)[0, 0].item() == pytest.approx(1.0)


def test_two_empty_masks_have_zero_iou() -> None:
    empty = torch.zeros(1, H, W, dtype=torch.bool)
    assert mask_iou_matrix(empty, empty)[0, 0].item() == 0.0


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


def test_mask_nms_keeps_the_higher_score_and_breaks_ties_by_index() -> None:
    masks = stack(box(0, 0, 10, 10), box(0, 0, 10, 10), box(0, 0, 4, 10))
    assert mask_nms(masks, torch.tensor([0.5, 0.5, 0.9]), 0.5) == [2, 0]
    assert mask_nms(masks, torch.tensor([0.5, 0.5, 0.9]), 0.3) == [2]


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
