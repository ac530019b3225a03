"""The seed's run_events indexes: not created, removed from an older database at start-up, kept by --seed-indexes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from aivcs.ledger.v1 import event_pb2, event_stream_pb2, event_stream_pb2_grpc, run_ledger_pb2, run_ledger_pb2_grpc

from aivcs_ledgerd.store import Database
from aivcs_ledgerd.store.schema import SEED_EVENT_INDEXES
from harness.daemon import DaemonProcess, start_daemon

SPEC = "a" * 64


async def schema_of(url: str) -> dict[str, Any]:
    """Every table's definition and its fields, indexes and events, as the database reports them."""
    db = await Database.open(url)
    try:
        (info,) = await db.query("INFO FOR DB")
        schema = {"db": info}
        for table in sorted(info["tables"]):
            (schema[table],) = await db.query(f"INFO FOR TABLE {table}")
        return schema
    finally:
        await db.close()


def write_run(daemon: DaemonProcess, run_id: str, events: int) -> None:
    with grpc.insecure_channel(daemon.target) as channel:
        run_ledger_pb2_grpc.RunLedgerStub(channel).CreateRun(
            run_ledger_pb2.CreateRunRequest(run_id=run_id, spec_digest=SPEC, agent_name="agent"), timeout=10
        )
        batch = []
        for n in range(events):
            event = event_pb2.EventInput(kind="step")
            event.payload.update({"n": n})
            batch.append(event)
        event_stream_pb2_grpc.EventStreamStub(channel).AppendEvents(
            event_stream_pb2.AppendEventsRequest(run_id=run_id, events=batch), timeout=10
        )


def read_run(daemon: DaemonProcess, run_id: str) -> list[tuple[int, str, dict[str, Any], str]]:
    with grpc.insecure_channel(daemon.target) as channel:
        stub = event_stream_pb2_grpc.EventStreamStub(channel)
        replies = stub.ReadEvents(event_stream_pb2.ReadEventsRequest(run_id=run_id), timeout=10)
        found = [(e.seq, e.kind, dict(e.payload), e.digest) for reply in replies for e in reply.events]
        verdict = run_ledger_pb2_grpc.RunLedgerStub(channel).VerifyRun(
            run_ledger_pb2.VerifyRunRequest(run_id=run_id), timeout=10
        )
    assert verdict.ok, verdict
    return found


def without_event_indexes(schema: dict[str, Any]) -> dict[str, Any]:
    table = dict(schema["run_events"])
    table["indexes"] = {name: sql for name, sql in table["indexes"].items() if name not in SEED_EVENT_INDEXES}
    return {**schema, "run_events": table}


async def test_a_new_database_has_none_of_the_seed_event_indexes(tmp_path: Path) -> None:
    url = f"surrealkv://{tmp_path / 'ledger'}"
    daemon = start_daemon(tmp_path, db=url)
    write_run(daemon, "fresh", 3)
    assert daemon.stop() == 0, daemon.log()
    schema = await schema_of(url)
    assert not set(SEED_EVENT_INDEXES) & set(schema["run_events"]["indexes"])
    assert "idx_run_id" in schema["runs"]["indexes"], "the run row keeps the seed's indexes"
    assert "removed the seed's run_events indexes" not in daemon.log(), "nothing to remove on a new database"


async def test_start_up_removes_the_seed_event_indexes_and_keeps_the_data(tmp_path: Path) -> None:
    url = f"surrealkv://{tmp_path / 'ledger'}"
    old = start_daemon(tmp_path, db=url, extra=["--seed-indexes"])
    write_run(old, "older", 25)
    stored = read_run(old, "older")
    assert old.stop() == 0, old.log()
    before = await schema_of(url)
    assert set(SEED_EVENT_INDEXES) <= set(before["run_events"]["indexes"]), "--seed-indexes defines them"

    daemon = start_daemon(tmp_path, db=url)
    try:
        assert "removed the seed's run_events indexes" in daemon.log()
        assert read_run(daemon, "older") == stored, "every stored event is read back unchanged"
        write_run(daemon, "newer", 2)
        assert [seq for seq, *_ in read_run(daemon, "newer")] == [1, 2]
    finally:
        assert daemon.stop() == 0, daemon.log()
    after = await schema_of(url)
    assert not set(SEED_EVENT_INDEXES) & set(after["run_events"]["indexes"])
    assert after["runs"] == before["runs"] and without_event_indexes(after) == without_event_indexes(before), (
        "nothing but the seed's run_events indexes changes"
    )


async def test_seed_indexes_flag_keeps_them_on_restart(tmp_path: Path) -> None:
    url = f"surrealkv://{tmp_path / 'ledger'}"
    first = start_daemon(tmp_path, db=url, extra=["--seed-indexes"])
    write_run(first, "kept", 4)
    assert first.stop() == 0, first.log()
    before = await schema_of(url)
    second = start_daemon(tmp_path, db=url, env={"AIVCS_LEDGER_SEED_INDEXES": "1"})
    try:
        assert [seq for seq, *_ in read_run(second, "kept")] == [1, 2, 3, 4]
    finally:
        assert second.stop() == 0, second.log()
    assert await schema_of(url) == before
    assert "removed the seed's run_events indexes" not in second.log()
