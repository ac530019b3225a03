"""Prometheus metrics: per-RPC calls, codes and latency; appends; the database.

RPC metrics carry the names and labels of go-grpc-prometheus
(`grpc_server_handled_total{grpc_service,grpc_method,grpc_type,grpc_code}`
and friends), so existing gRPC dashboards and alerts work unchanged. The
ledger's own metrics are prefixed `aivcs_ledger_`. Each daemon has its own
registry, so several daemons in one process (tests) do not collide.

The endpoint is off unless `--metrics-listen HOST:PORT` is given; it serves
plain HTTP on its own port, apart from the gRPC port and its credentials.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.gc_collector import GCCollector

from aivcs_ledgerd import __version__
from aivcs_ledgerd.methods import APPEND_METHODS
from aivcs_ledgerd.middleware.interceptors import CallHooks, Context, Hooks, HooksFactory, Method
from aivcs_ledgerd.store import Database
from aivcs_ledgerd.store.database import Send

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
DB_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Statement kinds that are the ledger's own refusals or echoes of an earlier failure, not database errors.
_NOT_DB_ERRORS = frozenset({"Thrown", "NotExecuted", "Cancelled"})


def parse_listen(listen: str, flag: str = "--metrics-listen") -> tuple[str, int]:
    """("host", port) from HOST:PORT or [IPV6]:PORT."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{flag} {listen!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


