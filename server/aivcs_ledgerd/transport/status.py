"""Domain refusals to gRPC status codes, in one place.

Every servicer method is wrapped by `guarded`, so a LedgerError becomes its
status with the ledger's message, and anything unexpected is logged and
answered INTERNAL-free as UNAVAILABLE: no request may surface as UNKNOWN or
take the daemon down. A refusal with a reason also carries its facts as
google.rpc error details (google.rpc.Status in the `grpc-status-details-bin`
trailer; proto/aivcs/ledger/v1/errors.proto lists the reasons).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from aivcs_ledgerd.ledger import errors
from aivcs_ledgerd.util.answers import answer

log = logging.getLogger(__name__)

CODES: dict[type[errors.LedgerError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
}

# google.rpc.ErrorInfo.domain of every reason this daemon sends.
DOMAIN = "ledger.aivcs.dev"
REASON_PREFIX = "ERROR_REASON_"
# The trailer that carries a google.rpc.Status (the gRPC convention grpcio-status follows).
DETAILS_KEY = "grpc-status-details-bin"

Request = TypeVar("Request")
Response = TypeVar("Response")


def status_of(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message a caller gets for `error`."""
    code = getattr(error, "relayed_code", None)
    if isinstance(code, grpc.StatusCode):
        return code, str(error)  # the owning replica's own answer (transport/peers.py)
    for kind, code in CODES.items():
        if isinstance(error, kind):
            return code, str(error)
    return grpc.StatusCode.UNAVAILABLE, "the daemon met an unexpected error; the call may be retried"


def details_of(error: Exception) -> list[any_pb2.Any]:
    """The google.rpc error details a caller gets with `error`'s status: none unless it names a reason."""
    relayed = getattr(error, "relayed_details", None)
    if isinstance(relayed, list):
        return relayed  # the owning replica's own details (transport/peers.py)
    if not isinstance(error, errors.LedgerError) or not error.reason:
        return []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=REASON_PREFIX + error.reason, domain=DOMAIN, metadata=error.facts))
    details = [info]
    if isinstance(error, errors.InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.problem)
        bad_request = any_pb2.Any()
        bad_request.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        details.append(bad_request)
    return details


def rich_status(error: Exception) -> status_pb2.Status:
    """`error` as a google.rpc.Status: code, message and details."""
    code, message = status_of(error)
    return status_pb2.Status(code=code.value[0], message=message, details=details_of(error))


def _answer(context: grpc.aio.ServicerContext[Any, Any], error: Exception, method: str) -> None:
    code, message = status_of(error)
    if not isinstance(error, errors.LedgerError):
        log.exception("unexpected error in %s", method)
    status = rich_status(error)
    trailer = ((DETAILS_KEY, status.SerializeToString()),) if status.details else ()
    answer(context, code, message, trailer)


def guarded(
    method: Callable[[Any, Request, grpc.aio.ServicerContext[Any, Any]], Awaitable[Response]],
) -> Callable[[Any, Request, grpc.aio.ServicerContext[Any, Any]], Awaitable[Response]]:
    """Wrap a unary servicer method so every failure has a deliberate status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext[Any, Any]) -> Response:
        try:
            return await method(self, request, context)
        except Exception as error:
            _answer(context, error, method.__name__)
            return cast(Response, None)  # gRPC sends no message with a status that is not OK

    return wrapper


def guarded_stream(
    method: Callable[[Any, Request, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Response]],
) -> Callable[[Any, Request, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Response]]:
    """Wrap a server-streaming (or bidi) servicer method likewise."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Request, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Response]:
        try:
            async for item in method(self, request, context):
                yield item
        except Exception as error:
            _answer(context, error, method.__name__)

    return wrapper
