"""Faults injected at the store boundary of an in-process daemon: every caller gets a deliberate status.

Every raw round trip to SurrealDB goes through `daemon.db.send`; these tests
wrap it (`Database.wrap_send`, through harness/faults.py) with wrappers that
fail, hang past the daemon's `db_timeout`, fail only the Nth call, or fail
after the engine has executed the statement (the write
happened, the caller sees an error). Whatever the fault, a caller gets
UNAVAILABLE or ABORTED (never UNKNOWN or INTERNAL), no batch is ever stored in
part, a retry with the same idempotency key lands exactly once, and once
the wrapper is removed the same daemon serves again: health SERVING, appends work,
VerifyRun holds. No test restarts the daemon.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from aivcs.ledger.v1 import (
    event_pb2,
    event_stream_pb2_grpc,
    release_registry_pb2_grpc,
    run_ledger_pb2_grpc,
)
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import release_registry_pb2 as rr
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aivcs_ledgerd.process.app import Daemon
from aivcs_ledgerd.store import QueryFailed, StoreConflict
from harness.codes import code_of
from harness.data import SPEC, digest
from harness.faults import Fault, StoreFaults, is_append
from harness.inprocess import running

Code = grpc.StatusCode
OTHER_SPEC = digest("faults-other")
DB_TIMEOUT = 0.5
# What a caller may get while the store misbehaves (docs/architecture.md, "Errors": UNAVAILABLE when the database
# cannot be reached; ABORTED for a conflict the caller should retry).
DELIBERATE = {Code.UNAVAILABLE, Code.ABORTED}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Client:
    daemon: Daemon
    channel: grpc.aio.Channel
    runs: run_ledger_pb2_grpc.RunLedgerStub
    events: event_stream_pb2_grpc.EventStreamStub
    releases: release_registry_pb2_grpc.ReleaseRegistryStub
    health: health_pb2_grpc.HealthStub
    faults: StoreFaults
    serial: itertools.count[int] = field(default_factory=itertools.count)

    async def new_run(self, prefix: str = "fault") -> str:
        run_id = f"{prefix}-{next(self.serial)}-{time.monotonic_ns()}"
        await self.runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="faults", run_id=run_id))
        return run_id

    async def read(self, run_id: str) -> list[event_pb2.Event]:
        return [e async for m in self.events.ReadEvents(es.ReadEventsRequest(run_id=run_id)) for e in m.events]

    async def status(self) -> int:
        return (await self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)).status

    async def wait_health(self, wanted: int, within: float = 5) -> None:
        deadline = time.monotonic() + within
        while (status := await self.status()) != wanted:
            assert time.monotonic() < deadline, (
                f"health stayed {health_pb2.HealthCheckResponse.ServingStatus.Name(status)} for {within}s, "
                f"wanted {health_pb2.HealthCheckResponse.ServingStatus.Name(wanted)}"
            )
            await asyncio.sleep(0.05)


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    settings = {"db_timeout": DB_TIMEOUT, "health_interval": 0.2, "grace_period": 1.0}
    async with running(lenient_stop=True, **settings) as daemon:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{daemon.port}")
        faults = StoreFaults(daemon, timeout=DB_TIMEOUT)
        try:
            yield Client(
                daemon,
                channel,
                run_ledger_pb2_grpc.RunLedgerStub(channel),
                event_stream_pb2_grpc.EventStreamStub(channel),
                release_registry_pb2_grpc.ReleaseRegistryStub(channel),
                health_pb2_grpc.HealthStub(channel),
                faults,
            )
        finally:
            faults.restore()
            await channel.close()


# --- batches whose fate can be read back -----------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    run_id: str
    key: str
    size: int

    def tokens(self) -> list[str]:
        return [f"{self.key}/{i}" for i in range(self.size)]

    def inputs(self) -> list[event_pb2.EventInput]:
        items = []
        for token in self.tokens():
            item = event_pb2.EventInput(kind="fault.test")
            item.payload.update({"token": token})
            items.append(item)
        return items

    def append_request(self) -> es.AppendEventsRequest:
        return es.AppendEventsRequest(run_id=self.run_id, events=self.inputs(), idempotency_key=self.key)

    def ingest_request(self, batch_id: int) -> es.IngestEventsRequest:
        return es.IngestEventsRequest(
            batch_id=batch_id, run_id=self.run_id, events=self.inputs(), idempotency_key=self.key
        )


async def append(client: Client, batch: Batch, deadline: float = 10) -> tuple[int, int] | Code:
    """The batch's (first_seq, last_seq), or the status code it was refused with."""
    try:
        reply = await client.events.AppendEvents(batch.append_request(), timeout=deadline)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return reply.first_seq, reply.last_seq


