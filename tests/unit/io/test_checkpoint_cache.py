"""Why a checkpoint URL cannot be read, from the client error fsspec wraps: refused, unresolved, 403, 404.

The real servers (a closed port, an HTTP server answering 403/404, an unresolvable host) are in
tests/integration/test_checkpoint_uri.py; here the exception chains fsspec builds are taken apart alone."""

from __future__ import annotations

import socket

import pytest

from batchtrack.io.checkpoint_cache import unreachable_reason


class _ResponseError(Exception):
    """Shaped like aiohttp's ClientResponseError: an HTTP status on the exception."""

    def __init__(self, status: int) -> None:
        super().__init__(f"{status}")
        self.status = status


def _wrapped(cause: BaseException) -> FileNotFoundError:
    try:
        try:
            raise cause
        except BaseException as exc:
            raise FileNotFoundError("http://host/x.pt") from exc
    except FileNotFoundError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), "connection refused"),
        (socket.gaierror(-2, "Name or service not known"), "host name not resolved (Name or service not known)"),
        (_ResponseError(403), "HTTP 403 Forbidden"),
        (_ResponseError(404), "HTTP 404 Not Found"),
        (TimeoutError(), "connection timed out"),
    ],
)
def test_the_cause_behind_fsspecs_file_not_found_is_named(cause: BaseException, reason: str) -> None:
    found = unreachable_reason(_wrapped(cause))
    assert found is not None and found.startswith(reason), found


def test_a_plain_missing_file_has_no_reason() -> None:
    assert unreachable_reason(FileNotFoundError("/nowhere/x.pt")) is None
