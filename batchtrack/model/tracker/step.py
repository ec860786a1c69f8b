"""One frame of tracking, the step that `Tracker.track` and the training unroll both take, and its public types.

The step, as `Tracker` methods: `encode` a batch of frames (with the config's normalisation) into `FrameFeatures`;
predict each object's `Rows`, either from its prompt (`mask_as_output` for a mask, the decoder for points and
boxes) or from memory (`attend_memory` over its bank selection), through the SAM heads (`decode`,
`rows_from_decoder`); then
`memorise` the rows into the clip's bank (`ClipState`). Inference adds hole filling, planners and re-conditioning
around these calls (tracker.py); training keeps every decoder candidate for its losses (training/unroll.py).

Letters: N objects on a frame, C channels (256), M memory channels (64), h x w the feature grid, S the model
input side, H x W the video frame, P prompt points.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from batchtrack.model.tracker.mask_decoder import ChosenMask, DecoderOutput
from batchtrack.model.tracker.memory_bank import MemoryBank
from batchtrack.model.tracker.prompt_encoder import PAD_LABEL

# Point labels of a box's two corners, which come first among an object's prompt points (as SAM 2 trains).
BOX_LABELS = (2, 3)


@dataclass
class ObjectPrompt:
    """All prompts of one object on one frame, in model-input coordinates."""

    object_id: int
    coords: torch.Tensor | None = None  # (P, 2) pixels of the S x S input; box corners first
    labels: torch.Tensor | None = None  # (P,) int32
    mask: np.ndarray | None = None  # (H, W) bool at video resolution
    # (1, side, side) the decoder pass's mask input when given apart from `mask` (a detection's, at input size)
    input_mask: torch.Tensor | None = None

    @property
    def num_points(self) -> int:
        return 0 if self.labels is None else int(self.labels.shape[0])


@dataclass
class FrameFeatures:
    """What the step reads of one encoded frame."""

    vision: torch.Tensor  # (1, C, h, w) stride-16 features
    vision_pos: torch.Tensor  # (1, C, h, w)
    high_res: tuple[torch.Tensor, torch.Tensor]  # conv_s0 (1, C/8, 4h, 4w), conv_s1 (1, C/4, 2h, 2w)


@dataclass
class Rows:
    """Per-object predictions on one frame, rows in `object_ids` order."""

    object_ids: list[int]
    low_res: torch.Tensor  # (N, 1, 4h, 4w) mask logits
    iou: torch.Tensor  # (N,)
    pointers: torch.Tensor  # (N, C)
    scores: torch.Tensor  # (N, 1) object score logits
    prompted: torch.Tensor  # (N,) bool: conditioning frame of that object

    @staticmethod
    def cat(parts: list[Rows]) -> Rows:
        """The rows of every part, in order."""
        return Rows(
            object_ids=[o for p in parts for o in p.object_ids],
            low_res=torch.cat([p.low_res for p in parts]),
            iou=torch.cat([p.iou for p in parts]),
            pointers=torch.cat([p.pointers for p in parts]),
            scores=torch.cat([p.scores for p in parts]),
            prompted=torch.cat([p.prompted for p in parts]),
        )

    def reorder(self, object_ids: list[int]) -> Rows:
        """These rows in `object_ids` order (a subset of them, or all)."""
        pos = {o: i for i, o in enumerate(self.object_ids)}
        idx = torch.tensor([pos[o] for o in object_ids], device=self.low_res.device)
        return Rows(
            object_ids=list(object_ids),
            low_res=self.low_res[idx],
            iou=self.iou[idx],
            pointers=self.pointers[idx],
            scores=self.scores[idx],
            prompted=self.prompted[idx],
        )


@dataclass
class ClipState:
    """State of one clip (a `track` call, or a training clip): the frame size, the live objects and the memory bank."""

    height: int
    width: int
    bank: MemoryBank
    max_ptr_offset: int
    live: list[int] = field(default_factory=list)  # object ids in joining order
    # (R, 1, 4h, 4w) low-res masks of objects removed on the current frame (SAM 3's memory re-encoding reads them)
    bystanders: torch.Tensor | None = None
    memory_pos: torch.Tensor | None = None  # (1, M, h, w), the same for every memory frame

    @staticmethod
    def start(height: int, width: int, bank: MemoryBank) -> ClipState:
        """A clip of (H, W) frames with no object yet, reading memory from `bank`."""
        # SAM 2 normalises pointer distances by (number of pointers read - 1), at least 1.
        return ClipState(height=height, width=width, bank=bank, max_ptr_offset=max(1, bank.max_obj_ptrs - 1))


@dataclass
class Decoded:
    """The decoder on N objects: every candidate mask (training's losses read them) and the one chosen per object."""

    candidates: DecoderOutput
    chosen: ChosenMask


def no_points(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM 2's prompt for "no points": one padding point at (0, 0), (N, 1, 2) and (N, 1)."""
    coords = torch.zeros(n, 1, 2, device=device)
    labels = torch.full((n, 1), PAD_LABEL, dtype=torch.int32, device=device)
    return coords, labels


__all__ = ["BOX_LABELS", "ClipState", "Decoded", "FrameFeatures", "ObjectPrompt", "Rows", "no_points"]