async def ingest(client: Client, batches: list[Batch], deadline: float = 20) -> dict[str, tuple[int, int] | Code]:
    """Send every batch on one IngestEvents stream; each batch's answer, by key."""
    call = client.events.IngestEvents(
        (b.ingest_request(i) for i, b in enumerate(batches)),
        timeout=deadline,  # type: ignore[arg-type]
    )
    answers: dict[str, tuple[int, int] | Code] = {}
    try:
        async for reply in call:
            batch = batches[reply.batch_id]
            if reply.HasField("error"):
                answers[batch.key] = code_of(reply.error.code)
            else:
                answers[batch.key] = (reply.first_seq, reply.last_seq)
    except grpc.aio.AioRpcError as error:
        for batch in batches:
            answers.setdefault(batch.key, error.code())
    return answers


async def assert_whole_or_absent(
    client: Client, batches: list[Batch], acks: dict[str, tuple[int, int]], must_be_stored: bool = False
) -> None:
    """Every batch stored whole at consecutive seqs, once, or not at all; acknowledged ones where their
    acknowledgement says; seqs 1..N; VerifyRun ok."""
    by_run: dict[str, dict[str, list[int]]] = {}
    for run_id in {b.run_id for b in batches}:
        stored = await client.read(run_id)
        assert [e.seq for e in stored] == list(range(1, len(stored) + 1)), f"{run_id}: seqs not 1..N"
        run = (await client.runs.GetRun(rl.GetRunRequest(run_id=run_id))).run
        assert run.total_events == len(stored)
        verdict = await client.runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id))
        assert verdict.ok, verdict.reason
        places: dict[str, list[int]] = {}
        for event in stored:
            places.setdefault(event.payload.fields["token"].string_value, []).append(event.seq)
        by_run[run_id] = places
    for batch in batches:
        places = by_run[batch.run_id]
        seqs = [places.get(token, []) for token in batch.tokens()]
        assert all(len(s) <= 1 for s in seqs), f"{batch.key} stored more than once: {seqs}"
        found = [s[0] for s in seqs if s]
        assert len(found) in (0, batch.size), f"{batch.key} stored in part: {seqs}"
        if found:
            assert found == list(range(found[0], found[0] + batch.size)), f"{batch.key} not contiguous: {found}"
        if batch.key in acks:
            first, last = acks[batch.key]
            assert found == list(range(first, last + 1)), f"{batch.key} acknowledged {first}..{last}, stored {found}"
        if must_be_stored:
            assert found, f"{batch.key} missing"


async def retry_until_stored(client: Client, batches: list[Batch], acks: dict[str, tuple[int, int]]) -> None:
    """Send every unacknowledged batch again, same key and content: each must now be acknowledged."""
    for batch in batches:
        if batch.key not in acks:
            answer = await append(client, batch)
            assert isinstance(answer, tuple), f"retry of {batch.key} refused: {answer}"
            acks[batch.key] = answer


