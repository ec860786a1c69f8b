"""Checkpoints from anywhere fsspec reads, fetched once per node into a local, content-addressed cache.

A checkpoint URI may be a local path, `file://`, `s3://`, `gs://` or `https://`. Remote files are
downloaded into `CACHE_DIR/blobs/<sha256><suffix>` (the suffix tells the loader .pt from
.safetensors). Which blob a URI currently is gets recorded under `CACHE_DIR/refs/`, keyed by the
URI and the remote object's identity (ETag / modification time / size), so a changed object is
fetched again and an unchanged one never is.

Several actors on one node start at once: one of them downloads while the others wait on a file
lock, and every file appears in the cache by an atomic rename, so no reader ever sees half a file.

Local files are not copied; they are hashed where they are.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from batchtrack.errors import ConfigError, TransientIOError

CHUNK = 1 << 22
# Keys of fsspec's `info()` that change when a remote object's bytes change (S3, GCS, HTTP, local).
_IDENTITY_KEYS = ("ETag", "etag", "md5Hash", "LastModified", "Last-Modified", "updated", "mtime", "size")
_LOCAL_PROTOCOLS = ("file", "local")


@dataclass(frozen=True)
class CachedCheckpoint:
    """A checkpoint readable on this node: the local file and the SHA-256 of its bytes."""

    uri: str
    path: Path
    sha256: str

    @property
    def short_hash(self) -> str:
        """16 hex chars: the checkpoint's part of every clip id."""
        return self.sha256[:16]


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/batchtrack/checkpoints` (`~/.cache/...` when unset): one cache per node and user."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "batchtrack" / "checkpoints"


def fetch_checkpoint(
    uri: str,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
) -> CachedCheckpoint:
    """The checkpoint at `uri` as a local file with its content hash; remote files are downloaded once.

    Raises ConfigError when the URI does not exist, TransientIOError when the download fails midway.
    """
    try:
        fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    except (ValueError, ImportError) as exc:  # unknown protocol or its package missing
        raise ConfigError(f"model.checkpoint {uri}: cannot open: {exc}") from exc
    info = _info(fs, path, uri)
    if _is_local(fs):
        local = Path(path)
        return CachedCheckpoint(uri, local, _sha256_of_file(local))
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _ref_key(uri, info)
    with _locked(cache / "locks" / f"{key}.lock"):
        cached = _lookup(cache, key)
        if cached is not None:
            return CachedCheckpoint(uri, cached[0], cached[1])
        blob, digest = _download(fs, path, uri, cache)
        _atomic_write_text(cache / "refs" / key, f"{digest}\n{blob.name}\n")
    return CachedCheckpoint(uri, blob, digest)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from, outermost first (fsspec wraps its client's in its own)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def unreachable_reason(exc: BaseException) -> str | None:
    """What stopped a request, in words a user can act on, read from the exception's causes; None if unknown.

    fsspec's HTTP filesystem reports every failure of `info()` as FileNotFoundError; the client error it wraps
    tells a refused connection, an unresolved host name and an HTTP status apart.
    """
    for cause in _causes(exc):
        status = getattr(cause, "status", None)
        if isinstance(status, int) and status >= 400:
            meaning = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}.get(status, "error")
            hint = {
                401: "the server wants credentials",
                403: "the server refuses access: check credentials, bucket policy or the URL's signature",
                404: "the server has no file at this URL",
            }.get(status, "the server answered with an error")
            return f"HTTP {status} {meaning}: {hint}"
        if isinstance(cause, socket.gaierror):
            return f"host name not resolved ({cause.strerror or cause}): check the URL's host"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused: no server listens at that host and port"
        if isinstance(cause, TimeoutError):
            return "connection timed out: the host does not answer"
    return None


def _info(fs: fsspec.AbstractFileSystem, path: str, uri: str) -> dict[str, Any]:
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        reason = unreachable_reason(exc)
        if reason is None or reason.startswith("HTTP 404"):
            raise ConfigError(f"model.checkpoint {uri} does not exist{f' ({reason})' if reason else ''}") from exc
        raise ConfigError(f"model.checkpoint {uri} cannot be read: {reason}") from exc
    except PermissionError as exc:  # s3fs/gcsfs: 403
        raise ConfigError(f"model.checkpoint {uri} cannot be read: access denied (HTTP 403): {exc}") from exc
    except OSError as exc:
        reason = unreachable_reason(exc)
        if reason is None:
            raise
        raise ConfigError(f"model.checkpoint {uri} cannot be read: {reason}") from exc
    if info.get("type") == "directory":
        raise ConfigError(f"model.checkpoint {uri} is a directory, not a .pt or .safetensors file")
    return dict(info)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return any(p in _LOCAL_PROTOCOLS for p in protocols)


def _ref_key(uri: str, info: Mapping[str, Any]) -> str:
    identity = [uri] + [f"{k}={info[k]}" for k in _IDENTITY_KEYS if info.get(k) is not None]
    return hashlib.sha256("\n".join(identity).encode()).hexdigest()[:32]


def _lookup(cache: Path, key: str) -> tuple[Path, str] | None:
    """The blob a ref names, when both exist (a cache emptied by hand is simply refilled)."""
    ref = cache / "refs" / key
    try:
        digest, name = ref.read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    blob = cache / "blobs" / name
    return (blob, digest) if blob.is_file() else None


def _download(fs: fsspec.AbstractFileSystem, path: str, uri: str, cache: Path) -> tuple[Path, str]:
    blobs = cache / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    # The temporary file lives beside its final name so the rename stays on one filesystem (atomic).
    handle, tmp_name = tempfile.mkstemp(dir=blobs, prefix=".partial-")
    os.close(handle)
    try:
        # get_file streams the object (HTTP servers without range requests included) instead of seeking.
        fs.get_file(path, tmp_name)
        digest = _sha256_of_file(Path(tmp_name))
        blob = blobs / f"{digest}{Path(path).suffix.lower()}"
        os.replace(tmp_name, blob)
    except FileNotFoundError as exc:
        raise ConfigError(f"model.checkpoint {uri} does not exist") from exc
    except PermissionError as exc:  # credentials or bucket policy: retrying does not help
        raise ConfigError(f"model.checkpoint {uri}: access denied: {exc}") from exc
    except OSError as exc:
        raise TransientIOError(f"model.checkpoint {uri}: download failed: {type(exc).__name__}: {exc}") from exc
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return blob, digest


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(tmp_name, path)


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive lock between processes of this node (actors starting together download once)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
