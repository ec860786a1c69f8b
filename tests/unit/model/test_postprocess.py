"""Small-hole filling in torch agrees with an independent 8-connected labelling (scipy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from batchtrack.model.nn.postprocess import HOLE_FILL_LOGIT, fill_small_holes, small_components


def _scipy_areas(region: np.ndarray) -> np.ndarray:
    labels, _ = ndimage.label(region, structure=np.ones((3, 3), dtype=int))
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return counts[labels]


@pytest.mark.parametrize(("seed", "density", "max_area"), [(0, 0.45, 8), (1, 0.6, 8), (2, 0.3, 3), (3, 0.5, 1)])
def test_small_components_match_scipy_8_connectivity(seed: int, density: float, max_area: int) -> None:
    rng = np.random.default_rng(seed)
    region = rng.random((3, 1, 40, 57)) < density
    got = small_components(torch.from_numpy(region), max_area).numpy()
    for i in range(3):
        want = region[i, 0] & (_scipy_areas(region[i, 0]) <= max_area)
        assert want.any() and (region[i, 0] & ~want).any()  # both kinds present
        np.testing.assert_array_equal(got[i, 0], want)


def test_fill_small_holes_fills_only_holes_up_to_max_area() -> None:
    logits = torch.full((1, 1, 30, 30), 2.0)
    logits[0, 0, 0:10, :] = -3.0  # large background: kept
    logits[0, 0, 15:17, 15:19] = -1.0  # 8-pixel hole: filled
    logits[0, 0, 22:25, 5:8] = -1.0  # 9-pixel hole: kept
    logits[0, 0, 20, 20] = -0.5  # single pixel touching another diagonally: one 2-pixel hole
    logits[0, 0, 21, 21] = -0.5
    out = fill_small_holes(logits, 8)
    assert torch.all(out[0, 0, 15:17, 15:19] == HOLE_FILL_LOGIT)
    assert out[0, 0, 20, 20] == HOLE_FILL_LOGIT and out[0, 0, 21, 21] == HOLE_FILL_LOGIT
    assert torch.all(out[0, 0, 22:25, 5:8] == -1.0)
    assert torch.all(out[0, 0, 0:10] == -3.0)
    assert torch.equal(fill_small_holes(logits, 0), logits)
