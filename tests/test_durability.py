"""What survives a restart on a durable (surrealkv://) database, and what VerifyRun tells after tampering."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from aivcs.ledger.v1 import event_pb2, event_stream_pb2_grpc, run_ledger_pb2_grpc, run_pb2
from aivcs.ledger.v1 import event_stream_pb2 as es
from aivcs.ledger.v1 import run_ledger_pb2 as rl
from google.protobuf import json_format

from aivcs_ledgerd.store import Database
from harness.daemon import DaemonProcess, start_daemon
from harness.data import SPEC

RunLedgerStub = run_ledger_pb2_grpc.RunLedgerStub
EventStreamStub = event_stream_pb2_grpc.EventStreamStub


def stop_cleanly(daemon: DaemonProcess) -> int:
    """SIGTERM; the daemon must drain and close its database. Returns the exit code."""
    code = daemon.stop(signal.SIGTERM)
    assert "stopped" in daemon.log(), daemon.log()
    return code


@contextmanager
def serving(tmp: Path, url: str) -> Iterator[tuple[RunLedgerStub, EventStreamStub]]:
    """A daemon on `url` for the block, stopped with SIGTERM after it; it must exit 0."""
    daemon = start_daemon(tmp, db=url)
    try:
        with daemon.channel() as channel:
            yield run_ledger_pb2_grpc.RunLedgerStub(channel), event_stream_pb2_grpc.EventStreamStub(channel)
    finally:
        assert stop_cleanly(daemon) == 0, daemon.log()


def batch(sent: list[dict[str, Any]], kind: str = "e") -> list[event_pb2.EventInput]:
    items = []
    for payload in sent:
        item = event_pb2.EventInput(kind=kind)
        item.payload.update(payload)
        items.append(item)
    return items


def read_all(events: EventStreamStub, run_id: str) -> list[event_pb2.Event]:
    return [e for message in events.ReadEvents(es.ReadEventsRequest(run_id=run_id)) for e in message.events]


def new_run(runs: RunLedgerStub, run_id: str) -> None:
    runs.CreateRun(rl.CreateRunRequest(spec_digest=SPEC, agent_name="durable", run_id=run_id))


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"surrealkv://{tmp_path / 'ledger-data'}"


def test_acknowledged_events_are_all_there_after_a_restart(tmp_path: Path, db_url: str) -> None:
    with serving(tmp_path, db_url) as (runs, events):
        new_run(runs, "kept")
        for n in range(5):
            events.AppendEvents(
                es.AppendEventsRequest(
                    run_id="kept", events=batch([{"batch": n, "i": i, "text": "é✓"} for i in range(1 + 20 * n)])
                )
            )
        before = read_all(events, "kept")
        run_before = runs.GetRun(rl.GetRunRequest(run_id="kept")).run
        new_run(runs, "finished")
        events.AppendEvents(es.AppendEventsRequest(run_id="finished", events=batch([{"x": 1}])))
        finished = runs.CompleteRun(rl.CompleteRunRequest(run_id="finished", expected_total_events=1)).run
    assert len(before) == run_before.total_events == 205

    with serving(tmp_path, db_url) as (runs, events):
        assert read_all(events, "kept") == before  # same seqs, payloads, timestamps and digests
        assert runs.GetRun(rl.GetRunRequest(run_id="kept")).run == run_before
        verdict = runs.VerifyRun(rl.VerifyRunRequest(run_id="kept"))
        assert (verdict.ok, verdict.verified_events, verdict.events_digest) == (True, 205, before[-1].digest)
        assert runs.GetRun(rl.GetRunRequest(run_id="finished")).run == finished
        # The run goes on where it stopped, and its chain still holds.
        more = events.AppendEvents(es.AppendEventsRequest(run_id="kept", events=batch([{"after": True}] * 3)))
        assert (more.first_seq, more.last_seq) == (206, 208)
        assert runs.VerifyRun(rl.VerifyRunRequest(run_id="kept")).ok
        with pytest.raises(grpc.RpcError) as refused:
            events.AppendEvents(es.AppendEventsRequest(run_id="finished", events=batch([{}])))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]


def test_appends_in_flight_at_sigterm_lose_nothing_acknowledged(tmp_path: Path, db_url: str) -> None:
    """Writers keep appending while the daemon is told to stop; every acknowledged batch survives."""
    daemon = start_daemon(tmp_path, db=db_url)
    acks: list[tuple[int, int, list[dict[str, Any]]]] = []
    lock = threading.Lock()
    enough = threading.Event()
    with daemon.channel() as channel:
        runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
        events = event_stream_pb2_grpc.EventStreamStub(channel)
        new_run(runs, "busy")

        def writer(name: str) -> None:
            for n in range(10_000):
                sent = [{"writer": name, "batch": n, "i": i} for i in range(1 + n % 13)]
                try:
                    answer = events.AppendEvents(es.AppendEventsRequest(run_id="busy", events=batch(sent)), timeout=30)
                except grpc.RpcError:
                    return  # the daemon is going away: this batch was not acknowledged
                with lock:
                    acks.append((answer.first_seq, answer.last_seq, sent))
                    if len(acks) >= 150:
                        enough.set()

        threads = [threading.Thread(target=writer, args=(f"w{w}",)) for w in range(6)]
        for thread in threads:
            thread.start()
        assert enough.wait(timeout=60), "writers made no progress"
        stop_cleanly(daemon)
        for thread in threads:
            thread.join(timeout=60)
    assert len(acks) >= 150

    with serving(tmp_path, db_url) as (runs, events):
        stored = read_all(events, "busy")
        total = runs.GetRun(rl.GetRunRequest(run_id="busy")).run.total_events
        assert [e.seq for e in stored] == list(range(1, total + 1))
        payloads = [json_format.MessageToDict(e.payload) for e in stored]
        for first, last, sent in acks:
            assert payloads[first - 1 : last] == sent, f"acknowledged batch {first}..{last}"
        verdict = runs.VerifyRun(rl.VerifyRunRequest(run_id="busy"))
        assert (verdict.ok, verdict.verified_events) == (True, total)


def test_idempotent_retry_after_a_restart_returns_the_original_range(tmp_path: Path, db_url: str) -> None:
    sent = batch([{"step": 1}, {"step": 2}])
    with serving(tmp_path, db_url) as (runs, events):
        new_run(runs, "retry")
        events.AppendEvents(es.AppendEventsRequest(run_id="retry", events=batch([{"first": True}])))
        original = events.AppendEvents(
            es.AppendEventsRequest(run_id="retry", events=sent, idempotency_key="lost-answer")
        )
        assert (original.first_seq, original.last_seq, original.replayed) == (2, 3, False)

    with serving(tmp_path, db_url) as (runs, events):
        retry = events.AppendEvents(es.AppendEventsRequest(run_id="retry", events=sent, idempotency_key="lost-answer"))
        assert (retry.first_seq, retry.last_seq, retry.replayed) == (2, 3, True)
        assert runs.GetRun(rl.GetRunRequest(run_id="retry")).run.total_events == 3
        with pytest.raises(grpc.RpcError) as reused:
            events.AppendEvents(
                es.AppendEventsRequest(run_id="retry", events=batch([{"step": 9}]), idempotency_key="lost-answer")
            )
        assert reused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "idempotency_key" in reused.value.details()  # type: ignore[attr-defined]
        fresh = events.AppendEvents(es.AppendEventsRequest(run_id="retry", events=sent, idempotency_key="new"))
        assert (fresh.first_seq, fresh.last_seq, fresh.replayed) == (4, 5, False)
        assert [e.seq for e in read_all(events, "retry")] == [1, 2, 3, 4, 5]


# --- tampering: change storage behind the daemon's back, then ask VerifyRun ---------------------

TAMPERINGS: dict[str, tuple[str, int]] = {
    # run id: (SurrealQL run with $r = run id, first seq VerifyRun must report)
    "payload": ("UPDATE type::record('run_events', [$r, 4]) SET payload.x = 'tampered'", 4),
    "kind": ("UPDATE type::record('run_events', [$r, 1]) SET kind = 'other'", 1),
    "timestamp": ("UPDATE type::record('run_events', [$r, 10]) SET timestamp_ns += 1", 10),
    "missing": ("DELETE type::record('run_events', [$r, 7])", 7),
    "head": ("UPDATE type::record('runs', $r) SET events_digest = $fake", 11),
    "count": ("UPDATE type::record('runs', $r) SET total_events = 9", 10),
    "short": ("UPDATE type::record('runs', $r) SET total_events = 12", 11),
}


async def tamper(url: str) -> None:
    db = await Database.open(url)
    try:
        for run_id, (sql, _) in TAMPERINGS.items():
            await db.query(sql, {"r": run_id, "fake": "0" * 64})
    finally:
        await db.close()


def test_verify_reports_the_first_tampered_seq(tmp_path: Path, db_url: str) -> None:
    with serving(tmp_path, db_url) as (runs, events):
        for run_id in [*TAMPERINGS, "untouched"]:
            new_run(runs, run_id)
            events.AppendEvents(es.AppendEventsRequest(run_id=run_id, events=batch([{"x": i} for i in range(10)])))
            verdict = runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id))
            assert (verdict.ok, verdict.verified_events) == (True, 10)

    asyncio.run(tamper(db_url))

    with serving(tmp_path, db_url) as (runs, events):
        for run_id, (_, broken) in TAMPERINGS.items():
            verdict = runs.VerifyRun(rl.VerifyRunRequest(run_id=run_id))
            assert not verdict.ok, run_id
            assert verdict.HasField("first_broken_seq") and verdict.first_broken_seq == broken, (run_id, verdict)
            assert verdict.verified_events == min(broken - 1, 10), (run_id, verdict)
            assert verdict.reason, run_id
        # The edit is really in storage (the daemon serves it), and the run itself is untouched.
        assert json_format.MessageToDict(read_all(events, "payload")[3].payload) == {"x": "tampered"}
        run = runs.GetRun(rl.GetRunRequest(run_id="payload")).run
        assert (run.status, run.total_events) == (run_pb2.RUN_STATUS_RUNNING, 10)
        intact = runs.VerifyRun(rl.VerifyRunRequest(run_id="untouched"))
        assert (intact.ok, intact.verified_events, intact.HasField("first_broken_seq")) == (True, 10, False)


def test_sigterm_exits_zero(tmp_path: Path, db_url: str) -> None:
    """The contract: on SIGTERM the daemon finishes in-flight work, closes the database and exits 0."""
    for cycle in range(3):
        daemon = start_daemon(tmp_path, db=db_url)
        with daemon.channel() as channel:
            runs = run_ledger_pb2_grpc.RunLedgerStub(channel)
            events = event_stream_pb2_grpc.EventStreamStub(channel)
            new_run(runs, f"cycle-{cycle}")
            events.AppendEvents(es.AppendEventsRequest(run_id=f"cycle-{cycle}", events=batch([{"c": cycle}])))
        assert stop_cleanly(daemon) == 0, daemon.log()
