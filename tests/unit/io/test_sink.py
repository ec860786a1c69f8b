"""Whole-file writes under deterministic names and the retry classification of storage errors."""

from __future__ import annotations

import errno
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from batchtrack.errors import TransientIOError
from batchtrack.io.sink import (
    RetryPolicy,
    call_with_retries,
    is_transient,
    list_names,
    read_bytes,
    unit_file,
    write_bytes,
    write_table,
)


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize(
    "exc",
    [
        _client_error("SlowDown", 503),
        _client_error("ThrottlingException", 400),
        _client_error("InternalError", 500),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        OSError(errno.EBUSY, "SlowDown"),
        TimeoutError("timed out"),
        ConnectionResetError("reset"),
        TransientIOError("flaky"),
    ],
)
def test_throttling_server_errors_timeouts_and_dropped_connections_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        _client_error("AccessDenied", 403),
        _client_error("NoSuchBucket", 404),
        PermissionError("denied"),
        FileNotFoundError("gone"),
        OSError(errno.EINVAL, "bad"),
        ValueError("a bug"),
    ],
)
def test_permission_not_found_and_bugs_are_not_retried(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_transient_cause_behind_a_wrapper_is_seen() -> None:
    try:
        try:
            raise OSError(errno.ETIMEDOUT, "timeout")
        except OSError as inner:
            raise RuntimeError("write failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


def test_retries_transient_errors_with_growing_backoff_then_succeeds() -> None:
    calls: list[int] = []
    delays: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError(errno.EBUSY, "SlowDown")
        return "done"

    policy = RetryPolicy(attempts=5, base_delay_s=1.0, max_delay_s=100.0)
    assert call_with_retries(flaky, "put x", policy, sleep=delays.append) == "done"
    assert len(calls) == 3
    assert len(delays) == 2
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0


def test_gives_up_with_transient_io_error_naming_the_operation() -> None:
    def always() -> None:
        raise TimeoutError("slow")

    with pytest.raises(TransientIOError, match="put s3://b/k: still failing after 3 attempts"):
        call_with_retries(always, "put s3://b/k", RetryPolicy(attempts=3), sleep=lambda _: None)


def test_permanent_errors_are_raised_at_once() -> None:
    calls: list[int] = []

    def denied() -> None:
        calls.append(1)
        raise PermissionError("denied")

    with pytest.raises(PermissionError):
        call_with_retries(denied, "put", RetryPolicy(attempts=5), sleep=lambda _: None)
    assert calls == [1]


def test_write_table_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out" / unit_file("masks", "abc")
    write_table(pa.table({"x": [1, 2, 3]}), str(target))
    write_table(pa.table({"x": [7]}), str(target), compression="none")
    assert pq.read_table(target).column("x").to_pylist() == [7]
    assert sorted(p.name for p in target.parent.iterdir()) == ["abc.parquet"]


def test_bytes_roundtrip_and_listing(tmp_path: Path) -> None:
    write_bytes(str(tmp_path / "d" / "a.json"), b"{}")
    write_bytes(str(tmp_path / "d" / "b.json"), b"[]")
    assert read_bytes(str(tmp_path / "d" / "b.json")) == b"[]"
    assert list_names(str(tmp_path / "d")) == {"a.json", "b.json"}
    assert list_names(str(tmp_path / "missing")) == set()
    with pytest.raises(FileNotFoundError):
        read_bytes(str(tmp_path / "d" / "zzz.json"))
