"""The official SAM 3 video loop (`Sam3VideoInferenceWithInstanceInteractivity`, sam3==0.1.4) as a CPU oracle.

Test-only. `official_video_model` assembles `build_sam3_video_model`'s model from the oracle's own classes with
the builder's loop arguments, at a reduced size (the detector of test_sam3_detector_parity.py, the tracker of
sam3_oracle.py without a backbone of its own). `run_official` runs its text-prompted propagation over frames
already preprocessed (so both sides read the same images) and records, per frame, the outputs and the tracker's
propagated low-res logits (after the loop's hole filling), the ones the rules read.

CPU answers the oracle needs beyond sam3_oracle.cpu_patches:
- connected components: the oracle's CPU path calls scikit-image (not installed); `reference_connected_components`
  answers with scipy's 8-connected labelling (an implementation of its own, not the project's);
- RoIAlign of the (empty) geometric prompt: sam3_oracle.reference_roi_align;
- the all-gather's bf16 cast of the tracker's neck features: on GPU it is a no-op (the features are bf16 under
  autocast already); on CPU the oracle runs in fp32 and so does ours, so the cast is skipped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import scipy.ndimage
import torch

from .sam3_oracle import cpu_patches, reference_roi_align

_NO_BF16 = threading.local()


def reference_connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`sam3.perflib.connected_components` / `sam2.utils.misc.get_connected_components` on CPU: (B, 1, H, W)
    masks -> (labels, per-pixel component areas), 8-connected, 0 for background pixels."""
    values = mask.detach().cpu().numpy().astype(bool)
    labels = np.zeros(values.shape, dtype=np.int32)
    areas = np.zeros(values.shape, dtype=np.int32)
    for b in range(values.shape[0]):
        lab, num = scipy.ndimage.label(values[b, 0], structure=np.ones((3, 3), dtype=bool))
        if num:
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            labels[b, 0], areas[b, 0] = lab, sizes[lab]
    return torch.from_numpy(labels).to(mask.device), torch.from_numpy(areas).to(mask.device)


@contextmanager
def video_patches(mp: pytest.MonkeyPatch) -> Iterator[None]:
    """cpu_patches plus the video loop's own: CPU connected components, no bf16 cast of the gathered features."""
    import sam3.model.geometry_encoders as geometry
    import sam3.model.sam3_image as sam3_image
    import sam3.perflib.connected_components as cc

    with cpu_patches(mp):
        mp.setattr(cc, "connected_components", _reference_cc_4d)
        mp.setattr(geometry, "torchvision", SimpleNamespace(ops=SimpleNamespace(roi_align=reference_roi_align)))
        patched_to = torch.Tensor.to

        def to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if getattr(_NO_BF16, "on", False) and args and args[0] is torch.bfloat16:
                return self
            return patched_to(self, *args, **kwargs)

        mp.setattr(torch.Tensor, "to", to)
        build = sam3_image.Sam3ImageOnVideoMultiGPU._build_multigpu_buffer_next_chunk

        def build_without_cast(self: Any, *args: Any, **kwargs: Any) -> Any:
            _NO_BF16.on = True
            try:
                return build(self, *args, **kwargs)
            finally:
                _NO_BF16.on = False

        mp.setattr(sam3_image.Sam3ImageOnVideoMultiGPU, "_build_multigpu_buffer_next_chunk", build_without_cast)
        yield