async def assert_recovered(client: Client) -> None:
    """Same daemon, no restart: health SERVING again, and a fresh run takes appends."""
    await client.wait_health(SERVING)
    run_id = await client.new_run("recovered")
    batch = Batch(run_id, f"{run_id}-k", 3)
    assert await append(client, batch) == (1, 3)
    assert await append(client, batch) == (1, 3)  # a replay
    await assert_whole_or_absent(client, [batch], {batch.key: (1, 3)}, must_be_stored=True)


# --- every RPC against a failing store ----------------------------------------------------------------------


async def every_rpc(client: Client, run_id: str, done_run: str) -> dict[str, Code | None]:
    """Call each RPC of the three services once; the status each got (None for OK).

    Every write is one the ledger would refuse (a stale expectation, a terminal run), so even a
    fault that lets the engine run the statement late changes nothing the test checks."""
    event = event_pb2.EventInput(kind="k")
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "CreateRun": lambda: client.runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="faults")),
        "CreateRun(retry)": lambda: client.runs.CreateRun(
            rl.CreateRunRequest(spec_digest=SPEC, agent_name="faults", run_id=run_id)
        ),
        "GetRun": lambda: client.runs.GetRun(rl.GetRunRequest(run_id=run_id)),
        "ListRuns": lambda: client.runs.ListRuns(rl.ListRunsRequest(agent_name="faults")),
        "CompleteRun": lambda: client.runs.CompleteRun(rl.CompleteRunRequest(run_id=run_id, expected_total_events=99)),
        "FailRun": lambda: client.runs.FailRun(rl.FailRunRequest(run_id=run_id, expected_total_events=99)),
        "CancelRun": lambda: client.runs.CancelRun(rl.CancelRunRequest(run_id=done_run)),
        "VerifyRun": lambda: client.runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id)),
        "AppendEvents": lambda: client.events.AppendEvents(
            es.AppendEventsRequest(run_id=run_id, events=[event], expected_last_seq=99)
        ),
        "ReadEvents": lambda: _drain(client.events.ReadEvents(es.ReadEventsRequest(run_id=run_id))),
        "SubscribeEvents": lambda: _drain(client.events.SubscribeEvents(es.SubscribeEventsRequest(run_id=done_run))),
        "IngestEvents": lambda: _ingest_one(client, run_id, event),
        "Promote": lambda: client.releases.Promote(
            rr.PromoteRequest(
                agent_name="faults-agent", spec_digest=SPEC, promoted_by="t", expected_current_spec_digest=OTHER_SPEC
            )
        ),
        "Rollback": lambda: client.releases.Rollback(
            rr.RollbackRequest(agent_name="faults-agent", promoted_by="t", expected_current_spec_digest=OTHER_SPEC)
        ),
        "GetCurrent": lambda: client.releases.GetCurrent(rr.GetCurrentRequest(agent_name="faults-agent")),
        "GetHistory": lambda: client.releases.GetHistory(rr.GetHistoryRequest(agent_name="faults-agent")),
    }
    statuses: dict[str, Code | None] = {}
    for name, call in calls.items():
        try:
            await asyncio.wait_for(call(), timeout=DB_TIMEOUT * 20)
            statuses[name] = None
        except grpc.aio.AioRpcError as error:
            statuses[name] = error.code()
        except IngestRefused as refused:
            statuses[name] = refused.code
    return statuses


class IngestRefused(Exception):
    def __init__(self, code: Code) -> None:
        self.code = code


async def _drain(call: Any) -> int:
    return sum([1 async for _ in call])


async def _ingest_one(client: Client, run_id: str, event: event_pb2.EventInput) -> None:
    requests = [es.IngestEventsRequest(batch_id=7, run_id=run_id, events=[event], expected_last_seq=99)]
    replies = [r async for r in client.events.IngestEvents(iter(requests))]  # type: ignore[arg-type]
    assert [r.batch_id for r in replies] == [7]
    if replies[0].HasField("error"):
        raise IngestRefused(code_of(replies[0].error.code))


