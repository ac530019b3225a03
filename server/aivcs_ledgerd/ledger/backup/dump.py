"""Dumping a ledger online: every run as of its head, its events and idempotency records, then release histories.

Nothing is locked: a run's row is read first and its events 1..total_events
after, and stored events never change, so each run is consistent as of the
head that was read. Runs are walked in creation order by keyset pages of
the unique creation key, so a run created meanwhile is met or not, never
twice, and memory holds one page of runs or events at a time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aivcs_ledgerd import __version__
from aivcs_ledgerd.ledger.backup import format as fmt
from aivcs_ledgerd.ledger.backup.patience import patiently
from aivcs_ledgerd.ledger.store_errors import translated_stream
from aivcs_ledgerd.store import Database
from aivcs_ledgerd.store import backup as store

RUNS_PER_PAGE = 100
EVENTS_PER_PAGE = 1000
RELEASES_PER_PAGE = 1000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DumpFilter:
    agent_name: str | None = None
    created_after_ns: int | None = None  # inclusive
    created_before_ns: int | None = None  # exclusive
    releases: bool = True

    def described(self) -> dict[str, Any]:
        return {
            "agent_name": self.agent_name,
            "created_after_ns": self.created_after_ns,
            "created_before_ns": self.created_before_ns,
            "releases": self.releases,
        }


@dataclass(slots=True)
class DumpCounts:
    runs: int = 0
    events: int = 0
    appends: int = 0
    releases: int = 0


async def _read(call: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await patiently(lambda _: call(*args), "dump")


@translated_stream
async def dump(db: Database, where: DumpFilter, counts: DumpCounts) -> AsyncIterator[str]:
    """The dump's records as text, in order; `counts` follows what has been yielded."""
    yield fmt.encode(fmt.header(time.time_ns(), __version__, where.described()))
    after = None if where.created_after_ns is None else where.created_after_ns - 1
    while True:
        rows = await _read(store.runs_after, db, after, where.created_before_ns, where.agent_name, RUNS_PER_PAGE)
        for row in rows:
            async for record in _run(db, row, counts):
                yield record
            counts.runs += 1
        if len(rows) < RUNS_PER_PAGE:
            break
        after = rows[-1]["created_ns"]
    if where.releases:
        agents = [where.agent_name] if where.agent_name is not None else await _read(store.release_agents, db)
        for agent in agents:
            sequence = 1
            while True:
                entries = await _read(store.release_rows, db, agent, sequence, RELEASES_PER_PAGE)
                for entry in entries:
                    counts.releases += 1
                    yield fmt.encode(fmt.release_record(entry))
                if len(entries) < RELEASES_PER_PAGE:
                    break
                sequence += RELEASES_PER_PAGE
    yield fmt.encode(fmt.end(counts.runs, counts.events, counts.appends, counts.releases))


async def _run(db: Database, row: dict[str, Any], counts: DumpCounts) -> AsyncIterator[str]:
    record = fmt.run_record(row)
    run_id, total = record["run_id"], record["total_events"]
    yield fmt.encode(record)
    seq = 1
    while seq <= total:
        last = min(total, seq + EVENTS_PER_PAGE - 1)
        events = await _read(store.event_rows, db, run_id, seq, last)
        for event in events:
            counts.events += 1
            yield fmt.encode(fmt.event_record(run_id, event))
        if not events:
            break  # a run whose events are missing: the dump says so by holding fewer; restore refuses it
        seq = events[-1][0] + 1
    for append in await _read(store.append_rows, db, run_id, total):
        counts.appends += 1
        yield fmt.encode(fmt.append_record(run_id, append))
