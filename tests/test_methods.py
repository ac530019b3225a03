"""Every RPC of the contract is classified once, so roles, limits and logs cannot miss a new one."""

from __future__ import annotations

import pytest

from aivcs_ledgerd.methods import ADMIN_METHODS, LEDGER_SERVICES, WRITE_METHODS, path, rpcs_of

READS = {
    "/aivcs.ledger.v1.RunLedger/GetRun",
    "/aivcs.ledger.v1.RunLedger/ListRuns",
    "/aivcs.ledger.v1.RunLedger/VerifyRun",
    "/aivcs.ledger.v1.EventStream/ReadEvents",
    "/aivcs.ledger.v1.EventStream/SubscribeEvents",
    "/aivcs.ledger.v1.ReleaseRegistry/GetCurrent",
    "/aivcs.ledger.v1.ReleaseRegistry/GetHistory",
    "/aivcs.ledger.v1.LedgerAdmin/DumpLedger",
}


def test_every_rpc_is_a_write_an_admin_call_or_one_of_the_known_reads() -> None:
    every = set().union(*(rpcs_of(service) for service in LEDGER_SERVICES))
    assert every >= WRITE_METHODS | ADMIN_METHODS
    assert not WRITE_METHODS & ADMIN_METHODS
    assert every - WRITE_METHODS - ADMIN_METHODS == READS


def test_a_path_the_contract_lacks_fails_at_once() -> None:
    with pytest.raises(KeyError):
        path(LEDGER_SERVICES[0], "NoSuchRpc")
