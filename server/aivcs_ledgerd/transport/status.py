"""Domain refusals to gRPC status codes, in one place.

Every servicer method is wrapped by `guarded`, so a LedgerError becomes its
status with the ledger's message, and anything unexpected becomes
UNAVAILABLE (store trouble) or is logged and answered INTERNAL-free as
UNAVAILABLE too: no request may surface as UNKNOWN or take the daemon down.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from aivcs_ledgerd.ledger import errors

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


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: Exception, method: str) -> None:
    code, message = status_of(error)
    if not isinstance(error, errors.LedgerError):
        log.exception("unexpected error in %s", method)
    await context.abort(code, message)


def guarded(
    method: Callable[[Any, Request, grpc.aio.ServicerContext[Any, Any]], Awaitable[Response]],
) -> Callable[[Any, Request, grpc.aio.ServicerContext[Any, Any]], Awaitable[Response]]:
    """Wrap a unary servicer method so every failure has a deliberate status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext[Any, Any]) -> Response:
        try:
            return await method(self, request, context)
        except Exception as error:
            await _abort(context, error, method.__name__)
            raise AssertionError("unreachable: abort raises") from error

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
            await _abort(context, error, method.__name__)

    return wrapper
