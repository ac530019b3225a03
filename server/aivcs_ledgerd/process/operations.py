"""What operators add around the ledger: TLS, tokens, limits, metrics, call logs, probes.

`app.start` asks this module for the server's interceptors and port
credentials before it builds the server, and starts the side ports (metrics,
plaintext health) once the server is up. Each concern lives in its own
module; this one only puts them in order:

    (metrics, call log, per-connection limits) -> authentication -> servicer

The first three run as one interceptor (one wrap per call), outside the
token check so that they also see its refusals; the limits then also count
calls that are about to be refused for want of a token, which end at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aivcs_ledgerd.config import Settings
from aivcs_ledgerd.middleware.budget import RequestBudget
from aivcs_ledgerd.middleware.calllog import CallLog
from aivcs_ledgerd.middleware.connections import ConnectionLimits
from aivcs_ledgerd.middleware.interceptors import Hooks, HooksInterceptor
from aivcs_ledgerd.middleware.metrics import Metrics, MetricsHooks, parse_listen
from aivcs_ledgerd.middleware.security import AuthInterceptor, SecurityError, TlsFiles, load_tokens, server_credentials
from aivcs_ledgerd.process.metrics_http import MetricsServer
from aivcs_ledgerd.store import Database
from aivcs_ledgerd.upkeep.reconnect import DatabaseProbe
from aivcs_ledgerd.util.ports import add_grpc_port, bind_error, check_exclusive, server_options

log = logging.getLogger(__name__)

# The health service name a liveness probe asks for (readiness asks for "").
LIVENESS = "liveness"


# The plaintext health port serves probes: a few short calls and Watch streams. It gets the same
# kinds of bounds as the main port, smaller: connections, streams per connection, message size.
HEALTH_MAX_CONNECTIONS = 64
HEALTH_MAX_STREAMS_PER_CONNECTION = 16
HEALTH_MAX_MESSAGE_BYTES = 4096


def health_port_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_allowed_incoming_connections", HEALTH_MAX_CONNECTIONS),
        ("grpc.max_concurrent_streams", HEALTH_MAX_STREAMS_PER_CONNECTION),
        ("grpc.max_receive_message_length", HEALTH_MAX_MESSAGE_BYTES),
    ]


class OperationsError(ValueError):
    """An operations setting cannot be used; the message names the flag."""


@dataclass
class Operations:
    settings: Settings
    db: Database
    interceptors: list[grpc.aio.ServerInterceptor]  # type: ignore[type-arg]
    credentials: grpc.ServerCredentials | None
    probe: DatabaseProbe
    metrics: Metrics | None = None
    metrics_endpoint: MetricsServer | None = None
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None

    @classmethod
    def prepare(cls, settings: Settings, db: Database) -> Operations:
        """Read TLS files and tokens and build the interceptors; OperationsError on a bad setting."""
        try:
            tls = None
            if settings.tls_cert is not None or settings.tls_key is not None:
                if settings.tls_cert is None or settings.tls_key is None:
                    raise SecurityError("--tls-cert and --tls-key go together")
                tls = server_credentials(TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca))
            elif settings.tls_client_ca is not None:
                raise SecurityError("--tls-client-ca needs --tls-cert and --tls-key")
            tokens = load_tokens(settings.auth_token_file) if settings.auth_token_file is not None else None
        except SecurityError as error:
            raise OperationsError(str(error)) from error
        hooks: list[Hooks] = []
        metrics = None
        if settings.metrics_listen is not None:
            metrics = Metrics()
            metrics.instrument(db)
            hooks.append(MetricsHooks(metrics))
        hooks.append(CallLog())
        hooks.append(ConnectionLimits(settings.max_streams_per_connection, settings.max_inflight_appends))
        budget = settings.max_inflight_request_bytes
        hooks.append(RequestBudget(budget, per_stream=max(settings.limits.max_message_bytes, budget // 8)))
        interceptors: list[grpc.aio.ServerInterceptor] = [HooksInterceptor(hooks)]  # type: ignore[type-arg]
        if tokens is not None:
            interceptors.append(AuthInterceptor(tokens))
        probe = DatabaseProbe(db)
        return cls(settings, db, interceptors, tls, probe, metrics)

    def bind(self, server: grpc.aio.Server) -> int:
        """Add the gRPC port, with TLS when configured; PortUnavailable when it cannot be had."""
        return add_grpc_port(server, self.settings.listen, "--listen", self.credentials)

    async def start(self, health_servicer: Any, active_runs: Callable[[], int], serving: Callable[[], bool]) -> None:
        """Mark the process live; start the side ports: metrics, and plaintext health for probes without TLS."""
        settings = self.settings
        # Liveness, apart from readiness: SERVING while this process answers, whatever the database
        # does, so a database outage takes pods out of rotation without restarting them all.
        await health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        try:
            if self.metrics is not None and settings.metrics_listen is not None:
                self.metrics.watch(active_runs, serving)
                host, port = parse_listen(settings.metrics_listen)
                try:
                    self.metrics_endpoint = await MetricsServer.start(self.metrics.registry, host, port)
                except OSError as error:
                    raise bind_error("--metrics-listen", settings.metrics_listen, error) from error
                for sock in self.metrics_endpoint.sockets:
                    check_exclusive(sock, "--metrics-listen", settings.metrics_listen)
                host = settings.metrics_listen.rpartition(":")[0]
                log.info("metrics on http://%s:%d/metrics", host, self.metrics_endpoint.port)
            if settings.health_listen is not None:
                server = grpc.aio.server(options=server_options(*health_port_options()))
                health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
                port = add_grpc_port(server, settings.health_listen, "--health-listen")
                await server.start()
                self.health_server, self.health_port = server, port
                log.info("plaintext health on %s (port %d)", settings.health_listen, port)
        except ValueError as error:
            await self.stop()
            raise OperationsError(str(error)) from error

    async def stop(self) -> None:
        """Close the side ports and stop reconnecting; the gRPC server and database are the caller's."""
        await self.probe.close()
        if self.health_server is not None:
            await self.health_server.stop(None)
            self.health_server = None
        if self.metrics_endpoint is not None:
            with contextlib.suppress(Exception):
                await self.metrics_endpoint.close()
            self.metrics_endpoint = None
