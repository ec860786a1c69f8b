"""Mask overlap: pairwise mask IoU and greedy mask NMS, one of each for automatic mode's association rules,
concept mode's detection selection and SAM 3's detector.

Masks are logits (binarised at 0) or bools. Letters: N and M masks of two sets, K candidates of one set,
H x W a mask's resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def as_logits(masks: torch.Tensor) -> torch.Tensor:
    """Bool masks become ±1 logits so that every input is thresholded at 0 the same way."""
    if masks.dtype == torch.bool:
        return masks.float() * 2.0 - 1.0
    return masks.float()


def _binarise_at(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    logits = as_logits(masks)
    if tuple(logits.shape[-2:]) != size:
        # Resizing logits (not bits) keeps thin structures roughly where they were.
        logits = F.interpolate(logits[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]  # (K, h, w)
    return logits > 0


def mask_iou_matrix(masks_a: torch.Tensor, masks_b: torch.Tensor) -> torch.Tensor:
    """Mask IoU between every pair of (N, Ha, Wa) and (M, Hb, Wb) masks: an (N, M) float tensor.

    Both sets are resized to the smaller of the two resolutions first, as SAM 3 does. Two empty masks have IoU 0.
    """
    if masks_a.ndim != 3 or masks_b.ndim != 3:
        raise ValueError(f"masks must be (K, H, W), got {tuple(masks_a.shape)} and {tuple(masks_b.shape)}")
    n, m = masks_a.shape[0], masks_b.shape[0]
    if n == 0 or m == 0:
        return torch.zeros(n, m)
    ha, wa = masks_a.shape[-2:]
    hb, wb = masks_b.shape[-2:]
    size = (ha, wa) if ha * wa <= hb * wb else (hb, wb)
    a = _binarise_at(masks_a, size).flatten(1).float()  # (N, h*w)
    b = _binarise_at(masks_b, size).flatten(1).float()  # (M, h*w)
    inter = a @ b.T  # (N, M)
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter  # (N, M)
    return torch.where(union > 0, inter / union.clamp(min=1.0), torch.zeros_like(inter))


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> list[int]:
    """Greedy mask NMS over (K, H, W) masks with (K,) scores: indices of the kept masks, best score first.

    A mask is dropped when its IoU with an already kept, higher-scoring mask exceeds `iou_threshold`.
    Ties in score keep the lower index (deterministic).
    """
    if masks.shape[0] == 0:
        return []
    overlaps = (mask_iou_matrix(masks, masks) > iou_threshold).cpu()  # (K, K)
    # Stable sort on the negated scores: equal scores keep their input order.
    order = torch.sort(-scores.float(), stable=True).indices.tolist()
    kept: list[int] = []
    for idx in order:
        if not overlaps[idx, kept].any():
            kept.append(idx)
    return kept
