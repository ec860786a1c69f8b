"""Writing a clip's output whole, under deterministic names, through fsspec, with retries.

Layout under the output URI (flat, one file per work unit and table, so a retried or rerun unit
overwrites its own keys and the folders read as one dataset with `pyarrow.dataset` or DuckDB's
`read_parquet('out/masks/*.parquet')`):

    masks/<unit_id>.parquet
    pointers/<unit_id>.parquet
    clips/<unit_id>.parquet      written last: the unit's commit
    _failed/<unit_id>            marks a committed unit with failed clips (for --retry-failed)
    _attempts/<unit_id>.json     attempts of a unit not yet committed (actor deaths, poison inputs)
    _manifest.json

An object-store PUT is atomic; on local disks a file is written under a temporary name and renamed.
Transient storage errors (throttling, 5xx, timeouts, dropped connections) are retried with
exponential backoff; permission and not-found errors are not.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from batchtrack.errors import TransientIOError

log = logging.getLogger(__name__)
T = TypeVar("T")

MASKS_DIR = "masks"
POINTERS_DIR = "pointers"
CLIPS_DIR = "clips"
FAILED_DIR = "_failed"
ATTEMPTS_DIR = "_attempts"
MANIFEST_NAME = "_manifest.json"

_TRANSIENT_ERRNOS = frozenset(
    {
        errno.EBUSY,  # s3fs: SlowDown / ServiceUnavailable / 503
        getattr(errno, "EREMOTEIO", errno.EIO),  # s3fs: InternalError / 500
        errno.ETIMEDOUT,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.EAGAIN,
        errno.EPIPE,
    }
)
_TRANSIENT_S3_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "500",
        "502",
        "503",
        "504",
    }
)


def unit_file(kind: Literal["masks", "pointers", "clips"], unit_id: str) -> str:
    """Relative path of one work unit's file in a table.

    >>> unit_file("masks", "0123456789abcdef")
    'masks/0123456789abcdef.parquet'
    """
    folder = {"masks": MASKS_DIR, "pointers": POINTERS_DIR, "clips": CLIPS_DIR}[kind]
    return f"{folder}/{unit_id}.parquet"


def join(base: str, relative: str) -> str:
    """`base` URI + relative key, with exactly one slash between them."""
    return base.rstrip("/") + "/" + relative.lstrip("/")


def _botocore_transient(exc: BaseException) -> bool | None:
    try:
        from botocore import exceptions as bx
    except ImportError:  # no S3 support installed: nothing botocore-specific to classify
        return None
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return str(error.get("Code", "")) in _TRANSIENT_S3_CODES or int(status or 0) >= 500
    if isinstance(exc, bx.ConnectionError | bx.HTTPClientError):
        return True  # EndpointConnectionError, ConnectionClosedError, Read/ConnectTimeoutError
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether a storage error may succeed when retried.

    Throttling, 5xx, timeouts and connection errors are transient; permission and not-found errors,
    and anything unrecognised, are not (retrying a bug only hides it).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TransientIOError):
            return True
        if isinstance(current, PermissionError | FileNotFoundError | IsADirectoryError | NotADirectoryError):
            return False
        verdict = _botocore_transient(current)
        if verdict is not None:
            return verdict
        if isinstance(current, TimeoutError | ConnectionError):
            return True
        if isinstance(current, OSError) and current.errno in _TRANSIENT_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: base * 2**attempt, capped, times a factor in [0.5, 1]."""

    attempts: int = 6
    base_delay_s: float = 0.2
    max_delay_s: float = 20.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2**attempt) * random.uniform(0.5, 1.0)


def call_with_retries(
    fn: Callable[[], T],
    what: str,
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn`, retrying transient errors; after the last attempt raise TransientIOError naming `what`."""
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == policy.attempts - 1:
                raise TransientIOError(f"{what}: still failing after {policy.attempts} attempts: {exc!r}") from exc
            delay = policy.delay(attempt)
            log.warning("%s: transient error %r; retry %d/%d in %.2fs", what, exc, attempt + 1, policy.attempts, delay)
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols


def _put_bytes(uri: str, data: bytes, storage_options: Mapping[str, Any]) -> None:
    fs, path = fsspec.core.url_to_fs(uri, **storage_options)
    parent = path.rsplit("/", 1)[0]
    if _is_local(fs):
        fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{path.rsplit('/', 1)[-1]}.{uuid.uuid4().hex}.tmp"
        with fs.open(tmp, "wb") as handle:
            handle.write(data)
        fs.mv(tmp, path)  # rename: readers never see a half-written file
    else:
        fs.pipe_file(path, data)  # one PUT: atomic on object stores


def write_bytes(
    uri: str, data: bytes, storage_options: Mapping[str, Any] | None = None, policy: RetryPolicy = RetryPolicy()
) -> None:
    """Write `data` whole to `uri` (replacing it), retrying transient errors."""
    call_with_retries(lambda: _put_bytes(uri, data, dict(storage_options or {})), f"write {uri}", policy)


def read_bytes(
    uri: str, storage_options: Mapping[str, Any] | None = None, policy: RetryPolicy = RetryPolicy()
) -> bytes:
    """Read `uri` whole, retrying transient errors (FileNotFoundError propagates at once)."""

    def read() -> bytes:
        fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
        return fs.cat_file(path)

    return call_with_retries(read, f"read {uri}", policy)


def table_bytes(table: pa.Table, compression: str = "zstd") -> bytes:
    """A whole Parquet file in memory (clips are small; this keeps the write a single PUT)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression=None if compression == "none" else compression)
    return buffer.getvalue()


def write_table(
    table: pa.Table,
    uri: str,
    storage_options: Mapping[str, Any] | None = None,
    compression: str = "zstd",
    policy: RetryPolicy = RetryPolicy(),
) -> None:
    """Write one Parquet file whole at `uri`, replacing any previous version of it."""
    write_bytes(uri, table_bytes(table, compression), storage_options, policy)


def list_names(uri: str, storage_options: Mapping[str, Any] | None = None) -> set[str]:
    """Base names of the files directly under the folder `uri` (empty when it does not exist)."""

    def ls() -> set[str]:
        fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
        try:
            entries = fs.ls(path, detail=False, refresh=True)
        except FileNotFoundError:
            return set()
        return {str(name).rstrip("/").rsplit("/", 1)[-1] for name in entries}

    return call_with_retries(ls, f"list {uri}")


def remove(uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Delete a file if it exists."""
    fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)
