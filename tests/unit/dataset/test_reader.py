"""open_dataset on a hand-written work-unit output: committed units only, videos, tracks, frame masks."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

import batchtrack
from batchtrack.dataset import TrackSpan, open_dataset
from batchtrack.errors import OutputNotFoundError, UnknownVideoError

from .conftest import FakeOutput
from .output_fixture import UNCOMMITTED_TRACK, VIDEO_A, VIDEO_B, VIDEO_C, VIDEO_D


def test_open_dataset_is_exported_from_the_package() -> None:
    assert batchtrack.open_dataset is open_dataset


def test_missing_output_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(OutputNotFoundError, match="no committed units"):
        open_dataset(str(tmp_path / "nothing-here"))


def test_only_committed_units_are_read(fake_output: FakeOutput) -> None:
    data = open_dataset(fake_output.path)
    masks = data.masks.to_table()
    pointers = data.pointers.to_table()
    assert sorted(data.files.unit_ids) == ["u-batch", "u-failed", "u-one"]
    assert (Path(fake_output.path) / "masks" / "u-open.parquet").exists(), "the uncommitted unit must be on disk"
    assert UNCOMMITTED_TRACK not in masks.column("track_id").to_pylist()
    assert masks.num_rows == pointers.num_rows == len(fake_output.truth.masks) > 0
    keys = set(zip(masks.column("video_id").to_pylist(), masks.column("frame_index").to_pylist(),
                   masks.column("track_id").to_pylist(), strict=True))
    assert keys == set(fake_output.truth.masks)
    assert [Path(p).name for p in data.paths("masks")] == ["u-batch.parquet", "u-one.parquet"]


def test_clips_and_videos(fake_output: FakeOutput) -> None:
    data = open_dataset(fake_output.path)
    assert data.clips.num_rows == 5
    assert set(data.clips.column("unit_id").to_pylist()) == {"u-one", "u-batch", "u-failed"}
    videos = {video.video_id: video for video in data.videos()}
    assert sorted(videos) == [VIDEO_A, VIDEO_B, VIDEO_C, VIDEO_D]
    assert (videos[VIDEO_A].num_frames, videos[VIDEO_A].clips_ok) == (12, 2)
    assert videos[VIDEO_B].unit_ids == videos[VIDEO_C].unit_ids == ("u-batch",)
    assert (videos[VIDEO_D].num_frames, videos[VIDEO_D].clips_failed) == (0, 1)


def test_tracks_give_row_ranges_and_presence(fake_output: FakeOutput) -> None:
    data = open_dataset(fake_output.path)
    assert data.tracks(VIDEO_A) == [
        TrackSpan(track_id=1, first_frame=0, last_frame=11, rows=12, frames_present=12, first_present=0,
                  last_present=11),
        # rows on 3..11; absent on 7-8 (empty, score 0.2), hidden on 9 (score 0.4)
        TrackSpan(track_id=2, first_frame=3, last_frame=11, rows=9, frames_present=6, first_present=3,
                  last_present=11),
    ]
    assert data.tracks(VIDEO_B) == [
        TrackSpan(track_id=7, first_frame=0, last_frame=4, rows=5, frames_present=4, first_present=0, last_present=3)
    ]
    assert data.tracks(VIDEO_C) == []


def test_frame_masks_match_what_was_written(fake_output: FakeOutput) -> None:
    data = open_dataset(fake_output.path)
    truth = fake_output.truth
    compared = 0
    for video_id in (VIDEO_A, VIDEO_B):
        for frame in range(truth.num_frames[video_id]):
            for present_only in (True, False):
                got = data.frame_masks(video_id, frame, present_only=present_only)
                want = truth.frame(video_id, frame, present_only)
                assert sorted(got) == sorted(want), (video_id, frame, present_only)
                for track, mask in got.items():
                    assert mask.dtype == bool and mask.shape == want[track].shape
                    np.testing.assert_array_equal(mask, want[track])
                    compared += int(mask.any())
    assert compared > 20, "the comparison must cover non-empty masks"
    assert sorted(data.frame_masks(VIDEO_A, 8)) == [1]
    assert sorted(data.frame_masks(VIDEO_A, 8, present_only=False)) == [1, 2]
    assert data.frame_masks(VIDEO_C, 0) == {}


def test_unknown_video_is_a_user_error(fake_output: FakeOutput) -> None:
    data = open_dataset(fake_output.path)
    with pytest.raises(UnknownVideoError, match="not in"):
        data.tracks("f" * 16)


def test_video_rows_come_from_the_video_units_only(fake_output: FakeOutput) -> None:
    rows = open_dataset(fake_output.path).video_rows(VIDEO_B)
    assert rows.num_rows == 5
    assert set(rows.table.column("video_id").to_pylist()) == {VIDEO_B}
    assert pc.all(pc.equal(rows.table.column("track_id"), 7)).as_py()


def test_dataset_pickles_for_dataloader_workers(fake_output: FakeOutput) -> None:
    data = open_dataset(fake_output.path)
    _ = data.masks  # cached pyarrow objects are not pickled
    copy = pickle.loads(pickle.dumps(data))
    assert copy.masks.count_rows() == data.masks.count_rows() > 0


def test_iter_video_rows_reads_units_once_and_agrees_with_video_rows(fake_output: FakeOutput) -> None:
    data = open_dataset(fake_output.path)
    streamed = {rows.video_id: rows for rows in data.iter_video_rows()}
    assert sorted(streamed) == [VIDEO_A, VIDEO_B, VIDEO_C, VIDEO_D]
    for video_id, rows in streamed.items():
        assert rows.table.equals(data.video_rows(video_id).table)
    assert streamed[VIDEO_A].num_rows == 21 and streamed[VIDEO_C].num_rows == 0
    assert [rows.video_id for rows in data.iter_video_rows([VIDEO_B])] == [VIDEO_B]
