"""Training losses of the tracker, as SAM 2 trains it: per frame and object, sigmoid focal + dice on the
mask (weighted 20:1), L1 between the predicted IoU and the IoU the mask actually reaches, and a binary
cross-entropy on the object score (is the object visible on this frame?).

With several candidate masks (multimask output) only the candidate with the lowest mask loss is trained
on the mask terms, while every candidate's IoU head is trained: this lets the candidates specialise, as in
SAM. Mask and IoU terms count only for objects that are visible; the object-score term counts for all.

Letters: N objects, M candidate masks per object, H x W mask pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms. Defaults are SAM 2's (focal 20, dice 1, IoU 1, object score 1)."""

    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0
    association: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


@dataclass
class LossTerms:
    """Scalar loss terms (summed over frames, each already averaged over objects) and their weighted total."""

    focal: torch.Tensor
    dice: torch.Tensor
    iou: torch.Tensor
    object_score: torch.Tensor
    association: torch.Tensor

    def total(self, weights: LossWeights) -> torch.Tensor:
        return (
            weights.focal * self.focal
            + weights.dice * self.dice
            + weights.iou * self.iou
            + weights.object_score * self.object_score
            + weights.association * self.association
        )

    def __add__(self, other: LossTerms) -> LossTerms:
        return LossTerms(
            focal=self.focal + other.focal,
            dice=self.dice + other.dice,
            iou=self.iou + other.iou,
            object_score=self.object_score + other.object_score,
            association=self.association + other.association,
        )

    def scaled(self, factor: float) -> LossTerms:
        return LossTerms(
            focal=self.focal * factor,
            dice=self.dice * factor,
            iou=self.iou * factor,
            object_score=self.object_score * factor,
            association=self.association * factor,
        )

    def as_floats(self) -> dict[str, float]:
        return {
            "focal": float(self.focal.detach()),
            "dice": float(self.dice.detach()),
            "iou": float(self.iou.detach()),
            "object_score": float(self.object_score.detach()),
            "association": float(self.association.detach()),
        }

    @staticmethod
    def zeros(device: torch.device | None = None) -> LossTerms:
        zero = torch.zeros((), device=device)
        return LossTerms(focal=zero, dice=zero, iou=zero, object_score=zero, association=zero)


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss (Lin et al.) of logits (..., H, W) against {0, 1} targets, averaged over the last two axes.

    `alpha` weights the positive class (negative: no weighting); `gamma` down-weights easy pixels.
    """
    targets = targets.to(logits.dtype)
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice of sigmoid(logits) (..., H, W) against {0, 1} targets, one value per leading index.

    `smooth` keeps the loss defined (and 0) when both mask and target are empty.
    """
    prob = torch.sigmoid(logits).flatten(-2)  # (..., H*W)
    targets = targets.to(prob.dtype).flatten(-2)  # (..., H*W)
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return 1 - (numerator + smooth) / (denominator + smooth)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of the binarised masks (logits > 0) with the targets, one value per leading index; 1 if both empty."""
    pred = (logits > 0).flatten(-2)  # (..., H*W)
    gt = targets.bool().flatten(-2)  # (..., H*W)
    intersection = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def frame_loss(
    multimask_logits: torch.Tensor,
    iou_predictions: torch.Tensor,
    object_score_logits: torch.Tensor,
    target_masks: torch.Tensor,
    weights: LossWeights,
) -> LossTerms:
    """The loss terms of one frame, averaged over its objects.

    multimask_logits (N, M, H, W), iou_predictions (N, M), object_score_logits (N,), target_masks (N, H, W).
    The candidate masks are resized (bilinear) to the targets' size when they differ.
    """
    n, m = multimask_logits.shape[:2]
    if multimask_logits.shape[-2:] != target_masks.shape[-2:]:
        multimask_logits = F.interpolate(
            multimask_logits, size=target_masks.shape[-2:], mode="bilinear", align_corners=False
        )  # (N, M, H, W)
    targets = target_masks.to(multimask_logits.dtype).unsqueeze(1).expand(n, m, *target_masks.shape[-2:])
    focal = sigmoid_focal_loss(multimask_logits, targets, weights.focal_alpha, weights.focal_gamma)  # (N, M)
    dice = dice_loss(multimask_logits, targets)  # (N, M)
    with torch.no_grad():
        actual_iou = mask_iou(multimask_logits, targets)  # (N, M)
    iou = (iou_predictions - actual_iou).abs()  # (N, M)
    best = (weights.focal * focal + weights.dice * dice).argmin(dim=1, keepdim=True)  # (N, 1)
    focal = focal.gather(1, best).squeeze(1)  # (N,)
    dice = dice.gather(1, best).squeeze(1)  # (N,)
    iou = iou.mean(1)  # (N,)

    visible = target_masks.flatten(-2).any(-1).to(object_score_logits.dtype)  # (N,)
    object_score = F.binary_cross_entropy_with_logits(object_score_logits, visible, reduction="none")  # (N,)
    return LossTerms(
        focal=(focal * visible).sum() / n,
        dice=(dice * visible).sum() / n,
        iou=(iou * visible).sum() / n,
        object_score=object_score.mean(),
        association=torch.zeros((), device=object_score.device),
    )
