"""Training losses on examples small enough to work out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from batchtrack.training.losses import LossWeights, dice_loss, frame_loss, mask_iou, sigmoid_focal_loss

BIG = 30.0  # a logit whose sigmoid is 1 to float precision


def test_focal_loss_at_zero_logit_matches_the_formula() -> None:
    logits = torch.zeros(1, 2, 2)
    targets = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    # p = 0.5 everywhere: ce = ln 2, (1 - p_t)^2 = 1/4; alpha 0.25 on positives, 0.75 on negatives.
    expected = (2 * 0.25 + 2 * 0.75) * math.log(2) * 0.25 / 4
    assert sigmoid_focal_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_focal_loss_without_alpha_or_gamma_is_binary_cross_entropy() -> None:
    logits = torch.tensor([[[2.0, -1.0], [0.5, -3.0]]])
    targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    p = torch.sigmoid(logits)
    bce = -(targets * p.log() + (1 - targets) * (1 - p).log()).mean()
    assert sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0).item() == pytest.approx(bce.item(), rel=1e-5)


def test_focal_loss_is_near_zero_for_confident_correct_masks() -> None:
    targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    logits = (targets * 2 - 1) * BIG
    assert sigmoid_focal_loss(logits, targets).item() < 1e-12


def test_dice_loss_by_hand() -> None:
    targets = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    # sigmoid(0) = 0.5: numerator 2 * (0.5 + 0.5) = 2, denominator 4 * 0.5 + 2 = 4 -> 1 - 3/5.
    assert dice_loss(torch.zeros(1, 2, 2), targets).item() == pytest.approx(0.4, rel=1e-6)
    assert dice_loss((targets * 2 - 1) * BIG, targets).item() == pytest.approx(0.0, abs=1e-6)
    # Both empty: smoothing makes it a perfect match, not 0/0.
    assert dice_loss(torch.full((1, 2, 2), -BIG), torch.zeros(1, 2, 2)).item() == pytest.approx(0.0, abs=1e-6)


def test_mask_iou_of_binarised_logits() -> None:
    targets = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    logits = torch.tensor([[[1.0, -1.0], [1.0, -1.0]], [[-1.0, -1.0], [-1.0, -1.0]]])
    # First: predicted {(0,0), (1,0)} vs target {(0,0), (0,1)} -> 1 / 3. Second: both empty -> 1.
    assert mask_iou(logits, targets).tolist() == pytest.approx([1 / 3, 1.0])


def test_frame_loss_trains_the_best_candidate_and_every_iou_prediction() -> None:
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # (N=1, H, W)
    good = (target[0] * 2 - 1) * BIG
    bad = -good
    multimask = torch.stack([bad, good]).unsqueeze(0)  # (1, M=2, H, W): candidate 1 is right
    iou_pred = torch.tensor([[0.5, 0.5]])
    weights = LossWeights()
    terms = frame_loss(multimask, iou_pred, torch.tensor([BIG]), target, weights)
    assert terms.focal.item() < 1e-12  # the perfect candidate was chosen
    assert terms.dice.item() == pytest.approx(0.0, abs=1e-6)
    # Actual IoUs are 0 (bad) and 1 (good): |0.5 - 0| and |0.5 - 1| average to 0.5.
    assert terms.iou.item() == pytest.approx(0.5)
    assert terms.object_score.item() == pytest.approx(0.0, abs=1e-6)


def test_frame_loss_of_a_hidden_object_is_only_its_object_score() -> None:
    target = torch.zeros(1, 2, 2)
    multimask = torch.full((1, 3, 2, 2), BIG)  # confidently wrong masks: ignored for a hidden object
    terms = frame_loss(multimask, torch.zeros(1, 3), torch.tensor([0.0]), target, LossWeights())
    assert terms.focal.item() == 0.0
    assert terms.dice.item() == 0.0
    assert terms.iou.item() == 0.0
    assert terms.object_score.item() == pytest.approx(math.log(2), rel=1e-6)  # BCE at logit 0


def test_frame_loss_resizes_low_res_candidates_to_the_target() -> None:
    target = torch.zeros(1, 8, 8)
    target[0, :, :4] = 1.0
    low_res = torch.full((1, 1, 4, 4), -BIG)
    low_res[0, 0, :, :2] = BIG
    terms = frame_loss(low_res, torch.ones(1, 1), torch.tensor([BIG]), target, LossWeights())
    assert terms.iou.item() == pytest.approx(0.0, abs=1e-6)  # the upsampled mask is exactly the target
    assert terms.dice.item() < 0.01


def test_weighted_total_uses_sam2_weights() -> None:
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    terms = frame_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1), torch.zeros(1), target, LossWeights())
    expected = 20 * terms.focal + terms.dice + terms.iou + terms.object_score
    assert terms.total(LossWeights()).item() == pytest.approx(expected.item())
