"""The real daemon started inside the test's event loop, for fault injection at `Database.send`.

The daemon serves on a loopback port and the tests talk to it through gRPC
stubs, exactly as clients do; only the database's round trips can be swapped.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
from aivcs.ledger.v1 import event_pb2, event_stream_pb2_grpc, release_registry_pb2_grpc, run_ledger_pb2_grpc
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl

from aivcs_ledgerd.app import Daemon, start
from aivcs_ledgerd.config import Settings
from aivcs_ledgerd.store import Database, StoreUnavailable

SPEC = hashlib.sha256(b"operations").hexdigest()
Send = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
Replacement = Callable[[Send, str, dict[str, Any]], Awaitable[dict[str, Any]]]


def intercept(db: Database, replacement: Replacement) -> Callable[[], None]:
    """Route every round trip of `db` through `replacement(real, sql, variables)`; returns the undo."""
    return db.wrap_send(lambda real: functools.partial(replacement, real))


@asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[Daemon]:
    settings.setdefault("listen", "127.0.0.1:0")
    settings.setdefault("db", "mem://")
    daemon = await start(Settings(**settings))
    try:
        yield daemon
    finally:
        await daemon.stop()


def channel(daemon: Daemon, *, separate: bool = False, **kwargs: Any) -> grpc.aio.Channel:
    """A plaintext channel to `daemon`; `separate` forces a connection of its own."""
    options = [("grpc.use_local_subchannel_pool", 1)] if separate else []
    return grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}", options=options, **kwargs)


class Stubs:
    def __init__(self, ch: grpc.aio.Channel, token: str | None = None) -> None:
        self.runs = run_ledger_pb2_grpc.RunLedgerStub(ch)
        self.events = event_stream_pb2_grpc.EventStreamStub(ch)
        self.releases = release_registry_pb2_grpc.ReleaseRegistryStub(ch)
        self.metadata = (("authorization", f"Bearer {token}"),) if token is not None else None

    async def create(self, agent: str = "ops-agent", run_id: str | None = None, **fields: Any) -> str:
        request = rl.CreateRunRequest(spec_digest=SPEC, agent_name=agent, **fields)
        if run_id is not None:
            request.run_id = run_id
        reply = await self.runs.CreateRun(request, metadata=self.metadata, timeout=10)
        return str(reply.run.run_id)

    async def append(self, run_id: str, *kinds: str) -> es.AppendEventsResponse:
        events = [event_pb2.EventInput(kind=kind) for kind in kinds or ("step",)]
        return await self.events.AppendEvents(
            es.AppendEventsRequest(run_id=run_id, events=events), metadata=self.metadata, timeout=10
        )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


class Fault:
    """Breaks a daemon's round trips to the database (a wrapper of `Database.send`), and mends them."""

    def __init__(self, daemon: Daemon) -> None:
        self._db = daemon.db
        self._undo: Callable[[], None] | None = None
        self.released = asyncio.Event()

    def _install(self, replacement: Send) -> None:
        if self._undo is not None:
            self._undo()
        self._undo = self._db.wrap_send(lambda real: replacement)

    def fail(self) -> None:
        async def broken(sql: str, variables: dict[str, Any]) -> dict[str, Any]:
            raise StoreUnavailable("injected: the database is down")

        self._install(broken)

    def hang(self) -> None:
        """Round trips that never answer until `recover()`, then fail as a timed-out socket would."""
        released = self.released

        async def hung(sql: str, variables: dict[str, Any]) -> dict[str, Any]:
            await released.wait()
            raise StoreUnavailable("injected: the answer came too late")

        self._install(hung)

    def recover(self) -> None:
        self.released.set()
        if self._undo is not None:
            self._undo()
            self._undo = None