async def prepared(client: Client) -> tuple[str, str, list[event_pb2.Event]]:
    """A running run with events, a completed one, and a release history: what faults must not change."""
    run_id = await client.new_run()
    await client.events.AppendEvents(
        es.AppendEventsRequest(run_id=run_id, events=[event_pb2.EventInput(kind="k") for _ in range(5)])
    )
    done_run = await client.new_run()
    await client.runs.CompleteRun(rl.CompleteRunRequest(run_id=done_run))
    await client.releases.Promote(rr.PromoteRequest(agent_name="faults-agent", spec_digest=SPEC, promoted_by="t"))
    return run_id, done_run, await client.read(run_id)


FAULTS: dict[str, Callable[[StoreFaults], Fault]] = {
    "unavailable": lambda f: f.unavailable,
    "hang past the timeout": lambda f: f.hang_then_execute,
    "query failed": lambda f: f.raising(QueryFailed("injected: statement failed")),
    "conflict every time": lambda f: f.raising(StoreConflict("injected: transaction conflict")),
    "unexpected exception": lambda f: f.raising(RuntimeError("injected: SDK bug")),
    "os error": lambda f: f.raising(ConnectionResetError("injected: reset by peer")),
    "malformed answer": lambda f: f.answering({"result": [{"status": "ERR", "result": "??", "kind": "Internal"}]}),
    "empty answer": lambda f: f.answering({}),
}


@pytest.mark.parametrize("name", list(FAULTS))
async def test_every_rpc_answers_unavailable_or_aborted_while_the_store_fails(client: Client, name: str) -> None:
    run_id, done_run, before = await prepared(client)
    client.faults.install(FAULTS[name](client.faults))
    statuses = await every_rpc(client, run_id, done_run)
    client.faults.restore()
    wrong = {rpc: code for rpc, code in statuses.items() if code not in DELIBERATE}
    assert not wrong, f"with the store failing ({name}), these RPCs answered other than UNAVAILABLE/ABORTED: {wrong}"
    await client.wait_health(SERVING)
    assert await client.read(run_id) == before
    assert (
        await client.releases.GetCurrent(rr.GetCurrentRequest(agent_name="faults-agent"))
    ).release.spec_digest == SPEC
    await assert_recovered(client)


@pytest.mark.parametrize("fault", ["unavailable", "unexpected exception", "os error", "empty answer"])
async def test_health_follows_the_store_and_recovers_without_restart(client: Client, fault: str) -> None:
    """NOT_SERVING while the store fails, however it fails; SERVING again once it answers; and the
    daemon still stops cleanly afterwards."""
    await client.wait_health(SERVING)
    client.faults.install(FAULTS[fault](client.faults))
    await client.wait_health(NOT_SERVING)
    client.faults.restore()
    await assert_recovered(client)
    await asyncio.wait_for(client.daemon.stop(), timeout=30)


# --- appends under faults: never a partial batch, retries land once -------------------------------------------


@pytest.mark.parametrize("fault", ["unavailable", "execute_then_fail", "hang_then_execute", "execute_then_hang"])
async def test_failed_appends_are_whole_or_absent_and_retries_land_once(client: Client, fault: str) -> None:
    """Unary and streamed batches over three runs while every append transaction misbehaves; after
    `send` is restored, the same batches are retried with the same keys."""
    run_ids = [await client.new_run() for _ in range(3)]
    batches = [Batch(run_ids[i % 3], f"{fault}-{i}", 1 + i % 4) for i in range(24)]
    client.faults.install(getattr(client.faults, fault), only=is_append)
    answers: dict[str, tuple[int, int] | Code] = {}
    unary = await asyncio.gather(*(append(client, b) for b in batches[:12]))
    answers.update({b.key: a for b, a in zip(batches[:12], unary, strict=True)})
    answers.update(await ingest(client, batches[12:]))
    refused = {key: a for key, a in answers.items() if not isinstance(a, tuple)}
    assert refused, "the fault was never felt"
    assert set(refused.values()) <= DELIBERATE, refused
    client.faults.restore()
    await asyncio.sleep(DB_TIMEOUT * 4)  # hung calls reach the engine late
    acks = {key: a for key, a in answers.items() if isinstance(a, tuple)}
    await assert_whole_or_absent(client, batches, acks)
    await retry_until_stored(client, batches, acks)
    await assert_whole_or_absent(client, batches, acks, must_be_stored=True)
    await assert_recovered(client)


