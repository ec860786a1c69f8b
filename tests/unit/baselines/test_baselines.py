"""Classical baselines: they follow a translating textured square and speak the tracker interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from batchtrack.baselines import FlowTracker, HomographyTracker, build_baseline, initial_mask
from batchtrack.errors import ConfigError, PromptError
from batchtrack.eval.metrics import jaccard
from batchtrack.model.types import Prompt

SIZE = 96
SIDE = 28
STEP = (2, 1)  # pixels per frame


def _texture(rng: np.random.Generator, height: int, width: int, cell: int, lo: int, hi: int) -> np.ndarray:
    coarse = rng.integers(lo, hi, (height // cell + 1, width // cell + 1, 3), dtype=np.uint8)
    return np.kron(coarse, np.ones((cell, cell, 1), dtype=np.uint8))[:height, :width]


def _square_clip(num_frames: int) -> tuple[list[tuple[int, np.ndarray]], list[np.ndarray]]:
    """A textured square sliding over a static textured background; returns frames and true masks."""
    rng = np.random.default_rng(0)
    background = _texture(rng, SIZE, SIZE, 4, 60, 140)
    patch = _texture(rng, SIDE, SIDE, 3, 150, 255)
    frames, masks = [], []
    for t in range(num_frames):
        x, y = 10 + STEP[0] * t, 12 + STEP[1] * t
        image = background.copy()
        image[y : y + SIDE, x : x + SIDE] = patch
        mask = np.zeros((SIZE, SIZE), dtype=bool)
        mask[y : y + SIDE, x : x + SIDE] = True
        frames.append((t, image))
        masks.append(mask)
    return frames, masks


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


@pytest.mark.parametrize("tracker", [FlowTracker(), FlowTracker("farneback"), HomographyTracker()], ids=repr)
def test_baseline_follows_a_translating_textured_square_for_20_frames(tracker: FlowTracker) -> None:
    frames, masks = _square_clip(21)
    prompts = [Prompt(frame_index=0, object_id=1, box=_box(masks[0]))]
    results = list(tracker.track(frames, prompts))
    last = results[-1]
    assert last.frame_index == 20
    assert jaccard(masks[20], (last.mask_logits[0] > 0).numpy()) > 0.8


def test_box_prompt_is_refined_by_grabcut_inside_the_box() -> None:
    frames, masks = _square_clip(1)
    loose = _box(masks[0]) + np.array([-8, -8, 8, 8], dtype=np.float32)
    mask = initial_mask(Prompt(frame_index=0, object_id=1, box=loose), frames[0][1])
    box_only = np.zeros_like(mask)
    box_only[4:52, 2:46] = True
    assert jaccard(masks[0], mask) > 0.8
    assert jaccard(masks[0], mask) > jaccard(masks[0], box_only)


def test_results_follow_frame_order_and_objects_join_at_their_prompt() -> None:
    frames, masks = _square_clip(8)
    prompts = [
        Prompt(frame_index=0, object_id=7, mask=masks[0]),
        Prompt(frame_index=3, object_id=2, points=np.array([[40.0, 30.0]], np.float32), point_labels=np.array([1])),
    ]
    results = list(HomographyTracker().track(frames, prompts))
    assert [r.frame_index for r in results] == list(range(8))
    assert [r.object_ids for r in results] == [[7]] * 3 + [[2, 7]] * 5
    r = results[5]
    assert r.mask_logits.shape == (2, SIZE, SIZE)
    assert r.mask_logits.dtype == torch.float32
    assert set(r.mask_logits.unique().tolist()) <= {-10.0, 10.0}
    assert torch.equal(r.object_pointers, torch.zeros(2, 256))
    assert torch.equal(r.iou_predictions, torch.ones(2))
    assert r.object_score_logits.tolist() == [10.0, 10.0]


def test_reverse_tracking_takes_decreasing_indices() -> None:
    frames, masks = _square_clip(10)
    backwards = list(reversed(frames))
    prompts = [Prompt(frame_index=9, object_id=1, mask=masks[9])]
    results = list(FlowTracker().track(backwards, prompts, reverse=True))
    assert [r.frame_index for r in results] == list(range(9, -1, -1))
    assert jaccard(masks[0], (results[-1].mask_logits[0] > 0).numpy()) > 0.8
    with pytest.raises(ValueError, match="reverse=False needs increasing indices"):
        list(FlowTracker().track(backwards, prompts))


def test_frames_before_any_prompt_have_no_objects_and_a_lost_object_scores_negative() -> None:
    frames, _ = _square_clip(4)
    gone = np.zeros((SIZE, SIZE), dtype=bool)
    results = list(FlowTracker().track(frames, [Prompt(frame_index=2, object_id=1, mask=gone)]))
    assert results[0].object_ids == []
    assert results[0].mask_logits.shape == (0, SIZE, SIZE)
    assert results[0].object_pointers.shape == (0, 256)
    assert results[3].object_score_logits.tolist() == [-10.0]


def test_prompt_without_box_points_or_mask_is_rejected() -> None:
    frames, _ = _square_clip(1)
    with pytest.raises(PromptError, match="object 4 on frame 0: has no box, points or mask"):
        list(FlowTracker().track(frames, [Prompt(frame_index=0, object_id=4)]))


def test_build_baseline_by_name() -> None:
    assert isinstance(build_baseline("baseline-flow"), FlowTracker)
    assert isinstance(build_baseline("baseline-homography"), HomographyTracker)
    with pytest.raises(ConfigError, match="unknown baseline tracker 'baseline-magic'"):
        build_baseline("baseline-magic")
