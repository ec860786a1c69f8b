"""Output post-processing of predicted masks: SAM 2's small-hole filling, in plain torch.

SAM 2's video predictor fills background holes of at most `fill_hole_area` pixels (8-connected
components of logits <= 0) in the low-res masks with a small positive logit, using a CUDA
extension; without it (on CPU) the official code skips the step. This is the same rule for every
device. It changes only the emitted masks, never the memory.

Letters: B masks, H x W the mask grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HOLE_FILL_LOGIT = 0.1
_CHECK_EVERY = 8  # label propagation steps between convergence checks


def connected_component_areas(region: torch.Tensor) -> torch.Tensor:
    """For (B, 1, H, W) bool `region`, the area of each pixel's 8-connected component (0 outside the region)."""
    b, _, h, w = region.shape
    # Every region pixel starts with a unique positive label; propagating the maximum over 3x3
    # neighbourhoods inside the region converges to one label per component. float32 holds these
    # integers exactly up to 2**24 pixels per batch item.
    index = torch.arange(1, h * w + 1, device=region.device, dtype=torch.float32).reshape(1, 1, h, w)
    labels = torch.where(region, index, 0.0)  # (B, 1, H, W)
    while True:
        before = labels
        for _ in range(_CHECK_EVERY):
            labels = torch.where(region, F.max_pool2d(labels, 3, stride=1, padding=1), 0.0)
        if torch.equal(before, labels):
            break
    flat = labels.reshape(b, h * w).long()  # (B, HW)
    counts = torch.zeros(b, h * w + 1, device=region.device, dtype=torch.long)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    counts[:, 0] = 0
    return torch.gather(counts, 1, flat).reshape(b, 1, h, w)


def fill_small_holes(mask_logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Set background components (logit <= 0) of at most `max_area` pixels to a small positive logit.

    mask_logits (B, 1, H, W); returns a new tensor, the input unchanged when max_area <= 0.
    """
    if max_area <= 0 or mask_logits.numel() == 0:
        return mask_logits
    background = mask_logits <= 0
    areas = connected_component_areas(background)
    is_hole = background & (areas <= max_area)
    return torch.where(is_hole, torch.full_like(mask_logits, HOLE_FILL_LOGIT), mask_logits)