@pytest.mark.parametrize("after", [False, True], ids=["before", "after-execution"])
async def test_only_the_nth_store_call_fails(client: Client, after: bool) -> None:
    """For each N, the Nth round trip (any query: heads, keys, appends, reads) fails once, before
    or after the engine ran it, during a mixed unary and streamed load on two runs."""
    for n in range(1, 13):
        run_ids = [await client.new_run(f"nth{n}") for _ in range(2)]
        batches = [Batch(run_ids[i % 2], f"nth-{after}-{n}-{i}", 1 + i % 3) for i in range(8)]
        client.faults.install(client.faults.nth(n, after=after))
        answers: dict[str, tuple[int, int] | Code] = {}
        for batch in batches[:4]:
            answers[batch.key] = await append(client, batch)
        answers.update(await ingest(client, batches[4:]))
        client.faults.restore()
        refused = {key: a for key, a in answers.items() if not isinstance(a, tuple)}
        assert set(refused.values()) <= DELIBERATE, (n, refused)
        acks = {key: a for key, a in answers.items() if isinstance(a, tuple)}
        await assert_whole_or_absent(client, batches, acks)
        await retry_until_stored(client, batches, acks)
        await assert_whole_or_absent(client, batches, acks, must_be_stored=True)
    await assert_recovered(client)


async def test_a_write_that_executed_but_failed_reaches_subscribers_once(client: Client) -> None:
    """The engine stored the batch but the caller saw UNAVAILABLE (and the daemon did not publish it):
    a subscriber still gets every event exactly once, in order, and the retry replays the same seqs."""
    run_id = await client.new_run("sub")
    subscription = client.events.SubscribeEvents(es.SubscribeEventsRequest(run_id=run_id))
    seen: list[int] = []

    async def follow() -> None:
        async for message in subscription:
            seen.extend(e.seq for e in message.events)

    follower = asyncio.create_task(follow())
    first = Batch(run_id, "sub-1", 3)
    assert await append(client, first) == (1, 3)
    client.faults.install(client.faults.execute_then_fail, only=is_append)
    lost_answer = Batch(run_id, "sub-2", 4)
    assert await append(client, lost_answer) == Code.UNAVAILABLE
    client.faults.restore()
    assert client.faults.executed == 1
    assert await append(client, lost_answer) == (4, 7)  # the retry finds the stored batch
    third = Batch(run_id, "sub-3", 2)
    assert await append(client, third) == (8, 9)
    await client.runs.CompleteRun(rl.CompleteRunRequest(run_id=run_id, expected_total_events=9))
    await asyncio.wait_for(follower, timeout=15)
    assert seen == list(range(1, 10))
    await assert_whole_or_absent(
        client, [first, lost_answer, third], {"sub-1": (1, 3), "sub-2": (4, 7), "sub-3": (8, 9)}, must_be_stored=True
    )


async def test_create_run_retry_after_an_executed_but_failed_create_returns_the_run(client: Client) -> None:
    client.faults.install(client.faults.execute_then_fail, only=lambda sql: "CREATE" in sql)
    request = rl.CreateRunRequest(spec_digest=SPEC, agent_name="faults", run_id="created-but-failed")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.runs.CreateRun(request)
    assert info.value.code() in DELIBERATE
    client.faults.restore()
    run = (await client.runs.CreateRun(request)).run
    assert (run.run_id, run.total_events, run.status) == ("created-but-failed", 0, 1)


