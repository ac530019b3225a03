"""Per-connection limits: concurrent calls (HTTP/2 streams) and in-flight appends.

A connection is what `context.peer()` names (address and client port), so
two channels of one client are two connections. Over either limit a call is
refused with RESOURCE_EXHAUSTED before any servicer code runs; the caller
may retry after some of its calls finish.

Inside one IngestEvents stream, batches beyond the append limit are not
refused (a failed batch would shift the stream's in-order answers): the
daemon stops reading the stream until earlier batches are answered, and
HTTP/2 flow control slows the client down.

gRPC's own `grpc.max_concurrent_streams` is not used for this on purpose: a
client that reaches it queues its calls silently instead of hearing why.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc

from aivcs_ledgerd.methods import APPEND_METHODS, STREAM_APPEND, UNARY_APPEND
from aivcs_ledgerd.middleware.interceptors import CallHooks, Context, Hooks, HooksFactory, Method, Refused, peer_of


@dataclass(slots=True)
class _Connection:
    calls: int
    appends: asyncio.Semaphore
    holders: int = 0  # calls holding or waiting for append slots

    @property
    def idle(self) -> bool:
        return self.calls == 0 and self.holders == 0


class ConnectionLimits(Hooks):
    """Counts calls and append batches per connection; 0 disables a limit."""

    def __init__(self, max_calls: int, max_inflight_appends: int) -> None:
        self.max_calls = max_calls
        self.max_appends = max_inflight_appends
        self._connections: dict[str, _Connection] = {}

    def factory(self, method: Method) -> HooksFactory | None:
        return None if self.max_calls == 0 and self.max_appends == 0 else self._hooks

    def connection(self, peer: str) -> _Connection:
        state = self._connections.get(peer)
        if state is None:
            slots = self.max_appends if self.max_appends > 0 else 1 << 30
            state = self._connections[peer] = _Connection(0, asyncio.Semaphore(slots))
        return state

    def release(self, peer: str, state: _Connection) -> None:
        if state.idle and self._connections.get(peer) is state:
            del self._connections[peer]

    def _hooks(self, method: Method, context: Context) -> CallHooks:
        return _Limited(self, method, context)


class _Limited(CallHooks):
    def __init__(self, limits: ConnectionLimits, method: Method, context: Context) -> None:
        super().__init__(method, context)
        self._limits = limits
        self._peer = peer_of(context)
        self._state: _Connection | None = None
        self._held = 0  # append slots this call holds
        self._done = False
        self._appends = limits.max_appends > 0 and method.path in APPEND_METHODS

    async def start(self) -> None:
        state = self._limits.connection(self._peer)
        limit = self._limits.max_calls
        if limit and state.calls >= limit:
            self._limits.release(self._peer, state)
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this connection already has {state.calls} calls in flight (limit {limit}); "
                "wait for some to finish or open another connection",
            )
        state.calls += 1
        self._state = state
        if self._appends:
            state.holders += 1
        if self.method.path == UNARY_APPEND and self._appends:
            if state.appends.locked():
                raise Refused(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"this connection already has {self._limits.max_appends} append batches in flight; "
                    "wait for their answers",
                )
            await state.appends.acquire()
            self._held += 1

    async def received(self, message: Any) -> None:
        state = self._state
        if state is None or not self._appends or self.method.path != STREAM_APPEND or self._done:
            return
        await state.appends.acquire()  # back-pressure, not refusal
        if self._done:  # the call ended while this batch waited
            state.appends.release()
        else:
            self._held += 1

    def sent(self, message: Any) -> None:
        if self._state is not None and self.method.path == STREAM_APPEND and self._held:
            self._state.appends.release()  # one answer per batch, in order
            self._held -= 1

    def finished(self, code: grpc.StatusCode) -> None:
        state = self._state
        self._done = True
        if state is None:
            return
        for _ in range(self._held):
            state.appends.release()
        self._held = 0
        state.calls -= 1
        if self._appends:
            state.holders -= 1
        self._limits.release(self._peer, state)
