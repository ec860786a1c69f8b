"""Mask IoU and mask NMS (model/nn/masks.py), shared by the association rules and SAM 3's detector."""

from __future__ import annotations

import pytest
import torch

from batchtrack.model.nn.masks import mask_iou_matrix, mask_nms

from .mask_shapes import H, W, box, stack


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


def test_mask_nms_keeps_the_higher_score_and_breaks_ties_by_index() -> None:
    masks = stack(box(0, 0, 10, 10), box(0, 0, 10, 10), box(0, 0, 4, 10))
    assert mask_nms(masks, torch.tensor([0.5, 0.5, 0.9]), 0.5) == [2, 0]
    assert mask_nms(masks, torch.tensor([0.5, 0.5, 0.9]), 0.3) == [2]


def test_mask_nms_drops_a_worse_overlapping_mask_only() -> None:
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True
    masks[1, :4, :3] = True  # IoU 0.75 with mask 0
    masks[2, 4:, 4:] = True  # disjoint
    kept = torch.tensor(mask_nms(masks=masks, scores=torch.tensor([0.9, 0.95, 0.5]), iou_threshold=0.5))
    assert kept.tolist() == [1, 2]
