"""The HTTP port (`--http-listen`): the JSON API and the console, on the daemon's own event loop.

aiohttp's AppRunner/SockSite is made for serving inside a running loop: no
thread, no second loop, no signal handlers taken from the daemon, so the
API's calls reach the ledger exactly as gRPC's do. The socket is bound here,
without SO_REUSEPORT, and checked like every port of the daemon (util/ports.py):
a second daemon on a taken --http-listen stops at start naming the flag.
With --tls-cert the port speaks only HTTPS, with --tls-client-ca it asks for
a client certificate too, like the gRPC port.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
from pathlib import Path

import grpc
from aiohttp import web

from aivcs_ledgerd.config import Settings
from aivcs_ledgerd.http.auth import API_PREFIX, Handler, guard
from aivcs_ledgerd.http.console import Console, add_security_headers
from aivcs_ledgerd.http.errors import Refusal, error_response, refusal_of
from aivcs_ledgerd.http.live import LiveFeed
from aivcs_ledgerd.http.observed import observed
from aivcs_ledgerd.http.routes import Api
from aivcs_ledgerd.ledger import Ledger
from aivcs_ledgerd.ledger.errors import LedgerError
from aivcs_ledgerd.middleware.metrics import Metrics
from aivcs_ledgerd.middleware.security import Role, SecurityError, load_tokens
from aivcs_ledgerd.transport.peers import Peers
from aivcs_ledgerd.util.ports import PortUnavailable, bind_error, check_every_address_free, check_exclusive

log = logging.getLogger(__name__)
FLAG = "--http-listen"


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal of an API call as JSON with its gRPC code's HTTP status; nothing unplanned escapes."""
    try:
        return await handler(request)
    except (Refusal, LedgerError) as error:
        return error_response(refusal_of(error))
    except web.HTTPException as error:
        if not request.path.startswith(API_PREFIX) or error.status < 400:
            raise
        if error.status == 404:
            return error_response(Refusal(grpc.StatusCode.NOT_FOUND, f"path: no API route {request.path}"))
        refusal = Refusal(grpc.StatusCode.UNIMPLEMENTED, f"method: {request.method} {request.path} is not served")
        return error_response(refusal.with_http(error.status))
    except Exception as error:
        log.exception("unexpected error in HTTP %s %s", request.method, request.path)
        return error_response(refusal_of(error))


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        if settings.tls_client_ca is not None:
            context.load_verify_locations(settings.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as error:
        raise SecurityError(f"{FLAG}: cannot use the TLS files: {error}") from error
    return context


def bind(address: str) -> socket.socket:
    """A listening socket of this daemon alone on HOST:PORT (its first address); PortUnavailable if not."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    check_every_address_free(address, FLAG)
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            "127.0.0.1" if host == "localhost" else host or None,
            int(port),
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )[0]
    except socket.gaierror as error:
        raise PortUnavailable(FLAG, address, f"cannot resolve {host!r}: {error.strerror}") from error
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(128)
        sock.setblocking(False)
        check_exclusive(sock, FLAG, address)
    except OSError as error:
        sock.close()
        raise bind_error(FLAG, address, error) from error
    except PortUnavailable:
        sock.close()
        raise
    return sock


def _loopback(sock: socket.socket) -> bool:
    return bool(ipaddress.ip_address(sock.getsockname()[0]).is_loopback)


class HttpServer:
    """The running HTTP side; `port` is the one bound (useful with port 0)."""

    def __init__(self, runner: web.AppRunner, port: int, scheme: str) -> None:
        self._runner = runner
        self.port = port
        self.scheme = scheme

    @classmethod
    async def start(
        cls, settings: Settings, ledger: Ledger, peers: Peers | None = None, metrics: Metrics | None = None
    ) -> HttpServer:
        """Bind and serve; PortUnavailable or SecurityError (naming the flag) when that cannot be.

        With `metrics`, every request is timed into them (observed.py)."""
        address = settings.http_listen
        assert address is not None
        tokens: dict[bytes, Role] | None = None
        if settings.auth_token_file is not None:
            tokens = load_tokens(Path(settings.auth_token_file))
        context = tls_context(settings)
        app = web.Application(middlewares=[json_errors, observed(metrics), guard(tokens)], client_max_size=2 << 20)
        app.on_response_prepare.append(add_security_headers)
        LiveFeed(ledger).add_routes(app)
        Api(ledger, peers).add_routes(app)
        Console().add_routes(app)
        sock = bind(address)
        # handler_cancellation: a client that goes away cancels its call, as on gRPC; a live feed's
        # follower then leaves at once.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=settings.grace_period)
        try:
            await runner.setup()
            site = web.SockSite(runner, sock, ssl_context=context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        port: int = sock.getsockname()[1]
        scheme = "https" if context is not None else "http"
        host = address.rpartition(":")[0]
        log.info("HTTP API and console on %s://%s:%d/", scheme, host, port)
        if tokens is None and not _loopback(sock):
            log.warning(
                "%s %s is reachable from other hosts and no --auth-token-file is set: "
                "anyone who reaches it can promote and roll back releases",
                FLAG,
                address,
            )
        return cls(runner, port, scheme)

    async def stop(self) -> None:
        """Stop accepting, let calls in flight finish (live feeds have ended with the hub), close."""
        await self._runner.cleanup()
