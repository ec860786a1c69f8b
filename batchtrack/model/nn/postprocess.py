"""Output post-processing of predicted masks: SAM 2's small-hole filling and SAM 3's speck removal, in plain torch.

SAM 2's video predictor fills background holes of at most `fill_hole_area` pixels (8-connected
components of logits <= 0) in the low-res masks with a small positive logit, using a CUDA
extension; without it (on CPU) the official code skips the step. This is the same rule for every
device. It changes only the emitted masks (and, as in SAM 2, the memory of prompted frames).

SAM 3's video loop (`sam3_tracker_utils.fill_holes_in_mask_scores`, 16 pixels) fills holes the same way and then
removes specks: foreground components of at most min(16, half the mask's area) pixels get a small negative logit.

Letters: B masks, H x W the mask grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HOLE_FILL_LOGIT = 0.1


def small_components(region: torch.Tensor, max_area: int) -> torch.Tensor:
    """Pixels of (B, 1, H, W) bool `region` whose 8-connected component has at most `max_area` pixels.

    Exact, with only `max_area + 1` steps of 3x3 max-label propagation instead of a full labelling.
    Region pixels start with unique labels; after k = max_area steps each pixel holds the largest
    label within geodesic distance k. A component of <= k pixels has diameter < k, so all its pixels
    then agree on its largest label, that label occurs exactly |component| times, and one more step
    changes none of them. For a larger component no label passes both tests: if every pixel carrying
    label m is stable, the set of them contains the whole k-ball around m's own pixel, which in a
    component of more than k pixels has more than k pixels.
    """
    return small_component_areas(region, max_area) > 0


def small_component_areas(region: torch.Tensor, max_area: int) -> torch.Tensor:
    """(B, 1, H, W) long: the area of each pixel's 8-connected component of `region` where it has at most
    `max_area` pixels, 0 elsewhere (see `small_components` for why this is exact)."""
    b, _, h, w = region.shape
    # float32 holds these integer labels exactly up to 2**24 pixels per mask.
    index = torch.arange(1, h * w + 1, device=region.device, dtype=torch.float32).reshape(1, 1, h, w)
    labels = torch.where(region, index, 0.0)  # (B, 1, H, W)
    for _ in range(max_area):
        labels = torch.where(region, F.max_pool2d(labels, 3, stride=1, padding=1), 0.0)
    after = torch.where(region, F.max_pool2d(labels, 3, stride=1, padding=1), 0.0)
    flat = labels.reshape(b, h * w).long()  # (B, HW), 0 outside the region
    changed = (after != labels).reshape(b, h * w).long()  # (B, HW)
    counts = torch.zeros(b, h * w + 1, device=region.device, dtype=torch.long)
    counts.scatter_add_(1, flat, torch.ones_like(flat))  # pixels per label
    unstable = torch.zeros_like(counts).scatter_reduce_(1, flat, changed, reduce="amax")  # any pixel changed
    area = torch.gather(counts, 1, flat)  # (B, HW)
    small = (area <= max_area) & (torch.gather(unstable, 1, flat) == 0) & region.reshape(b, h * w)  # (B, HW)
    return torch.where(small, area, 0).reshape(b, 1, h, w)


def fill_small_holes(mask_logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Set background components (logit <= 0) of at most `max_area` pixels to a small positive logit.

    mask_logits (B, 1, H, W); returns a new tensor, the input itself when max_area <= 0.
    """
    if max_area <= 0 or mask_logits.numel() == 0:
        return mask_logits
    holes = small_components(mask_logits <= 0, max_area)
    return torch.where(holes, torch.full_like(mask_logits, HOLE_FILL_LOGIT), mask_logits)


SPECK_LOGIT = -0.1


def fill_holes_and_remove_specks(mask_logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """SAM 3's video-level post-processing of (B, 1, H, W) low-res logits: small holes filled (as
    `fill_small_holes`), then foreground components of at most min(`max_area`, half the mask's foreground)
    pixels set to a small negative logit, so that specks go but a tiny object stays."""
    if max_area <= 0 or mask_logits.numel() == 0:
        return mask_logits
    filled = fill_small_holes(mask_logits, max_area)
    foreground = filled > 0
    # Per mask: specks are at most half its foreground (floor), and at most max_area.
    limit = (foreground.sum(dim=(2, 3), keepdim=True) // 2).clamp(max=max_area)  # (B, 1, 1, 1)
    area = small_component_areas(foreground, max_area)  # (B, 1, H, W)
    specks = (area > 0) & (area <= limit)
    return torch.where(specks, torch.full_like(filled, SPECK_LOGIT), filled)
