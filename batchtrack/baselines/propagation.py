"""The frame loop every classical baseline shares: objects join at their prompts, live masks carried frame to frame.

A subclass says only how one mask moves from the previous grey frame to the current one (`_propagate`),
with work shared by all objects of a frame pair in `_prepare`. Results are hard masks as confident but
finite logits, so downstream sigmoid and threshold code behaves as with the neural tracker's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from batchtrack.baselines.prompt_mask import initial_mask
from batchtrack.model.types import FrameResult, Prompt

POINTER_DIM = 256
# Logits of a hard mask: confident, but finite so that downstream sigmoid/threshold code behaves.
_LOGIT = 10.0


def _frame_result(frame_index: int, masks: dict[int, np.ndarray], shape: tuple[int, int]) -> FrameResult:
    ids = sorted(masks)
    stacked = np.stack([masks[i] for i in ids]) if ids else np.zeros((0, *shape), dtype=bool)  # (N, H, W)
    logits = torch.from_numpy(np.where(stacked, _LOGIT, -_LOGIT).astype(np.float32))
    visible = stacked.any(axis=(1, 2))  # (N,)
    return FrameResult(
        frame_index=frame_index,
        object_ids=ids,
        mask_logits=logits,
        object_score_logits=torch.from_numpy(np.where(visible, _LOGIT, -_LOGIT).astype(np.float32)),
        iou_predictions=torch.ones(len(ids), dtype=torch.float32),
        object_pointers=torch.zeros(len(ids), POINTER_DIM, dtype=torch.float32),
    )


class MaskPropagationTracker(ABC):
    """Shared frame loop: join objects at their prompts, carry every live mask from frame to frame."""

    name: str

    def track(
        self,
        frames: Iterable[tuple[int, np.ndarray]],
        prompts: Sequence[Prompt],
        *,
        reverse: bool = False,
    ) -> Iterator[FrameResult]:
        """Yield one FrameResult per frame, in the order given; `reverse` means indices decrease."""
        by_frame: dict[int, list[Prompt]] = defaultdict(list)
        for prompt in prompts:
            by_frame[prompt.frame_index].append(prompt)
        masks: dict[int, np.ndarray] = {}
        previous: np.ndarray | None = None  # grey image of the last frame
        last_index: int | None = None
        for frame_index, image in frames:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"frame {frame_index}: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
            if last_index is not None and (frame_index <= last_index if not reverse else frame_index >= last_index):
                order = "decreasing" if reverse else "increasing"
                raise ValueError(
                    f"frame {frame_index} came after frame {last_index}: reverse={reverse} needs {order} indices"
                )
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            if previous is not None and any(m.any() for m in masks.values()):
                state = self._prepare(previous, grey)
                masks = {i: self._propagate(state, previous, grey, m) if m.any() else m for i, m in masks.items()}
            for prompt in by_frame.get(frame_index, ()):
                masks[prompt.object_id] = initial_mask(prompt, image)
            yield _frame_result(frame_index, masks, grey.shape)
            previous, last_index = grey, frame_index

    def _prepare(self, previous: np.ndarray, current: np.ndarray) -> Any:
        """Work shared by all objects of a frame pair (e.g. a dense flow field)."""
        return None

    @abstractmethod
    def _propagate(self, state: Any, previous: np.ndarray, current: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Carry one object's (H, W) bool mask from the previous grey frame to the current one."""
