"""The daemon's lifecycle: open the database, serve gRPC, drain on a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
from aivcs.ledger.v1 import event_stream_pb2, release_registry_pb2, run_ledger_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aivcs_ledgerd.checkpoint import Checkpointer
from aivcs_ledgerd.config import Settings
from aivcs_ledgerd.health import HealthMonitor
from aivcs_ledgerd.http import HttpServer
from aivcs_ledgerd.ledger import Ledger
from aivcs_ledgerd.operations import Operations, OperationsError
from aivcs_ledgerd.ports import PortUnavailable, server_options
from aivcs_ledgerd.security import SecurityError
from aivcs_ledgerd.store import Credentials, Database, init_schema
from aivcs_ledgerd.transport import register_services

log = logging.getLogger(__name__)

SERVICE_NAMES = [
    run_ledger_pb2.DESCRIPTOR.services_by_name["RunLedger"].full_name,
    event_stream_pb2.DESCRIPTOR.services_by_name["EventStream"].full_name,
    release_registry_pb2.DESCRIPTOR.services_by_name["ReleaseRegistry"].full_name,
]


class StartupError(Exception):
    """The daemon cannot start; the message says which setting is at fault."""


@dataclass
class Daemon:
    """A running daemon: its server, database handle, ledger and health."""

    settings: Settings
    server: grpc.aio.Server
    db: Database
    ledger: Ledger
    health: HealthMonitor
    port: int
    ops: Operations | None = None  # TLS, tokens, limits, metrics, side ports (operations.py)
    checkpointer: Checkpointer | None = None  # durable embedded engines only (checkpoint.py)
    http: HttpServer | None = None  # --http-listen: JSON API and console (http/)

    async def stop(self) -> None:
        """Refuse new calls, let in-flight ones finish, then close the database."""
        log.info("draining (grace period %.1fs)", self.settings.grace_period)
        await self.health.drain()
        self.ledger.begin_drain()
        # Both ports drain at once, in one grace period; live HTTP feeds ended with begin_drain.
        await asyncio.gather(
            self.server.stop(self.settings.grace_period),
            *([self.http.stop()] if self.http is not None else []),
        )
        await self.ledger.close()
        if self.checkpointer is not None:
            await self.checkpointer.stop()
        if self.ops is not None:
            await self.ops.stop()
        await self.db.close()
        log.info("stopped")


async def start(settings: Settings) -> Daemon:
    """Open the database, define the schema, and start serving."""
    credentials = None
    if settings.db_user is not None:
        credentials = Credentials(settings.db_user, settings.db_password or "", settings.db_access_level)
    db = await Database.open(
        settings.db,
        namespace=settings.db_namespace,
        database=settings.db_database,
        credentials=credentials,
        round_trip_seconds=settings.db_timeout,
    )
    try:
        try:
            ops = Operations.prepare(settings, db)
        except OperationsError as error:
            raise StartupError(str(error)) from error
        await init_schema(db)
        ledger = Ledger(db, settings.limits)
        health = HealthMonitor(db, SERVICE_NAMES, settings.health_interval, probe=ops.probe)
        limit = settings.limits.max_message_bytes
        server = grpc.aio.server(
            interceptors=ops.interceptors,
            options=server_options(
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ),
        )
        register_services(server, ledger)
        health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
        if settings.reflection:
            names = [*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
            reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
        try:
            port = ops.bind(server)
        except PortUnavailable as error:
            raise StartupError(str(error)) from error
        await server.start()
        await health.start()
        try:
            await ops.start(health.servicer, lambda: ledger.events.writers.active_runs, lambda: health.serving)
        except OperationsError as error:
            await health.drain()
            await server.stop(None)
            raise StartupError(str(error)) from error
        http = None
        if settings.http_listen is not None:
            try:
                http = await HttpServer.start(settings, ledger)
            except (PortUnavailable, SecurityError) as error:
                await ops.stop()
                await health.drain()
                await server.stop(None)
                raise StartupError(str(error)) from error
        checkpointer = None
        if settings.checkpoint_wal_mb > 0 and db.wal_folder is not None:
            observe = ops.metrics.observe_checkpoint if ops.metrics is not None else None
            checkpointer = Checkpointer(db, settings.checkpoint_wal_mb << 20, observe=observe)
            checkpointer.start()
    except BaseException:
        await db.close()
        raise
    log.info("listening on %s (port %d), database %s", settings.listen, port, settings.db)
    return Daemon(settings, server, db, ledger, health, port, ops, checkpointer, http)


async def run(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return.

    The handlers go in before start-up, so a signal that arrives while the
    database opens waits for it and then closes it cleanly.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    daemon = await start(settings)
    await stop.wait()
    await daemon.stop()