class Metrics:
    """The collectors of one daemon, in their own registry."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        rpc = ["grpc_service", "grpc_method", "grpc_type"]
        self.started = Counter("grpc_server_started", "RPCs started on the server.", rpc, registry=registry)
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            [*rpc, "grpc_code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its status (streams: their whole life).",
            rpc,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.received = Counter("grpc_server_msg_received", "Messages received from clients.", rpc, registry=registry)
        self.sent = Counter("grpc_server_msg_sent", "Messages sent to clients.", rpc, registry=registry)
        self.active_streams = Gauge(
            "aivcs_ledger_active_streams",
            "Streaming RPCs in progress (ingest, reads, subscriptions, health watches).",
            ["grpc_method"],
            registry=registry,
        )
        self.batch_events = Histogram(
            "aivcs_ledger_append_batch_events",
            "Events per append batch as clients send them (AppendEvents, IngestEvents).",
            ["grpc_method"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.active_runs = Gauge(
            "aivcs_ledger_active_runs",
            "Runs with an active serial writer (appends queued or being committed).",
            registry=registry,
        )
        self.serving = Gauge("aivcs_ledger_serving", "1 while health is SERVING, else 0.", registry=registry)
        self.db_seconds = Histogram(
            "aivcs_ledger_db_round_trip_seconds",
            "Time of one database round trip (query or transaction), whatever its outcome.",
            buckets=DB_BUCKETS,
            registry=registry,
        )
        self.db_in_flight = Gauge(
            "aivcs_ledger_db_round_trips_in_flight",
            "Database round trips started and not yet answered; growth means a stuck database.",
            registry=registry,
        )
        self.db_errors = Counter(
            "aivcs_ledger_db_errors",
            "Database round trips that failed (error = exception class) "
            "or statements the database failed (error = its kind).",
            ["error"],
            registry=registry,
        )
        self.checkpoints = Counter(
            "aivcs_ledger_db_checkpoints",
            "Closes and reopens of the embedded engine that flush its memtable, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.checkpoint_seconds = Histogram(
            "aivcs_ledger_db_checkpoint_seconds",
            "How long a checkpoint held every database call.",
            buckets=DB_BUCKETS,
            registry=registry,
        )
        self.inactive_runs_failed = Counter(
            "aivcs_ledger_inactive_runs_failed",
            "Runs this daemon failed because they had no append and no heartbeat for their inactivity timeout.",
            registry=registry,
        )
        self.checkpoint_waits = Histogram(
            "aivcs_ledger_db_checkpoint_wait_seconds",
            "How long a database call waited for a checkpoint to end (only calls that arrived during one).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.storage_fault = Gauge(
            "aivcs_ledger_db_storage_fault",
            "1 while the embedded store refuses every call after a storage fault, by reason "
            "(disk_full, io_error, damaged: cannot be reopened); 0 once it was proven sound "
            "again.",
            ["reason"],
            registry=registry,
        )
        self.ownership = Counter(
            "aivcs_ledger_ownership_changes",
            "Run and agent leases this replica acquired (taken_over: one held before, by any "
            "replica), lost to another replica, or released on drain.",
            ["change"],
            registry=registry,
        )
        self.forwarded = Counter(
            "aivcs_ledger_forwarded_calls",
            "Calls forwarded to the replica owning their run, by method and outcome "
            "(ok, refused by the owner, moved, unreachable).",
            ["method", "outcome"],
            registry=registry,
        )
        # OpenTelemetry's HTTP server names and labels; the route is its template, never the raw path.
        self.http_seconds = Histogram(
            "http_server_request_duration_seconds",
            "HTTP API and console requests by method, route template and status (live feeds: their whole life).",
            ["http_request_method", "http_route", "http_response_status_code"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        info = Gauge(
            "aivcs_ledger_build_info", "Always 1; the daemon's version as a label.", ["version"], registry=registry
        )
        info.labels(__version__).set(1)
        self._children: dict[str, _Children] = {}

    def watch(self, active_runs: Callable[[], int], serving: Callable[[], bool]) -> None:
        """Read these gauges from the daemon whenever Prometheus scrapes."""
        self.active_runs.set_function(lambda: float(active_runs()))
        self.serving.set_function(lambda: 1.0 if serving() else 0.0)

    def observe_ownership(self, change: str, count: int = 1) -> None:
        self.ownership.labels(change).inc(count)

    def observe_forwarded(self, method: str, outcome: str) -> None:
        self.forwarded.labels(method, outcome).inc()

    def observe_checkpoint(self, outcome: str, seconds: float) -> None:
        self.checkpoints.labels(outcome).inc()
        self.checkpoint_seconds.observe(seconds)

    def observe_inactive_run_failed(self) -> None:
        self.inactive_runs_failed.inc()

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_seconds.labels(method, route, str(status)).observe(seconds)

    def children(self, method: Method) -> _Children:
        found = self._children.get(method.path)
        if found is None:
            labels = (method.service, method.name, method.type)
            found = self._children[method.path] = _Children(
                started=self.started.labels(*labels),
                seconds=self.seconds.labels(*labels),
                received=self.received.labels(*labels),
                sent=self.sent.labels(*labels),
                streams=self.active_streams.labels(method.name) if method.streaming else None,
                batch=self.batch_events.labels(method.name) if method.path in APPEND_METHODS else None,
            )
        return found

    def instrument(self, db: Database) -> None:
        """Time every round trip of `db` through its send wrappers (Database.wrap_send, the one path to the engine).

        Also time each wait at its gate while a checkpoint holds calls (that wait is part of the round trip).
        """
        db.gate.observe_wait = self.checkpoint_waits.observe
        seconds, in_flight, errors = self.db_seconds, self.db_in_flight, self.db_errors
        for reason in ("disk_full", "io_error", "damaged"):
            self.storage_fault.labels(reason).set_function(functools.partial(_faulted, db, reason))
        db.wrap_send(functools.partial(_timed, seconds, in_flight, errors))


def _timed(seconds: Any, in_flight: Any, errors: Any, send: Send) -> Send:
    """`send`, timed and its failures counted by kind."""

    async def timed(sql: str, variables: dict[str, Any]) -> dict[str, Any]:
        began = time.perf_counter()
        in_flight.inc()
        try:
            response = await send(sql, variables)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            errors.labels(type(error).__name__).inc()
            raise
        finally:
            in_flight.dec()
            seconds.observe(time.perf_counter() - began)
        statements = response.get("result") if isinstance(response, dict) else None
        for statement in statements if isinstance(statements, list) else ():
            if isinstance(statement, dict) and statement.get("status") not in ("OK", None):
                kind = str(statement.get("kind") or "unknown")
                details = statement.get("details")
                detail = details.get("kind") if isinstance(details, dict) else None
                if kind not in _NOT_DB_ERRORS and detail not in _NOT_DB_ERRORS:
                    errors.labels(str(detail or kind)).inc()
        return response

    return timed


def _faulted(db: Database, reason: str) -> float:
    return 1.0 if db.fault is not None and db.fault.reason == reason else 0.0


@dataclass(frozen=True, slots=True)
class _Children:
    started: Any
    seconds: Any
    received: Any
    sent: Any
    streams: Any | None
    batch: Any | None


class MetricsHooks(Hooks):
    """Counts, times and labels every RPC by its final status code."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def factory(self, method: Method) -> HooksFactory | None:
        return self._hooks

    def _hooks(self, method: Method, context: Context) -> CallHooks:
        return _Measured(self._metrics, method, context)


class _Measured(CallHooks):
    def __init__(self, metrics: Metrics, method: Method, context: Context) -> None:
        super().__init__(method, context)
        self._metrics = metrics
        self._children = metrics.children(method)
        self._began = time.perf_counter()

    async def start(self) -> None:
        self._children.started.inc()
        if self._children.streams is not None:
            self._children.streams.inc()

    async def received(self, message: Any) -> None:
        self._children.received.inc()
        if self._children.batch is not None:
            self._children.batch.observe(len(message.events))

    def sent(self, message: Any) -> None:
        self._children.sent.inc()

    def finished(self, code: grpc.StatusCode) -> None:
        method = self.method
        self._children.seconds.observe(time.perf_counter() - self._began)
        self._metrics.handled.labels(method.service, method.name, method.type, code.name).inc()
        if self._children.streams is not None:
            self._children.streams.dec()
