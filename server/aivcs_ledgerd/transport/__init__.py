"""gRPC servicers: proto messages in, domain values to the ledger, status codes out."""

from __future__ import annotations

import grpc
from aivcs.ledger.v1 import (
    event_stream_pb2_grpc,
    ledger_admin_pb2_grpc,
    release_registry_pb2_grpc,
    run_ledger_pb2_grpc,
)

from aivcs_ledgerd.ledger import Ledger
from aivcs_ledgerd.transport.event_stream import EventStreamServicer
from aivcs_ledgerd.transport.ledger_admin import LedgerAdminServicer
from aivcs_ledgerd.transport.peers import Peers
from aivcs_ledgerd.transport.release_registry import ReleaseRegistryServicer
from aivcs_ledgerd.transport.run_ledger import RunLedgerServicer


def register_services(server: grpc.aio.Server, ledger: Ledger, peers: Peers | None = None) -> None:
    """Add the ledger services to `server`; `peers` forwards writes to other replicas."""
    peers = peers or Peers()
    run_ledger_pb2_grpc.add_RunLedgerServicer_to_server(RunLedgerServicer(ledger, peers), server)
    event_stream_pb2_grpc.add_EventStreamServicer_to_server(EventStreamServicer(ledger, ledger.limits, peers), server)
    release_registry_pb2_grpc.add_ReleaseRegistryServicer_to_server(ReleaseRegistryServicer(ledger, peers), server)
    ledger_admin_pb2_grpc.add_LedgerAdminServicer_to_server(LedgerAdminServicer(ledger), server)  # backup/restore
