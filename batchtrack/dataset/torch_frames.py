"""A job's output as a PyTorch IterableDataset: one sample per (video, frame) with its decoded masks.

Imported only by `TrackedMaskDataset.to_torch()`, so reading an output never needs torch.
With a DataLoader of several workers, each worker takes every n-th video; use `batch_size=None`
(frames hold different numbers of objects) or a collate function of your own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from batchtrack.dataset.video_rows import FrameRows


class FrameSample(NamedTuple):
    """One frame of one video: N objects' masks and their video-level track ids."""

    video_id: str
    frame_index: int
    masks: torch.Tensor  # (N, H, W) bool
    track_ids: torch.Tensor  # (N,) int64


def frame_sample(rows: FrameRows, present_only: bool = True) -> FrameSample:
    decoded = rows.decode(present_only)
    stack = (
        np.stack(list(decoded.values()))
        if decoded
        else np.zeros((0, rows.height, rows.width), dtype=bool)
    )
    return FrameSample(
        video_id=rows.video_id,
        frame_index=rows.frame_index,
        masks=torch.from_numpy(stack),
        track_ids=torch.tensor(list(decoded), dtype=torch.int64),
    )


class TorchFrameDataset(IterableDataset):
    """Frames of every video with rows, in (video_id, frame_index) order, split by video across workers."""

    def __init__(
        self,
        video_ids: list[str],
        iter_frames: Callable[[Iterable[str]], Iterator[FrameRows]],
        present_only: bool = True,
    ) -> None:
        """`iter_frames` yields the rows of the given videos frame by frame (`TrackedMaskDataset.iter_frames`);
        it is pickled into each DataLoader worker."""
        super().__init__()
        self.video_ids = video_ids
        self.iter_frames = iter_frames
        self.present_only = present_only

    def _my_videos(self) -> list[str]:
        worker = get_worker_info()
        if worker is None:
            return self.video_ids
        return self.video_ids[worker.id :: worker.num_workers]

    def __iter__(self) -> Iterator[FrameSample]:
        for rows in self.iter_frames(self._my_videos()):
            yield frame_sample(rows, self.present_only)
