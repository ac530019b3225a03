"""Every RPC the daemon serves, by path, and what kind of call each is: the one list all layers share.

Paths come from the generated descriptors, so a renamed RPC fails at import
instead of silently escaping a role check, a limit or the call log.
"""

from __future__ import annotations

from typing import Any

from aivcs.ledger.v1 import event_stream_pb2, ledger_admin_pb2, release_registry_pb2, run_ledger_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


def _service(descriptor: Any, name: str) -> str:
    full_name: str = descriptor.services_by_name[name].full_name
    return full_name


RUN_LEDGER = _service(run_ledger_pb2.DESCRIPTOR, "RunLedger")
EVENT_STREAM = _service(event_stream_pb2.DESCRIPTOR, "EventStream")
RELEASE_REGISTRY = _service(release_registry_pb2.DESCRIPTOR, "ReleaseRegistry")
TRACE_SERVICE = _service(trace_service_pb2.DESCRIPTOR, "TraceService")  # OTLP trace ingestion (otlp/)
LEDGER_ADMIN = _service(ledger_admin_pb2.DESCRIPTOR, "LedgerAdmin")  # backup and restore (ledger/backup/)

# The services that serve the ledger: health reports them, reflection lists them, tokens guard them.
LEDGER_SERVICES = (RUN_LEDGER, EVENT_STREAM, RELEASE_REGISTRY, TRACE_SERVICE, LEDGER_ADMIN)

# Services reachable without a token: probes and discovery.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

_DESCRIPTORS = {
    RUN_LEDGER: run_ledger_pb2.DESCRIPTOR,
    EVENT_STREAM: event_stream_pb2.DESCRIPTOR,
    RELEASE_REGISTRY: release_registry_pb2.DESCRIPTOR,
    TRACE_SERVICE: trace_service_pb2.DESCRIPTOR,
    LEDGER_ADMIN: ledger_admin_pb2.DESCRIPTOR,
}


def path(service: str, rpc: str) -> str:
    """The gRPC path of `rpc` in one of LEDGER_SERVICES; KeyError if the contract has no such RPC."""
    descriptor = _DESCRIPTORS[service]
    short = service.rpartition(".")[2]
    descriptor.services_by_name[short].methods_by_name[rpc]
    return f"/{service}/{rpc}"


def rpcs_of(service: str) -> frozenset[str]:
    """The paths of every RPC `service` has in the contract."""
    short = service.rpartition(".")[2]
    methods = _DESCRIPTORS[service].services_by_name[short].methods_by_name
    return frozenset(f"/{service}/{name}" for name in methods)


UNARY_APPEND = path(EVENT_STREAM, "AppendEvents")
STREAM_APPEND = path(EVENT_STREAM, "IngestEvents")
APPEND_METHODS = frozenset({UNARY_APPEND, STREAM_APPEND})
EXPORT_METHOD = path(TRACE_SERVICE, "Export")

# Every RPC that changes the ledger; a read-only token may call all the others.
WRITE_METHODS = frozenset(
    {
        *(path(RUN_LEDGER, rpc) for rpc in ("CreateRun", "CompleteRun", "FailRun", "CancelRun", "Heartbeat")),
        *APPEND_METHODS,
        *(path(RELEASE_REGISTRY, rpc) for rpc in ("Promote", "Rollback")),
        EXPORT_METHOD,  # OTLP spans become runs and events
    }
)

# RPCs only an admin token may call: a restore writes history with its original times.
# (DumpLedger only reads: any role may call it.)
ADMIN_METHODS = frozenset({path(LEDGER_ADMIN, "RestoreLedger")})
