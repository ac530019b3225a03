"""The daemon's lifecycle: open the database, serve gRPC, drain on a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from dataclasses import dataclass

import grpc
from aivcs.ledger.v1 import event_stream_pb2, release_registry_pb2, run_ledger_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aivcs_ledgerd.checkpoint import Checkpointer
from aivcs_ledgerd.config import Settings
from aivcs_ledgerd.health import HealthMonitor
from aivcs_ledgerd.ledger import Ledger
from aivcs_ledgerd.ledger.ownership import Leases, SoleOwner
from aivcs_ledgerd.operations import Operations, OperationsError
from aivcs_ledgerd.store import Credentials, Database, init_schema
from aivcs_ledgerd.store.database import REMOTE_SCHEMES, check_url
from aivcs_ledgerd.transport import register_services
from aivcs_ledgerd.transport.peers import Peers

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
    peers: Peers | None = None  # several replicas: channels to the owners of runs

    async def stop(self) -> None:
        """Refuse new calls, let in-flight ones finish, then close the database."""
        log.info("draining (grace period %.1fs)", self.settings.grace_period)
        await self.health.drain()
        self.ledger.begin_drain()
        if self.ledger.ownership.enabled:
            # Hand runs over at once: answer what is queued, then release every lease, so
            # other replicas take the runs over now, not after the lease time or the grace period.
            stopping = asyncio.ensure_future(self.server.stop(self.settings.grace_period))
            await self.ledger.close()
            await self.ledger.ownership.release_all()
            await stopping
            if self.peers is not None:
                await self.peers.close()
        else:
            await self.server.stop(self.settings.grace_period)
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
        ownership = SoleOwner()
        remote = check_url(settings.db) in REMOTE_SCHEMES
        limit = settings.limits.max_message_bytes
        server = grpc.aio.server(
            interceptors=ops.interceptors,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ]
        )
        try:
            port = ops.bind(server)
        except RuntimeError as error:
            raise StartupError(f"cannot listen on --listen {settings.listen!r}: {error}") from error
        if port == 0:
            raise StartupError(f"cannot listen on --listen {settings.listen!r}")
        peers = None
        if remote:
            ownership = Leases(
                db, advertised(settings, port), settings.lease_seconds,
                observe=ops.metrics.observe_ownership if ops.metrics is not None else None,
            )
            peers = Peers(
                peer_credentials(settings),
                observe=ops.metrics.observe_forwarded if ops.metrics is not None else None,
                timeout=settings.lease_seconds,
            )
        ledger = Ledger(db, settings.limits, ownership)
        health = HealthMonitor(db, SERVICE_NAMES, settings.health_interval, probe=ops.probe)
        register_services(server, ledger, peers)
        health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
        if settings.reflection:
            names = [*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
            reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
        await server.start()
        ownership.start()
        await health.start()
        try:
            await ops.start(health.servicer, lambda: ledger.events.writers.active_runs, lambda: health.serving)
        except OperationsError as error:
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
    if ownership.enabled:
        log.info("replica %s: runs are owned through leases, peers reach this one at %s",
                 ownership.replica_id, ownership.address)
    return Daemon(settings, server, db, ledger, health, port, ops, checkpointer, peers)


def advertised(settings: Settings, port: int) -> str:
    """The address other replicas reach this one at: --advertise-address, else derived from --listen."""
    if settings.advertise_address is not None:
        return settings.advertise_address
    host = settings.listen.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::", "*"):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """How a replica calls another: as clients do, over TLS when the daemon serves TLS.

    The peer's certificate is checked against --peer-ca (else the system's
    roots); with --tls-client-ca (mutual TLS) this replica presents its own
    certificate and key, which the peer checks like any client's.
    """
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    roots = settings.peer_ca.read_bytes() if settings.peer_ca is not None else None
    if settings.tls_client_ca is None:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.ssl_channel_credentials(
        root_certificates=roots,
        private_key=settings.tls_key.read_bytes(),
        certificate_chain=settings.tls_cert.read_bytes(),
    )


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
