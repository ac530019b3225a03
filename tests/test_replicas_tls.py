"""Replicas forwarding to each other over mutual TLS, each checking the other's certificate against --peer-ca."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from aivcs.ledger.v1 import event_pb2
from aivcs.ledger.v1 import event_stream_pb2 as es

from harness.inprocess import Stubs, running
from harness.pki import Pki, secure, tls_settings
from harness.surrealdb_stand_in import stand_in_server


@pytest.mark.parametrize("trusted", [True, False])
async def test_forwarding_between_replicas_uses_tls_and_checks_the_peer(
    tmp_path: Path, pki: Pki, trusted: bool
) -> None:
    settings = tls_settings(pki, mutual=True)
    if trusted:
        settings["peer_ca"] = pki.write("peer-ca.pem", pki.ca.cert)  # else the system's roots: not our CA
    with stand_in_server(tmp_path) as server:
        async with (
            running(db=server.url, **settings) as owner,
            running(db=server.url, **settings) as other,
            secure(owner.port, pki, client=pki.client) as to_owner,
            secure(other.port, pki, client=pki.client) as to_other,
        ):
            first, second = Stubs(to_owner), Stubs(to_other)
            run_id = await first.create("tls-agent")
            assert (await first.append(run_id, "on-owner")).first_seq == 1
            request = es.AppendEventsRequest(run_id=run_id, events=[event_pb2.EventInput(kind="forwarded")])
            if trusted:
                reply = await second.events.AppendEvents(request, timeout=10)
                assert reply.first_seq == 2
            else:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await second.events.AppendEvents(request, timeout=10)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert (await first.append(run_id, "on-owner")).first_seq == 2  # nothing was written
