"""Security: TLS and mutual TLS, bearer tokens and roles, limits, and SurrealQL-shaped input."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from aivcs.ledger.v1 import event_pb2
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import release_registry_pb2 as rr
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aivcs_ledgerd.ledger.limits import Limits
from aivcs_ledgerd.methods import LEDGER_SERVICES, WRITE_METHODS
from aivcs_ledgerd.middleware.security import Role, SecurityError, load_tokens
from harness.data import SPEC, unique
from harness.faults import StoreFaults
from harness.inprocess import Stubs, channel, running
from harness.pki import Pki, secure, tls_settings

Code = grpc.StatusCode
SERVING = health_pb2.HealthCheckResponse.SERVING


async def refused(call: Any, code: grpc.StatusCode, *words: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, f"{info.value.code()}: {info.value.details()}"
    for word in words:
        assert word in (info.value.details() or ""), info.value.details()


async def health_check(ch: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


# --- TLS ---------------------------------------------------------------------------------------------


async def test_tls_serves_encrypted_and_refuses_plaintext(pki: Pki) -> None:
    async with running(**tls_settings(pki)) as daemon:
        async with secure(daemon.port, pki) as ch:
            assert await health_check(ch) == SERVING
            stubs = Stubs(ch)
            run_id = await stubs.create()
            assert (await stubs.append(run_id)).last_seq == 1
        async with channel(daemon, separate=True) as plain:
            await refused(health_check(plain), Code.UNAVAILABLE)


async def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(pki: Pki) -> None:
    async with running(**tls_settings(pki, mutual=True)) as daemon:
        async with secure(daemon.port, pki, client=pki.client) as ch:
            assert await health_check(ch) == SERVING
            assert await Stubs(ch).create()
        async with secure(daemon.port, pki) as anonymous:
            await refused(health_check(anonymous), Code.UNAVAILABLE)
        async with secure(daemon.port, pki, client=pki.stranger) as stranger:
            await refused(health_check(stranger), Code.UNAVAILABLE)


async def test_plaintext_health_port_beside_tls(pki: Pki) -> None:
    async with running(health_listen="127.0.0.1:0", **tls_settings(pki)) as daemon:
        assert daemon.ops is not None and daemon.ops.health_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{daemon.ops.health_port}") as ch:
            assert await health_check(ch) == SERVING
            # Only health is served there: the ledger stays behind TLS.
            await refused(Stubs(ch).runs.GetRun(rl.GetRunRequest(run_id="x"), timeout=5), Code.UNIMPLEMENTED)


# --- bearer tokens -------------------------------------------------------------------------------------

READ_WRITE, READ_ONLY = "rw-0123456789abcdef", "ro-fedcba9876543210"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# tokens for the tests\n\nread-write {READ_WRITE}\n  read-only\t{READ_ONLY}  \n")
    return path


def write_calls(stubs: Stubs, run_id: str) -> dict[str, Any]:
    """One call of every write RPC, with the stubs' metadata."""
    md = stubs.metadata
    events = [event_pb2.EventInput(kind="k")]
    ingest = [es.IngestEventsRequest(batch_id=1, run_id=run_id, events=events)]
    return {
        "CreateRun": lambda: stubs.runs.CreateRun(
            rl.CreateRunRequest(spec_digest=SPEC, agent_name="a"), metadata=md, timeout=5
        ),
        "CompleteRun": lambda: stubs.runs.CompleteRun(rl.CompleteRunRequest(run_id=run_id), metadata=md, timeout=5),
        "FailRun": lambda: stubs.runs.FailRun(rl.FailRunRequest(run_id=run_id), metadata=md, timeout=5),
        "CancelRun": lambda: stubs.runs.CancelRun(rl.CancelRunRequest(run_id=run_id), metadata=md, timeout=5),
        "Heartbeat": lambda: stubs.runs.Heartbeat(rl.HeartbeatRequest(run_id=run_id), metadata=md, timeout=5),
        "AppendEvents": lambda: stubs.events.AppendEvents(
            es.AppendEventsRequest(run_id=run_id, events=events), metadata=md, timeout=5
        ),
        "IngestEvents": lambda: _drain(stubs.events.IngestEvents(iter(ingest), metadata=md, timeout=5)),
        "Promote": lambda: stubs.releases.Promote(
            rr.PromoteRequest(agent_name="a", spec_digest=SPEC, promoted_by="t"), metadata=md, timeout=5
        ),
        "Rollback": lambda: stubs.releases.Rollback(
            rr.RollbackRequest(agent_name="a", promoted_by="t"), metadata=md, timeout=5
        ),
    }


