"""An appended event and a restored one are stored as the same record, embedded or on a server.

Both write store/events.py's event_records; the record must keep every
value, JSON nulls and the nanoseconds of the timestamp included, through
the C codec (embedded) and through the SDK (a ws:// server). The append
transaction refuses, writing nothing, a run that is gone, ended or moved.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aivcs_ledgerd.model import Event
from aivcs_ledgerd.store import Database, Rejected, init_schema
from aivcs_ledgerd.store.backup import stage_events
from aivcs_ledgerd.store.events import append
from aivcs_ledgerd.store.runs import create_run
from aivcs_ledgerd.store.values import json_from_surreal
from harness.data import run_record
from harness.surrealdb_stand_in import stand_in_server

PAYLOADS: list[dict[str, Any]] = [
    {"text": "héllo", "n": 0.1 + 0.2, "none": None, "list": [None, 1.5, {"deep": None}], "flag": False},
    {},
    {"big": 1.7976931348623157e308, "tiny": 5e-324, "neg": -0.0},
]
STAMP_NS = 1_767_323_045_123_456_789  # nanoseconds that a microsecond datetime would lose


def _events(run_id: str) -> list[Event]:
    return [Event(run_id, seq, "k", payload, STAMP_NS + seq, f"{seq:064x}") for seq, payload in enumerate(PAYLOADS, 1)]


@pytest.fixture(params=["embedded", "server"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "embedded":
        handle = await Database.open("mem://")
        try:
            yield handle
        finally:
            await handle.close()
        return
    with stand_in_server(tmp_path) as server:
        handle = await Database.open(server.url)
        try:
            yield handle
        finally:
            await handle.close()


async def _stored(db: Database, run_id: str) -> list[dict[str, Any]]:
    [rows] = await db.query(
        "SELECT *, time::format(timestamp, '%Y-%m-%dT%H:%M:%S%.9fZ') AS at, type::of(timestamp) AS at_type "
        "OMIT id FROM run_events:[$run_id, 1]..=[$run_id, 9] ;",
        {"run_id": run_id},
    )
    for row in rows:
        assert row.pop("run_id") == run_id
        row.pop("timestamp")  # compared as text (at), to the nanosecond
    return list(rows)


async def test_appended_and_restored_events_are_stored_alike(db: Database) -> None:
    await init_schema(db)
    await create_run(db, run_record("appended", agent="rows"))
    async with db.exclusive("run:appended") as session:
        await append(session, "appended", 0, _events("appended"), {}, STAMP_NS)
    staged = [[e.seq, e.kind, e.payload, e.timestamp_ns, e.digest] for e in _events("restored")]
    await stage_events(db, "restored", staged)

    appended, restored = await _stored(db, "appended"), await _stored(db, "restored")
    assert appended == restored
    payloads = [json_from_surreal(row["payload"]) for row in appended]  # a server's NULL reads as surrealdb.Null
    assert payloads == PAYLOADS
    assert "none" in payloads[0] and payloads[0]["none"] is None  # stored as NULL, not dropped as NONE
    assert [row["at"] for row in appended] == [f"2026-01-02T03:04:05.12345679{d}Z" for d in (0, 1, 2)]
    assert {row["at_type"] for row in appended} == {"datetime"}


@pytest.mark.parametrize("case", ["not_found", "terminal", "moved"])
async def test_an_append_the_run_no_longer_takes_writes_nothing(db: Database, case: str) -> None:
    await init_schema(db)
    await create_run(db, run_record("target", agent="rows"))
    async with db.exclusive("run:target") as session:
        await append(session, "target", 0, _events("target")[:1], {}, STAMP_NS)
    if case == "terminal":
        await db.query("UPDATE runs:target SET status = 'completed';")
    run_id = "absent" if case == "not_found" else "target"
    base = 0 if case == "moved" else 1  # "moved": the writer believes the run is still empty
    later = [Event(run_id, base + 1, "late", {}, STAMP_NS, "f" * 64)]
    with pytest.raises(Rejected) as refused:
        async with db.exclusive(f"run:{run_id}") as session:
            await append(session, run_id, base, later, {}, STAMP_NS)
    assert refused.value.reason == case
    [head] = await db.query("SELECT VALUE total_events FROM ONLY runs:target;")
    assert head == 1
    [kinds] = await db.query("SELECT VALUE kind FROM run_events;")
    assert kinds == ["k"]  # the refused event is nowhere
