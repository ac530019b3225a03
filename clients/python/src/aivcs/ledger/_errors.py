"""The daemon's refusals as Python exceptions, one class per gRPC status code.

Every call of the client raises a `LedgerError` (never a bare `grpc.RpcError`),
so callers can catch by meaning (`except NotFound:`) and still read the exact
code and the daemon's message, which names the offending field.
"""

from __future__ import annotations

import grpc

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "LedgerError",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "WriterClosed",
    "error_from_code",
    "error_from_rpc",
]


class LedgerError(Exception):
    """A call the daemon refused or could not answer.

    `code` is the gRPC status code, `message` the daemon's own words.
    """

    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        self.code: grpc.StatusCode = code if code is not None else self.default_code
        self.message = message
        super().__init__(message)

    @property
    def code_name(self) -> str:
        """The code as the protocol spells it, e.g. "NOT_FOUND"."""
        return self.code.name

    def __str__(self) -> str:
        return f"{self.message} ({self.code.name})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code.name})"


class InvalidArgument(LedgerError):
    """Malformed input: a bad digest, an empty kind, an oversized batch..."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(LedgerError):
    """No such run, or an agent without releases."""

    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(LedgerError):
    """A client-chosen run_id already names a different run."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(LedgerError):
    """The run is terminal, an expected total does not match, nothing to roll back to."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(LedgerError):
    """An optimistic-concurrency check (expected_last_seq, expected current release) failed."""

    default_code = grpc.StatusCode.ABORTED


class Unavailable(LedgerError):
    """The daemon cannot be reached, or its database cannot; retrying may help."""

    default_code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(LedgerError):
    """A message or batch over a limit."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(LedgerError):
    """The call took longer than its timeout."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(LedgerError):
    """The daemon wants a (valid) token."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LedgerError):
    """The token is valid but may not do this."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class Cancelled(LedgerError):
    """The call was cancelled."""

    default_code = grpc.StatusCode.CANCELLED


class Internal(LedgerError):
    """A fault in the daemon or the transport; the contract says this should not happen."""

    default_code = grpc.StatusCode.INTERNAL


class WriterClosed(LedgerError):
    """An event was emitted to a writer that is closed or has failed."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


_CLASSES: dict[grpc.StatusCode, type[LedgerError]] = {
    cls.default_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        Unavailable,
        ResourceExhausted,
        DeadlineExceeded,
        Unauthenticated,
        PermissionDenied,
        Cancelled,
        Internal,
    )
}
_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def error_for(code: grpc.StatusCode, message: str) -> LedgerError:
    """The exception for `code`: its own subclass where there is one."""
    return _CLASSES.get(code, LedgerError)(message, code)


def error_from_code(number: int, message: str) -> LedgerError:
    """The exception for a numeric status code, as IngestEvents reports per batch."""
    return error_for(_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN), message)


def error_from_rpc(error: grpc.RpcError) -> LedgerError:
    """Turn a failed call (sync or asyncio) into its LedgerError."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = error.details() if callable(getattr(error, "details", None)) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return error_for(code, details or code.name.lower().replace("_", " "))
