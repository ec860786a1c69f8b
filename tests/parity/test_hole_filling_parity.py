"""Hole filling against the official functions: SAM 2.1's `fill_holes_in_mask_scores` (fill_hole_area, default 8)
and SAM 3's video-level one (holes and specks, 16 pixels), on masks with holes and specks of every size around
the limits, even and odd sizes.

The official functions find connected components with a CUDA extension (SAM 2.1: sam2._C; SAM 3: cc_torch,
triton, or scikit-image on CPU, none installed here). `reference_connected_components` (scipy's 8-connected
labelling, sam3_video_oracle.py) answers for them on CPU; everything else is the official code.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

if os.environ.get("PARITY_ALLOW_NO_ORACLE") == "1" and (
    importlib.util.find_spec("sam2") is None or importlib.util.find_spec("sam3") is None
):
    pytest.skip("sam2/sam3 (the test-only oracles) are not installed", allow_module_level=True)
if importlib.util.find_spec("sam2") is None or importlib.util.find_spec("sam3") is None:
    raise ImportError("the SAM 2 / SAM 3 oracles are not installed: run `make oracle`")

import sam2.utils.misc as sam2_misc

from batchtrack.model.nn.postprocess import fill_holes_and_remove_specks, fill_small_holes

from .sam3_oracle import oracle_modules
from .sam3_video_oracle import reference_connected_components

pytestmark = pytest.mark.parity


def _masks(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Logits whose sign pattern has blobs, holes and specks of many sizes (smooth noise at a few scales)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(batch, 1, height, width)
    for cell in (2, 3, 5, 9):
        coarse = torch.randn(batch, 1, height // cell + 2, width // cell + 2, generator=g)
        out += torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return out - 0.3


@pytest.mark.parametrize(("height", "width"), [(64, 64), (37, 50)])
def test_sam21_fill_hole_area_matches_official(monkeypatch: pytest.MonkeyPatch, height: int, width: int) -> None:
    monkeypatch.setattr(sam2_misc, "get_connected_components", reference_connected_components)
    masks = _masks(6, height, width, seed=height)
    for area in (1, 8, 30):
        expected = sam2_misc.fill_holes_in_mask_scores(masks, area)
        filled = (expected != masks).sum().item()
        assert filled > 0, "no hole was filled: the comparison would be empty"
        assert torch.equal(fill_small_holes(masks, area), expected), area


@pytest.mark.parametrize(("height", "width"), [(64, 64), (37, 50)])
def test_sam3_video_hole_filling_and_speck_removal_match_official(
    monkeypatch: pytest.MonkeyPatch, height: int, width: int
) -> None:
    utils = oracle_modules().tracker_utils  # imports sam3 under the shims first
    import sam3.perflib.connected_components as cc

    monkeypatch.setattr(cc, "connected_components", reference_connected_components)
    masks = _masks(6, height, width, seed=height + 1)
    # Tiny masks too: a speck is removed only when under half the mask's own area.
    masks = torch.cat([masks, torch.full((1, 1, height, width), -1.0)])
    masks[-1, 0, 3:6, 4:6] = 1.0
    for area in (4, 16):
        expected = utils.fill_holes_in_mask_scores(masks, area, fill_holes=True, remove_sprinkles=True)
        assert ((expected > 0) & (masks <= 0)).any(), "no hole was filled"
        assert ((expected <= 0) & (masks > 0)).any(), "no speck was removed"
        assert torch.equal(fill_holes_and_remove_specks(masks, area), expected), area
