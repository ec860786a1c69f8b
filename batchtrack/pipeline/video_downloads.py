"""VideoDownloads: local copies of a unit's videos, the next one downloaded while the current one is tracked.

A video on a local disk is read where it is; a remote one is downloaded whole (one GET) into a temporary
folder, because decoders seek and object stores charge per request.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import fsspec

from batchtrack.errors import DecodeError, DecodeErrorKind
from batchtrack.io.corpus import stable_hash


def fetch_video(uri: str, workdir: str, storage_options: Mapping[str, Any]) -> str:
    """A local path of the video: itself on a local disk, else downloaded once (one GET) into `workdir`."""
    fs, path = fsspec.core.url_to_fs(uri, **storage_options)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "file" in protocols:
        return path
    local = os.path.join(workdir, stable_hash(uri) + os.path.splitext(path)[1])
    try:
        fs.get_file(path, local)
    except FileNotFoundError as exc:
        raise DecodeError(uri, DecodeErrorKind.MISSING, "no such file") from exc
    return local


class VideoDownloads:
    """Local copies of a unit's videos: the next one is downloaded while the current one is tracked.

    `uris[i]` is None for a video that is not tracked (skipped, given up), which is never fetched.
    Each copy is deleted once its video is done, so a unit holds at most two on disk.
    """

    def __init__(self, uris: list[str | None], storage_options: Mapping[str, Any]) -> None:
        self._uris = uris
        self._storage_options = storage_options
        self._workdir = tempfile.mkdtemp(prefix="batchtrack-unit-")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchtrack-download")
        self._pending: dict[int, Future[str]] = {}

    def _start(self, index: int) -> Future[str] | None:
        if index >= len(self._uris) or self._uris[index] is None:
            return None
        if index not in self._pending:
            uri = self._uris[index]
            self._pending[index] = self._pool.submit(fetch_video, str(uri), self._workdir, self._storage_options)
        return self._pending[index]

    def get(self, index: int) -> str:
        """The local path of video `index` (waiting for its download), starting the next tracked one's."""
        future = self._start(index)
        assert future is not None, f"video {index} of the unit is not tracked"
        following = next((i for i in range(index + 1, len(self._uris)) if self._uris[i] is not None), None)
        if following is not None:
            self._start(following)
        return future.result()

    def done(self, index: int) -> None:
        """Video `index` is tracked: its downloaded copy is deleted."""
        future = self._pending.pop(index, None)
        if future is not None and future.done() and future.exception() is None:
            path = future.result()
            if path.startswith(self._workdir):
                with contextlib.suppress(OSError):
                    os.remove(path)

    def __enter__(self) -> VideoDownloads:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._workdir, ignore_errors=True)
