"""The daemon-wide budget of request bytes in flight: received, and not yet answered.

Every request message is charged its size on the wire as soon as gRPC has
received it, and given back when it is answered: a unary call's request at
the end of the call, each message of a stream that answers one message per
request (IngestEvents) when its answer goes out, other streams' messages
at the end of the call.

Over the budget a unary call is refused with RESOURCE_EXHAUSTED at once (its
message is dropped, nothing is written; the caller retries later). A request
stream waits instead, without reading further, so HTTP/2 flow control slows
its client down and its answers stay in order. One stream also holds at most
`per_stream` bytes, so a single client cannot take the whole budget.

What this does not cover: messages gRPC is still receiving. Their number is
bounded by the connection limit times the streams per connection (see the
README, "Limits and budgets").
"""

from __future__ import annotations

import asyncio
from collections import deque

import grpc

from aivcs_ledgerd.config import Settings
from aivcs_ledgerd.middleware.interceptors import CallHooks, Context, Hooks, HooksFactory, Method, Refused


class RequestBudget(Hooks):
    """Counts request bytes held by the daemon; `limit` bytes at most."""

    def __init__(self, limit: int, per_stream: int) -> None:
        self.limit = limit
        self.per_stream = max(1, min(per_stream, limit))
        self.held = 0
        self._freed = asyncio.Event()

    def factory(self, method: Method) -> HooksFactory | None:
        return self._hooks

    def _hooks(self, method: Method, context: Context) -> CallHooks:
        return _Charged(self, method, context)

    def try_take(self, size: int) -> bool:
        if self.held and self.held + size > self.limit:
            return False
        self.held += size
        return True

    async def take(self, size: int) -> None:
        while self.held and self.held + size > self.limit:
            self._freed.clear()
            await self._freed.wait()
        self.held += size

    def give(self, size: int) -> None:
        if size:
            self.held -= size
            self._freed.set()


class _Charged(CallHooks):
    def __init__(self, budget: RequestBudget, method: Method, context: Context) -> None:
        super().__init__(method, context)
        self._budget = budget
        self._streaming = method.type in ("client_stream", "bidi_stream")
        self._per_message = method.type == "bidi_stream"  # one answer per request: give back as answered
        self._held: deque[int] = deque()
        self._total = 0
        self._answered = asyncio.Event()
        self._done = False

    async def arrived(self, size: int) -> None:
        budget = self._budget
        if not self._streaming:
            if not budget.try_take(size):
                raise Refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the daemon holds {budget.held} bytes of requests not yet answered (limit {budget.limit}); "
                    "retry shortly",
                )
            self._hold(size)
            return
        while self._total and self._total + size > budget.per_stream:
            self._answered.clear()
            await self._answered.wait()  # back-pressure: this stream reads on once answers went out
        await budget.take(size)
        if self._done:  # the call ended while this message waited
            budget.give(size)
        else:
            self._hold(size)

    def _hold(self, size: int) -> None:
        self._held.append(size)
        self._total += size

    def sent(self, message: object) -> None:
        if self._per_message and self._held:
            size = self._held.popleft()
            self._total -= size
            self._budget.give(size)
            self._answered.set()

    def finished(self, code: grpc.StatusCode) -> None:
        self._done = True
        self._budget.give(self._total)
        self._held.clear()
        self._total = 0
        self._answered.set()


def transport_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC server options that bound what connections can hold before any handler runs.

    `max_concurrent_streams` is a hard cap at twice the per-connection call
    limit: up to the limit calls run, the next ones are refused with a reason
    (connections.py), and beyond the cap the client's calls wait in the client
    instead of being received at all.
    """
    options: list[tuple[str, int]] = []
    if settings.max_connections > 0:
        options.append(("grpc.max_allowed_incoming_connections", settings.max_connections))
    if settings.max_streams_per_connection > 0:
        options.append(("grpc.max_concurrent_streams", 2 * settings.max_streams_per_connection))
    return options


def check_settings(settings: Settings) -> None:
    """Refuse budgets that could never admit what the other limits allow; ValueError names the flags."""
    limits = settings.limits
    if settings.max_inflight_request_bytes < limits.max_message_bytes:
        raise ValueError(
            f"--max-inflight-request-bytes ({settings.max_inflight_request_bytes}) must be at least "
            f"--max-message-bytes ({limits.max_message_bytes}), or a message of the largest size could "
            "never be accepted"
        )
