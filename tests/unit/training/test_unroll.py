"""The training unroll runs what inference runs: in eval mode it reproduces `Tracker.track` exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from batchtrack.model.modes.association import AssociationHead
from batchtrack.model.types import Prompt
from batchtrack.training.config import DataSpec
from batchtrack.training.data import TrainingClip, make_batch
from batchtrack.training.losses import LossWeights
from batchtrack.training.unroll import TrainingUnroll, build_trainable, video_logits

SPEC = DataSpec(clip_frames=4, height=48, width=64, min_objects=2, max_objects=3, max_tracked_objects=2)


def _clip(kind: str = "box", max_clicks: int = 3) -> TrainingClip:
    spec = SPEC.model_copy(
        update={
            "mask_prompt_fraction": 1.0 if kind == "mask" else 0.0,
            "click_prompt_fraction": 1.0 if kind == "click" else 0.0,
            "max_clicks": max_clicks,
        }
    )
    clip = make_batch(spec, seed=11, step=0).clips[0]
    assert (clip.prompt_points is not None) == (kind == "click")
    return clip


def _tracker_outputs(unroll: TrainingUnroll, clip: TrainingClip) -> list:
    frames = [(t, clip.frames[t].numpy()) for t in range(clip.frames.shape[0])]
    prompts = []
    for n in range(len(clip.object_ids)):
        if clip.prompt_masks is not None:
            prompts.append(Prompt(frame_index=0, object_id=n, mask=clip.prompt_masks[n].numpy()))
        elif clip.prompt_points is not None:
            points = clip.prompt_points[n].numpy()
            prompts.append(
                Prompt(frame_index=0, object_id=n, points=points, point_labels=np.ones(len(points), dtype=np.int32))
            )
        else:
            prompts.append(Prompt(frame_index=0, object_id=n, box=clip.boxes[n].numpy().astype(np.float32)))
    return list(unroll.tracker.track(frames, prompts))


@pytest.mark.parametrize(
    ("kind", "max_clicks"),
    [("box", 3), ("mask", 3), ("click", 1), ("click", 3)],
    ids=["box-prompt", "mask-prompt", "one-click", "up-to-3-clicks"],
)
def test_eval_unroll_equals_inference_tracker(kind: str, max_clicks: int) -> None:
    torch.manual_seed(0)
    unroll = TrainingUnroll(build_trainable("test-tiny")).eval()
    # Random weights call every object absent (masks -1024, the fixed no-object pointer); a positive
    # object-score bias makes the masks, pointers and memories real, so the comparison has teeth.
    with torch.no_grad():
        unroll.tracker.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
    clip = _clip(kind, max_clicks)
    with torch.no_grad():
        unrolled = unroll.unroll(clip)
    expected = _tracker_outputs(unroll, clip)
    assert len(unrolled) == len(expected) == clip.frames.shape[0]
    height, width = clip.frames.shape[1:3]
    for frame, result in zip(unrolled, expected, strict=True):
        torch.testing.assert_close(video_logits(frame, height, width), result.mask_logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(frame.object_score_logits, result.object_score_logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(frame.iou, result.iou_predictions, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(frame.pointers, result.object_pointers, rtol=1e-4, atol=1e-4)
        assert bool((result.mask_logits > 0).any()) and bool((result.mask_logits < 0).any())


def test_train_unroll_gives_gradients_to_every_stage_of_the_tracker() -> None:
    torch.manual_seed(0)
    unroll = TrainingUnroll(build_trainable("test-tiny")).train()
    # Objects predicted absent get the fixed no-object pointer (no gradient to obj_ptr_proj), so make them present.
    with torch.no_grad():
        unroll.tracker.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
    out = unroll(make_batch(SPEC, seed=2, step=0), LossWeights())
    out.terms.total(LossWeights()).backward()
    tracker = unroll.tracker
    for name in (
        "image_encoder.trunk.patch_embed.proj.weight",
        "memory_attention.layers.0.cross_attn_image.k_proj.weight",
        "memory_encoder.out_proj.weight",
        "sam_mask_decoder.iou_prediction_head.layers.0.weight",
        "sam_mask_decoder.pred_obj_score_head.layers.0.weight",
        "obj_ptr_proj.layers.0.weight",
        "maskmem_tpos_enc",
    ):
        grad = tracker.get_parameter(name).grad
        assert grad is not None and bool(grad.abs().sum() > 0), name


def test_association_hook_trains_the_head_on_click_proposals_against_pointers() -> None:
    torch.manual_seed(0)
    tracker = build_trainable("test-tiny")
    with torch.no_grad():
        tracker.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
    head = AssociationHead(tracker.config.d_model)
    unroll = TrainingUnroll(tracker, head).train()
    weights = LossWeights(association=1.0)
    out = unroll(make_batch(SPEC, seed=4, step=0, batch_clips=2), weights)
    # Untrained, the head is near chance over (tracks + "new"): the cross-entropy is about log(columns).
    assert 0.2 < out.terms.association.item() < 3.0
    out.terms.total(weights).backward()
    assert head.proposal_proj.layers[0].weight.grad is not None
    assert bool(head.new_object.layers[0].weight.grad.abs().sum() > 0)
    assert bool(tracker.obj_ptr_proj.layers[0].weight.grad.abs().sum() > 0)


def test_without_a_head_the_association_term_is_zero() -> None:
    torch.manual_seed(0)
    out = TrainingUnroll(build_trainable("test-tiny"))(make_batch(SPEC, seed=4, step=0), LossWeights())
    assert out.terms.association.item() == 0.0
