"""gRPC status codes as HTTP statuses, and the JSON body of every refusal.

The HTTP side answers a refusal with the status its gRPC code maps to and a
body shaped like google.rpc.Status, `{"code": 5, "status": "NOT_FOUND",
"message": "..."}`, so a caller can act on the same code either transport
gives; a refusal with a reason adds the same `details` as the gRPC status
(google.rpc.ErrorInfo in its JSON mapping, with "@type"). The table is the
usual transcoding one (grpc-gateway, Envoy), except FAILED_PRECONDITION,
which is 412 here (grpc-gateway v1's choice) so that a state refusal stays
apart from a malformed request (400).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from aiohttp import web
from google.protobuf import any_pb2, json_format
from google.rpc import status_pb2

from aivcs_ledgerd.ledger.errors import InvalidArgument
from aivcs_ledgerd.transport.status import DETAILS_KEY, details_of, status_of

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


class Refusal(Exception):
    """A call refused with a gRPC status code; becomes its HTTP status and JSON body."""

    def __init__(self, code: grpc.StatusCode, message: str, details: Sequence[any_pb2.Any] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)
        self.http_status = HTTP_STATUS.get(code, 500)

    def with_http(self, status: int) -> Refusal:
        """The same refusal answered with another HTTP status (no route: 404; wrong method: 405)."""
        self.http_status = status
        return self


def refusal_of(error: Exception) -> Refusal:
    """The refusal a caller gets for `error`, by the same rules as the gRPC transport."""
    if isinstance(error, Refusal):
        return error
    code, message = status_of(error)
    return Refusal(code, message, details_of(error))


def details_in(trailing_metadata: Sequence[tuple[str, str | bytes]]) -> list[any_pb2.Any]:
    """The google.rpc error details a servicer attached to its status (transport/status.py)."""
    for key, value in trailing_metadata:
        if key == DETAILS_KEY and isinstance(value, bytes):
            return list(status_pb2.Status.FromString(value).details)
    return []


def invalid(field: str, problem: str) -> Refusal:
    return refusal_of(InvalidArgument(field, problem))


def status_body(refusal: Refusal) -> dict[str, object]:
    body: dict[str, object] = {"code": refusal.code.value[0], "status": refusal.code.name, "message": refusal.message}
    if refusal.details:
        body["details"] = [json_format.MessageToDict(detail) for detail in refusal.details]
    return body


def error_response(refusal: Refusal) -> web.Response:
    response = web.json_response(status_body(refusal), status=refusal.http_status)
    if refusal.code is grpc.StatusCode.UNAUTHENTICATED:
        response.headers["WWW-Authenticate"] = 'Bearer realm="aivcs-ledgerd"'
    return response