async def _drain(call: Any) -> list[Any]:
    return [message async for message in call]


def test_every_write_rpc_is_known_as_one() -> None:
    assert {path.rpartition("/")[2] for path in WRITE_METHODS} == {
        "CreateRun",
        "CompleteRun",
        "FailRun",
        "CancelRun",
        "Heartbeat",
        "AppendEvents",
        "IngestEvents",
        "Promote",
        "Rollback",
        "Export",
    }


async def test_tokens_and_roles(token_file: Path) -> None:
    async with running(auth_token_file=token_file) as daemon, channel(daemon) as ch:
        writer, reader = Stubs(ch, READ_WRITE), Stubs(ch, READ_ONLY)
        missing, wrong = Stubs(ch), Stubs(ch, "not-a-token")

        run_id = await writer.create()
        await writer.append(run_id, "a", "b")

        # Read-only: every read works, every write is PERMISSION_DENIED and changes nothing.
        get = rl.GetRunRequest(run_id=run_id)
        assert (await reader.runs.GetRun(get, metadata=reader.metadata, timeout=5)).run.total_events == 2
        assert (await reader.runs.ListRuns(rl.ListRunsRequest(), metadata=reader.metadata, timeout=5)).runs
        read = reader.events.ReadEvents(es.ReadEventsRequest(run_id=run_id), metadata=reader.metadata, timeout=5)
        assert sum(len(r.events) for r in await _drain(read)) == 2
        await refused(
            reader.releases.GetCurrent(rr.GetCurrentRequest(agent_name="none"), metadata=reader.metadata, timeout=5),
            Code.NOT_FOUND,
        )
        for name, call in write_calls(reader, run_id).items():
            await refused(call(), Code.PERMISSION_DENIED, name)
        after = await writer.runs.GetRun(get, metadata=writer.metadata, timeout=5)
        assert after.run.total_events == 2 and after.run.status == 1

        # No token or an unknown one: UNAUTHENTICATED, reads and writes alike.
        for stubs in (missing, wrong):
            await refused(stubs.runs.GetRun(get, metadata=stubs.metadata, timeout=5), Code.UNAUTHENTICATED)
            for call in write_calls(stubs, run_id).values():
                await refused(call(), Code.UNAUTHENTICATED)

        # The scheme is case-insensitive, the token is not.
        lower = (("authorization", f"bearer {READ_WRITE}"),)
        assert (await writer.runs.GetRun(get, metadata=lower, timeout=5)).run.run_id == run_id
        upper = (("authorization", f"Bearer {READ_WRITE.upper()}"),)
        await refused(writer.runs.GetRun(get, metadata=upper, timeout=5), Code.UNAUTHENTICATED)

        # Read-write: writes go through.
        for name, call in write_calls(writer, run_id).items():
            if name in ("CompleteRun", "FailRun", "CancelRun", "Rollback"):
                continue  # covered below; a run finishes once, a first release has nothing to roll back to
            await call()
        assert (
            await writer.runs.CompleteRun(rl.CompleteRunRequest(run_id=run_id), metadata=writer.metadata, timeout=5)
        ).run.status == 2


async def test_health_and_reflection_need_no_token(token_file: Path) -> None:
    async with running(auth_token_file=token_file) as daemon, channel(daemon) as ch:
        assert await health_check(ch) == SERVING
        for name in LEDGER_SERVICES:
            reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        [reply] = await _drain(replies)
        listed = {service.name for service in reply.list_services_response.service}
        assert set(LEDGER_SERVICES) <= listed