def _reference_cc_4d(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    return reference_connected_components(mask)


# `build_sam3_video_model(apply_temporal_disambiguation=True)`'s loop arguments (sam3==0.1.4).
OFFICIAL_LOOP: dict[str, Any] = {
    "score_threshold_detection": 0.5,
    "assoc_iou_thresh": 0.1,
    "det_nms_thresh": 0.1,
    "new_det_thresh": 0.7,
    "hotstart_delay": 15,
    "hotstart_unmatch_thresh": 8,
    "hotstart_dup_thresh": 8,
    "suppress_unmatched_only_within_hotstart": True,
    "min_trk_keep_alive": -1,
    "max_trk_keep_alive": 30,
    "init_trk_keep_alive": 30,
    "suppress_overlapping_based_on_recent_occlusion_threshold": 0.7,
    "suppress_det_close_to_boundary": False,
    "fill_hole_area": 16,
    "recondition_every_nth_frame": 16,
    "masklet_confirmation_enable": False,
    "decrease_trk_keep_alive_for_empty_masklets": False,
    "image_mean": (0.5, 0.5, 0.5),
    "image_std": (0.5, 0.5, 0.5),
}


def official_video_model(
    ns: SimpleNamespace, detector: torch.nn.Module, tracker: torch.nn.Module, image_size: int, **loop: Any
) -> torch.nn.Module:
    """`build_sam3_video_model`'s video model around `detector` (with its backbone) and `tracker` (without)."""
    args = {**OFFICIAL_LOOP, **loop}
    # The builder gives the detector its backbone at construction, which turns this on; ours was attached after.
    detector.gather_backbone_out = True
    return ns.video.Sam3VideoInferenceWithInstanceInteractivity(
        detector=detector, tracker=tracker, image_size=image_size, **args
    ).eval()


@dataclass
class OfficialFrame:
    """One frame of the official loop: what it outputs and what the tracker propagated onto it."""

    frame_index: int
    object_ids: list[int]
    masks: np.ndarray  # (N, H, W) bool, after the output non-overlap
    propagated_ids: list[int] = field(default_factory=list)
    propagated_logits: torch.Tensor | None = None  # (M, h, w) low-res, after hole filling, before the rules


def run_official(
    model: torch.nn.Module, images: torch.Tensor, text: str, height: int, width: int
) -> list[OfficialFrame]:
    """Text-prompted propagation over `images` (T, 3, S, S), normalised as the model reads them; video size H x W.

    The prompt is set as `add_prompt(text_str=...)` sets it, without its own pass over the first frame, so the
    propagation is one pass over the frames (what a streaming loop sees)."""
    propagated: dict[int, tuple[list[int], torch.Tensor]] = {}
    inner: Callable[..., Any] = model._propogate_tracker_one_frame_local_gpu

    def record(states: list[Any], frame_idx: int, reverse: bool, run_mem_encoder: bool = False) -> Any:
        ids, masks, scores = inner(states, frame_idx=frame_idx, reverse=reverse, run_mem_encoder=run_mem_encoder)
        propagated[frame_idx] = (list(int(i) for i in ids), masks.detach().clone())
        return ids, masks, scores

    out: list[OfficialFrame] = []
    with torch.inference_mode(), pytest.MonkeyPatch.context() as mp, video_patches(mp):
        mp.setattr(model, "_propogate_tracker_one_frame_local_gpu", record)
        state = _official_state(model, images, height, width)
        model.reset_state(state)
        state["text_prompt"] = text
        state["input_batch"].find_text_batch[0] = text
        for t in range(state["num_frames"]):
            state["input_batch"].find_inputs[t].text_ids[...] = model.TEXT_ID_FOR_TEXT
        for frame_idx, res in model.propagate_in_video(state, start_frame_idx=0, reverse=False):
            ids = [int(i) for i in res["out_obj_ids"]]
            out.append(OfficialFrame(int(frame_idx), ids, np.asarray(res["out_binary_masks"], dtype=bool)))
    for frame in out:
        if frame.frame_index in propagated:
            frame.propagated_ids, frame.propagated_logits = propagated[frame.frame_index]
    return out


def _official_state(model: torch.nn.Module, images: torch.Tensor, height: int, width: int) -> dict[str, Any]:
    """`init_state`'s inference state for frames already loaded (its loader reads files; these are tensors)."""
    state: dict[str, Any] = {
        "image_size": model.image_size,
        "num_frames": int(images.shape[0]),
        "orig_height": height,
        "orig_width": width,
        "constants": {},
    }
    model._construct_initial_input_batch(state, images)
    state.update(
        tracker_inference_states=[],
        tracker_metadata={},
        feature_cache={},
        cached_frame_outputs={},
        action_history=[],
        is_image_only=False,
    )
    return state
