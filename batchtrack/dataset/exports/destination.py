"""Where an export writes: a local folder or any fsspec URI, one whole file at a time."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import IO, Any

import fsspec


class Destination:
    """Files under one root (a folder or s3://bucket/prefix), addressed by relative POSIX paths."""

    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.uri = str(uri)
        self.fs, root = fsspec.core.url_to_fs(self.uri, **dict(storage_options or {}))
        self.root = root.rstrip("/")
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else tuple(self.fs.protocol)
        self._local = "file" in protocols

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative.lstrip('/')}"

    def _parent_folder(self, path: str) -> None:
        if self._local:
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write one file whole (one PUT on object stores)."""
        path = self.path(relative)
        self._parent_folder(path)
        self.fs.pipe_file(path, data)

    def open_text(self, relative: str) -> AbstractContextManager[IO[str]]:
        """A text file to stream into (multipart upload on object stores)."""
        path = self.path(relative)
        self._parent_folder(path)
        return self.fs.open(path, "w", encoding="utf-8")