def test_token_file_format(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# a comment\n\n read-write  aaaa \nREAD-ONLY bbbb\nread-only bbbb\n")
    tokens = load_tokens(path)
    assert sorted(role.value for role in tokens.values()) == [Role.READ_ONLY.value, Role.READ_WRITE.value]
    assert not any(b"aaaa" in digest or b"bbbb" in digest for digest in tokens), "only digests are kept"

    for text, words in [
        ("superuser Zq9secret\n", ["line 1", "unknown role 'superuser'", "admin"]),
        ("# only\nread-write\n", ["line 2", "ROLE TOKEN"]),
        ("read-write Zq9secret b\n", ["line 1"]),
        ("read-write Zq9secret\nread-only Zq9secret\n", ["line 2", "two roles"]),
        ("# nothing\n", ["no token"]),
    ]:
        path.write_text(text)
        with pytest.raises(SecurityError) as info:
            load_tokens(path)
        for word in words:
            assert word in str(info.value)
        assert "Zq9secret" not in str(info.value), "a token never appears in an error"


# --- limits ---------------------------------------------------------------------------------------------


async def test_oversized_message_is_resource_exhausted() -> None:
    limits = Limits(max_batch_events=1000, max_payload_bytes=32 * 1024, max_message_bytes=64 * 1024)
    async with running(limits=limits) as daemon, channel(daemon) as ch:
        stubs = Stubs(ch)
        run_id = await stubs.create()
        event = event_pb2.EventInput(kind="big")
        event.payload.update({"blob": "x" * (100 * 1024)})
        request = es.AppendEventsRequest(run_id=run_id, events=[event])
        await refused(stubs.events.AppendEvents(request, timeout=5), Code.RESOURCE_EXHAUSTED)
        small = es.AppendEventsRequest(run_id=run_id, events=[event_pb2.EventInput(kind="small")])
        assert (await stubs.events.AppendEvents(small, timeout=5)).last_seq == 1


async def test_too_many_streams_on_one_connection_is_resource_exhausted() -> None:
    async with running(max_streams_per_connection=3) as daemon, channel(daemon) as ch:
        stubs = Stubs(ch)
        run_id = await stubs.create()
        await stubs.append(run_id)
        streams = [stubs.events.SubscribeEvents(es.SubscribeEventsRequest(run_id=run_id)) for _ in range(3)]
        for stream in streams:
            first: Any = await stream.read()
            assert len(first.events) == 1  # the call is open on the daemon
        get = rl.GetRunRequest(run_id=run_id)
        await refused(stubs.runs.GetRun(get, timeout=5), Code.RESOURCE_EXHAUSTED, "limit 3")
        await refused(
            _drain(stubs.events.ReadEvents(es.ReadEventsRequest(run_id=run_id), timeout=5)), Code.RESOURCE_EXHAUSTED
        )

        # Another connection has its own budget.
        async with channel(daemon, separate=True) as other:
            assert (await Stubs(other).runs.GetRun(get, timeout=5)).run.run_id == run_id

        # Once a stream ends, the connection may call again.
        streams[0].cancel()
        for _ in range(50):
            try:
                await stubs.runs.GetRun(get, timeout=5)
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() == Code.RESOURCE_EXHAUSTED
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the connection's budget never came back")
        for stream in streams[1:]:
            stream.cancel()


async def test_too_many_inflight_appends_on_one_connection_is_resource_exhausted() -> None:
    async with running(max_inflight_appends=2, db_timeout=5) as daemon, channel(daemon) as ch:
        stubs = Stubs(ch)
        runs = [await stubs.create() for _ in range(3)]
        fault = StoreFaults(daemon)
        fault.hang()
        pending = [asyncio.create_task(stubs.append(run_id)) for run_id in runs[:2]]
        await asyncio.sleep(0.3)
        began = time.monotonic()
        await refused(stubs.append(runs[2]), Code.RESOURCE_EXHAUSTED, "append batches in flight")
        assert time.monotonic() - began < 1
        async with channel(daemon, separate=True) as other:  # not another connection's business
            pending.append(asyncio.create_task(Stubs(other).append(runs[2])))
            await asyncio.sleep(0.2)
            fault.restore()
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
        # Admitted appends reached the (hung) database and answer UNAVAILABLE when it gives up.
        for outcome in outcomes:
            assert isinstance(outcome, grpc.aio.AioRpcError) and outcome.code() == Code.UNAVAILABLE, outcome
        assert (await stubs.append(runs[2])).first_seq >= 1


async def test_ingest_over_the_append_limit_is_slowed_not_refused() -> None:
    async with running(max_inflight_appends=2) as daemon, channel(daemon) as ch:
        stubs = Stubs(ch)
        run_id = await stubs.create()
        requests = [
            es.IngestEventsRequest(batch_id=n, run_id=run_id, events=[event_pb2.EventInput(kind="k")] * 3)
            for n in range(1, 21)
        ]
        answers = await _drain(stubs.events.IngestEvents(iter(requests), timeout=20))
        assert [(a.batch_id, a.first_seq, a.last_seq) for a in answers] == [(n, 3 * n - 2, 3 * n) for n in range(1, 21)]


# --- SurrealQL-shaped input is data, never query text ------------------------------------------------

HOSTILE = [
    "x'; DELETE runs; --",
    'x"; DELETE run_events; --',
    "runs:⟨a⟩",
    "⟩; DELETE runs; ⟨",
    "$run_id",
    "$auth",
    "`; REMOVE TABLE runs; `",
    "type::record('runs', 'other')",
    "run_events:[$run_id, 1]..",
    "\\'; -- \\\" /* */",
    "{ a: 1 } [1, 2] (SELECT * FROM runs) ; : , .. ..= -> <- <-> @ # //",
    "日本語 ✓ 🚀 עברית \U0001d518\U0001d52b",  # astral-plane letters too
    "  spaces around  ",
    "line\nbreak\ttab\r",
]


async def test_surrealql_in_ids_names_and_kinds_is_stored_verbatim_and_changes_nothing_else() -> None:
    async with running() as daemon, channel(daemon) as ch:
        stubs = Stubs(ch)
        canary_agent = unique("canary")
        canary = await stubs.create(agent=canary_agent)
        await stubs.append(canary, "one", "two", "three")
        await stubs.releases.Promote(
            rr.PromoteRequest(agent_name=canary_agent, spec_digest=SPEC, promoted_by="t"), timeout=5
        )

        for index, text in enumerate(HOSTILE):
            run_id = await stubs.create(agent=text, run_id=text)
            assert run_id == text
            reply = await stubs.append(text, text, f"{text}#{index}")
            assert (reply.first_seq, reply.last_seq) == (1, 2)
            run = (await stubs.runs.GetRun(rl.GetRunRequest(run_id=text), timeout=5)).run
            assert (run.run_id, run.agent_name, run.total_events) == (text, text, 2)
            stored = await _drain(stubs.events.ReadEvents(es.ReadEventsRequest(run_id=text), timeout=5))
            assert [e.kind for r in stored for e in r.events] == [text, f"{text}#{index}"]
            only = await _drain(stubs.events.ReadEvents(es.ReadEventsRequest(run_id=text, kinds=[text]), timeout=5))
            assert [e.kind for r in only for e in r.events] == [text]
            listed = (await stubs.runs.ListRuns(rl.ListRunsRequest(agent_name=text), timeout=5)).runs
            assert [r.run_id for r in listed] == [text]
            release = (
                await stubs.releases.Promote(
                    rr.PromoteRequest(agent_name=text, spec_digest=SPEC, promoted_by=text, notes=text), timeout=5
                )
            ).release
            assert (release.agent_name, release.promoted_by, release.notes) == (text, text, text)
            current = (await stubs.releases.GetCurrent(rr.GetCurrentRequest(agent_name=text), timeout=5)).release
            assert current.agent_name == text

        # Nothing else changed: the canary and its events and release are intact, no run went missing.
        run = (await stubs.runs.GetRun(rl.GetRunRequest(run_id=canary), timeout=5)).run
        assert run.total_events == 3 and run.agent_name == canary_agent
        stored = await _drain(stubs.events.ReadEvents(es.ReadEventsRequest(run_id=canary), timeout=5))
        assert [(e.seq, e.kind) for r in stored for e in r.events] == [(1, "one"), (2, "two"), (3, "three")]
        current = (await stubs.releases.GetCurrent(rr.GetCurrentRequest(agent_name=canary_agent), timeout=5)).release
        assert current.spec_digest == SPEC
        everything = (await stubs.runs.ListRuns(rl.ListRunsRequest(page_size=1000), timeout=5)).runs
        assert sorted(r.run_id for r in everything) == sorted([canary, *HOSTILE])
