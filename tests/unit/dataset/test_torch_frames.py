"""to_torch(): a torch IterableDataset of decoded frames, also through a DataLoader with workers."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from batchtrack.dataset import open_dataset

from .conftest import FakeOutput
from .output_fixture import VIDEO_A, VIDEO_B


def _keys(samples: list) -> list[tuple[str, int]]:
    return [(sample.video_id, sample.frame_index) for sample in samples]


def test_samples_hold_the_present_masks_of_every_frame(fake_output: FakeOutput) -> None:
    frames = open_dataset(fake_output.path).to_torch()
    assert isinstance(frames, IterableDataset)
    samples = list(frames)
    truth = fake_output.truth
    assert _keys(samples) == [(VIDEO_A, f) for f in range(12)] + [(VIDEO_B, f) for f in range(5)]
    objects = 0
    for sample in samples:
        want = truth.frame(sample.video_id, sample.frame_index)
        assert sample.masks.dtype == torch.bool and sample.masks.shape[1:] == (32, 40)
        assert sample.track_ids.tolist() == sorted(want)
        for mask, track in zip(sample.masks, sample.track_ids.tolist(), strict=True):
            np.testing.assert_array_equal(mask.numpy(), want[track])
            assert mask.any()
            objects += 1
    assert objects == sum(truth.present(key) for key in truth.masks) > 0
    empty = samples[8]  # video A frame 8: track 2 absent
    assert empty.track_ids.tolist() == [1]


def test_all_rows_when_present_only_is_false(fake_output: FakeOutput) -> None:
    sample = list(open_dataset(fake_output.path).to_torch(present_only=False))[8]
    assert sample.track_ids.tolist() == [1, 2]
    assert not sample.masks[1].any()


def test_dataloader_workers_split_videos(fake_output: FakeOutput) -> None:
    frames = open_dataset(fake_output.path).to_torch()
    loader = DataLoader(frames, batch_size=None, num_workers=2)
    keys = _keys(list(loader))
    assert sorted(keys) == sorted(_keys(list(frames)))
    assert len(keys) == len(set(keys)) == 17
