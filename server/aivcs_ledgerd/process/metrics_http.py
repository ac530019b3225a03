"""The HTTP endpoint Prometheus scrapes, served from the daemon's event loop.

prometheus_client's own server runs a thread per connection, so a thousand
clients that never finish their request are a thousand threads. This one is
a coroutine per connection with bounds: at most MAX_CONNECTIONS at once
(more are closed at once), a request head of at most MAX_HEAD_BYTES that
must arrive within HEAD_SECONDS, one request per connection. It answers
`GET /metrics` (and `/`) with the registry's text format, anything else 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
MAX_HEAD_BYTES = 8 << 10
HEAD_SECONDS = 10.0
WRITE_SECONDS = 30.0


class MetricsServer:
    """Serves `registry` on HOST:PORT until `close`."""

    def __init__(self, registry: CollectorRegistry, server: asyncio.Server) -> None:
        self._registry = registry
        self._server = server
        self.port: int = server.sockets[0].getsockname()[1]
        self.sockets = server.sockets  # checked for exclusivity by the caller (ports.check_exclusive)
        self.connections = 0

    @classmethod
    async def start(cls, registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
        holder: list[MetricsServer] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await holder[0]._handle(reader, writer)

        server = await asyncio.start_server(handle, host, port, limit=MAX_HEAD_BYTES)
        endpoint = cls(registry, server)
        holder.append(endpoint)
        return endpoint

    async def close(self) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= MAX_CONNECTIONS:
            writer.close()
            return
        self.connections += 1
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_SECONDS)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            request_line = head.split(b"\r\n", 1)[0].split()
            if len(request_line) < 2 or request_line[0] not in (b"GET", b"HEAD"):
                await self._answer(writer, b"405 Method Not Allowed", b"text/plain", b"GET /metrics\n")
                return
            path = request_line[1].split(b"?", 1)[0]
            if path not in (b"/metrics", b"/"):
                await self._answer(writer, b"404 Not Found", b"text/plain", b"GET /metrics\n")
                return
            body = generate_latest(self._registry)
            await self._answer(
                writer, b"200 OK", CONTENT_TYPE_LATEST.encode(), b"" if request_line[0] == b"HEAD" else body
            )
        except Exception:
            log.exception("metrics request failed")
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: bytes, content_type: bytes, body: bytes) -> None:
        writer.write(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: "
            + content_type
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(writer.drain(), WRITE_SECONDS)
