"""The exceptions batchtrack raises. Each one carries a message a user can act on."""

from __future__ import annotations

from enum import Enum


class BatchtrackError(Exception):
    """Base class of every error batchtrack raises on purpose."""


class ConfigError(BatchtrackError):
    """A job config, CLI flag or environment variable is missing, unknown or invalid."""


class PromptError(BatchtrackError):
    """A prompt manifest line is invalid; the message names the file, line and field."""


class CheckpointError(BatchtrackError):
    """A checkpoint cannot be loaded: missing, unexpected or mis-shaped keys are listed."""

    def __init__(
        self,
        message: str,
        missing: list[str] | None = None,
        unexpected: list[str] | None = None,
        mismatched: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.missing = missing or []
        self.unexpected = unexpected or []
        self.mismatched = mismatched or []


class DecodeErrorKind(str, Enum):
    MISSING = "missing"
    EMPTY = "empty"
    NOT_VIDEO = "not_video"
    NO_VIDEO_STREAM = "no_video_stream"
    CORRUPT = "corrupt"
    TRUNCATED = "truncated"
    OUT_OF_RANGE = "out_of_range"


class DecodeError(BatchtrackError):
    """A video cannot be decoded. `kind` says why; the message names the URI and the cause."""

    def __init__(self, uri: str, kind: DecodeErrorKind, cause: str) -> None:
        super().__init__(f"cannot decode {uri}: {kind.value}: {cause}")
        self.uri = uri
        self.kind = kind
        self.cause = cause

    def __reduce__(self) -> tuple[type[DecodeError], tuple[str, DecodeErrorKind, str]]:
        return (DecodeError, (self.uri, self.kind, self.cause))


class TransientIOError(BatchtrackError):
    """A storage operation failed in a way that may succeed when retried (throttling, timeouts)."""


class OutputNotFoundError(BatchtrackError):
    """An OUTPUT given to the reader or an export holds no job output (no clips/ folder)."""


class UnknownVideoError(BatchtrackError):
    """A video_id asked of a job's output is not in its committed clips/."""
