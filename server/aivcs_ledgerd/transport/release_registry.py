"""ReleaseRegistry servicer (to be built: issue 5)."""

from __future__ import annotations

from aivcs.ledger.v1 import release_registry_pb2_grpc

from aivcs_ledgerd.ledger import Ledger


class ReleaseRegistryServicer(release_registry_pb2_grpc.ReleaseRegistryServicer):
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
