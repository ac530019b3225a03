"""The real daemon started inside the test's event loop, for fault injection at `Database.send`.

The daemon serves on a loopback port and the tests talk to it through gRPC
stubs, exactly as clients do; only the database's round trips can be swapped
(harness/faults.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from aivcs.ledger.v1 import event_pb2, event_stream_pb2_grpc, release_registry_pb2_grpc, run_ledger_pb2_grpc
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl

from aivcs_ledgerd.config import Settings
from aivcs_ledgerd.process.app import Daemon, start
from harness.data import SPEC


@asynccontextmanager
async def running(*, lenient_stop: bool = False, **settings: Any) -> AsyncIterator[Daemon]:
    """A daemon on `Settings(**settings)` (loopback port 0, mem:// unless given) for the block.

    `lenient_stop`: for tests that break the daemon on purpose; if `stop()` fails, stop its parts
    by hand so the next test does not inherit a live server.
    """
    settings.setdefault("listen", "127.0.0.1:0")
    settings.setdefault("db", "mem://")
    daemon = await start(Settings(**settings))
    try:
        yield daemon
    finally:
        await (stop_even_if_broken(daemon) if lenient_stop else daemon.stop())


async def stop_even_if_broken(daemon: Daemon) -> None:
    """`daemon.stop()`, and if that fails, stop the server, the ledger, the side ports and the database."""
    try:
        await daemon.stop()
    except Exception:
        await daemon.server.stop(None)
        await daemon.ledger.close()
        if daemon.ops is not None:
            await daemon.ops.stop()
        await daemon.db.close()


def channel(daemon: Daemon, *, separate: bool = False, **kwargs: Any) -> grpc.aio.Channel:
    """A plaintext channel to `daemon`; `separate` forces a connection of its own."""
    options = [("grpc.use_local_subchannel_pool", 1)] if separate else []
    return grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}", options=options, **kwargs)


class Stubs:
    """The three services' async stubs on one channel, with a bearer token if given."""

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
