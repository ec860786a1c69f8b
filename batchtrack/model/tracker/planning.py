"""What automatic and concept modes plan on a frame while a clip is tracked, and the prompts a clip starts with.

A `FramePlanner` (batchtrack.model.modes) is `Tracker.track`'s hook: on the frames it wants it sees a
`KeyframeView` (the live objects' predictions before memory) and answers with a `FramePlan` (new objects from
mask prompts or `DetectionPrompt`s, re-conditioning, suppression, removal). `PromptPlan` groups the user's
prompts by frame and object, validated up front.

Letters: N objects on a frame, C channels (256), h x w the feature grid, H x W the video frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from batchtrack.errors import PromptError
from batchtrack.model.types import Prompt


@dataclass
class KeyframeView:
    """What a `FramePlanner` sees of a frame: its features and the live objects' predictions, before memory."""

    frame_index: int
    height: int  # video frame size
    width: int
    vision: torch.Tensor  # (1, C, h, w) stride-16 image features, without memory
    high_res: tuple[torch.Tensor, torch.Tensor]  # projected stride-4 / stride-8 levels
    object_ids: list[int]
    low_res_logits: torch.Tensor  # (N, 4h, 4w) mask logits of the live objects
    object_score_logits: torch.Tensor  # (N,)
    pointers: torch.Tensor  # (N, C)


@dataclass
class FramePlan:
    """A planner's changes to one frame (automatic mode)."""

    prompts: list[Prompt] = field(default_factory=list)  # mask prompts: new objects join (or live ones restart)
    suppress: list[int] = field(default_factory=list)  # live objects whose mask here is cleared (output and memory)
    remove: list[int] = field(default_factory=list)  # live objects that stop here: no row, memory dropped
    # Mask prompts of live objects that re-condition them (SAM 3's _recondition_masklets then
    # _tracker_update_memories): the frame becomes a conditioning frame of the object with the mask's pointer,
    # while its output, object score and memory features stay those of its propagated prediction (after
    # `suppress`), encoded as a tracked frame's.
    recondition: list[Prompt] = field(default_factory=list)
    # New objects from detections (SAM 3's concept mode), after `prompts`, in this order.
    detections: list[DetectionPrompt] = field(default_factory=list)
    # Re-conditioning from detections (SAM 3's `_recondition_masklets`): as `recondition`, with the detection's
    # mask at input size (see DetectionPrompt) for the pointer.
    recondition_detections: list[DetectionPrompt] = field(default_factory=list)


@dataclass
class DetectionPrompt:
    """A new object started from a detection, as SAM 3's video loop adds one (`_tracker_add_new_objects`).

    The detection's low-res logits become a binary mask at the tracker's input-mask size (16 x feature grid, by
    bilinear resize then > 0): the decoder pass for its pointer reads it, and its antialiased resize to video size
    (> 0.5) is the mask prompt whose +-1024 logits go into memory. The frame's output is the detection's own logits
    (after the video loop's hole filling) resized to video size, as SAM 3's `build_outputs` writes a new object.
    """

    object_id: int
    mask_logits: torch.Tensor  # (h, w) the detection's low-res mask logits (4 x feature grid)


class FramePlanner(Protocol):
    """Adds objects while a clip is tracked (batchtrack.model.modes.auto); `track(..., planner=...)`."""

    def wants(self, frame_index: int) -> bool:
        """Whether `plan` runs on this frame (such a frame is encoded even with no live object)."""
        ...

    def plan(self, view: KeyframeView) -> FramePlan: ...


class PromptPlan:
    """Prompts grouped by frame and object, validated up front (PromptError names what is wrong)."""

    def __init__(self, prompts: Sequence[Prompt]) -> None:
        self.by_frame: dict[int, dict[int, list[Prompt]]] = {}
        self.order: dict[int, int] = {}  # object id -> rank of its first prompt in the sequence
        for n, p in enumerate(prompts):
            validate_prompt(p, n)
            self.by_frame.setdefault(int(p.frame_index), {}).setdefault(int(p.object_id), []).append(p)
            self.order.setdefault(int(p.object_id), n)

    def at(self, frame_index: int) -> dict[int, list[Prompt]]:
        return self.by_frame.get(frame_index, {})


def validate_prompt(p: Prompt, n: int) -> None:
    where = f"prompt #{n} (object {p.object_id}, frame {p.frame_index})"
    if p.points is None and p.box is None and p.mask is None:
        raise PromptError(f"{where}: needs points, a box or a mask")
    if p.mask is not None and (p.points is not None or p.box is not None):
        raise PromptError(f"{where}: a mask cannot be combined with points or a box")
    if (p.points is None) != (p.point_labels is None):
        raise PromptError(f"{where}: points and point_labels must be given together")
    if p.points is not None and p.point_labels is not None:
        pts, labels = np.asarray(p.points), np.asarray(p.point_labels)
        if pts.ndim != 2 or pts.shape[1] != 2 or labels.shape != (pts.shape[0],):
            raise PromptError(f"{where}: points must be (P, 2) with labels (P,), got {pts.shape} and {labels.shape}")
        if not np.isin(labels, (0, 1)).all():
            raise PromptError(f"{where}: point_labels must be 0 (background) or 1 (foreground), got {labels.tolist()}")
        if not np.isfinite(pts).all():
            raise PromptError(f"{where}: points must be finite")
    if p.box is not None:
        box = np.asarray(p.box, dtype=np.float64)
        if box.shape != (4,) or not np.isfinite(box).all():
            raise PromptError(f"{where}: box must be 4 finite numbers x0, y0, x1, y1, got {box.tolist()}")
    if p.mask is not None and np.asarray(p.mask).ndim != 2:
        raise PromptError(f"{where}: mask must be 2-D (H, W), got shape {np.asarray(p.mask).shape}")


__all__ = ["DetectionPrompt", "FramePlan", "FramePlanner", "KeyframeView", "PromptPlan", "validate_prompt"]