async def test_a_read_failing_mid_stream_ends_unavailable_not_ok(client: Client) -> None:
    """A read that loses the store after its first window must not end OK with events missing."""
    run_id = await client.new_run("longread")
    # Batches of 100, not 500: a 500-row transaction can outlast the 0.5 s db_timeout on a loaded CI machine.
    for _ in range(25):
        await client.events.AppendEvents(
            es.AppendEventsRequest(run_id=run_id, events=[event_pb2.EventInput(kind="k") for _ in range(100)])
        )
    client.faults.install(client.faults.nth(2), only=lambda sql: "run_events:[" in sql)
    got: list[int] = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for message in client.events.ReadEvents(es.ReadEventsRequest(run_id=run_id)):
            got.extend(e.seq for e in message.events)
    assert info.value.code() == Code.UNAVAILABLE
    assert got == list(range(1, len(got) + 1)) and len(got) < 2500
    client.faults.restore()
    assert [e.seq for e in await client.read(run_id)] == list(range(1, 2501))


async def test_appends_behind_a_write_stuck_in_the_engine_answer_unavailable_in_time(client: Client) -> None:
    """The engine holds one append transaction (and with it the run's write lock) past the timeout.
    The caller of that append gets UNAVAILABLE after `db_timeout`; a second caller appending to the
    same run must not wait without bound either: it too should get UNAVAILABLE, not hang until its
    own deadline. When the engine lets go, the run takes appends again and nothing is stored twice."""
    run_id = await client.new_run("stuck")
    client.faults.install(client.faults.hold_until_restored, only=is_append)
    stuck, behind = Batch(run_id, "stuck-1", 2), Batch(run_id, "stuck-2", 3)
    assert await append(client, stuck, deadline=DB_TIMEOUT * 10) == Code.UNAVAILABLE
    started = time.monotonic()
    answer = await append(client, behind, deadline=DB_TIMEOUT * 10)
    waited = time.monotonic() - started
    client.faults.restore()
    await asyncio.sleep(DB_TIMEOUT)
    acks: dict[str, tuple[int, int]] = {}
    await assert_whole_or_absent(client, [stuck, behind], acks)
    await retry_until_stored(client, [stuck, behind], acks)
    await assert_whole_or_absent(client, [stuck, behind], acks, must_be_stored=True)
    await assert_recovered(client)
    assert answer == Code.UNAVAILABLE, (
        f"an append queued behind a stuck write got {answer} after {waited:.1f}s (db_timeout {DB_TIMEOUT}s)"
    )


@pytest.mark.parametrize("answer", [{}, {"result": []}, {"result": None}], ids=["no-result", "empty", "null"])
async def test_an_append_the_database_did_not_confirm_is_never_acknowledged(
    client: Client, answer: dict[str, Any]
) -> None:
    """The engine answers an append transaction without any statement result (a truncated or
    malformed reply): the daemon cannot know the batch was written, so it must not say OK."""
    run_id = await client.new_run("unconfirmed")
    first = Batch(run_id, "unconfirmed-1", 2)
    assert await append(client, first) == (1, 2)
    client.faults.install(client.faults.answering(answer), only=is_append)
    unconfirmed = Batch(run_id, "unconfirmed-2", 3)
    outcome = await append(client, unconfirmed)
    client.faults.restore()
    acks = {first.key: (1, 2)}
    if isinstance(outcome, tuple):
        acks[unconfirmed.key] = outcome
    later = Batch(run_id, "unconfirmed-3", 1)
    later_outcome = await append(client, later)
    assert isinstance(later_outcome, tuple)
    acks[later.key] = later_outcome
    await assert_whole_or_absent(client, [first, unconfirmed, later], acks)
    assert outcome in DELIBERATE, f"an append the database never confirmed was acknowledged as {outcome}"
