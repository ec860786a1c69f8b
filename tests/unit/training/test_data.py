"""Synthetic training clips: deterministic per (seed, rank, step), prompts consistent with the masks."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from batchtrack.errors import ConfigError
from batchtrack.training.config import DataSpec, make_train_config
from batchtrack.training.data import MIN_PROMPT_AREA_FRACTION, make_batch, mask_box

SPEC = DataSpec(clip_frames=3, height=64, width=96, min_objects=2, max_objects=3, max_tracked_objects=2)


def test_clips_have_the_specified_shapes_and_prompt_visible_objects() -> None:
    batch = make_batch(SPEC, seed=1, step=0, batch_clips=2)
    assert len(batch.clips) == 2
    for clip in batch.clips:
        t, n = SPEC.clip_frames, len(clip.object_ids)
        assert 1 <= n <= SPEC.max_tracked_objects
        assert clip.frames.shape == (t, 64, 96, 3) and clip.frames.dtype == torch.uint8
        assert clip.masks.shape == (t, n, 64, 96) and clip.masks.dtype == torch.bool
        areas = clip.masks[0].flatten(1).sum(1)
        assert bool((areas >= MIN_PROMPT_AREA_FRACTION * 64 * 96).all())
        assert clip.boxes.shape == (n, 4)


def test_box_prompts_are_the_frame0_mask_boxes_without_jitter() -> None:
    spec = SPEC.model_copy(update={"box_jitter": 0.0})
    clip = make_batch(spec, seed=3, step=5).clips[0]
    for n in range(len(clip.object_ids)):
        assert clip.boxes[n].tolist() == mask_box(clip.masks[0, n].numpy()).tolist()


def test_same_seed_step_and_rank_give_the_same_clip_and_others_differ() -> None:
    a = make_batch(SPEC, seed=7, step=2, rank=0).clips[0]
    b = make_batch(SPEC, seed=7, step=2, rank=0).clips[0]
    c = make_batch(SPEC, seed=7, step=2, rank=1).clips[0]
    d = make_batch(SPEC, seed=7, step=3, rank=0).clips[0]
    assert torch.equal(a.frames, b.frames) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.frames, c.frames)
    assert not torch.equal(a.frames, d.frames)


def test_mask_prompt_fraction_one_prompts_with_the_frame0_masks() -> None:
    spec = SPEC.model_copy(update={"mask_prompt_fraction": 1.0})
    clip = make_batch(spec, seed=0, step=0).clips[0]
    assert clip.prompt_masks is not None
    assert torch.equal(clip.prompt_masks, clip.masks[0])


def test_mask_box_uses_exclusive_pixel_edges() -> None:
    mask = torch.zeros(5, 6, dtype=torch.bool)
    mask[1:3, 2:5] = True
    assert mask_box(mask.numpy()).tolist() == [2.0, 1.0, 5.0, 3.0]


def test_config_rejects_unknown_keys_and_inverted_object_counts() -> None:
    with pytest.raises(ConfigError, match=r"data\.frames_per_clip"):
        make_train_config({"data": {"frames_per_clip": 4}})
    with pytest.raises(ConfigError, match=r"max_objects=1 is below data.min_objects=2"):
        make_train_config({"data": {"min_objects": 2, "max_objects": 1}})


def test_association_clicks_fall_inside_visible_objects() -> None:
    clip = make_batch(SPEC, seed=8, step=1).clips[0]
    t_frames, n = clip.masks.shape[:2]
    for t in range(t_frames):
        for k in range(n):
            x, y = clip.clicks[t, k].long().tolist()
            if clip.masks[t, k].any():
                assert bool(clip.masks[t, k, y, x])
            else:
                assert (x, y) == (-1, -1)
        assert -1 <= int(clip.left_out[t]) < n


def test_click_prompts_fall_inside_the_frame0_masks_with_one_count_per_clip() -> None:
    spec = SPEC.model_copy(update={"click_prompt_fraction": 1.0, "max_clicks": 3})
    counts = set()
    for step in range(6):
        clip = make_batch(spec, seed=7, step=step).clips[0]
        assert clip.prompt_points is not None and clip.prompt_masks is None
        n, p = clip.prompt_points.shape[:2]
        assert n == len(clip.object_ids) and 1 <= p <= 3
        counts.add(p)
        xy = clip.prompt_points.long()
        for k in range(n):
            assert bool(clip.masks[0, k][xy[k, :, 1], xy[k, :, 0]].all())
    assert len(counts) > 1  # the click count varies between clips


def test_adding_click_prompts_leaves_a_seeds_frames_masks_and_boxes_unchanged() -> None:
    plain = make_batch(SPEC, seed=9, step=2).clips[0]
    clicked = make_batch(SPEC.model_copy(update={"click_prompt_fraction": 0.5}), seed=9, step=2).clips[0]
    assert torch.equal(plain.frames, clicked.frames) and torch.equal(plain.masks, clicked.masks)
    assert torch.equal(plain.boxes, clicked.boxes)


def test_one_frame_clips_for_the_prompted_frame_curriculum() -> None:
    clip = make_batch(SPEC, seed=1, step=0, clip_frames=1).clips[0]
    assert clip.frames.shape[0] == 1 and clip.masks.shape[0] == 1 and clip.clicks.shape[0] == 1


def test_scene_length_stride_and_occlusion_range_are_spec_fields() -> None:
    with pytest.raises(ValidationError, match="scene_frames"):
        DataSpec(clip_frames=8, max_stride=4, scene_frames=20)
    with pytest.raises(ValidationError, match="occlusion"):
        DataSpec(occlusion=(0.8, 0.2))
    spec = DataSpec(clip_frames=4, height=48, width=64, scene_frames=10, max_stride=3, occlusion=(1.0, 1.0))
    clip = make_batch(spec, seed=1, step=0).clips[0]
    assert clip.frames.shape[0] == 4
