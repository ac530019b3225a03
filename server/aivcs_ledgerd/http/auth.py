"""Who may call the HTTP side, and from where: bearer tokens, roles, and no cross-origin writes.

With `--auth-token-file` set, every /v1 call needs `Authorization: Bearer
TOKEN` with a token of that file, exactly as on gRPC: none or an unknown
one is 401, a read-only token on a write is 403. The console's files
themselves are open (they hold no data); it asks for a token and keeps it in
the tab's sessionStorage.

Writes (every POST) are refused unless they cannot come from another site
(CSRF): the body must be `application/json` (a cross-site page can only send
that after a CORS preflight, which this server never grants), an `Origin`
header, when the browser sends one, must be this server's own, and a browser's
`Sec-Fetch-Site: cross-site` is refused. No cookie is ever read, so a
browser's ambient credentials grant nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import grpc
from aiohttp import web

from aivcs_ledgerd.http.errors import Refusal
from aivcs_ledgerd.middleware.security import Role, role_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_PREFIX = "/v1/"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def check_origin(request: web.Request) -> None:
    """Refuse a write a browser sends from another origin than this server's."""
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        raise Refusal(grpc.StatusCode.PERMISSION_DENIED, "cross-site writes are refused")
    origin = request.headers.get("Origin")
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme != request.scheme or parts.netloc.lower() != request.host.lower():
            raise Refusal(grpc.StatusCode.PERMISSION_DENIED, f"writes from origin {origin!r} are refused")
    if request.content_type != "application/json":
        raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "body: a write must send Content-Type: application/json")


def check_token(request: web.Request, tokens: dict[bytes, Role]) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refusal(
            grpc.StatusCode.UNAUTHENTICATED,
            "this daemon requires a bearer token: send 'Authorization: Bearer <token>'",
        )
    role = role_of(tokens, token.strip())
    if role is None:
        raise Refusal(grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not valid")
    if role is Role.READ_ONLY and request.method in WRITE_METHODS:
        raise Refusal(grpc.StatusCode.PERMISSION_DENIED, "a read-only token may not promote or roll back")


def guard(tokens: dict[bytes, Role] | None) -> Any:
    """Middleware enforcing the rules above on /v1 calls; refusals raise Refusal for the error middleware."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(API_PREFIX):
            if request.method in WRITE_METHODS:
                check_origin(request)
            if tokens is not None:
                check_token(request, tokens)
        return await handler(request)

    return middleware
