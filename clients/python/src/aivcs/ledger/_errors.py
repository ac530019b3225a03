"""The daemon's refusals as Python exceptions, one class per gRPC status code.

Every call of the client raises a `LedgerError` (never a bare `grpc.RpcError`),
so callers can catch by meaning (`except NotFound:`) and still read the exact
code and the daemon's message, which names the offending field.

A refusal the caller can act on also has a `reason` and its `metadata`, from
the google.rpc.ErrorInfo the daemon attaches (proto/aivcs/ledger/v1/errors.proto):
e.g. an `Aborted` append's `last_seq` is the run's current last seq, a
`FailedPrecondition`'s `run_status` the terminal status. Act on those, not on
the message text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

if TYPE_CHECKING:
    from aivcs.ledger._models import RunStatus

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

    `code` is the gRPC status code, `message` the daemon's own words;
    `reason` (an ErrorReason name such as "ERROR_REASON_LAST_SEQ_MISMATCH",
    "" when the daemon gave none) and `metadata` are its structured details.
    """

    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.code: grpc.StatusCode = code if code is not None else self.default_code
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        super().__init__(message)

    @property
    def run_id(self) -> str | None:
        """The run the refusal is about, when the daemon named one."""
        return self.metadata.get("run_id")

    @property
    def last_seq(self) -> int | None:
        """For an expected_last_seq mismatch: the run's last seq when the batch was refused."""
        value = self.metadata.get("last_seq")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def run_status(self) -> RunStatus | None:
        """For a refusal because the run is terminal: its status."""
        from aivcs.ledger._models import RunStatus  # _models imports this module

        name = self.metadata.get("status", "")
        try:
            return RunStatus(name.removeprefix("RUN_STATUS_").lower()) if name else None
        except ValueError:
            return None

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


# The trailer carrying a google.rpc.Status with the refusal's details.
DETAILS_KEY = "grpc-status-details-bin"


def error_for(code: grpc.StatusCode, message: str, details: Iterable[any_pb2.Any] = ()) -> LedgerError:
    """The exception for `code`: its own subclass where there is one, with the ErrorInfo among `details`."""
    reason, metadata = "", {}
    for detail in details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
            break
    return _CLASSES.get(code, LedgerError)(message, code, reason=reason, metadata=metadata)


def error_from_code(number: int, message: str, details: Iterable[any_pb2.Any] = ()) -> LedgerError:
    """The exception for a numeric status code and its details, as IngestEvents reports per batch."""
    return error_for(_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN), message, details)


def _details(error: Any) -> Sequence[any_pb2.Any]:
    trailing = getattr(error, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == DETAILS_KEY and isinstance(value, bytes):
            try:
                return list(status_pb2.Status.FromString(value).details)
            except DecodeError:
                return []
    return []


def error_from_rpc(error: grpc.RpcError) -> LedgerError:
    """Turn a failed call (sync or asyncio) into its LedgerError."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = error.details() if callable(getattr(error, "details", None)) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return error_for(code, details or code.name.lower().replace("_", " "), _details(error))
