"""The daemon's lifecycle: open the database, serve gRPC, drain on a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from aivcs_ledgerd.config import Settings
from aivcs_ledgerd.http import HttpServer
from aivcs_ledgerd.ledger import Ledger
from aivcs_ledgerd.ledger.inactivity import Sweeper
from aivcs_ledgerd.ledger.limits import check_settings as check_readback
from aivcs_ledgerd.ledger.ownership import Leases, SoleOwner
from aivcs_ledgerd.methods import LEDGER_SERVICES
from aivcs_ledgerd.middleware.budget import check_settings, transport_options
from aivcs_ledgerd.middleware.security import SecurityError
from aivcs_ledgerd.otlp import register_trace_service
from aivcs_ledgerd.process import collector, event_loop
from aivcs_ledgerd.process.fdlimit import exhaustion as fd_exhaustion
from aivcs_ledgerd.process.fdlimit import raise_soft_limit
from aivcs_ledgerd.process.operations import Operations, OperationsError
from aivcs_ledgerd.store import Credentials, Database, StoreError, init_schema
from aivcs_ledgerd.store.database import REMOTE_SCHEMES, check_url
from aivcs_ledgerd.transport import register_services
from aivcs_ledgerd.transport.peers import Peers
from aivcs_ledgerd.upkeep.checkpoint import Checkpointer
from aivcs_ledgerd.upkeep.health import HealthMonitor
from aivcs_ledgerd.upkeep.heap import Trimmer
from aivcs_ledgerd.util.ports import PortUnavailable, server_options

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The daemon cannot start; the message says which setting is at fault."""


class ShutdownError(Exception):
    """The daemon stopped, but could not close its database cleanly (e.g. the final flush failed)."""


@dataclass
class Daemon:
    """A running daemon: its server, database handle, ledger and health."""

    settings: Settings
    server: grpc.aio.Server
    db: Database
    ledger: Ledger
    health: HealthMonitor
    port: int
    ops: Operations | None = None  # TLS, tokens, limits, metrics, side ports (process/operations.py)
    checkpointer: Checkpointer | None = None  # durable embedded engines only (upkeep/checkpoint.py)
    sweeper: Sweeper | None = None  # fails runs past their inactivity timeout (ledger/inactivity.py)
    trimmer: Trimmer | None = None  # heap trims where no checkpointer does them (upkeep/heap.py)
    peers: Peers | None = None  # several replicas: channels to the owners of runs
    http: HttpServer | None = None  # --http-listen: JSON API and console (http/)

    async def stop(self) -> None:
        """Refuse new calls, let in-flight ones finish, then close the database."""
        log.info("draining (grace period %.1fs)", self.settings.grace_period)
        await self.health.drain()
        if self.sweeper is not None:
            await self.sweeper.stop()
        self.ledger.begin_drain()
        # Streams end on their own once draining (answering what they took, then UNAVAILABLE); the
        # server stops only after that, because stopping it first made streams whose client was still
        # writing end CANCELLED or INTERNAL instead. The HTTP port drains beside it (its live feeds
        # ended with begin_drain), in the same grace period.
        began = asyncio.get_running_loop().time()
        await self.ledger.streams_ended(self.settings.grace_period)
        remaining = max(0.0, self.settings.grace_period - (asyncio.get_running_loop().time() - began))
        http_stopped = asyncio.ensure_future(self.http.stop() if self.http is not None else asyncio.sleep(0))
        if self.ledger.ownership.enabled:
            # Hand runs over at once: answer what is queued, then release every lease, so
            # other replicas take the runs over now, not after the lease time or the grace period.
            stopping = asyncio.ensure_future(self.server.stop(remaining))
            await self.ledger.close()
            await self.ledger.ownership.release_all()
            await stopping
            if self.peers is not None:
                await self.peers.close()
        else:
            await self.server.stop(remaining)
        await http_stopped
        await self.ledger.close()
        if self.checkpointer is not None:
            await self.checkpointer.stop()
        if self.trimmer is not None:
            await self.trimmer.stop()
        if self.ops is not None:
            await self.ops.stop()
        try:
            await self.db.close()
        except StoreError as error:
            log.error("stopped, but the database did not close cleanly: %s", error)
            raise ShutdownError(str(error)) from error
        log.info("stopped")


async def start(settings: Settings) -> Daemon:
    """Open the database, define the schema, and start serving."""
    try:
        check_settings(settings)
        check_readback(settings.limits)
    except ValueError as error:
        raise StartupError(str(error)) from error
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
        await init_schema(db, settings.seed_indexes)
        ownership = SoleOwner()
        remote = check_url(settings.db) in REMOTE_SCHEMES
        limit = settings.limits.max_message_bytes
        server = grpc.aio.server(
            interceptors=ops.interceptors,
            options=server_options(
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                *transport_options(settings),
            ),
        )
        try:
            port = ops.bind(server)
        except PortUnavailable as error:
            raise StartupError(str(error)) from error
        peers = None
        if remote:
            ownership = Leases(
                db,
                advertised(settings, port),
                settings.lease_seconds,
                observe=ops.metrics.observe_ownership if ops.metrics is not None else None,
            )
            peers = Peers(
                peer_credentials(settings),
                observe=ops.metrics.observe_forwarded if ops.metrics is not None else None,
                timeout=settings.lease_seconds,
            )
        ledger = Ledger(
            db, settings.limits, ownership, settings.run_inactivity_timeout_ms, settings.max_concurrent_reads
        )
        health = HealthMonitor(db, LEDGER_SERVICES, settings.health_interval, probe=ops.probe, condition=fd_exhaustion)
        register_services(server, ledger, peers)
        register_trace_service(server, ledger, peers)
        health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
        if settings.reflection:
            names = [*LEDGER_SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
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
        http = None
        if settings.http_listen is not None:
            try:
                http = await HttpServer.start(settings, ledger, peers, ops.metrics)
            except (PortUnavailable, SecurityError) as error:
                await ops.stop()
                await health.drain()
                await server.stop(None)
                raise StartupError(str(error)) from error
        checkpointer = None
        if db.wal_folder is not None:  # also recovers the store after a storage fault
            observe = ops.metrics.observe_checkpoint if ops.metrics is not None else None
            checkpointer = Checkpointer(db, settings.checkpoint_wal_mb << 20, observe=observe)
            checkpointer.start()
        sweeper = Sweeper(
            db,
            ledger.events.writers,
            observe=ops.metrics.observe_inactive_run_failed if ops.metrics is not None else None,
        )
        sweeper.start()
        trimmer = None
        if checkpointer is None:
            trimmer = Trimmer()
            trimmer.start()
    except BaseException:
        await db.close()
        raise
    log.info(
        "listening on %s (port %d), database %s, event loop %s",
        settings.listen,
        port,
        settings.db,
        event_loop.running_loop_name(),
    )
    if ownership.enabled:
        log.info(
            "replica %s: runs are owned through leases, peers reach this one at %s",
            ownership.replica_id,
            ownership.address,
        )
    return Daemon(settings, server, db, ledger, health, port, ops, checkpointer, sweeper, trimmer, peers, http)


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
    raise_soft_limit()
    daemon = await start(settings)
    collector.settle_after_start()
    await stop.wait()
    await daemon.stop()
